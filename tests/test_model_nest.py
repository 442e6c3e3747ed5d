"""The NEST model: outputs, extraction, post-conv masking, recipes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import nestkit
from nestkit.models.nest import NestOutput

from _nemo_ref import ROOT
from test_model_components import nest_section

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def audio_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lengths = torch.tensor([16000, 11000, 7000])
    audio = torch.randn(3, 16000) * 0.1 * (torch.arange(16000)[None, :] < lengths[:, None])
    return audio, lengths


def test_forward_outputs_and_metrics() -> None:
    model = nestkit.build("model", nest_section(subsampling_conv_channels=8)).train()
    audio, lengths = audio_batch()
    out = model(audio, lengths, audio + 0.01 * torch.randn_like(audio), lengths)
    assert isinstance(out, NestOutput)
    assert out.masks.shape == (3, 16, 112) and out.encoded.shape == (3, 32, 14)
    assert out.log_probs.shape == (3, 14, 32, 1) and out.tokens.shape == (3, 14, 1)
    assert out.encoded_len.tolist() == [13, 9, 6]
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    assert 0 <= out.masked_accuracy.item() <= 1 and out.masked_accuracy.dim() == 0
    expected_fraction = out.masks[:, 0].sum() / torch.tensor([100, 68, 43]).sum()
    torch.testing.assert_close(out.masked_fraction, expected_fraction)
    out.loss.backward()
    assert model.quantizer.proj.weight.grad is None and model.masking.mask_embedding.grad is None
    assert model.encoder.layers[0].self_attn.qkv.weight.grad is not None


@pytest.mark.parametrize(("args", "message"), [
    ((torch.zeros(16000), torch.tensor([16000])), "audio is a tensor (16000,) torch.float32, expected (B, T) float samples"),
    ((torch.zeros(3, 16000, dtype=torch.int16), torch.tensor([1, 2, 3])), "audio is a tensor (3, 16000) torch.int16"),
    ((torch.zeros(3, 16000), torch.tensor([1.0, 2.0, 3.0])), "audio_len is a tensor (3,) torch.float32, expected (3,) integer"),
    ((torch.zeros(3, 16000), [16000] * 3), "audio_len is a list of 3, expected (3,) integer sample counts"),
    ((torch.zeros(3, 16000), torch.tensor([1, 2, 3]), torch.zeros(2, 16000)), "noisy_audio_len is a tensor (3,) torch.int64, expected (2,)"),
])
def test_python_callers_get_the_input_contract_not_a_conv_error(args: tuple, message: str) -> None:
    model = nestkit.build("model", nest_section())
    with pytest.raises(ValueError, match=f"^NEST model input: {re.escape(message)}"):
        model(*args)


def test_forward_without_noisy_audio_and_without_mask() -> None:
    model = nestkit.build("model", nest_section()).eval()
    audio, lengths = audio_batch()
    with torch.no_grad():
        out = model(audio, lengths, apply_mask=False)
        feats, feats_len = model.preprocessor(audio, lengths)
        encoded, _ = model.encoder(feats, feats_len)
    torch.testing.assert_close(out.encoded, encoded)
    assert out.loss.item() == 0.0 and out.masked_fraction.item() == 0.0


def test_extract_returns_layers_in_eval_mode() -> None:
    section = nest_section()
    section["encoder"] = {**section["encoder"], "n_layers": 3}
    model = nestkit.build("model", section).train()
    audio, lengths = audio_batch()
    layers, lens = model.extract(audio, lengths, layers=[0, 2])
    final, lens2 = model.extract(audio, lengths)
    assert model.training  # mode restored
    assert [t.shape for t in layers] == [torch.Size([3, 32, 14])] * 2
    assert torch.equal(layers[1], final[0]) and torch.equal(lens, lens2)


def test_post_conv_masking_trains() -> None:
    section = nest_section(subsampling_conv_channels=8)
    section["mask_position"] = "post_conv"
    model = nestkit.build("model", section).train()
    assert model.quantizer.proj.in_features == 32 and model.loss.combine_time_steps == 1
    assert model.masking.mask_embedding.shape == (32,)
    audio, lengths = audio_batch()
    torch.manual_seed(3)
    model.masking.mask_prob = 0.3
    out = model(audio, lengths)
    assert out.masks.shape == (3, 32, 14) and out.tokens.shape == (3, 14, 1)
    assert out.masks.any() and torch.isfinite(out.loss) and out.loss.item() > 0
    out.loss.backward()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = nestkit.load_recipe(path)
    assert recipe.model_config.mask_position == "pre_conv"
    assert path.read_text().startswith(f"# nestkit train {path.relative_to(ROOT)}")


def test_demo_model_builds_small() -> None:
    model = nestkit.build_model(ROOT / "recipes/nest_demo.yaml")
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


class _Broken(torch.nn.Module):
    """Wraps a real part and breaks its promise the way plugin authors have: ``how`` says which."""

    def __init__(self, real: torch.nn.Module, how: str) -> None:
        super().__init__()
        self.real, self.how = real, how

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        out = self.real(*args, **kwargs)
        if self.how == "time_first":
            return out[0].transpose(1, 2), out[1]
        if self.how == "one_tensor":
            return out[0]
        if self.how == "float64":
            return out[0].double(), out[1]
        if self.how == "float_lengths":
            return out[0], out[1].float()
        if self.how == "detached":
            return out.detach()
        return out.reshape(1).expand(3)  # "per_utterance"


@pytest.mark.parametrize(("part", "how", "message"), [
    ("encoder", "time_first", "model.encoder (nestkit:fast_conformer): returned encoded (3, 14, 32), expected (B=3, 32, T') channels first"),
    ("encoder", "one_tensor", "model.encoder (nestkit:fast_conformer): returned a tensor (3, 32, 14), expected a pair (encoded"),
    ("encoder", "float64", "model.encoder (nestkit:fast_conformer): returned encoded as torch.float64, expected float32"),
    ("encoder", "float_lengths", "model.encoder (nestkit:fast_conformer): returned lengths (3,) torch.float32, expected (3,) integers"),
    ("loss", "detached", "model.loss (nestkit:multi_mlm): returned a loss without gradient"),
    ("loss", "per_utterance", "model.loss (nestkit:multi_mlm): returned a tensor (3,), expected a scalar floating-point loss"),
])
def test_a_component_breaking_its_contract_is_one_line_naming_it(part: str, how: str, message: str) -> None:
    """Not a matmul or unpacking error three calls later (what a plugin author met before)."""
    from nestkit.plugin_errors import ComponentError

    model = nestkit.build("model", nest_section()).train()
    setattr(model, part, _Broken(getattr(model, part), how))
    audio, lengths = audio_batch()
    with pytest.raises(ComponentError) as caught:
        model(audio, lengths)
    assert str(caught.value).startswith(message) and caught.value.exit_code == 1, str(caught.value)
