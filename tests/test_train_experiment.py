"""One experiment folder as a user meets it: resumes that change nothing when they fail, changed
settings listed, a finished run said to be finished, and one run per folder at a time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from _train_recipe import write_recipe
from conftest import ROOT, run_nestkit
from nestkit.train.checkpoint import load_checkpoint
from reliability.training import Training, kill_tree

FAST = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny demo-data run of 4 steps: (recipe file, experiment folder)."""
    tmp = tmp_path_factory.mktemp("exp")
    recipe = write_recipe(tmp / "r.yaml", tmp / "exp", max_steps=4, val_check_interval=1000)
    result = run_nestkit("train", str(recipe), "model.optim.lr=0.05", env=FAST)
    assert result.returncode == 0, result.stderr
    return recipe, tmp / "exp" / "tiny"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def test_a_resume_the_checkpoint_cannot_take_is_one_line_and_changes_nothing(finished_run: tuple[Path, Path]) -> None:
    recipe, folder = finished_run
    before, recipe_text = _snapshot(folder), (folder / "recipe.yaml").read_text()
    result = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "trainer.max_steps=8", "model.encoder.n_layers=2", env=FAST)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "model.encoder.n_layers 1 -> 2" in lines[0] and "its weights do not fit the model" in lines[0]
    assert (folder / "recipe.yaml").read_text() == recipe_text  # the folder still describes its run
    assert _snapshot(folder) == before
    # the advice leads somewhere: a new experiment trains (the old advice sent it back to these weights)
    assert lines[0].endswith("put them back, or train a new experiment (exp_manager.name=NEW)"), lines[0]
    new = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "trainer.max_steps=2", "model.encoder.n_layers=2",
                      "exp_manager.name=NEW", env=FAST)
    assert new.returncode == 0, new.stderr
    assert load_checkpoint(folder.parent / "NEW" / "checkpoints" / "last.ckpt")["step"] == 2
    # weights that fit, but targets that would change (another quantizer): refused as well, and said so
    targets = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "trainer.max_steps=8", "model.quantizer.dist_fn=cosine",
                          env=FAST)
    assert targets.returncode == 2 and "model.quantizer.dist_fn 'l2' -> 'cosine'); continuing would change the targets" \
        in targets.stderr, targets.stderr
    assert _snapshot(folder) == before
    # a default written out (the saved recipe leaves dist_fn unset) changes nothing
    same = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "model.quantizer.dist_fn=l2", env=FAST)
    assert same.returncode == 0 and "is finished: step 4" in same.stdout and "dist_fn" not in same.stdout, same.stdout + same.stderr


def test_a_finished_run_says_so_and_how_to_continue(finished_run: tuple[Path, Path]) -> None:
    recipe, folder = finished_run
    before = _snapshot(folder)
    result = run_nestkit("train", str(recipe), "model.optim.lr=0.05", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "is finished: step 4 of trainer.max_steps=4" in result.stdout and "trainer.max_steps=N (N > 4)" in result.stdout
    fewer = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "trainer.max_steps=2", env=FAST)
    assert fewer.returncode == 0, fewer.stderr
    assert "step 4 of trainer.max_steps=2; to train it further, run again with trainer.max_steps=N (N > 4)" in fewer.stdout
    assert _snapshot(folder) == before


def test_a_run_that_does_not_train_leaves_no_new_folder(finished_run: tuple[Path, Path]) -> None:
    """Another run's checkpoint as resume_from_checkpoint: already past max_steps, it says so (it
    said 'done' and copied the checkpoint); not fitting, it fails. Either way no folder is left."""
    recipe, folder = finished_run
    last = folder / "checkpoints" / "last.ckpt"
    past = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "trainer.max_steps=2", "exp_manager.name=past",
                       f"exp_manager.resume_from_checkpoint={last}", env=FAST)
    assert past.returncode == 0, past.stderr
    assert f"nothing to train: {last} is at step 4, past trainer.max_steps=2; to train it further, run again with " \
           "trainer.max_steps=N (N > 4)" in past.stdout, past.stdout
    unfit = run_nestkit("train", str(recipe), "model.optim.lr=0.05", "model.encoder.n_layers=2", "exp_manager.name=unfit",
                        f"exp_manager.resume_from_checkpoint={last}", env=FAST)
    assert unfit.returncode == 2 and "its weights do not fit" in unfit.stderr, unfit.stderr
    assert not (folder.parent / "past").exists() and not (folder.parent / "unfit").exists()


def test_settings_a_resume_can_take_are_applied_and_listed(finished_run: tuple[Path, Path]) -> None:
    recipe, folder = finished_run
    result = run_nestkit("train", str(recipe), "model.optim.lr=0.02", "trainer.max_steps=6", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "model.optim.lr 0.05 -> 0.02" in result.stdout and "trainer.max_steps 4 -> 6" in result.stdout
    state = load_checkpoint(folder / "checkpoints" / "last.ckpt")
    assert state["step"] == 6
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 0.02  # the schedule runs from the new rate
    assert "lr: 0.02" in (folder / "recipe.yaml").read_text()


def test_one_run_per_experiment_folder(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=100000, val_check_interval=1000)
    lock = tmp_path / "exp" / "tiny" / ".lock"
    first = Training(recipe, "tiny", env=FAST)
    pid = first.proc.pid
    try:
        deadline = time.monotonic() + 240
        while not lock.exists() and time.monotonic() < deadline and first.proc.poll() is None:
            time.sleep(0.2)
        assert lock.exists(), first.finish()[2] if first.proc.poll() is not None else "no lock after 240 s"
        second = run_nestkit("train", str(recipe), env=FAST)
        assert second.returncode == 2, second.stderr
        assert f"in use by another run (pid {pid} on" in second.stderr
        assert second.stderr.strip().count("\n") == 0
    finally:
        kill_tree(pid)
        first.finish(timeout=60)
    assert lock.exists()  # a killed run cannot clean up: the next run takes the lock over
    third = run_nestkit("train", str(recipe), "trainer.max_steps=1", env=FAST)
    assert third.returncode == 0, third.stderr
    assert f"took over the lock of a run that is gone (pid {pid}" in third.stdout
    assert not lock.exists()  # released at the end


def _manifest_with_missing(tmp_path: Path, present: int, missing: int) -> Path:
    demo = ROOT / "nestkit" / "demo_data"
    lines = [json.loads(line) for line in (demo / "train_manifest.json").read_text().splitlines()[:present]]
    for item in lines:
        item["audio_filepath"] = str(demo / item["audio_filepath"])
    lines += [{"audio_filepath": str(tmp_path / f"gone{i}.wav"), "duration": 2.0} for i in range(missing)]
    path = tmp_path / "train.json"
    path.write_text("".join(json.dumps(item) + "\n" for item in lines))
    return path


def test_the_end_summary_tells_what_was_skipped_and_the_folder_keeps_the_full_list(tmp_path: Path) -> None:
    manifest = _manifest_with_missing(tmp_path, present=24, missing=12)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=3, val_check_interval=1000)
    result = run_nestkit("train", str(recipe), f"model.train_ds.manifest_filepath={manifest}", env=FAST)
    assert result.returncode == 0, result.stderr
    summary = result.stdout[result.stdout.rindex("done"):]
    assert "skipped items" in summary and "missing" in summary and "gone" in summary, summary
    listed = (tmp_path / "exp" / "tiny" / "skipped_items.txt").read_text().splitlines()
    assert listed and all(line.startswith("missing\t") and "gone" in line for line in listed)


def test_when_nothing_is_usable_the_error_says_why(tmp_path: Path) -> None:
    manifest = _manifest_with_missing(tmp_path, present=0, missing=36)
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=3, val_check_interval=1000)
    result = run_nestkit("train", str(recipe), f"model.train_ds.manifest_filepath={manifest}", env=FAST)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "all 36 audio files of" in lines[0] and "are missing; first: " in lines[0], result.stderr
    assert "batch size" not in lines[0]
    assert not (tmp_path / "exp").exists()  # nothing could start: no experiment folder either
