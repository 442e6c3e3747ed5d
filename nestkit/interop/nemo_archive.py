"""Reading and writing NeMo's ``.nemo`` archives without unpacking them to disk.

A ``.nemo`` file is a tar archive (plain or gzip) holding ``model_config.yaml`` and
``model_weights.ckpt`` (a ``torch.save``d state dict), sometimes under ``./``. Reading refuses
any archive with an unsafe member (absolute path, ``..``, links, devices) and loads the weights
with ``torch.load(weights_only=True)``, so an archive can never write outside a folder or run code.
"""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from nestkit.errors import CheckpointError

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or path.is_absolute() or (len(member.name) > 1 and member.name[1] == ":"):
        return "absolute path"
    if ".." in path.parts:
        return "path traversal ('..')"
    if member.issym() or member.islnk():
        return "link"
    if not (member.isfile() or member.isdir()):
        return "special file"
    return None


def read_nemo_archive(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, NeMo state dict) from a ``.nemo`` archive, read safely in memory."""
    import torch

    path = Path(path)
    try:
        archive = tarfile.open(path, "r:*")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (tarfile.TarError, OSError) as exc:
        raise CheckpointError(f"{path}: not a .nemo archive ({exc})") from None
    with archive:
        files: dict[str, tarfile.TarInfo] = {}
        for member in archive.getmembers():
            reason = _unsafe_reason(member)
            if reason:
                raise CheckpointError(f"{path}: refusing archive member '{member.name}' ({reason})")
            if member.isfile():
                files[PurePosixPath(member.name).name] = member
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if n not in files]
        if missing:
            raise CheckpointError(f"{path}: archive has no {' or '.join(missing)}")
        config_file = archive.extractfile(files[CONFIG_NAME])
        weights_file = archive.extractfile(files[WEIGHTS_NAME])
        assert config_file is not None and weights_file is not None
        try:
            config = yaml.safe_load(config_file.read().decode())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: {CONFIG_NAME} is not valid YAML ({exc})") from None
        try:
            with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(weights_file.read()), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a refused file
            raise CheckpointError(f"{path}: {WEIGHTS_NAME} cannot be loaded safely ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: {CONFIG_NAME} is not a mapping")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {WEIGHTS_NAME} holds no state dict")
    return config, state


def write_nemo_archive(path: str | Path, config: dict[str, Any], state_dict: dict[str, Any]) -> Path:
    """Write ``config`` and ``state_dict`` as a ``.nemo`` archive (members under ``./`` as NeMo does)."""
    import torch

    path = Path(path)
    weights = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, weights)
    members = {
        CONFIG_NAME: yaml.safe_dump(config, sort_keys=False).encode(),
        WEIGHTS_NAME: weights.getvalue(),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tarfile.open(tmp, "w:") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: cannot write archive ({exc.strerror or exc})") from None
    return path


def import_nemo(archive: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Convert a NeMo NEST ``.nemo`` archive into a nestkit checkpoint plus an equivalent recipe
    (``OUT`` and ``OUT`` with suffix ``.yaml``). Returns both paths."""
    from nestkit import build_model
    from nestkit.errors import NestkitError
    from nestkit.interop.nemo import load_nemo_state_dict, recipe_from_nemo_config
    from nestkit.pretrained import save_model
    from nestkit.recipe import load_recipe

    config, state = read_nemo_archive(archive)
    config = {k: v for k, v in config.items() if k not in ("target", "nemo_version")}
    try:
        data = recipe_from_nemo_config(config)
        recipe = load_recipe(data)
    except NestkitError as err:
        raise CheckpointError(f"{archive}: its model config cannot be converted ({err})") from None
    model = build_model(recipe)
    load_nemo_state_dict(model, state)
    out = Path(out)
    recipe_path = out.with_suffix(".yaml")
    save_model(out, model, recipe)
    recipe_path.write_text(
        f"# converted from {Path(archive).name} by `nestkit import-nemo`\n" + yaml.safe_dump(recipe.data, sort_keys=False)
    )
    return out, recipe_path


def export_nemo(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a nestkit checkpoint as a ``.nemo`` archive that NeMo's
    ``EncDecDenoiseMaskedTokenPredModel`` (and ``init_from_nemo_model``) loads."""
    from nestkit.interop.nemo import nemo_config_from_recipe, to_nemo_state_dict
    from nestkit.pretrained import load_model

    model, recipe = load_model(checkpoint)
    return write_nemo_archive(out, nemo_config_from_recipe(recipe.data), to_nemo_state_dict(model))
