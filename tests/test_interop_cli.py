"""NeMo archives and configs through the real CLI: import, export, round trip, config conversion;
and feature extraction from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import nestkit
from _nemo_ref import reference_file
from conftest import RECIPES, run_nestkit
from nestkit.data import demo_manifests
from nestkit.interop.nemo_archive import read_nemo_archive, write_nemo_archive
from nestkit.pretrained import load_model, save_model
from nestkit.recipe import interpolate
from nestkit.recipe_yaml import parse_yaml


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(reference_file("parity_small.pt"), weights_only=True)


# NeMo's NEST dataset sections (examples/asr/conf/ssl/nest/nest_fast-conformer.yaml), augmentor left out.
NEMO_TRAIN_DS = {
    "manifest_filepath": "???", "noise_manifest": "???", "sample_rate": "${model.sample_rate}", "batch_size": 8,
    "shuffle": True, "num_workers": 8, "pin_memory": True, "use_start_end_token": False, "trim_silence": False,
    "max_duration": 60.0, "min_duration": 1.0, "drop_last": True, "is_concat": False,
    "concat_sampling_technique": "temperature", "concat_sampling_temperature": 1.0, "is_tarred": False,
    "tarred_audio_filepaths": None, "shuffle_n": 2048, "bucketing_strategy": "synced_randomized",
    "bucketing_batch_size": None,
}
NEMO_VALIDATION_DS = {
    "manifest_filepath": "???", "noise_manifest": None, "sample_rate": "${model.sample_rate}", "batch_size": 8,
    "shuffle": False, "num_workers": 8, "pin_memory": True, "use_start_end_token": False, "max_duration": 60.0,
    "min_duration": 1.0,
}
DROPPED_DEFAULTS = ("is_concat", "concat_sampling_technique", "concat_sampling_temperature", "bucketing_strategy",
                    "bucketing_batch_size")


def nemo_model_config(ref: dict) -> dict:
    model = yaml.safe_load(ref["model_cfg_yaml"])
    model["train_ds"], model["validation_ds"] = dict(NEMO_TRAIN_DS), dict(NEMO_VALIDATION_DS)
    return model


@pytest.fixture(scope="module")
def nemo_file(ref: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .nemo archive as NeMo writes it, built from the fixture's config and weights."""
    config = nemo_model_config(ref)
    config["target"] = "nemo.collections.asr.models.ssl_models.EncDecDenoiseMaskedTokenPredModel"
    config["nemo_version"] = "3.0.0"
    return write_nemo_archive(tmp_path_factory.mktemp("nemo") / "small.nemo", config, ref["state_dict"])


def notes_of(stdout: str) -> list[str]:
    return [line[len("note: "):] for line in stdout.splitlines() if line.startswith("note: ")]


def _leaves(value: object, path: str = "") -> dict[str, object]:
    """Dotted paths of every leaf of a config (``_target_`` / ``name`` left out: renamed on purpose)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            if key not in ("_target_", "name") or not path:
                out.update(_leaves(item, f"{path}.{key}" if path else str(key)))
        return out
    return {path: value}


def assert_every_change_noted(before: dict, after: dict, notes: list[str]) -> None:
    """Each leaf of ``before`` that is missing or different in ``after`` has a note naming its key,
    or the section it was in when that whole section is gone; no note is repeated."""
    old, new = _leaves(before), _leaves(after)
    for key, value in old.items():
        if key in new and new[key] == value:
            continue
        parts = key.split(".")
        prefixes = [".".join(parts[:n]) for n in range(1, len(parts))]
        gone = [p for p in prefixes if not any(k == p or k.startswith(p + ".") for k in new)]
        assert any(note.startswith((f"{key} ", f"{key}:", *(f"{p} " for p in gone))) for note in notes), (key, value, notes)
    assert len(notes) == len(set(notes))


def test_import_nemo_reproduces_log_probs(ref: dict, nemo_file: Path, tmp_path: Path) -> None:
    result = run_nestkit("import-nemo", str(nemo_file), str(tmp_path / "small.ckpt"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "small.yaml").exists()
    notes = notes_of(result.stdout)
    for key in DROPPED_DEFAULTS:  # each default-valued key nestkit drops is named, once
        assert sum(note.startswith(f"model.train_ds.{key} has no nestkit equivalent; dropped") for note in notes) == 1, key
    assert "model.train_ds.noise_manifest is ??? (unset) in NeMo; written as null: no noise is mixed in until you set it" in notes
    assert any(note.startswith("model.spec_augment") for note in notes)
    model, recipe = load_model(tmp_path / "small.ckpt")
    nemo = interpolate({"model": nemo_model_config(ref)})
    assert_every_change_noted(nemo, yaml.safe_load((tmp_path / "small.yaml").read_text()), notes)
    assert recipe.data["model"]["optim"]["sched"]["warmup_ratio"] is None  # kept, not dropped
    assert "# note: model.train_ds.is_concat" in (tmp_path / "small.yaml").read_text()
    assert recipe.data["model"]["encoder"]["n_layers"] == 2
    with torch.no_grad():
        encoded, _ = model.encoder(ref["eval_masked_feats"], ref["feats_noisy_len"])
        log_probs = model.decoder(encoded)
    torch.testing.assert_close(log_probs, ref["eval_log_probs"], atol=1e-4, rtol=1e-4)
    # the written recipe validates on its own
    assert run_nestkit("validate", str(tmp_path / "small.yaml"), "-q").returncode == 0


def test_export_then_import_round_trip(ref: dict, nemo_file: Path, tmp_path: Path) -> None:
    assert run_nestkit("import-nemo", str(nemo_file), str(tmp_path / "a.ckpt")).returncode == 0
    result = run_nestkit("export-nemo", str(tmp_path / "a.ckpt"), str(tmp_path / "b.nemo"))
    assert result.returncode == 0, result.stderr
    config, state = read_nemo_archive(tmp_path / "b.nemo")
    assert list(state) == list(ref["state_dict"])  # same keys, in NeMo's order
    for key, value in ref["state_dict"].items():
        assert state[key].shape == value.shape and state[key].dtype == value.dtype
        assert torch.equal(state[key], value), key
    assert config["target"].endswith("EncDecDenoiseMaskedTokenPredModel")
    assert config["encoder"]["_target_"] == "nemo.collections.asr.modules.ConformerEncoder"
    assert config["spec_augment"]["freq_masks"] == 0
    original = nemo_model_config(ref)
    for key in ("encoder", "decoder", "quantizer", "masking", "preprocessor", "loss", "spec_augment", "optim"):
        assert config[key] == original[key], key
    # NeMo's dataset keys come back with NeMo's values; only the ??? placeholders became null.
    for split, nemo_section in (("train_ds", NEMO_TRAIN_DS), ("validation_ds", NEMO_VALIDATION_DS)):
        expected = {k: (None if v == "???" else 16000 if v == "${model.sample_rate}" else v) for k, v in nemo_section.items()}
        assert config[split] == expected, split
    assert run_nestkit("import-nemo", str(tmp_path / "b.nemo"), str(tmp_path / "c.ckpt")).returncode == 0
    first, second = torch.load(tmp_path / "a.ckpt", weights_only=True), torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert first["model"].keys() == second["model"].keys()
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    assert yaml.safe_load(first["recipe"]) == yaml.safe_load(second["recipe"])


def test_import_refuses_an_archive_without_nest_sections(tmp_path: Path) -> None:
    bad = write_nemo_archive(tmp_path / "odd.nemo", {"encoder": {"_target_": "nemo.x.ConformerEncoder"}}, {})
    result = run_nestkit("import-nemo", str(bad), str(tmp_path / "x.ckpt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot be converted" in result.stderr and "NeMo config has no such section" in result.stderr


def test_convert_nemo_training_config(ref: dict, tmp_path: Path) -> None:
    model = nemo_model_config(ref)
    model["masking"]["max_mask_ratio"] = 0.8  # NeMo 3.0.0's default, accepted and never applied by NeMo
    config = {
        "name": "NEST-small",
        "model": model,
        "trainer": {"devices": -1, "max_steps": -1, "strategy": "ddp_find_unused_parameters_true",
                    "enable_progress_bar": True, "enable_model_summary": True, "precision": 32},
        "exp_manager": {"exp_dir": None, "name": "${name}", "resume_if_exists": True},
        "hydra": {"run": {"dir": "."}},
    }
    source = tmp_path / "nemo.yaml"
    source.write_text(yaml.safe_dump(config))
    result = run_nestkit("convert-nemo-config", str(source), str(tmp_path / "nest.yaml"))
    assert result.returncode == 0, result.stderr
    notes = notes_of(result.stdout)
    assert "trainer.enable_model_summary has no nestkit equivalent; dropped (was True)" in notes
    assert "trainer.devices: NeMo's -1 written as 'auto' (every GPU, else the CPU)" in notes
    assert "hydra has no nestkit equivalent; dropped" in notes
    assert "model.train_ds.is_concat has no nestkit equivalent; dropped (was False); export-nemo writes NeMo's False back" in notes
    assert any(note.startswith("model.masking.max_mask_ratio dropped (was 0.8)") for note in notes)
    assert any(note.startswith("model.spec_augment") for note in notes)
    recipe = nestkit.load_recipe(tmp_path / "nest.yaml")
    assert_every_change_noted(interpolate(config), recipe.data, notes)
    assert recipe.trainer.devices == "auto"
    assert recipe.trainer.strategy == "ddp_find_unused_parameters_true"  # nestkit runs it as NeMo does
    assert recipe.exp_manager.name == "NEST-small"
    assert recipe.train_ds is not None and recipe.train_ds.manifest_filepath is None and recipe.train_ds.noise_manifest is None
    assert recipe.data["model"]["optim"]["sched"]["warmup_ratio"] is None
    assert recipe.data["model"]["encoder"]["d_model"] == 64


# A NeMo NEST training config in the shape of examples/asr/conf/ssl/nest/nest_fast-conformer.yaml
# (written for this test, small sizes): `${...}` references as NeMo writes them (also inside a
# string), `???` placeholders, and trainer/exp_manager keys whose values are mappings and lists.
NEMO_TRAINING_YAML = """\
name: "NEST-shape"
model:
  sample_rate: 16000
  num_classes: 32
  num_books: 1
  code_dim: 8
  squeeze_single: false
  mask_position: pre_conv
  train_ds:
    manifest_filepath: ???
    noise_manifest: ???
    sample_rate: ${model.sample_rate}
    batch_size: 4
    shuffle: true
    num_workers: 1
    bucketing_strategy: "synced_randomized"
    batch_augmentor:
      _target_: nemo.collections.asr.modules.ssl_modules.MultiSpeakerNoiseAugmentation
      prob: 0.3
      noise_ratio: 0.2
  validation_ds:
    manifest_filepath: ???
    noise_manifest: null
    sample_rate: ${model.sample_rate}
    batch_size: 4
  preprocessor:
    _target_: nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor
    sample_rate: ${model.sample_rate}
    features: 40
    n_fft: 512
  spec_augment:
    _target_: nemo.collections.asr.modules.SpectrogramAugmentation
    freq_masks: 0
    time_masks: 0
    freq_width: 27
    time_width: 0.05
  masking:
    _target_: nemo.collections.asr.modules.RandomBlockMasking
    block_size: 20
    mask_prob: 0.02
    feat_in: ${model.preprocessor.features}
    freeze: true
    allow_overlap: true
  quantizer:
    _target_: nemo.collections.asr.modules.RandomProjectionVectorQuantizer
    feat_in: ${model.preprocessor.features}
    code_dim: ${model.code_dim}
    num_books: ${model.num_books}
    num_classes: ${model.num_classes}
    dist_fn: "l2"
    freeze: true
    squeeze_single: ${model.squeeze_single}
    combine_time_steps: ${model.encoder.subsampling_factor}
  encoder:
    _target_: nemo.collections.asr.modules.ConformerEncoder
    feat_in: ${model.preprocessor.features}
    n_layers: 2
    d_model: 48
    n_heads: 2
    subsampling_factor: 8
    subsampling_conv_channels: 16
    att_context_size: [-1, -1]
    conv_kernel_size: 9
  decoder:
    _target_: nemo.collections.asr.modules.MultiSoftmaxDecoder
    feat_in: ${model.encoder.d_model}
    num_classes: ${model.num_classes}
    num_decoders: ${model.num_books}
    squeeze_single: ${model.squeeze_single}
  loss:
    _target_: nemo.collections.asr.losses.MultiMLMLoss
    combine_time_steps: ${model.encoder.subsampling_factor}
    mask_threshold: 0.8
    num_decoders: ${model.num_books}
    squeeze_single: ${model.squeeze_single}
  optim:
    name: adamw
    lr: 2.0
    betas: [0.9, 0.98]
    weight_decay: 1e-3
    sched:
      name: NoamAnnealing
      d_model: ${model.encoder.d_model}
      warmup_steps: 100
      warmup_ratio: null
      min_lr: 1e-6
trainer:
  devices: [0, 1]
  num_nodes: 1
  max_epochs: -1
  max_steps: 500
  accelerator: gpu
  strategy: ddp_find_unused_parameters_true
  precision: bf16-mixed
  callbacks: []
  plugins: null
  enable_checkpointing: False
  logger: false
exp_manager:
  exp_dir: null
  name: ${name}
  create_tensorboard_logger: true
  create_checkpoint_callback: true
  checkpoint_callback_params:
    filename: '${name}--{${exp_manager.checkpoint_callback_params.monitor}:.3f}-{step}'
    monitor: "val_loss"
    mode: "min"
    save_top_k: 3
    every_n_train_steps: 200
    always_save_nemo: true
  resume_if_exists: true
  resume_ignore_no_checkpoint: true
  create_wandb_logger: false
  wandb_logger_kwargs:
    name: null
    project: ssl
    tags: [nest, small]
  ema:
    enable: false
"""


def test_convert_nemo_training_config_with_nested_trainer_and_exp_manager(tmp_path: Path) -> None:
    """NeMo's own config shape (mappings and lists inside trainer/exp_manager) converts: each
    nested key nestkit lacks is one note named in full, the checkpoint keys nestkit has are kept,
    NeMo's references stay references, and the recipe validates."""
    source = tmp_path / "nest_fast-conformer.yaml"
    source.write_text(NEMO_TRAINING_YAML)
    out = tmp_path / "nest.yaml"
    result = run_nestkit("convert-nemo-config", str(source), str(out))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    notes = notes_of(result.stdout)
    for note in (
        "exp_manager.wandb_logger_kwargs.name has no nestkit equivalent; dropped (was None)",
        "exp_manager.wandb_logger_kwargs.project has no nestkit equivalent; dropped (was 'ssl')",
        "exp_manager.wandb_logger_kwargs.tags has no nestkit equivalent; dropped (was ['nest', 'small'])",
        "exp_manager.ema.enable has no nestkit equivalent; dropped (was False)",
        "exp_manager.checkpoint_callback_params.always_save_nemo has no nestkit equivalent; dropped (was True)",
        "exp_manager.checkpoint_callback_params.filename has no nestkit equivalent; dropped (was 'NEST-shape--{val_loss:.3f}-{step}')",
        "trainer.callbacks has no nestkit equivalent; dropped (was [])",
        "trainer.plugins has no nestkit equivalent; dropped (was None)",
        "trainer.max_epochs: NeMo's -1 written as None (no limit)",
    ):
        assert note in notes, (note, notes)
    assert any(n.startswith("trainer.devices: NeMo's [0, 1] (those GPUs) written as 2") for n in notes), notes
    assert not any(n.startswith("exp_manager.checkpoint_callback_params.") and "save_top_k" in n for n in notes)
    text = out.read_text()
    assert "# note: exp_manager.wandb_logger_kwargs.tags has no nestkit equivalent" in text
    written = yaml.safe_load(text)
    assert written["model"]["decoder"]["feat_in"] == "${model.encoder.d_model}"
    assert written["exp_manager"]["name"] == "${name}"
    assert_every_change_noted(interpolate(parse_yaml(NEMO_TRAINING_YAML)), interpolate(written), notes)  # 1e-3: a float, as NeMo reads it
    recipe = nestkit.load_recipe(out)
    assert recipe.trainer.devices == 2 and recipe.trainer.max_epochs is None and recipe.trainer.precision == "bf16-mixed"
    assert recipe.trainer.max_steps == 500 and recipe.exp_manager.name == "NEST-shape"
    ckpt = recipe.exp_manager.checkpoint_callback_params
    assert (ckpt.monitor, ckpt.mode, ckpt.save_top_k, ckpt.every_n_train_steps) == ("val_loss", "min", 3, 200)
    assert recipe.train_ds is not None and recipe.train_ds.manifest_filepath is None
    checked = run_nestkit("validate", str(out), "-q")
    assert checked.returncode == 0, checked.stderr
    # the decoder and scheduler follow an encoder override, as in NeMo (references kept)
    resized = run_nestkit("validate", str(out), "-q", "--no-params", "model.encoder.d_model=32")
    assert resized.returncode == 0, resized.stderr


def test_convert_nemo_config_refuses_a_value_nestkit_cannot_run_in_one_line(tmp_path: Path) -> None:
    """A kept key whose NeMo value nestkit cannot honour is an error naming the NeMo file and the
    key, not a silently different run."""
    source = tmp_path / "nemo.yaml"
    source.write_text(NEMO_TRAINING_YAML.replace('monitor: "val_loss"', 'monitor: "val_wer"'))
    result = run_nestkit("convert-nemo-config", str(source), str(tmp_path / "nest.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (f"error: {source}: exp_manager.checkpoint_callback_params.monitor: "
                                     "expected 'val_loss', got 'val_wer'")
    assert not (tmp_path / "nest.yaml").exists()


def test_convert_nemo_config_creates_folders_and_reports_unwritable_output(tmp_path: Path) -> None:
    source = tmp_path / "nemo.yaml"
    source.write_text(NEMO_TRAINING_YAML)
    nested = tmp_path / "recipes" / "sub" / "my_nest.yaml"
    result = run_nestkit("convert-nemo-config", str(source), str(nested))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"wrote {nested}"
    assert nestkit.load_recipe(nested).exp_manager.name == "NEST-shape"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "a_folder").mkdir()
    for out, words in (
        (blocker / "my_nest.yaml", "is a file, not a folder"),
        (blocker / "deeper" / "my_nest.yaml", "cannot create its folder"),
        (tmp_path / "a_folder", "Is a directory"),
        (source, "is the NeMo config being converted"),
    ):
        failed = run_nestkit("convert-nemo-config", str(source), str(out))
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
        assert failed.stderr.strip().splitlines() == [failed.stderr.strip()] and str(out) in failed.stderr, failed.stderr
        assert words in failed.stderr and "wrote" not in failed.stdout, failed.stderr
    assert source.read_text() == NEMO_TRAINING_YAML  # the input is never written
    assert blocker.read_text() == "x" and not list((tmp_path / "a_folder").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder", "nemo.yaml", "recipes"]


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model of the demo recipe (3 encoder blocks, d_model 96) as a checkpoint."""
    path = tmp_path_factory.mktemp("demo") / "demo.ckpt"
    recipe = nestkit.load_recipe(RECIPES / "nest_demo.yaml")
    return save_model(path, nestkit.build_model(recipe), recipe)


def test_extract_writes_one_file_per_utterance(demo_ckpt: Path, tmp_path: Path) -> None:
    """Files are (layers, d_model, frames) with --layer, (d_model, frames) without: the layout of
    model.extract, the same values as each utterance encoded alone."""
    _, val, _ = demo_manifests()
    out = tmp_path / "feats"
    result = run_nestkit("extract", str(demo_ckpt), str(val), str(out), "--layer", "0", "--layer", "-1",
                         "--batch-seconds", "20")
    assert result.returncode == 0, result.stderr
    index = [json.loads(line) for line in (out / "features_manifest.json").read_text().splitlines()]
    lines = [json.loads(line) for line in Path(val).read_text().splitlines()]
    assert len(index) == len(lines) == len(list(out.glob("*.npy")))
    loaded, recipe = nestkit.load_model(demo_ckpt)
    d_model = recipe.data["model"]["encoder"]["d_model"]
    from nestkit.data.audio import read_audio

    for entry in index[:5]:  # each utterance alone gives the same frames and values as in its batch
        audio = read_audio(entry["audio_filepath"], sample_rate=16000)
        alone, length = loaded.extract(audio[None], torch.tensor([audio.shape[0]]), layers=[0, -1])
        frames = int(length[0])
        feats = np.load(out / entry["feature_filepath"])
        assert feats.shape == (2, d_model, frames) and entry["frames"] == frames
        expected = torch.stack(alone)[:, 0, :, :frames].numpy()
        np.testing.assert_allclose(feats, expected, atol=1e-4, rtol=1e-4)
    final = tmp_path / "final"
    assert run_nestkit("extract", str(demo_ckpt), str(val), str(final), "--format", "pt").returncode == 0
    entry = json.loads((final / "features_manifest.json").read_text().splitlines()[0])
    assert torch.load(final / entry["feature_filepath"], weights_only=True).shape == (d_model, entry["frames"])


def test_extract_refuses_a_block_the_encoder_does_not_have(demo_ckpt: Path, tmp_path: Path) -> None:
    _, val, _ = demo_manifests()
    result = run_nestkit("extract", str(demo_ckpt), str(val), str(tmp_path / "f"), "--layer", "5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: --layer 5: the encoder has 3 blocks (use 0..2, or -3..-1 from the end)"
    assert not (tmp_path / "f").exists()


def test_training_starts_from_imported_weights(nemo_file: Path, tmp_path: Path) -> None:
    assert run_nestkit("import-nemo", str(nemo_file), str(tmp_path / "small.ckpt")).returncode == 0
    result = run_nestkit(
        "train", str(tmp_path / "small.yaml"), f"exp_manager.resume_from_checkpoint={tmp_path / 'small.ckpt'}",
        f"exp_manager.exp_dir={tmp_path / 'exp'}", "trainer.devices=cpu", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=1", env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert f"initialised the model from {tmp_path / 'small.ckpt'} (weights only)" in result.stdout
    imported = torch.load(tmp_path / "small.ckpt", weights_only=True)["model"]
    trained = torch.load(next((tmp_path / "exp").rglob("last.ckpt")), weights_only=True)
    assert trained["step"] == 2
    key = "encoder.layers.0.feed_forward1.linear1.weight"
    key = key if key in imported else next(k for k in imported if k.startswith("encoder.") and k.endswith("weight"))
    assert not torch.equal(imported[key], trained["model"][key])  # it trained from there...
    assert torch.allclose(imported[key], trained["model"][key], atol=0.05)  # ...two small steps away
