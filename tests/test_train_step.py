"""The training step on its own: no host sync, updates skipped on the device, one step for
train and bench."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import nestkit
import nestkit.bench as nb
from nestkit.data.batch import AudioBatch
from nestkit.train.metrics import TrainMetrics
from nestkit.train.setup import build_parts
from nestkit.train.step import Settled, StepRunner

from _train_recipe import tiny_recipe


def _parts(tmp_path: Path, **optim: object):
    data = tiny_recipe(tmp_path)
    data["model"]["optim"].update(optim)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    torch.manual_seed(0)
    return build_parts(nestkit.load_recipe(path), device=torch.device("cpu"))


def _batch(seed: int = 0) -> AudioBatch:
    return nb.synthetic_batch(3, 1.0, 1.5, 16000, seed, torch.device("cpu"))[0]


@pytest.mark.parametrize("clip", [1.0, None])
def test_two_steps_with_metrics_and_target_statistics_never_wait_on_the_device(tmp_path: Path, clip: float | None) -> None:
    parts = _parts(tmp_path)
    metrics = TrainMetrics(parts.device, 16000)
    runner = StepRunner(parts, sink=metrics.add, gradient_clip_val=clip)
    batch = _batch()
    assert nb.host_syncs(lambda: (runner.step(1, [batch], want_norm=True), runner.step(2, [batch])), parts.device) == []
    assert metrics.targets is not None  # the target statistics ran inside those steps
    # The detector does see a host read: an optimizer that cannot skip on the device needs one.
    slow = StepRunner(_parts(tmp_path / "foreach", fused=False, foreach=True))
    assert not slow.skips_on_device
    assert "_local_scalar_dense" in nb.host_syncs(lambda: slow.step(1, [batch]), parts.device)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_step_changes_neither_weights_nor_optimizer_state(tmp_path: Path, fused: bool, where: str) -> None:
    """A NaN loss, or a finite loss whose backward gives one parameter NaN gradients (an overflow
    in backward): either way the update is skipped."""
    parts = _parts(tmp_path, fused=fused, foreach=None if fused else True)
    runner = StepRunner(parts)
    runner.step(1, [_batch(1)])
    assert runner.settle() == Settled(1, False, False)
    weights = {k: v.clone() for k, v in parts.model.state_dict().items()}
    moments = {k: v.clone() for k, v in parts.optimizer.state_dict()["state"][0].items()}
    lr, scheduled = parts.optimizer.param_groups[0]["lr"], parts.scheduler.last_epoch
    if where == "loss":
        runner.step(2, [_batch(2)], poison=True)
    else:
        last = list(parts.model.parameters())[-1]
        hook = last.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        runner.step(2, [_batch(2)])
        hook.remove()
    assert runner.settle() == Settled(2, True, False)
    after = parts.model.state_dict()
    for key, tensor in weights.items():
        if tensor.is_floating_point() and "running" not in key:  # BatchNorm statistics do move in forward
            assert torch.equal(tensor, after[key]), key
    for key, tensor in moments.items():
        assert torch.equal(tensor, parts.optimizer.state_dict()["state"][0][key]), key
    assert (parts.optimizer.param_groups[0]["lr"], parts.scheduler.last_epoch) == (lr, scheduled)  # nor the schedule
    runner.step(3, [_batch(3)])
    assert runner.settle() == Settled(3, False, False)
    assert any(not torch.equal(t, parts.model.state_dict()[k]) for k, t in weights.items())  # a good step does update


@pytest.mark.parametrize("on_device", [False, True])
def test_bench_and_train_run_the_same_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_device: bool) -> None:
    """The same calls in the same order, the device augmentation included: with
    ``augment_on_device`` both remix each batch inside the step; without it training mixes in
    the loader, outside the step, and the bench's batch comes mixed already."""
    from nestkit.components.augmentors import SpeakerNoiseAugmentor

    calls: list[str] = []
    inside = [False]

    def spy_on(owner: type, name: str, label: str, step: bool = False) -> None:
        real = getattr(owner, name)

        def spy(self, *args, **kwargs):
            if step or inside[0]:
                calls.append(label)
            inside[0] |= step and name == "forward_backward"
            try:
                return real(self, *args, **kwargs)
            finally:
                inside[0] &= not (step and name == "forward_backward")

        monkeypatch.setattr(owner, name, spy)

    for name in ("forward_backward", "settle", "update"):
        spy_on(StepRunner, name, name, step=True)
    spy_on(SpeakerNoiseAugmentor, "__call__", "augment")
    data = tiny_recipe(tmp_path, max_steps=2, val_check_interval=1000)
    data["model"]["train_ds"].update(batch_augmentor={"name": "speaker_noise", "prob": 1.0}, augment_on_device=on_device)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    recipe = nestkit.load_recipe(tmp_path / "tiny.yaml")
    from nestkit.train.loop import Trainer

    Trainer(recipe, announce=lambda s: None).run()
    trained, calls[:] = list(calls), []
    report = nb.run_bench(recipe, nb.BenchSettings(batch=2, min_sec=1, max_sec=1.5, steps=1, warmup=0, device="cpu",
                                                  components=False))
    expected = ["forward_backward", "augment", "settle", "update"] if on_device else ["forward_backward", "settle", "update"]
    assert trained[:len(expected)] == calls[:len(expected)] == expected
    assert report["augment_on_device"] is on_device
