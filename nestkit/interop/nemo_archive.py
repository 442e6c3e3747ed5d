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
from dataclasses import dataclass, field
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
    except tarfile.TarError:  # its message lists every compression tried, one per line
        raise CheckpointError(f"{path}: not a .nemo archive (a .nemo is a tar file, plain or compressed)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
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


# NeMo's masked-token-prediction models: the classes whose archives import as a whole.
NEST_CLASSES = ("EncDecDenoiseMaskedTokenPredModel", "EncDecMaskedTokenPredModel")


@dataclass
class Imported:
    """What ``import-nemo`` wrote, and one line for each key it dropped or changed."""

    checkpoint: Path
    recipe: Path
    notes: list[str] = field(default_factory=list)


def model_class(config: dict[str, Any]) -> str:
    """The short NeMo class name of an archive's model config ('' when it names none)."""
    return str(config.get("target") or config.get("_target_") or "").rpartition(".")[2]


def write_imported(out: str | Path, model: Any, recipe: Any, source: str | Path, notes: list[str]) -> Imported:
    """Write an imported model-only checkpoint at ``out`` and its recipe next to it (``.yaml``),
    the notes kept as comments at the top of the recipe."""
    from nestkit.pretrained import save_model

    out = Path(out)
    recipe_path = out.with_suffix(".yaml")
    save_model(out, model, recipe)
    header = [f"# converted from {Path(source).name} by `nestkit import-nemo`"] + [f"# note: {line}" for line in notes]
    recipe_path.write_text("\n".join(header) + "\n" + yaml.safe_dump(recipe.data, sort_keys=False))
    return Imported(out, recipe_path, notes)


def import_nemo(archive: str | Path, out: str | Path) -> Imported:
    """Convert a NeMo NEST ``.nemo`` archive into a nestkit checkpoint plus an equivalent recipe
    (``OUT`` and ``OUT`` with suffix ``.yaml``). Any NeMo ASR model's encoder can start a NEST run
    instead: :func:`nestkit.interop.nemo_encoder.import_nemo_encoder`."""
    from nestkit.errors import NestkitError
    from nestkit.interop.nemo import load_nemo_state_dict, recipe_from_nemo_config
    from nestkit.recipe import load_recipe

    config, state = read_nemo_archive(archive)
    cls = model_class(config)
    if cls and cls not in NEST_CLASSES:
        raise CheckpointError(
            f"{archive}: model class {cls}; only NEST models ({NEST_CLASSES[0]}) import fully "
            "(add --encoder-only to start a NEST run from its encoder)"
        )
    config = {k: v for k, v in config.items() if k not in ("target", "nemo_version")}
    notes: list[str] = []
    try:
        data = recipe_from_nemo_config(config, notes)
        recipe = load_recipe(data)
    except NestkitError as err:
        raise CheckpointError(f"{archive}: its model config cannot be converted ({err})") from None
    model = recipe.build_model()
    load_nemo_state_dict(model, state)
    return write_imported(out, model, recipe, archive, notes)


def export_nemo(checkpoint: str | Path, out: str | Path) -> tuple[Path, list[str]]:
    """Write a nestkit checkpoint as a ``.nemo`` archive that NeMo's
    ``EncDecDenoiseMaskedTokenPredModel`` (and ``init_from_nemo_model``) loads; (path, notes on
    what NeMo reads differently)."""
    from nestkit.interop.nemo import nemo_config_from_recipe, to_nemo_state_dict
    from nestkit.pretrained import load_model

    model, recipe = load_model(checkpoint)
    notes: list[str] = []
    config = nemo_config_from_recipe(recipe.data, notes)
    return write_nemo_archive(out, config, to_nemo_state_dict(model)), notes
