"""`nestkit list-components` on a narrow terminal: summaries wrap, component names never break."""

from __future__ import annotations

import json

import pytest

from conftest import run_nestkit


@pytest.mark.parametrize("columns", ["80", "60"])
def test_names_are_whole_at_any_width(columns: str) -> None:
    listing = json.loads(run_nestkit("list-components", "--json").stdout)["components"]
    result = run_nestkit("list-components", env={"COLUMNS": columns})
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert max(len(row) for row in rows) <= int(columns)
    assert "…" not in result.stdout
    words = {word for row in rows for word in row.split()}
    missing = [c["name"] for c in listing if c["name"] not in words]
    assert not missing, missing  # every name appears whole, on one line
