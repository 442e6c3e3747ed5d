"""Files crafted to run code when loaded with plain pickle: the loaders must refuse them."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import torch


class RunsCode:
    """Unpickles as ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(template: dict[str, Any], path: Path, marker: Path, legacy: bool = False) -> Path:
    """A real checkpoint dict plus one code-running object (torch zip format, or a raw pickle)."""
    state = {**template, "evil": RunsCode(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path)
    return path


def evil_nemo(path: Path, marker: Path) -> Path:
    """A .nemo archive whose weights run code on load."""
    weights = io.BytesIO()
    torch.save({"w": RunsCode(marker)}, weights)
    members = {"model_config.yaml": b"sample_rate: 16000\n", "model_weights.ckpt": weights.getvalue()}
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path
