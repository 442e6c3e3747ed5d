"""The training loop on a tiny stand-in model: convergence, checkpoints, resume, faults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nestkit.errors import CheckpointError, NestkitError
from nestkit.train import checkpoint as ckpt
from nestkit.train.atomic_write import atomic_save
from nestkit.train.loop import Trainer

from _train_fakes import FakeModel, loader_factory, recipe


def _train(rec, **kw):
    rec.optimizer_section["lr"] = 0.05
    torch.manual_seed(0)
    return Trainer(rec, model=FakeModel(), loader_factory=loader_factory(), announce=lambda s: None, **kw).run()


def _events(folder: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_trains_checkpoints_and_logs(tmp_path: Path) -> None:
    result = _train(recipe(tmp_path, max_steps=24))
    assert result.steps == 24 and result.epochs == 1  # 96 items / 4 = 24 batches per epoch
    folder = tmp_path / "run"
    assert (folder / "recipe.yaml").read_text().startswith("name: fake")
    assert result.last_checkpoint == folder / "checkpoints" / "last.ckpt"
    assert len(result.best_checkpoints) == 1 and "val_loss=" in result.best_checkpoints[0].name
    state = ckpt.load_checkpoint(result.last_checkpoint)
    assert state["step"] == 24 and state["per_rank"][0]["loader"] == {"epoch": 0, "pos": 24}
    scalars = _events(folder / "tensorboard")
    for tag in ("train_loss", "val_loss", "learning_rate", "grad_norm", "masked_accuracy", "masked_fraction",
                "audio_seconds_per_second", "data_wait_fraction", "skipped_items/too_short", "nonfinite_steps"):
        assert tag in scalars, tag
    assert len(scalars["val_loss"]) == 6
    assert scalars["train_loss"][-1] < 0.5 * scalars["train_loss"][0]
    assert scalars["learning_rate"][0] < scalars["learning_rate"][2]  # noam warmup, then decay
    assert abs(scalars["masked_fraction"][0] - 0.3) < 1e-6


def test_resume_is_exact(tmp_path: Path) -> None:
    full = _train(recipe(tmp_path / "a", max_steps=30, accumulate_grad_batches=2, gradient_clip_val=1.0))
    _train(recipe(tmp_path / "b", max_steps=8, accumulate_grad_batches=2, gradient_clip_val=1.0))
    resumed = _train(recipe(tmp_path / "b", max_steps=30, accumulate_grad_batches=2, gradient_clip_val=1.0))
    assert full.epochs == resumed.epochs == 3  # 12 steps per epoch: resume crosses epoch boundaries
    a = ckpt.load_checkpoint(full.last_checkpoint)
    b = ckpt.load_checkpoint(resumed.last_checkpoint)
    assert a["step"] == b["step"] == 30
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"format": ckpt.FORMAT, "model": {}, "x": Path("/")}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(path)


def test_a_nemo_archive_or_a_recipe_given_as_a_checkpoint_is_named_for_what_it_is(tmp_path: Path) -> None:
    import tarfile

    import nestkit
    from conftest import ROOT

    config = tmp_path / "model_config.yaml"
    config.write_text("sample_rate: 16000\n")
    archive = tmp_path / "model.tar"  # a .nemo archive under another name: known by its contents
    with tarfile.open(archive, "w") as tar:
        tar.add(config, arcname="./model_config.yaml")
    with pytest.raises(CheckpointError) as caught:
        ckpt.load_checkpoint(archive)
    assert str(caught.value) == (f"{archive} is a .nemo archive, not a checkpoint: convert it with "
                                 f"`nestkit import-nemo {archive} OUT.ckpt` and use OUT.ckpt")
    with pytest.raises(CheckpointError, match=r"nest_demo.yaml is a recipe, not an encoder file$"):
        nestkit.load_encoder(ROOT / "recipes" / "nest_demo.yaml")


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    atomic_save({"format": ckpt.FORMAT, "model": {"w": torch.ones(3)}}, target)

    def full_disk(obj, handle, *a, **k):
        handle.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        atomic_save({"format": ckpt.FORMAT, "model": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(target)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_worker_death_during_a_write_completes_the_checkpoint_then_reports_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's DataLoader raises from its SIGCHLD handler when a worker dies; arriving mid-write
    it used to break the write and read as "cannot write checkpoint: unexpected pos ...". """
    import os
    import signal

    def dataloader_handler(signum, frame):  # what torch installs, in short
        raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly")

    real_save = torch.save

    def save_while_a_worker_dies(obj, handle, *a, **k):
        os.kill(os.getpid(), signal.SIGCHLD)  # delivered to this (main) thread right away
        handle.write(b"")  # a few bytecodes later: where an undeferred handler would raise
        real_save(obj, handle, *a, **k)

    previous = signal.signal(signal.SIGCHLD, dataloader_handler)
    try:
        monkeypatch.setattr(torch, "save", save_while_a_worker_dies)
        with pytest.raises(RuntimeError, match="DataLoader worker") as raised:
            atomic_save({"format": ckpt.FORMAT, "model": {"w": torch.full((3,), 7.0)}}, tmp_path / "last.ckpt")
        assert not isinstance(raised.value, CheckpointError)
        assert signal.getsignal(signal.SIGCHLD) is dataloader_handler  # put back
    finally:
        signal.signal(signal.SIGCHLD, previous)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "last.ckpt")["model"]["w"], torch.full((3,), 7.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_keeper_keeps_top_k(tmp_path: Path) -> None:
    keeper = ckpt.CheckpointKeeper(tmp_path, save_top_k=2)
    state = {"format": ckpt.FORMAT, "model": {}}
    for step, loss in [(1, 3.0), (2, 2.0), (3, 2.5), (4, 4.0), (5, 1.0)]:
        keeper.save_best(state, step, loss)
    assert [(l, s) for l, s, _ in keeper.best()] == [(1.0, 5), (2.0, 2)]
    assert len(list(tmp_path.iterdir())) == 2


def test_validation_repeats_its_masks_and_leaves_the_training_rng_alone(tmp_path: Path) -> None:
    rec = recipe(tmp_path, max_steps=2)
    rec.optimizer_section["lr"] = 0.05
    trainer = Trainer(rec, model=FakeModel(), loader_factory=loader_factory(), announce=lambda s: None)
    trainer.run()
    before = torch.get_rng_state()
    first, second = trainer.validate(), trainer.validate()
    assert first is not None and first == second  # FakeModel draws its masks from the global RNG
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_checkpoints_its_scaler(tmp_path: Path, precision: str) -> None:
    result = _train(recipe(tmp_path, max_steps=8, precision=precision))
    state = ckpt.load_checkpoint(result.last_checkpoint)
    assert state["step"] == 8 and result.nonfinite_steps == 0
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    assert (state["scaler"] is not None) is (precision == "16-mixed")  # GradScaler only for float16
    losses = _events(tmp_path / "run" / "tensorboard")["train_loss"]
    assert losses[-1] < losses[0]


def test_compile_switch_compiles_the_encoder_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer.compile=true: every encoder block goes through torch.compile, the run trains, and
    checkpoint names stay those of the eager model. Dynamo traces the real blocks; the eager
    backend stands in for Inductor, whose C++ build takes minutes on a CI CPU."""
    import yaml

    from _train_recipe import tiny_recipe
    from nestkit.recipe import load_recipe

    compiled: list[str] = []
    real_compile = torch.compile

    def eager_backend(fn, *args, **kwargs):
        compiled.append(type(fn.__self__).__name__)
        return real_compile(fn, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_backend)
    torch._dynamo.reset()
    states = {}
    for switch in (True, False):
        data = tiny_recipe(tmp_path / str(switch), max_steps=2, val_check_interval=1000, compile=switch)
        (tmp_path / f"{switch}.yaml").write_text(yaml.safe_dump(data))
        result = Trainer(load_recipe(tmp_path / f"{switch}.yaml"), announce=lambda s: None).run()
        states[switch] = ckpt.load_checkpoint(result.last_checkpoint)["model"]
        if switch:
            assert compiled == ["ConformerLayer"] and torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert compiled == ["ConformerLayer"]  # false: nothing more compiled
    assert states[True].keys() == states[False].keys()
    for key, tensor in states[True].items():  # the eager backend runs the same kernels
        torch.testing.assert_close(tensor, states[False][key], msg=key)


def test_compile_switch_needs_encoder_blocks(tmp_path: Path) -> None:
    with pytest.raises(NestkitError, match="trainer.compile"):
        _train(recipe(tmp_path, compile=True))


def test_activation_checkpointing_trains_to_the_same_weights(tmp_path: Path) -> None:
    import yaml

    from _train_recipe import tiny_recipe
    from nestkit.recipe import load_recipe

    states = {}
    for blocks in (0, -1):
        data = tiny_recipe(tmp_path / str(blocks), max_steps=3, val_check_interval=1000, activation_checkpointing=blocks)
        data["model"]["encoder"].update(n_layers=2, dropout=0.1)  # dropout: the replay must redraw the same masks
        (tmp_path / f"{blocks}.yaml").write_text(yaml.safe_dump(data))
        trainer = Trainer(load_recipe(tmp_path / f"{blocks}.yaml"), announce=lambda s: None)
        result = trainer.run()
        assert trainer.parts.checkpointed_layers == (2 if blocks else 0)  # -1: both blocks recompute in backward
        states[blocks] = ckpt.load_checkpoint(result.last_checkpoint)["model"]
    for key, tensor in states[-1].items():
        torch.testing.assert_close(tensor, states[0][key], rtol=1e-5, atol=1e-6, msg=key)


def test_activation_checkpointing_needs_encoder_blocks(tmp_path: Path) -> None:
    with pytest.raises(NestkitError, match="trainer.activation_checkpointing"):
        _train(recipe(tmp_path, activation_checkpointing=2))
