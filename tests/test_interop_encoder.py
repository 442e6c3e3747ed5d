"""`import-nemo` of an ASR model (here a FastConformer CTC archive): refused as a whole with a
one-line error naming its class; with --encoder-only, a NEST run starts from its encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nestkit
from conftest import run_nestkit
from nestkit.interop.nemo import nemo_tensors, nestkit_section
from nestkit.interop.nemo_archive import read_nemo_archive, write_nemo_archive
from nestkit.pretrained import load_model
from nestkit.recipe import interpolate

CTC_CLASS = "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE"
ENCODER = {  # NeMo's fast-conformer_ctc_bpe.yaml encoder, made tiny
    "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": "${model.preprocessor.features}",
    "feat_out": -1, "n_layers": 2, "d_model": 48, "subsampling": "dw_striding", "subsampling_factor": 8,
    "subsampling_conv_channels": 16, "causal_downsampling": False, "ff_expansion_factor": 4,
    "self_attention_model": "rel_pos", "n_heads": 4, "att_context_size": [-1, -1], "att_context_style": "regular",
    "xscaling": True, "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9,
    "conv_norm_type": "batch_norm", "conv_context_size": None, "dropout": 0.1, "dropout_pre_encoder": 0.1,
    "dropout_emb": 0.0, "dropout_att": 0.1, "stochastic_depth_drop_prob": 0.0, "stochastic_depth_mode": "linear",
    "stochastic_depth_start_layer": 1,
}
PREPROCESSOR = {
    "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": "${model.sample_rate}",
    "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01, "window": "hann", "features": 64,
    "n_fft": 512, "log": True, "frame_splicing": 1, "dither": 1e-5, "pad_to": 0, "pad_value": 0.0,
}
VOCAB = 32


def ctc_config() -> dict:
    return {
        "target": CTC_CLASS,
        "nemo_version": "3.0.0",
        "sample_rate": 16000,
        "log_prediction": True,
        "ctc_reduction": "mean_volume",
        "train_ds": {"manifest_filepath": "/data/train.json", "sample_rate": "${model.sample_rate}", "batch_size": 16},
        "tokenizer": {"dir": "/data/tokenizer", "type": "bpe"},
        "preprocessor": dict(PREPROCESSOR),
        "spec_augment": {"_target_": "nemo.collections.asr.modules.SpectrogramAugmentation", "freq_masks": 2,
                         "time_masks": 10, "freq_width": 27, "time_width": 0.05},
        "encoder": dict(ENCODER),
        "decoder": {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": 48, "num_classes": VOCAB,
                    "vocabulary": [f"t{i}" for i in range(VOCAB)]},
        "optim": {"name": "adamw", "lr": 1e-3, "sched": {"name": "CosineAnnealing", "warmup_steps": 15000,
                                                        "warmup_ratio": None, "min_lr": 1e-4}},
    }


@pytest.fixture(scope="module")
def ctc_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CTC .nemo as NeMo lays it out: its config, and NeMo-named encoder, decoder and
    preprocessor tensors (random, so that any mix-up shows)."""
    torch.manual_seed(0)
    resolved = interpolate({"model": ctc_config()})["model"]
    encoder = nestkit.build("encoder", nestkit_section(resolved["encoder"], "encoder"))
    with torch.no_grad():
        for tensor in encoder.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
    preprocessor = nestkit.build("preprocessor", nestkit_section(resolved["preprocessor"], "preprocessor"))
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"preprocessor.{k}": v for k, v in preprocessor.state_dict().items()}
    state |= {"decoder.decoder_layers.0.weight": torch.randn(VOCAB + 1, 48, 1), "decoder.decoder_layers.0.bias": torch.randn(VOCAB + 1)}
    return write_nemo_archive(tmp_path_factory.mktemp("ctc") / "fc_ctc.nemo", ctc_config(), nemo_tensors(state))


def test_other_model_class_is_one_line_naming_it(ctc_file: Path, tmp_path: Path) -> None:
    result = run_nestkit("import-nemo", str(ctc_file), str(tmp_path / "x.ckpt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {ctc_file}: model class EncDecCTCModelBPE; only NEST models")
    assert "--encoder-only" in lines[0]
    assert not (tmp_path / "x.ckpt").exists()
    result = run_nestkit("import-nemo", str(ctc_file), str(tmp_path / "x.ckpt"), "--recipe", "r.yaml")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "--encoder-only" in result.stderr


def test_encoder_only_starts_a_nest_run_from_the_asr_encoder(ctc_file: Path, tmp_path: Path) -> None:
    result = run_nestkit("import-nemo", str(ctc_file), str(tmp_path / "fc.ckpt"), "--encoder-only")
    assert result.returncode == 0, result.stderr
    notes = [line[len("note: "):] for line in result.stdout.splitlines() if line.startswith("note: ")]
    for key in ("log_prediction", "ctc_reduction", "train_ds", "tokenizer", "spec_augment", "decoder", "optim"):
        assert f"model.{key} not imported (--encoder-only)" in notes, key
    assert "2 tensors under decoder.* not imported (--encoder-only)" in notes
    model, recipe = load_model(tmp_path / "fc.ckpt")
    # The recipe's encoder and preprocessor are the archive's, resolved; the rest is NEST-L's.
    resolved = interpolate({"model": ctc_config()})["model"]
    assert recipe.data["model"]["encoder"] == nestkit_section(resolved["encoder"], "encoder")
    assert recipe.data["model"]["preprocessor"] == nestkit_section(resolved["preprocessor"], "preprocessor")
    assert recipe.data["model"]["masking"]["feat_in"] == 64 and recipe.data["model"]["quantizer"]["feat_in"] == 64
    assert recipe.data["model"]["decoder"]["feat_in"] == 48 and recipe.data["model"]["num_classes"] == 8192
    assert recipe.data["model"]["optim"]["sched"]["d_model"] == 48
    # Every encoder tensor (and the preprocessor's buffers) equals the archive's.
    _, archived = read_nemo_archive(ctc_file)
    own = nemo_tensors(model.state_dict())
    taken = [k for k in archived if k.startswith(("encoder.", "preprocessor."))]
    assert taken and all(torch.equal(own[k], archived[k]) for k in taken)
    assert [k for k in own if k.startswith("encoder.")] == [k for k in archived if k.startswith("encoder.")]
    assert run_nestkit("validate", str(tmp_path / "fc.yaml"), "-q").returncode == 0
    # Continued pretraining: a NEST run starts from those weights.
    result = run_nestkit(
        "train", str(tmp_path / "fc.yaml"), f"exp_manager.resume_from_checkpoint={tmp_path / 'fc.ckpt'}",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "trainer.devices=cpu", "trainer.max_steps=1",
        "trainer.val_check_interval=1", "trainer.limit_val_batches=1", "model.train_ds.num_workers=0",
        "model.validation_ds.num_workers=0", "model.train_ds.batch_size=2", "model.validation_ds.batch_size=2",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert f"initialised the model from {tmp_path / 'fc.ckpt'} (weights only)" in result.stdout
    trained = torch.load(next((tmp_path / "exp").rglob("last.ckpt")), weights_only=True)
    assert trained["step"] == 1
    start = model.state_dict()
    weights = [k for k in start if k.startswith("encoder.layers.") and k.endswith("weight")]
    assert all(torch.allclose(trained["model"][k], start[k], atol=0.05) for k in weights)  # one small step away
    assert any(not torch.equal(trained["model"][k], start[k]) for k in weights)


def test_encoder_only_refuses_an_encoder_nestkit_cannot_build(ctc_file: Path, tmp_path: Path) -> None:
    config, state = read_nemo_archive(ctc_file)
    config["encoder"]["_target_"] = "nemo.collections.asr.modules.SqueezeformerEncoder"
    odd = write_nemo_archive(tmp_path / "sq.nemo", config, state)
    result = run_nestkit("import-nemo", str(odd), str(tmp_path / "sq.ckpt"), "--encoder-only")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "SqueezeformerEncoder" in result.stderr and "model.encoder" in result.stderr
    assert not (tmp_path / "sq.ckpt").exists()
