"""The conformance checker: nestkit.testing.check_component and `nestkit check-plugin`.

The built-ins and both packages in plugins/ pass; components that break their kind's promise
fail the check that names the broken promise."""

from __future__ import annotations

import dataclasses
import re
from importlib.metadata import EntryPoint

import pytest
import torch
from pydantic import Field
from typer.testing import CliRunner

import nestkit
from conftest import run_nestkit
from nestkit.cli import check_plugin
from nestkit.cli.main import app
from nestkit.components.loss import MaskedTokenLoss
from nestkit.plugins import load_registry
from nestkit.registry import Registry
from nestkit.testing import ComponentCheckError, check_component, examples

DISTS = ("nestkit", "nestkit-augment", "nestkit-bestrq-extras")


class _Config(nestkit.ComponentConfig):
    feat_in: int = Field(16, gt=0)
    d_model: int = Field(32, gt=0)


class LeakyEncoder(torch.nn.Module):
    """Adds the mean over all frames, padding included: valid outputs depend on the padding."""

    def __init__(self, cfg: _Config) -> None:
        super().__init__()
        self.proj = torch.nn.Conv1d(cfg.feat_in, cfg.d_model, 1)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(feats)
        return x + x.mean(2, keepdim=True), lengths


class Float64Encoder(LeakyEncoder):
    """float64 output: the decoder's float32 weights refuse it in training."""

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(feats).double(), lengths


class NoisyEncoder(LeakyEncoder):
    """Adds noise in eval mode too (not a padding leak, though the padding check used to say so)."""

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(feats)
        return x + 0.1 * torch.randn_like(x), lengths


class TensorOnlyEncoder(LeakyEncoder):
    """Returns the encoded tensor without the lengths."""

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.proj(feats)


class DetachedLoss(MaskedTokenLoss):
    """A loss value with no gradient: training would never update anything."""

    def forward(self, *, masks, log_probs, tokens, encoded_len=None):  # noqa: ANN001, ANN201
        mask, log_probs, tokens = self.aligned(masks, log_probs, tokens)
        return -(log_probs.gather(2, tokens.long().unsqueeze(2)).squeeze(2) * mask[..., None]).sum().detach() / mask.sum().clamp(min=1)


class EveryTokenLoss(MaskedTokenLoss):
    """Scores every token, masked or not."""

    def forward(self, *, masks, log_probs, tokens, encoded_len=None):  # noqa: ANN001, ANN201
        _, log_probs, tokens = self.aligned(masks, log_probs, tokens)
        return -log_probs.gather(2, tokens.long().unsqueeze(2)).mean()


class GlobalRandomAugmentor:
    """Draws from torch's global generator instead of the one it is given."""

    def __init__(self, cfg: nestkit.ComponentConfig) -> None:
        pass

    def __call__(self, batch, generator):  # noqa: ANN001, ANN204
        noisy = batch.audio + 0.1 * torch.randn(batch.audio.shape) * (batch.audio != 0)
        return dataclasses.replace(batch, noisy_audio=noisy)


@pytest.fixture(scope="module")
def broken() -> Registry:
    reg = load_registry()
    reg.add(nestkit.Component("encoder", "leaky", LeakyEncoder, _Config, "test double"),
            nestkit.Component("loss", "every_token", lambda cfg: EveryTokenLoss(1, 0.8), nestkit.ComponentConfig, "test double"),
            nestkit.Component("augmentor", "global_random", GlobalRandomAugmentor, nestkit.ComponentConfig, "test double"),
            nestkit.Component("encoder", "float64", Float64Encoder, _Config, "test double"),
            nestkit.Component("encoder", "noisy", NoisyEncoder, _Config, "test double"),
            nestkit.Component("encoder", "tensor_only", TensorOnlyEncoder, _Config, "test double"),
            nestkit.Component("loss", "detached", lambda cfg: DetachedLoss(1, 0.8), nestkit.ComponentConfig, "test double"),
            provider="broken-doubles")
    return reg


@pytest.mark.parametrize(("kind", "name", "check", "detail"), [
    ("encoder", "leaky", "padding", "valid output frames when the features past each length change: output 0 differs by up to"),
    ("loss", "every_token", "masked tokens only", "the loss has a gradient at tokens that aligned() does not score"),
    ("augmentor", "global_random", "generator", "one generator seed under two global seeds (randomness must come from the generator)"),
    ("encoder", "float64", "shapes", "output is torch.float64, expected float32 (the next part's weights are float32)"),
    ("encoder", "noisy", "repeatable", "two calls on the same input in eval mode (draw random numbers only when self.training)"),
    ("encoder", "tensor_only", "shapes", "returned Tensor, expected a pair (encoded, lengths)"),
    ("loss", "detached", "backward", "the loss has no gradient: it is detached from log_probs"),
])
def test_a_broken_promise_fails_the_check_that_names_it(broken: Registry, kind: str, name: str, check: str, detail: str) -> None:
    with pytest.raises(ComponentCheckError) as caught:
        check_component(kind, name, registry=broken)
    assert caught.value.check == check and caught.value.detail.startswith(detail), str(caught.value)
    assert str(caught.value).startswith(f"{kind} broken-doubles:{name}: check '{check}' failed: ")
    assert isinstance(caught.value, AssertionError)  # pytest shows it as a failed assertion


def test_report_of_a_conforming_component_and_a_config_given() -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    report = check_component("encoder", "fast_conformer", {"feat_in": 8, "n_layers": 1, "d_model": 16, "n_heads": 2,
                                                           "subsampling_factor": 4, "subsampling_conv_channels": 4})
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is left alone
    assert report.name == "nestkit:fast_conformer" and report.section["d_model"] == 16
    assert report.passed[:6] == ["build", "shapes", "repeatable", "padding", "autocast", "backward"]
    assert report.capabilities == ["SubsamplingEncoder", "BlockEncoder", "LayeredEncoder"] and report.skipped == {}
    with pytest.raises(ComponentCheckError, match=r"^encoder nestkit:fast_conformer: check 'build' failed: .*n_heads \(3\) must divide d_model \(16\)"):
        check_component("encoder", "fast_conformer", {"feat_in": 8, "n_layers": 1, "d_model": 16, "n_heads": 3})


def test_check_plugin_passes_the_builtins_and_both_plugin_packages() -> None:
    """What CI asserts: every component of the three distributions conforms (in-process, so the
    suite pays torch's start-up once)."""
    result = CliRunner().invoke(app, ["check-plugin", *DISTS], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {tuple(cell.strip() for cell in line.strip("│ ").split("│")[:4]) for line in result.output.splitlines() if "│" in line}
    expected = {(c.provider, c.kind, c.name, "ok") for c in nestkit.list_components() if c.provider in DISTS}
    assert {p for p, *_ in expected} == set(DISTS) and expected <= rows, result.output
    assert f"{len(expected)} components checked: {len(expected)} passed, 0 failed" in result.output


def test_check_plugin_exit_codes(broken: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = run_nestkit("check-plugin", "nestkit-augmnet")
    assert unknown.returncode == 2 and unknown.stdout == "" and len(unknown.stderr.splitlines()) == 1, unknown.stderr
    assert unknown.stderr.startswith("error: unknown distribution 'nestkit-augmnet'; did you mean 'nestkit-augment'? (installed nestkit plugins: ")
    assert all(dist in unknown.stderr for dist in DISTS)
    monkeypatch.setattr(check_plugin, "loaded_registry", lambda: broken)
    monkeypatch.setattr(check_plugin, "_installed_plugins", lambda: {"broken-doubles": "broken-doubles"})
    failing = CliRunner().invoke(app, ["check-plugin", "broken_doubles"], env={"COLUMNS": "200"})  # names compare as pip does
    assert failing.exit_code == 1, failing.output
    assert "7 components checked: 0 passed, 7 failed" in failing.output
    checks = ("padding", "masked tokens only", "generator", "shapes", "repeatable", "backward")
    assert all(f"FAILED │ {check}" in failing.output for check in checks), failing.output


@pytest.fixture()
def answers_badly(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """Conforming encoders whose plugin (tests/_plugin_doubles.py: CheckSection) answers
    nestkit_check_section with an exception, a string, or a section with an unknown field."""
    reg = Registry()
    reg.add(*(nestkit.Component("encoder", name, _Conforming, _Config, "test double") for name in ("raises", "garbage", "unknown_field")),
            provider="hook-doubles")
    plugin = EntryPoint(name="check_section", value="_plugin_doubles:CheckSection", group="nestkit")
    monkeypatch.setattr(examples, "_plugins_by_provider", lambda: {"hook-doubles": [plugin]})
    return reg


class _Conforming(LeakyEncoder):
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(feats), lengths


@pytest.mark.parametrize(("name", "detail"), [
    ("raises", "nestkit_check_section raised RuntimeError: x"),
    ("garbage", "nestkit_check_section returned str ('garbage'), expected a mapping of the section's fields, or None for the defaults"),
    ("unknown_field", "nestkit_check_section returned an invalid section: encoder: unknown field 'bogus'"),
])
def test_a_bad_check_section_answer_names_the_plugin_and_the_hook(answers_badly: Registry, name: str, detail: str) -> None:
    with pytest.raises(ComponentCheckError) as caught:
        check_component("encoder", name, registry=answers_badly)
    assert caught.value.check == "build" and caught.value.detail == f"plugin 'check_section' (hook-doubles): {detail}"


def test_trace_shows_check_section_calls(answers_badly: Registry, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NESTKIT_TRACE_PLUGINS", "1")
    with pytest.raises(ComponentCheckError):
        check_component("encoder", "garbage", registry=answers_badly)
    call, end = capsys.readouterr().err.splitlines()
    assert call == "nestkit: nestkit_check_section -> plugin 'check_section' (hook-doubles): encoder 'garbage'"
    assert re.fullmatch(r"nestkit: nestkit_check_section <- plugin 'check_section': returned str \(\d+\.\d ms\)", end), end
