"""`nestkit train` / `nestkit export-encoder` as a user runs them: real executable, real model, demo data."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from _train_recipe import write_recipe
from conftest import ROOT, run_nestkit
from nestkit.train.checkpoint import load_checkpoint

FAST = {"OMP_NUM_THREADS": "1"}


def _events(folder: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_demo_trains_end_to_end(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp")
    result = run_nestkit("train", str(recipe), "model.optim.lr=0.05", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "bundled demo data" in result.stdout
    assert "parameters" in result.stdout and "best val_loss" in result.stdout
    folder = tmp_path / "exp" / "tiny"
    ckpts = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and any(n.startswith("best-step=") for n in ckpts)
    assert load_checkpoint(folder / "checkpoints" / "last.ckpt")["step"] == 30
    scalars = _events(folder / "tensorboard")
    for tag in ("train_loss", "val_loss", "learning_rate", "grad_norm", "masked_accuracy", "masked_fraction",
                "audio_seconds_per_second", "data_wait_fraction", "skipped_items/total", "nonfinite_steps"):
        assert tag in scalars, tag
    loss, acc = scalars["train_loss"], scalars["masked_accuracy"]
    assert loss[-1] < loss[0] - 0.25, loss  # chance level is ln(32) = 3.47
    assert acc[-1] > acc[0] + 0.1, acc
    assert all(0.2 < f < 0.8 for f in scalars["masked_fraction"])

    out = tmp_path / "encoder.pt"
    exported = run_nestkit("export-encoder", str(folder / "checkpoints" / "last.ckpt"), str(out))
    assert exported.returncode == 0, exported.stderr
    enc = torch.load(out, weights_only=True)
    full = load_checkpoint(folder / "checkpoints" / "last.ckpt")["model"]
    assert enc["encoder_config"]["d_model"] == 32 and enc["step"] == 30
    assert set(enc["encoder_state_dict"]) == {k.removeprefix("encoder.") for k in full if k.startswith("encoder.")}
    for key, value in enc["encoder_state_dict"].items():
        assert torch.equal(value, full[f"encoder.{key}"])


def test_sigkill_then_resume_is_bit_exact(tmp_path: Path) -> None:
    """Killed after step 6 of 8, between validations (steps 4 and 8), with accumulation and clipping."""
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", exp={"checkpoint_callback_params": {"every_n_train_steps": 3}},
                          max_steps=8, accumulate_grad_batches=2, gradient_clip_val=1.0, log_every_n_steps=2,
                          val_check_interval=4)
    args = ("train", str(recipe), "model.optim.lr=0.05")
    full = run_nestkit(*args, "exp_manager.name=full", env=FAST)
    assert full.returncode == 0, full.stderr
    killed = run_nestkit(*args, "exp_manager.name=killed", env={**FAST, "NESTKIT_FAULT_KILL_AFTER_CHECKPOINT": "6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckdir = tmp_path / "exp" / "killed" / "checkpoints"
    assert load_checkpoint(ckdir / "last.ckpt")["step"] == 6
    resumed = run_nestkit(*args, "exp_manager.name=killed", env=FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 6" in resumed.stdout
    a = load_checkpoint(tmp_path / "exp" / "full" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(ckdir / "last.ckpt")
    assert a["step"] == b["step"] == 8 and a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert (ckdir / "step=00000003.ckpt").exists() and (ckdir / "step=00000006.ckpt").exists()


def test_two_processes_on_cpu(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=8, val_check_interval=4, log_every_n_steps=4)
    trace = tmp_path / "trace"
    trace.mkdir()
    result = run_nestkit("train", str(recipe), "--devices", "2", env={**FAST, "NESTKIT_TRACE_DIR": str(trace)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("nestkit train") == 1  # only rank 0 prints
    assert "2 x cpu" in result.stdout
    seen = [
        [int(i) for line in (trace / f"rank{r}_indices.txt").read_text().splitlines() for i in line.split()]
        for r in (0, 1)
    ]
    assert len(seen[0]) == len(seen[1]) == 8 * 8
    assert not set(seen[0]) & set(seen[1])  # each rank trained on its own part of the data
    w0 = torch.load(trace / "rank0_final.pt", weights_only=True)
    w1 = torch.load(trace / "rank1_final.pt", weights_only=True)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    ckpt = load_checkpoint(tmp_path / "exp" / "tiny" / "checkpoints" / "last.ckpt")
    assert ckpt["world_size"] == 2 and len(ckpt["per_rank"]) == 2
    for key in w0:
        assert torch.equal(w0[key], ckpt["model"][key]), key
    files = sorted(str(p.relative_to(tmp_path / "exp")) for p in (tmp_path / "exp").rglob("*") if p.is_file())
    assert len([f for f in files if "events.out.tfevents" in f]) == 1
    assert [f for f in files if "events" not in f] == sorted(
        ["tiny/recipe.yaml", "tiny/checkpoints/last.ckpt"]
        + [f"tiny/checkpoints/{p.name}" for p in (tmp_path / "exp" / "tiny" / "checkpoints").glob("best-*")]
    )


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp")
    bad = tmp_path / "exp" / "tiny" / "checkpoints" / "last.ckpt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(os.urandom(2048))
    _one_line_error(run_nestkit("train", str(recipe)), "not a readable checkpoint")
    _one_line_error(run_nestkit("export-encoder", str(bad), str(tmp_path / "enc.pt")), "not a readable checkpoint")


def test_unwritable_exp_dir_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    recipe = write_recipe(tmp_path / "r.yaml", blocker)
    _one_line_error(run_nestkit("train", str(recipe)), "cannot write to the experiment folder")


def test_batch_larger_than_the_demo_data_is_a_one_line_error(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp")
    result = run_nestkit("train", str(recipe), "model.train_ds.batch_size=1000", "model.train_ds.drop_last=true")
    _one_line_error(result, "batch")
    # Every rank of a DDP run meets the same problem: it is still said once.
    result = run_nestkit("train", str(recipe), "--devices", "2", "model.train_ds.batch_size=1000",
                         "model.train_ds.drop_last=true", env=FAST)
    _one_line_error(result, "batch")


def test_bad_devices_flag(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp")
    _one_line_error(run_nestkit("train", str(recipe), "--devices", "two"), "--devices")


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "recipes" / "nest_demo.yaml").exists(), reason="demo recipe not present")
def test_bundled_demo_recipe_trains(tmp_path: Path) -> None:
    result = run_nestkit(
        "train", str(ROOT / "recipes" / "nest_demo.yaml"), "trainer.max_steps=30", "trainer.val_check_interval=15",
        "trainer.limit_val_batches=5",
        f"exp_manager.exp_dir={tmp_path}", "exp_manager.create_checkpoint_callback=true", env=FAST,
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "NEST-demo"
    assert load_checkpoint(folder / "checkpoints" / "last.ckpt")["step"] == 30
    scalars = _events(folder / "tensorboard")
    assert len(scalars["val_loss"]) == 2 and scalars["val_loss"][1] < scalars["val_loss"][0]
    assert scalars["train_loss"][-1] < scalars["train_loss"][0]
    assert scalars["masked_accuracy"][-1] > scalars["masked_accuracy"][0]
