"""Plugin discovery through real pip-installed distributions and entry points."""

from __future__ import annotations

import json
import re
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from conftest import plugins_env, run_nestkit, run_python

import nestkit.plugins
from nestkit.plugins import load_registry, warn_failures
from nestkit.registry import KINDS


def test_installed_plugin_is_listed_with_its_provider(plugin_site: Path) -> None:
    result = run_nestkit("list-components", "--json", env=plugins_env(plugin_site, "toy", "broken"))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    toy = [c for c in payload["components"] if c["name"] == "toy_strided"]
    assert toy == [
        {
            "kind": "encoder",
            "name": "toy_strided",
            "provider": "nestkit-toy",
            "version": "0.3.1",
            "summary": "one strided convolution (test plugin)",
        }
    ]
    builtin = {c["provider"] for c in payload["components"] if c["name"] == "adamw"}
    assert builtin == {"nestkit"}


def test_broken_plugin_warns_once_and_cli_keeps_working(plugin_site: Path) -> None:
    result = run_nestkit("list-components", "--json", env=plugins_env(plugin_site, "toy", "broken"))
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1, result.stderr
    assert "plugin 'broken' (nestkit-broken) failed to load" in warnings[0]
    assert "nestkit_dependency_that_does_not_exist" in warnings[0]
    failed = json.loads(result.stdout)["failed_plugins"]
    assert [f["plugin"] for f in failed] == ["broken"]


def _python_with_toy_and_broken(plugin_site: Path, code: str) -> str:
    """What ``python -c code`` prints with the toy and the broken plugin installed."""
    result = run_python("-c", code, env=plugins_env(plugin_site, "toy", "broken"), timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_plugin_component_builds_from_a_section(plugin_site: Path) -> None:
    code = (
        "import torch, nestkit\n"
        "enc = nestkit.build('encoder', {'name': 'nestkit-toy:toy_strided', 'feat_in': 80, 'd_model': 16})\n"
        "y, n = enc(torch.zeros(2, 80, 64), torch.tensor([64, 40]))\n"
        "print(tuple(y.shape), n.tolist())\n"
    )
    assert _python_with_toy_and_broken(plugin_site, code) == "(2, 16, 8) [8, 5]"


def test_python_users_learn_that_a_plugin_failed_when_its_component_is_missing(plugin_site: Path) -> None:
    """The CLI warns about a plugin that failed to load; in Python the warning is easy to miss, so
    the unknown-component error itself names the failure."""
    code = (
        "import nestkit\n"
        "try:\n"
        "    nestkit.build('encoder', {'name': 'broken_encoder'})\n"
        "except nestkit.RecipeError as err:\n"
        "    print(err)\n"
    )
    line = _python_with_toy_and_broken(plugin_site, code)
    assert line.startswith("encoder.name: unknown encoder 'broken_encoder'") and "; plugin broken (nestkit-broken" in line, line
    assert "failed to load: ModuleNotFoundError" in line and "nestkit_dependency_that_does_not_exist" in line, line


def test_plugins_can_be_disabled_by_name(plugin_site: Path) -> None:
    result = run_nestkit(
        "list-components", "--json", env=plugins_env(plugin_site)  # NESTKIT_DISABLE_PLUGINS names all four
    )
    assert result.returncode == 0
    assert result.stderr.strip() == ""
    assert not [c for c in json.loads(result.stdout)["components"] if c["name"] == "toy_strided"]


def test_describe_shows_plugin_fields(plugin_site: Path) -> None:
    result = run_nestkit("describe", "encoder", "toy_strided", env=plugins_env(plugin_site, "toy", "broken"))
    assert result.returncode == 0, result.stderr
    for field, default in (("feat_in", "80"), ("d_model", "64"), ("subsampling_factor", "8")):
        assert any(field in line and default in line for line in result.stdout.splitlines()), result.stdout
    assert "nestkit-toy 0.3.1" in result.stdout


def _entry_points(*names: str) -> list[EntryPoint]:
    return [EntryPoint(name=name.lower(), value=f"_plugin_doubles:{name}", group="nestkit") for name in names]


def test_a_failing_plugin_registers_nothing_and_the_others_all_register() -> None:
    registry = load_registry(_entry_points("Good", "Raising", "Invalid", "Unmarked"))
    assert [(c.kind, c.name, c.provider) for c in registry] == [("encoder", "good_enc", "good")]
    assert {f.plugin: f.error for f in registry.failures} == {
        "raising": "RuntimeError: half-way through",
        "invalid": "ValueError: invalid registers 'typo' under unknown kind 'decodr'; kinds are " + ", ".join(KINDS),
        "unmarked": "TypeError: implements no nestkit hook; mark nestkit_register_components with @nestkit.hookimpl",
    }
    assert list(registry.plugins) == ["good"]


def test_trace_prints_each_hook_call_with_its_plugin(plugin_site: Path) -> None:
    env = {**plugins_env(plugin_site, "toy", "broken"), "NESTKIT_TRACE_PLUGINS": "1"}
    result = run_nestkit("list-components", "--json", env=env)
    assert result.returncode == 0, result.stderr
    trace = [line for line in result.stderr.splitlines() if line.startswith("nestkit: nestkit_")]
    loading = [line for line in result.stderr.splitlines() if line.startswith("nestkit: plugin ")]
    assert loading == [  # an import error calls no hook: its own line says why the plugin is missing
        "nestkit: plugin 'broken' (nestkit-broken 0.0.1) failed to load: ModuleNotFoundError: "
        "No module named 'nestkit_dependency_that_does_not_exist'",
        "nestkit: plugin 'clash' (nestkit-clash 0.1.0) skipped: NESTKIT_DISABLE_PLUGINS names it",
        "nestkit: plugin 'tiny_lstm' (nestkit-tiny-lstm 0.1.0) skipped: NESTKIT_DISABLE_PLUGINS names it",
    ]
    calls = [re.fullmatch(r"nestkit: nestkit_register_components -> plugin '(\S+)' \((.+)\)", line) for line in trace[::2]]
    ends = [re.fullmatch(r"nestkit: nestkit_register_components <- plugin '(\S+)': (\d+) components \(\d+\.\d ms\)", line) for line in trace[1::2]]
    assert all(calls) and all(ends), trace
    assert [m.group(1) for m in calls] == [m.group(1) for m in ends]  # each call, then how it ended
    traced = {m.group(1): m.group(2) for m in calls}
    counted = {m.group(1): int(m.group(2)) for m in ends}
    assert calls[0].group(1) == "builtin" and traced["builtin"] == "nestkit 0.1.0"
    assert traced["toy"] == "nestkit-toy 0.3.1" and counted["toy"] == 1
    components = json.loads(result.stdout)["components"]
    assert counted["builtin"] == len([c for c in components if c["provider"] == "nestkit"])
    assert "broken" not in traced  # it fails on import: no hook call to trace
    quiet = run_nestkit("list-components", "--json", env=plugins_env(plugin_site, "toy", "broken"))
    assert not [line for line in quiet.stderr.splitlines() if line.startswith("nestkit: ")]


def test_a_component_no_recipe_could_use_fails_its_plugin_in_one_line() -> None:
    names = ("Good", "ColonName", "EmptyName", "NoFactory", "PlainConfig", "NotAComponent")
    registry = load_registry(_entry_points(*names))
    assert [(c.kind, c.name) for c in registry] == [("encoder", "good_enc")]
    assert {f.plugin: f.error for f in registry.failures} == {
        "colonname": "ValueError: colonname registers encoder 'my:enc': component names cannot contain ':' "
                     "(recipes write 'provider:name')",
        "emptyname": "ValueError: emptyname registers encoder '': a component needs a non-empty name",
        "nofactory": "ValueError: nofactory registers encoder 'no_factory': factory must be callable "
                     "(the class or function that builds it), got None",
        "plainconfig": "ValueError: plainconfig registers encoder 'plain_config': config must subclass "
                       "nestkit.ComponentConfig (a pydantic model), got _Plain, a plain pydantic BaseModel (it would ignore misspelt keys)",
        "notacomponent": "TypeError: register() expects nestkit.Component, got str",
    }


def test_a_hook_returning_a_value_is_a_warning_naming_the_plugin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = load_registry(_entry_points("ReturnsList"))
    assert [c.name for c in registry] == ["registered_enc"] and registry.failures == []
    line = ("plugin 'returnslist' (returnslist): nestkit_register_components returned list, which nestkit ignores; "
            "pass each component to register(...)")
    assert registry.warnings == [line]
    monkeypatch.setattr(nestkit.plugins, "_warned", False)
    warn_failures(registry)
    assert capsys.readouterr().err == f"warning: {line}\n"


def test_disabled_plugins_are_recorded_and_a_name_matching_none_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTKIT_DISABLE_PLUGINS", "good, raisin,")
    registry = load_registry(_entry_points("Good", "Raising"))
    assert registry.disabled == {"good": "good"} and list(registry) == []
    assert registry.warnings == ["NESTKIT_DISABLE_PLUGINS names 'raisin', which is no installed plugin's entry-point "
                                 "name; did you mean 'raising'? (installed plugins: good, raising)"]


def test_check_plugin_of_a_disabled_distribution_says_it_is_disabled(plugin_site: Path) -> None:
    env = plugins_env(plugin_site, "tiny_lstm")  # disables toy
    env["NESTKIT_DISABLE_PLUGINS"] += ",tiny_lstmm,Nestkit_Tiny.LSTM"  # a typo; a distribution's name, spelt as pip allows
    result = run_nestkit("check-plugin", "nestkit-toy", env=env)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    by_distribution, warning, error = result.stderr.splitlines()
    assert warning.startswith("warning: NESTKIT_DISABLE_PLUGINS names 'tiny_lstmm', which is no installed plugin's "
                              "entry-point name; did you mean 'tiny_lstm'? (installed plugins: "), warning
    assert by_distribution == ("warning: NESTKIT_DISABLE_PLUGINS names 'Nestkit_Tiny.LSTM', which is no installed plugin's "
                               "entry-point name; distribution Nestkit_Tiny.LSTM's plugins are tiny_lstm")
    assert error == "error: distribution 'nestkit-toy' registers no component: NESTKIT_DISABLE_PLUGINS disables its plugin 'toy'"
