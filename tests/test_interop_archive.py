"""`.nemo` archives: round trip in memory, and refusal of unsafe archives."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from nestkit.errors import CheckpointError
from nestkit.interop.nemo_archive import read_nemo_archive, write_nemo_archive


def test_round_trip(tmp_path: Path) -> None:
    state = {"encoder.layers.0.weight": torch.randn(3, 4), "decoder.bias": torch.arange(5.0)}
    config = {"sample_rate": 16000, "encoder": {"n_layers": 2}}
    path = write_nemo_archive(tmp_path / "m.nemo", config, state)
    with tarfile.open(path) as archive:
        assert sorted(archive.getnames()) == ["./model_config.yaml", "./model_weights.ckpt"]
    got_config, got_state = read_nemo_archive(path)
    assert got_config == config
    assert got_state.keys() == state.keys()
    assert all(torch.equal(got_state[k], state[k]) for k in state)


def _archive_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "evil.nemo"
    with tarfile.open(path, "w") as archive:
        for name, payload in (("model_config.yaml", b"a: 1\n"), ("model_weights.ckpt", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("../outside.txt"), "path traversal"),
        (tarfile.TarInfo("/etc/evil"), "absolute path"),
        (tarfile.TarInfo("./a/../../b"), "path traversal"),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, member: tarfile.TarInfo, reason: str) -> None:
    path = _archive_with(tmp_path, member)
    with pytest.raises(CheckpointError, match=reason):
        read_nemo_archive(path)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_links_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("model_config.yaml.link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(CheckpointError, match="link"):
        read_nemo_archive(_archive_with(tmp_path, link))


class _RunsCode:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch pwned_by_nemo_archive",))


def test_pickled_code_in_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "code.nemo"
    payload = pickle.dumps({"w": _RunsCode()})
    with tarfile.open(path, "w") as archive:
        for name, data in (("model_config.yaml", b"a: 1\n"), ("model_weights.ckpt", payload)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(CheckpointError, match="cannot be loaded safely"):
            read_nemo_archive(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned_by_nemo_archive").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "x.nemo"
    bad.write_bytes(b"not a tar file at all")
    with pytest.raises(CheckpointError) as caught:
        read_nemo_archive(bad)
    assert str(caught.value) == f"{bad}: not a .nemo archive (a .nemo is a tar file, plain or compressed)"  # one line
    with pytest.raises(CheckpointError, match="no such file"):
        read_nemo_archive(tmp_path / "missing.nemo")
