"""A tiny model and loader with the shapes of the real ones, so the loop is tested on its own."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from nestkit.data.skips import SkipReport
from nestkit.registry import Component, ComponentConfig, Registry


@dataclass
class FakeBatch:
    audio: torch.Tensor
    audio_len: torch.Tensor
    noisy_audio: torch.Tensor
    noisy_audio_len: torch.Tensor
    indices: torch.Tensor
    skipped: dict[str, int] = field(default_factory=dict)

    def to(self, device: Any, non_blocking: bool = False) -> FakeBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)})


@dataclass
class Out:
    loss: torch.Tensor
    masked_accuracy: torch.Tensor
    masked_fraction: torch.Tensor


class FakeModel(torch.nn.Module):
    """Regresses a fixed projection of the input; uses the global RNG like real masking does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        self.register_buffer("target", 0.3 * torch.randn(16, 4))

    def forward(self, audio, audio_len, *, noisy_audio, noisy_audio_len, apply_mask=True) -> Out:
        x = noisy_audio.view(noisy_audio.shape[0], -1, 16)
        keep = (torch.rand(x.shape[:2], device=x.device) > 0.3).float().unsqueeze(-1)
        err = (self.net(x) - audio.view(x.shape) @ self.target) ** 2
        loss = (err * keep).sum() / (keep.sum() * 4)
        return Out(loss, torch.exp(-loss.detach()), torch.tensor(0.3))


class FakeLoader:
    """Deterministic per (seed, epoch); rank r takes every world_size-th batch; resumable."""

    def __init__(self, n_items: int, batch_size: int, seed: int, rank: int, world_size: int, shuffle: bool) -> None:
        self.n, self.bs, self.seed, self.rank, self.world, self.shuffle = n_items, batch_size, seed, rank, world_size, shuffle
        self.epoch, self.pos = 0, 0
        self.skipped = {"too_short": 1}
        self.augment_on_device = False

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.pos = epoch, 0

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        batches = [order[i : i + self.bs] for i in range(0, self.n - self.bs + 1, self.bs)]
        return batches[self.rank :: self.world]

    def num_batches(self) -> int:
        return len(self._order())

    def describe(self) -> str:
        return f"{self.n} fake items"

    def device_augmentor(self, batch: FakeBatch) -> FakeBatch:
        return batch

    def skipped_report(self) -> SkipReport:
        return SkipReport("fake", dict(self.skipped), {"too_short": ["item0"]}, [("too_short", "item0")], self.n - 1)

    def __iter__(self):
        batches = self._order()
        while self.pos < len(batches):
            idx = batches[self.pos]
            self.pos += 1
            g = torch.Generator().manual_seed(int(idx.sum()) + 7 * self.epoch)
            audio = torch.randn(len(idx), 64, generator=g)
            lens = torch.full((len(idx),), 64)
            yield FakeBatch(audio, lens, audio + 0.1 * torch.randn(len(idx), 64, generator=g), lens.clone(), idx)
        self.pos = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]


def loader_factory(n_items: int = 96):
    def make(cfg, *, sample_rate, train, seed, rank=0, world_size=1, epoch=0, registry=None):
        return FakeLoader(n_items if train else 16, cfg.batch_size, seed, rank, world_size, shuffle=train)

    return make


class _NoConfig(ComponentConfig):
    pass


def fake_registry() -> Registry:
    from nestkit.components import optim

    reg = Registry()
    for c in optim.components():
        reg.add(c, provider="nestkit")
    reg.add(Component("model", "nest", lambda cfg: FakeModel(), _NoConfig, "fake"), provider="test")
    return reg


def recipe(tmp_path, **trainer: Any):
    from nestkit.recipe import load_recipe

    data = {
        "name": "fake",
        "model": {
            "train_ds": {"manifest_filepath": "unused.json", "batch_size": 4},
            "validation_ds": {"manifest_filepath": "unused.json", "batch_size": 4, "shuffle": False},
            "optim": {"name": "adamw", "lr": 0.01, "sched": {"name": "noam", "d_model": 1, "warmup_steps": 5, "min_lr": 1e-5}},
        },
        "trainer": {"devices": "cpu", "max_steps": 12, "log_every_n_steps": 2, "val_check_interval": 4, **trainer},
        "exp_manager": {"exp_dir": str(tmp_path), "name": "run"},
    }
    return load_recipe(data, registry=fake_registry())
