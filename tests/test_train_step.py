"""The training step on its own: no host sync, updates skipped on the device, one step for
train and bench."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import nestkit
import nestkit.bench as nb
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


def _batch(seed: int = 0) -> nb.SyntheticBatch:
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


def test_bench_and_train_run_the_same_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name in ("forward_backward", "settle", "update"):
        real = getattr(StepRunner, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(StepRunner, name, spy)
    data = tiny_recipe(tmp_path, max_steps=2, val_check_interval=1000)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    recipe = nestkit.load_recipe(tmp_path / "tiny.yaml")
    from nestkit.train.loop import Trainer

    Trainer(recipe, announce=lambda s: None).run()
    trained, calls[:] = list(calls), []
    nb.run_bench(recipe, nb.BenchSettings(batch=2, min_sec=1, max_sec=1.5, steps=1, warmup=0, device="cpu", components=False))
    assert trained[:3] == calls[:3] == ["forward_backward", "settle", "update"]
