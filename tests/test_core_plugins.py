"""Plugin discovery through real pip-installed distributions and entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import run_nestkit


def test_installed_plugin_is_listed_with_its_provider(plugin_site: Path) -> None:
    result = run_nestkit("list-components", "--json", env={"PYTHONPATH": str(plugin_site)})
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
    result = run_nestkit("list-components", "--json", env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1, result.stderr
    assert "plugin 'broken' (nestkit-broken) failed to load" in warnings[0]
    assert "nestkit_dependency_that_does_not_exist" in warnings[0]
    failed = json.loads(result.stdout)["failed_plugins"]
    assert [f["plugin"] for f in failed] == ["broken"]


def test_plugin_component_builds_from_a_section(plugin_site: Path) -> None:
    code = (
        "import torch, nestkit\n"
        "enc = nestkit.build('encoder', {'name': 'nestkit-toy:toy_strided', 'feat_in': 80, 'd_model': 16})\n"
        "y, n = enc(torch.zeros(2, 80, 64), torch.tensor([64, 40]))\n"
        "print(tuple(y.shape), n.tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(plugin_site)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 16, 8) [8, 5]"


def test_plugins_can_be_disabled_by_name(plugin_site: Path) -> None:
    result = run_nestkit(
        "list-components", "--json", env={"PYTHONPATH": str(plugin_site), "NESTKIT_DISABLE_PLUGINS": "broken,toy"}
    )
    assert result.returncode == 0
    assert result.stderr.strip() == ""
    assert not [c for c in json.loads(result.stdout)["components"] if c["name"] == "toy_strided"]


def test_describe_shows_plugin_fields(plugin_site: Path) -> None:
    result = run_nestkit("describe", "encoder", "toy_strided", env={"PYTHONPATH": str(plugin_site)})
    assert result.returncode == 0, result.stderr
    for field, default in (("feat_in", "80"), ("d_model", "64"), ("subsampling_factor", "8")):
        assert any(field in line and default in line for line in result.stdout.splitlines()), result.stdout
    assert "nestkit-toy 0.3.1" in result.stdout
