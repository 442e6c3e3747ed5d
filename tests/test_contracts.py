"""Typed contracts: which optional capabilities a component has, and the one-line errors when a
recipe or a command needs one the chosen component lacks (post_conv masking, compile and
activation checkpointing, extract --layer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import Field
from typer.testing import CliRunner

import nestkit
import nestkit.plugins
from conftest import plugins_env, run_nestkit
from nestkit.contracts import BLOCKS, CAPABILITIES, LAYERS, SUBSAMPLING, declared_capabilities
from nestkit.errors import NestkitError, RecipeError, RecipeErrors
from nestkit.plugins import load_registry
from nestkit.registry import Registry
from nestkit.train.setup import check_block_options


class ForwardOnlyConfig(nestkit.ComponentConfig):
    feat_in: int = Field(16, gt=0)
    d_model: int = Field(32, gt=0)
    subsampling_factor: int = Field(8, gt=0)


class ForwardOnlyEncoder(torch.nn.Module):
    """What every encoder must do and nothing more: (B, feat_in, T) -> (B, d_model, T // factor)."""

    def __init__(self, cfg: ForwardOnlyConfig) -> None:
        super().__init__()
        self.factor = cfg.subsampling_factor
        self.conv = torch.nn.Conv1d(cfg.feat_in, cfg.d_model, cfg.subsampling_factor, stride=cfg.subsampling_factor)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(feats), lengths // self.factor


def _unannotated(cfg: ForwardOnlyConfig):  # noqa: ANN202 - on purpose: no return type to read
    return ForwardOnlyEncoder(cfg)


class _WithBlocks(ForwardOnlyEncoder):
    def blocks(self) -> list[torch.nn.Module]:
        return [self.conv]


def _keywords(*, feat_in: int, d_model: int, subsampling_factor: int):  # noqa: ANN202 - nestkit 0.1's style, unannotated
    return _WithBlocks(ForwardOnlyConfig(feat_in=feat_in, d_model=d_model, subsampling_factor=subsampling_factor))


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The installed components plus the forward-only encoder (as a plugin would register it)."""
    reg = load_registry()
    reg.add(nestkit.Component("encoder", "forward_only", ForwardOnlyEncoder, ForwardOnlyConfig, "test double"),
            nestkit.Component("encoder", "unannotated", _unannotated, ForwardOnlyConfig, "test double"),
            provider="contract-doubles")
    with pytest.warns(DeprecationWarning):
        reg.add(nestkit.Component("encoder", "keywords", _keywords, ForwardOnlyConfig, "test double"), provider="contract-doubles")
    return reg


def nest_section(encoder: dict | None = None, **model: object) -> dict:
    return {
        "name": "nest", "num_classes": 16, "code_dim": 8, **model,
        "preprocessor": {"name": "mel_spectrogram", "features": 16},
        "masking": {"name": "random_block", "feat_in": 16, "block_size": 16, "allow_overlap": True},
        "quantizer": {"name": "random_projection", "feat_in": 16, "code_dim": 8, "num_classes": 16, "combine_time_steps": 8},
        "encoder": encoder or {"name": "fast_conformer", "feat_in": 16, "n_layers": 2, "d_model": 32, "n_heads": 2,
                               "subsampling_conv_channels": 8},
        "decoder": {"name": "multi_softmax", "feat_in": 32, "num_classes": 16},
        "loss": {"name": "multi_mlm", "combine_time_steps": 8},
    }


def test_capabilities_are_read_from_the_class_and_checked_on_the_built_component(registry: Registry) -> None:
    conformer = registry.get("encoder", "fast_conformer")
    assert declared_capabilities(conformer) == {"SubsamplingEncoder": True, "BlockEncoder": True, "LayeredEncoder": True}
    assert declared_capabilities(registry.get("encoder", "forward_only")) == dict.fromkeys(
        ("SubsamplingEncoder", "BlockEncoder", "LayeredEncoder"), False)
    assert declared_capabilities(registry.get("encoder", "unannotated")) is None  # no class to read
    assert declared_capabilities(registry.get("model", "nest")) == {"EncoderModel": True}  # build_nest -> NestModel
    assert declared_capabilities(registry.get("decoder", "multi_softmax")) == {}  # the kind has none
    assert SUBSAMPLING.members == ("subsample", "encode", "d_model", "subsampling_factor")
    built = registry.build("encoder", {"name": "unannotated"})
    assert all(c.missing(built) for c in CAPABILITIES if c.kind == "encoder")
    model = registry.build("model", nest_section())
    assert not any(c.missing(model.encoder) for c in (SUBSAMPLING, BLOCKS, LAYERS))


def test_post_conv_masking_needs_subsample_and_encode(registry: Registry) -> None:
    section = nest_section({"name": "forward_only"}, mask_position="post_conv")
    with pytest.raises(RecipeError) as caught:
        registry.build("model", section, key="model")
    assert str(caught.value) == ("model.encoder: encoder forward_only has no subsample/encode: mask_position post_conv "
                                 "needs them (use model.mask_position: pre_conv; see nestkit.SubsamplingEncoder)")
    # the same encoder trains with pre_conv masking: forward is all a NEST encoder must have
    model = registry.build("model", nest_section({"name": "forward_only"}))
    audio = torch.randn(2, 16000)
    out = model(audio, torch.tensor([16000, 12000]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.encoder.conv.weight.grad is not None


def test_compile_and_activation_checkpointing_need_encoder_blocks(registry: Registry) -> None:
    model = registry.build("model", nest_section({"name": "forward_only"}))
    with pytest.raises(RecipeErrors) as caught:
        check_block_options(model, compile=True, activation_checkpointing=-1)
    assert [str(e) for e in caught.value.errors] == [
        "trainer.activation_checkpointing: encoder ForwardOnlyEncoder has no blocks: activation checkpointing needs it "
        "(set it to 0; see nestkit.BlockEncoder)",
        "trainer.compile: encoder ForwardOnlyEncoder has no blocks: compiling needs it (set it to false; see nestkit.BlockEncoder)",
    ]
    check_block_options(model, compile=None, activation_checkpointing=0)  # nothing asked: nothing needed
    check_block_options(registry.build("model", nest_section()), compile=True, activation_checkpointing=-1)


def test_extract_layer_needs_forward_layers_and_extract_without_it_works(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nestkit.data import demo_manifests
    from nestkit.extract import extract_features
    from nestkit.pretrained import save_model

    val = Path(demo_manifests()[1])
    lines = [json.loads(line) for line in val.read_text().splitlines()[:2]]
    manifest = tmp_path / "two.json"
    manifest.write_text("".join(json.dumps({**e, "audio_filepath": str(val.parent / e["audio_filepath"])}) + "\n" for e in lines))
    recipe = nestkit.load_recipe({"model": nest_section({"name": "forward_only"})}, registry=registry)
    checkpoint = save_model(tmp_path / "model.ckpt", recipe.build_model(), recipe)
    monkeypatch.setattr(nestkit.plugins, "get_registry", lambda: registry)  # checkpoints rebuild from the installed plugins
    with pytest.raises(NestkitError) as caught:
        extract_features(checkpoint, str(manifest), tmp_path / "layers", layers=[0], progress=False)
    assert str(caught.value) == ("encoder forward_only has no blocks/forward_layers: --layer needs them "
                                 "(leave out --layer for the final output; see nestkit.LayeredEncoder)")
    report = extract_features(checkpoint, str(manifest), tmp_path / "final", progress=False)
    shapes = [np.load(tmp_path / "final" / f"{Path(e['audio_filepath']).stem}.npy").shape for e in lines]
    assert report.written == 2 and [s[0] for s in shapes] == [32, 32] and sum(s[1] for s in shapes) == report.frames


def test_describe_lists_the_capabilities(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from nestkit.cli import describe
    from nestkit.cli.main import app

    monkeypatch.setattr(describe, "loaded_registry", lambda: registry)
    result = CliRunner().invoke(app, ["describe", "encoder", "forward_only"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "contract: nestkit.Encoder (see CONTRIBUTING.md, 'Component contracts')" in lines
    assert "  no  SubsamplingEncoder (subsample, encode, d_model, subsampling_factor): for model.mask_position post_conv" in lines
    assert "  no  LayeredEncoder (blocks, forward_layers): for nestkit extract --layer, nestkit probe" in lines
    conformer = CliRunner().invoke(app, ["describe", "encoder", "fast_conformer"], env={"COLUMNS": "200"}).output
    assert "  yes BlockEncoder (blocks): for trainer.compile, trainer.activation_checkpointing" in conformer.splitlines()
    unknown = CliRunner().invoke(app, ["describe", "encoder", "unannotated"], env={"COLUMNS": "200"}).output
    assert "capabilities: unknown (annotate the factory's return type with the class it builds)" in unknown.splitlines()


def test_describe_does_not_deny_capabilities_of_a_keyword_style_factory(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """nestkit 0.1's factory(*, fields) is called through an adapter annotated `-> Any`: that names
    no class, so describe cannot know, while the check finds the blocks the built encoder has."""
    from nestkit.cli import describe
    from nestkit.cli.main import app
    from nestkit.testing import check_component

    monkeypatch.setattr(describe, "loaded_registry", lambda: registry)
    result = CliRunner().invoke(app, ["describe", "encoder", "keywords"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "capabilities: unknown (annotate the factory's return type with the class it builds)"
    assert check_component("encoder", "keywords", registry=registry).capabilities == ["BlockEncoder"]


def test_public_names_cover_what_plugin_components_import() -> None:
    """Plugin components need nothing of nestkit's internals: the loss base, the batch and every
    contract are public names."""
    from nestkit.components.loss import MaskedTokenLoss
    from nestkit.contracts import KIND_CONTRACTS
    from nestkit.data.batch import AudioBatch, BatchAugmentor

    assert nestkit.MaskedTokenLoss is MaskedTokenLoss and nestkit.AudioBatch is AudioBatch
    assert nestkit.BatchAugmentor is BatchAugmentor  # one protocol, re-exported where batches live
    assert set(KIND_CONTRACTS) == set(nestkit.registry.KINDS)
    assert all(getattr(nestkit, p.__name__) is p for p in KIND_CONTRACTS.values())
    for plugin in Path(__file__).resolve().parents[1].glob("plugins/*/nestkit_*/*.py"):
        imports = [line.strip() for line in plugin.read_text().splitlines() if line.lstrip().startswith("from nestkit.")]
        internal = [line for line in imports if line.startswith("from nestkit.components") or "AudioBatch" in line or "Augmentor" in line]
        assert internal == [], plugin


def test_validate_refuses_compile_and_checkpointing_for_a_plugin_encoder_without_blocks(plugin_site: Path) -> None:
    """Through the executable, with tests/plugins/toy installed (its encoder has forward only;
    tests/test_plugin_swap.py runs post_conv and extract --layer with such an encoder)."""
    toy = "model.encoder={name: toy_strided, feat_in: 80, d_model: 96, subsampling_factor: 8}"
    env = plugins_env(plugin_site, "toy")
    blocks = run_nestkit("validate", "recipes/nest_demo.yaml", toy, "trainer.activation_checkpointing=-1", "trainer.compile=true", "-q", env=env)
    assert blocks.returncode == 2, blocks.stderr
    assert blocks.stderr.splitlines() == [
        "error: recipes/nest_demo.yaml: trainer.activation_checkpointing: encoder toy_strided has no blocks: "
        "activation checkpointing needs it (set it to 0; see nestkit.BlockEncoder)",
        "error: recipes/nest_demo.yaml: trainer.compile: encoder toy_strided has no blocks: compiling needs it "
        "(set it to false; see nestkit.BlockEncoder)",
    ]
