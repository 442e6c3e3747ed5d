"""NeMo state dicts and configs: keys, shapes, dtypes, exact round trips, recipe conversion."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import nestkit
from nestkit.errors import CheckpointError, RecipeError
from nestkit.interop.nemo import from_nemo_tensors, load_nemo_state_dict, recipe_from_nemo_config, to_nemo_state_dict

from _nemo_ref import ROOT, model_section, reference_file


@pytest.fixture(scope="module")
def nest_large() -> torch.nn.Module:
    """NEST-L as the shipped recipe builds it, once. Only its layout is compared, never its values,
    so the random initialisation of its 113M weights (most of a 10 s build here) is skipped."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("kaiming_uniform_", "uniform_", "normal_", "xavier_normal_", "xavier_uniform_"):
            patch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        return nestkit.build_model(ROOT / "recipes/nest_fast_conformer.yaml")


def test_nest_large_state_dict_has_nemo_keys_shapes_dtypes(nest_large: torch.nn.Module) -> None:
    ref = json.loads(reference_file("nest_large_state_dict.json").read_text())["state_dict"]
    state = to_nemo_state_dict(nest_large)
    assert list(state) == list(ref)  # same keys, same order
    for key, info in ref.items():
        assert list(state[key].shape) == info["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == info["dtype"], key


def test_nest_large_sizes_match_nemo(nest_large: torch.nn.Module) -> None:
    ref = json.loads(reference_file("nest_large_state_dict.json").read_text())
    params = list(nest_large.parameters())
    assert sum(p.numel() for p in params) == ref["total_parameters"] == 113_106_000
    assert sum(p.numel() for p in params if p.requires_grad) == ref["trainable_parameters"] == 112_964_608
    names = {"preprocessor": "preprocessor", "encoder": "encoder", "quantizer": "quantizer",
             "mask_processor": "masking", "decoder": "decoder", "loss": "loss"}
    for nemo_name, ours in names.items():
        module = getattr(nest_large, ours)
        counts = ref["per_module"][nemo_name]
        assert sum(p.numel() for p in module.parameters()) == counts["parameters"], nemo_name
        assert sum(p.numel() for p in module.parameters() if p.requires_grad) == counts["trainable"], nemo_name
        assert sum(b.numel() for b in module.buffers()) == counts["buffer_elements"], nemo_name


def test_round_trip_is_exact() -> None:
    sd = torch.load(reference_file("parity_small.pt"), weights_only=True)
    model = nestkit.build("model", model_section(recipe_from_nemo_config(sd["model_cfg_yaml"])))
    load_nemo_state_dict(model, sd["state_dict"])
    back = to_nemo_state_dict(model)
    assert list(back) == list(sd["state_dict"])
    for key, value in sd["state_dict"].items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def test_load_rejects_mismatches_with_one_line() -> None:
    sd = torch.load(reference_file("parity_small.pt"), weights_only=True)["state_dict"]
    model = nestkit.build("model", model_section(recipe_from_nemo_config(
        torch.load(reference_file("parity_small.pt"), weights_only=True)["model_cfg_yaml"])))
    broken = dict(sd)
    del broken["encoder.layers.1.self_attn.linear_v.weight"]
    with pytest.raises(CheckpointError, match="linear_"):
        load_nemo_state_dict(model, broken)
    wrong = dict(sd)
    wrong["decoder.decoder_layers.0.bias"] = torch.zeros(65)
    with pytest.raises(CheckpointError, match="decoder.proj.bias has shape"):
        load_nemo_state_dict(model, wrong)


def test_qkv_fused_in_q_k_v_order() -> None:
    q, k, v = torch.randn(3, 4, 4)
    fused = from_nemo_tensors({"x.self_attn.linear_q.weight": q, "x.self_attn.linear_k.weight": k,
                               "x.self_attn.linear_v.weight": v})
    assert torch.equal(fused["x.self_attn.qkv.weight"], torch.cat([q, k, v]))


def test_recipe_from_full_nemo_config_matches_shipped_recipe() -> None:
    text = (ROOT / "recipes/nest_fast_conformer.yaml").read_text()
    nemo = yaml.safe_load(text)
    for key in ("preprocessor", "masking", "quantizer", "encoder", "decoder", "loss"):
        nemo["model"][key]["_target_"] = {"preprocessor": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                                          "masking": "nemo.collections.asr.modules.RandomBlockMasking",
                                          "quantizer": "nemo.collections.asr.modules.RandomProjectionVectorQuantizer",
                                          "encoder": "nemo.collections.asr.modules.ConformerEncoder",
                                          "decoder": "nemo.collections.asr.modules.MultiSoftmaxDecoder",
                                          "loss": "nemo.collections.asr.losses.MultiMLMLoss"}[key]
        del nemo["model"][key]["name"]
    nemo["model"]["spec_augment"] = {"_target_": "x.SpectrogramAugmentation", "freq_masks": 0, "time_masks": 0}
    nemo["model"]["train_ds"]["bucketing_strategy"] = "synced_randomized"
    converted = recipe_from_nemo_config(nemo)
    shipped = nestkit.load_recipe(ROOT / "recipes/nest_fast_conformer.yaml")
    assert model_section(converted) == {k: v for k, v in shipped.model_section.items()}
    assert "bucketing_strategy" not in converted["model"]["train_ds"]
    nemo["model"]["spec_augment"]["time_masks"] = 2
    with pytest.raises(RecipeError, match="spec_augment"):
        recipe_from_nemo_config(nemo)
