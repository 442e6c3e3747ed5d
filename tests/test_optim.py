"""Optimizers and schedulers: NeMo's learning-rate curves, parameter groups, recipe errors."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

import nestkit
from _nemo_ref import reference_file
from nestkit.errors import RecipeError



def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.zeros(4))]


def _lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


def test_noam_matches_nemo_at_every_listed_step() -> None:
    ref = json.loads(reference_file("noam_lr.json").read_text())
    cfg = ref["config"]
    opt = nestkit.build("optimizer", {"name": "adamw", "lr": cfg["lr"]}, params=_params())
    sched = nestkit.build(
        "scheduler",
        {"name": "noam", "d_model": cfg["d_model"], "warmup_steps": cfg["warmup_steps"], "min_lr": cfg["min_lr"]},
        optimizer=opt,
    )
    taken = 0
    for row in ref["lrs"]:
        target = row["optimizer_steps_taken"]
        if target - taken > 2000:  # jump by restoring the scheduler's step counter, then take a real step
            sched.load_state_dict({**sched.state_dict(), "last_epoch": target - 1})
            sched.step()
        else:  # the rate follows the scheduler's step count alone: one real update per listed step is enough
            opt.step()
            for _ in range(target - taken):
                sched.step()
        taken = target
        assert sched.last_epoch == target
        assert math.isclose(_lr(opt), row["lr"], rel_tol=1e-12, abs_tol=0.0), (target, _lr(opt), row["lr"])


def test_noam_floors_at_min_lr_only_after_warmup() -> None:
    opt = nestkit.build("optimizer", {"name": "sgd", "lr": 1.0}, params=_params())
    sched = nestkit.build("scheduler", {"name": "NoamAnnealing", "d_model": 1, "warmup_steps": 4, "min_lr": 0.4}, optimizer=opt)
    assert sched.lr_at(1.0, 1) == pytest.approx(1 * 4**-1.5)  # below min_lr inside warmup: not floored
    assert sched.lr_at(1.0, 100) == pytest.approx(0.4)  # 100^-0.5 = 0.1 -> floored


def test_cosine_annealing_follows_nemo_semantics() -> None:
    opt = nestkit.build("optimizer", {"name": "adam", "lr": 2.0}, params=_params())
    sched = nestkit.build(
        "scheduler", {"name": "cosine_annealing", "warmup_steps": 3, "min_lr": 0.1}, optimizer=opt, trainer_max_steps=13
    )
    seen = [_lr(opt)]
    for _ in range(15):
        opt.step()
        sched.step()
        seen.append(_lr(opt))
    assert seen[:4] == pytest.approx([2.0 * (s + 1) / 4 for s in range(4)])
    for s in range(4, 14):
        assert seen[s] == pytest.approx(0.1 + 1.9 * 0.5 * (1 + math.cos(math.pi * (s - 3) / 10)))
    assert seen[13] == pytest.approx(0.1) and seen[14] == 0.1 and seen[15] == 0.1


def test_cosine_needs_a_step_budget() -> None:
    opt = nestkit.build("optimizer", {"name": "adamw"}, params=_params())
    with pytest.raises(RecipeError, match=r"^scheduler \(nestkit:cosine_annealing\): cosine_annealing needs a step budget"):
        nestkit.build("scheduler", {"name": "cosine_annealing"}, optimizer=opt, trainer_max_steps=-1)


def test_constant_with_warmup() -> None:
    opt = nestkit.build("optimizer", {"name": "sgd", "lr": 0.5, "momentum": 0.9}, params=_params())
    sched = nestkit.build("scheduler", {"name": "constant", "warmup_steps": 1}, optimizer=opt)
    assert _lr(opt) == 0.25
    opt.step(); sched.step()
    assert _lr(opt) == 0.5
    opt.step(); sched.step()
    assert _lr(opt) == 0.5


def test_scheduler_state_is_weights_only_loadable() -> None:
    opt = nestkit.build("optimizer", {"name": "adamw", "lr": 1.0}, params=_params())
    sched = nestkit.build("scheduler", {"name": "noam", "d_model": 16, "warmup_steps": 10}, optimizer=opt)
    for _ in range(7):
        opt.step(); sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = nestkit.build("optimizer", {"name": "adamw", "lr": 1.0}, params=_params())
    sched2 = nestkit.build("scheduler", {"name": "noam", "d_model": 16, "warmup_steps": 10}, optimizer=opt2)
    opt2.load_state_dict(state["opt"]); sched2.load_state_dict(state["sched"])
    opt.step(); sched.step(); opt2.step(); sched2.step()
    assert _lr(opt2) == _lr(opt)


def test_no_decay_norm_and_bias_groups() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    plain = nestkit.build("optimizer", {"name": "adamw", "weight_decay": 0.1}, params=model.parameters())
    assert [g["weight_decay"] for g in plain.param_groups] == [0.1]
    split = nestkit.build(
        "optimizer", {"name": "adamw", "weight_decay": 0.1, "no_decay_norm_and_bias": True}, params=model.named_parameters()
    )
    assert [(g["weight_decay"], len(g["params"])) for g in split.param_groups] == [(0.1, 1), (0.0, 3)]


def test_frozen_parameters_are_left_out() -> None:
    frozen, live = torch.nn.Parameter(torch.ones(2), requires_grad=False), torch.nn.Parameter(torch.ones(2))
    opt = nestkit.build("optimizer", {"name": "adamw"}, params=[frozen, live])
    assert opt.param_groups[0]["params"] == [live]


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"name": "adamw", "betas": [0.9, 1.2]}, "betas"),
        ({"name": "adamw", "lrr": 0.1}, "did you mean 'lr'"),
        ({"name": "sgd", "nesterov": True}, "nesterov"),
    ],
)
def test_bad_optimizer_sections_are_one_line_errors(section: dict, needle: str) -> None:
    with pytest.raises(RecipeError, match=needle) as info:
        nestkit.build("optimizer", section, params=_params())
    assert "\n" not in str(info.value)


def test_noam_rejects_both_warmups() -> None:
    with pytest.raises(RecipeError, match="not both"):
        nestkit.build("scheduler", {"name": "noam", "d_model": 8, "warmup_steps": 3, "warmup_ratio": 0.1}, optimizer=None)


def test_fused_default_matches_the_plain_loop() -> None:
    import nestkit

    results = {}
    for label, fused in {"fused": None, "plain": False}.items():
        torch.manual_seed(0)
        layer = torch.nn.Linear(16, 8)
        opt = nestkit.build("optimizer", {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-3, "fused": fused},
                            params=layer.named_parameters())
        assert bool(opt.defaults.get("fused")) is (fused is None)
        for step in range(5):
            torch.manual_seed(100 + step)
            loss = layer(torch.randn(4, 16)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[label] = layer.weight.detach().clone()
    torch.testing.assert_close(results["fused"], results["plain"], atol=1e-6, rtol=1e-5)
