"""Safety of files: checkpoints never run code on load, recipes cannot import Python, .nemo
archives cannot escape their folder. Extends tests/test_interop_archive.py (not repeated here)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import ROOT, run_nestkit
from nestkit.errors import CheckpointError, NestkitError, RecipeError
from reliability import training as tr
from reliability.evil import evil_checkpoint, evil_nemo


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, last.ckpt) of a 2-step run in this process."""
    from nestkit.recipe import load_recipe
    from nestkit.train.loop import train

    work = tmp_path_factory.mktemp("safety")
    recipe = tr.write_recipe(work, work / "exp", max_steps=2)
    result = train(load_recipe(recipe, ["exp_manager.name=ok"]), announce=lambda text: None)
    assert result.last_checkpoint is not None
    return recipe, result.last_checkpoint


def test_training_checkpoints_load_with_weights_only(trained: tuple[Path, Path]) -> None:
    _, last = trained
    for path in [last, *last.parent.glob("step=*.ckpt")]:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["format"] == "nestkit-checkpoint" and state["step"] in (1, 2)
        assert state["optimizer"]["state"] and state["per_rank"][0]["rng"]["torch"].dtype == torch.uint8


@pytest.fixture(params=["torch-zip", "raw-pickle"])
def evil(request: pytest.FixtureRequest, trained: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(a code-running copy of the real checkpoint, the marker file its payload would create)."""
    marker = tmp_path / "pwned"
    template = torch.load(trained[1], weights_only=True)
    path = evil_checkpoint(template, tmp_path / "evil.ckpt", marker, legacy=request.param == "raw-pickle")
    return path, marker


def test_the_payload_is_live(evil: tuple[Path, Path]) -> None:
    """Without weights_only the file really runs code (so the refusals below mean something)."""
    import pickle

    path, marker = evil
    try:
        torch.load(path, weights_only=False)
    except RuntimeError:  # a raw pickle is not torch's format: plain pickle reads it
        pickle.loads(path.read_bytes())  # noqa: S301 - the point of the test
    assert marker.exists()


def _loaders(recipe: Path, tmp: Path) -> dict[str, Any]:
    from nestkit.extract import extract_features
    from nestkit.interop.nemo_archive import export_nemo
    from nestkit.pretrained import load_model
    from nestkit.recipe import load_recipe
    from nestkit.train.checkpoint import load_checkpoint
    from nestkit.train.export import export_encoder
    from nestkit.train.loop import train

    manifest = ROOT / "nestkit" / "demo_data" / "val_manifest.json"
    return {
        "load_checkpoint": lambda p: load_checkpoint(p),
        "load_model": lambda p: load_model(p),
        "export_encoder": lambda p: export_encoder(p, tmp / "enc.pt"),
        "export_nemo": lambda p: export_nemo(p, tmp / "m.nemo"),
        "extract_features": lambda p: extract_features(p, str(manifest), tmp / "feats", progress=False),
        "train_resume": lambda p: train(load_recipe(recipe, ["exp_manager.name=resume",
                                                             f"exp_manager.resume_from_checkpoint={p}"]),
                                        announce=lambda text: None),
    }


@pytest.mark.parametrize("loader", ["load_checkpoint", "load_model", "export_encoder", "export_nemo",
                                    "extract_features", "train_resume"])
def test_loaders_refuse_code_running_checkpoints(trained: tuple[Path, Path], evil: tuple[Path, Path],
                                                 tmp_path: Path, loader: str) -> None:
    path, marker = evil
    with pytest.raises(CheckpointError) as info:
        _loaders(trained[0], tmp_path)[loader](path)
    assert "not a readable checkpoint" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    assert not (tmp_path / "enc.pt").exists() and not (tmp_path / "m.nemo").exists()


def test_cli_verbs_refuse_code_running_files(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """train (resume), extract, export-encoder, export-nemo and import-nemo, as a user runs them."""
    recipe, last = trained
    marker = tmp_path / "pwned"
    template = torch.load(last, weights_only=True)
    exp = tmp_path / "exp"
    resume = tr.checkpoints(exp, "tiny") / "last.ckpt"
    resume.parent.mkdir(parents=True)
    evil_checkpoint(template, resume, marker)
    bad = evil_checkpoint(template, tmp_path / "evil.ckpt", marker)
    manifest = ROOT / "nestkit" / "demo_data" / "val_manifest.json"
    verbs = {
        "train": ["train", str(recipe), f"exp_manager.exp_dir={exp}", "exp_manager.name=tiny"],
        "extract": ["extract", str(bad), str(manifest), str(tmp_path / "feats")],
        "export-encoder": ["export-encoder", str(bad), str(tmp_path / "enc.pt")],
        "export-nemo": ["export-nemo", str(bad), str(tmp_path / "m.nemo")],
        "import-nemo": ["import-nemo", str(evil_nemo(tmp_path / "evil.nemo", marker)), str(tmp_path / "imp.ckpt")],
    }
    for verb, args in verbs.items():
        done = run_nestkit(*args, cwd=tmp_path, timeout=120)
        err = done.stderr
        lines = [line for line in err.splitlines() if line.strip()]
        assert done.returncode == 2 and "Traceback" not in err and len(lines) == 1, (verb, err[-2000:])
        assert lines[0].startswith("error: ") and ("not a readable checkpoint" in lines[0]
                                                   or "cannot be loaded safely" in lines[0]), (verb, lines[0])
    assert not marker.exists()
    assert not any((tmp_path / name).exists() for name in ("enc.pt", "m.nemo", "imp.ckpt", "feats"))


def test_raw_pickle_refusal_is_one_stderr_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = evil_checkpoint(torch.load(trained[1], weights_only=True), tmp_path / "evil.ckpt", marker, legacy=True)
    done = run_nestkit("export-encoder", str(bad), str(tmp_path / "enc.pt"), cwd=tmp_path, timeout=120)
    assert not marker.exists() and done.returncode == 2 and "not a readable checkpoint" in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr


# ---------------------------------------------------------------------------- recipes cannot import Python

PYTHON_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    "!!python/name:os.system",
    "!!python/module:os",
    '!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_yaml_python_tags_are_rejected_everywhere(trained: tuple[Path, Path], tmp_path: Path, tag: str) -> None:
    from nestkit.interop.nemo_config import convert_training_config
    from nestkit.pretrained import load_model
    from nestkit.recipe import load_recipe

    marker = tmp_path / "pwned"
    value = tag.format(marker=marker)
    recipe, last = trained
    data = yaml.safe_load(recipe.read_text())
    evil_recipe = tmp_path / "evil.yaml"
    evil_recipe.write_text(yaml.safe_dump(data, sort_keys=False).replace("lr: 0.003", f"lr: {value}"))
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {evil_recipe}\nname: child\n")
    with pytest.raises(RecipeError, match="YAML syntax error"):
        load_recipe(evil_recipe)
    with pytest.raises(RecipeError, match="YAML syntax error"):
        load_recipe(child)  # through extends:
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(recipe, [f"model.optim.lr={value}"])  # through an override
    with pytest.raises(NestkitError):
        convert_training_config(evil_recipe)  # a NeMo config
    state = torch.load(last, weights_only=True)
    state["recipe"] = evil_recipe.read_text()
    torch.save(state, tmp_path / "tagged.ckpt")
    with pytest.raises(CheckpointError, match="holds no recipe"):
        load_model(tmp_path / "tagged.ckpt")  # the recipe stored inside a checkpoint
    assert not marker.exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model.encoder._target_=os.system", "model.encoder: unknown field '_target_'"),
        ("model.encoder.name=os.system", "unknown encoder 'os.system'"),
        ("model.name=os.system", "unknown model 'os.system'"),
        ("model.optim.name=torch.optim.AdamW", "unknown optimizer 'torch.optim.AdamW'"),
        ("model.preprocessor.name=nestkit.components.preprocessor.MelSpectrogram", "unknown preprocessor"),
    ],
)
def test_recipes_cannot_name_python_objects(trained: tuple[Path, Path], override: str, needle: str) -> None:
    from nestkit.recipe import load_recipe

    with pytest.raises(RecipeError) as info:
        load_recipe(trained[0], [override])
    assert needle in str(info.value)


def test_top_level_target_is_rejected(tmp_path: Path, trained: tuple[Path, Path]) -> None:
    from nestkit.recipe import load_recipe

    data = yaml.safe_load(trained[0].read_text())
    data["_target_"] = "os.system"
    with pytest.raises(RecipeError, match="unknown section '_target_'"):
        load_recipe(data)


# ---------------------------------------------------------------------------- .nemo archives (beyond test_interop_archive)


def _nemo_with(path: Path, member: tarfile.TarInfo, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in (("model_config.yaml", b"a: 1\n"), ("model_weights.ckpt", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        archive.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "mode", "reason"),
    [
        (_member("model_config.yaml.hard", tarfile.LNKTYPE, "/etc/passwd"), "w", "link"),
        (_member("fifo", tarfile.FIFOTYPE), "w", "special file"),
        (_member("dev", tarfile.CHRTYPE), "w", "special file"),
        (_member("../../escape.txt"), "w:gz", "path traversal"),  # compressed archives are checked too
        (_member("model_weights.ckpt/../../../x"), "w", "path traversal"),
        (_member("//etc/cron.d/x"), "w:bz2", "absolute path"),
    ],
    ids=["hardlink", "fifo", "char-device", "gzip-traversal", "nested-traversal", "double-slash-absolute"],
)
def test_more_unsafe_archives_are_refused(tmp_path: Path, member: tarfile.TarInfo, mode: str, reason: str) -> None:
    from nestkit.interop.nemo_archive import read_nemo_archive

    path = _nemo_with(tmp_path / "evil.nemo", member, mode)
    with pytest.raises(CheckpointError, match=reason):
        read_nemo_archive(path)


def test_import_nemo_with_traversal_writes_nothing(tmp_path: Path) -> None:
    work = tmp_path / "inner"
    work.mkdir()
    path = _nemo_with(work / "evil.nemo", _member("../escape.txt"))
    done = run_nestkit("import-nemo", str(path), "out.ckpt", cwd=work, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().startswith("error: ") and "path traversal" in done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.nemo", "inner"]


def test_commands_never_write_over_their_input_or_into_a_runs_checkpoints(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """`export-encoder a.ckpt a.ckpt` replaced the training checkpoint with an encoder file, and
    `import-nemo x.nemo RUN/checkpoints/last.ckpt` replaced a run's state with a model-only file
    (the next resume silently went back to an older checkpoint). Both are refused, nothing written."""
    _, last = trained
    copy = tmp_path / "a.ckpt"
    copy.write_bytes(last.read_bytes())
    nemo = tmp_path / "a.nemo"
    assert run_nestkit("export-nemo", str(last), str(nemo)).returncode == 0
    before = {p: p.read_bytes() for p in (copy, last, nemo)}
    for argv, why in [
        (("export-encoder", str(copy), str(copy)), f"{copy} is also the input"),
        (("export-nemo", str(copy), str(copy)), f"{copy} is also the input"),
        (("import-nemo", str(nemo), str(nemo)), f"{nemo} is also the input"),
        (("import-nemo", str(nemo), str(last)), f"{last} is in the checkpoints folder of the training run {last.parent.parent}"),
        (("export-encoder", str(last), str(last.parent / "enc.pt")), "is in the checkpoints folder of the training run"),
    ]:
        result = run_nestkit(*argv)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and why in lines[0], (argv, result.stderr)
    assert {p: p.read_bytes() for p in (copy, last, nemo)} == before
    assert not (last.parent / "enc.pt").exists() and not last.with_suffix(".yaml").exists()
