"""What every conformance check shares: the component under test, named checks, tiny inputs.

A :class:`Subject` builds fresh copies of one component (``build(seed)``) and runs named checks
(``with subject.check("padding"): ...``); the first failing check raises
:class:`ComponentCheckError`, an ``AssertionError`` that names the component and the check.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

BATCH = 3
FRAMES = 64
FRAME_LENGTHS = (64, 50, 37)  # the longest fills the batch, the others leave padding
SECONDS = (0.5, 0.375, 0.26)


class ComponentCheckError(AssertionError):
    """A component failed a conformance check (``check`` names which)."""

    def __init__(self, component: str, check: str, detail: str) -> None:
        self.component, self.check, self.detail = component, check, detail
        super().__init__(f"{component}: check '{check}' failed: {detail}")


@dataclass
class Subject:
    """One component under test: how to build it, its validated fields, and the checks run so far."""

    kind: str
    label: str  # "encoder provider:name", for messages
    fields: dict[str, Any]  # the validated config, as a mapping (sizes are read from it)
    builder: Callable[..., Any]  # (**context) -> a fresh component
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def build(self, seed: int = 0, **context: Any) -> Any:
        """A fresh component, its random initialisation drawn under ``seed`` (the first build is
        the check ``build``)."""
        seed_cpu(seed)
        with self.check("build") if "build" not in self.passed else contextlib.nullcontext():
            return self.builder(**context)

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        """Run one named check: any exception inside it fails it, naming it."""
        try:
            yield
        except ComponentCheckError:
            raise
        except AssertionError as exc:
            raise ComponentCheckError(self.label, name, str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported by name
            text = " ".join(str(exc).split())
            raise ComponentCheckError(self.label, name, f"{type(exc).__name__}: {text}") from exc
        self.passed.append(name)

    def skip(self, name: str, why: str) -> None:
        self.skipped[name] = why


def expect(condition: bool, message: str) -> None:
    """An assertion that ``python -O`` keeps."""
    if not condition:
        raise AssertionError(message)


def in_mode(component: Any, training: bool) -> Any:
    """``component`` in training or eval mode (when it is a module) and returned."""
    if isinstance(component, nn.Module):
        component.train(training)
    return component


def seed_cpu(seed: int) -> None:
    """Seed torch's global CPU generator (the checks run on the CPU; ``torch.manual_seed`` would
    also queue a seed for every CUDA device, which costs more than a small check)."""
    torch.default_generator.manual_seed(seed)


def seeded(seed: int, run: Callable[[], Any]) -> Any:
    """``run()`` with torch's global generator seeded (masking, dropout, SpecAugment draw from it)."""
    seed_cpu(seed)
    return run()


def leaves(value: Any) -> list[Tensor]:
    """The tensors inside an output (a tensor, a tuple or list of them, or a dataclass)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in leaves(v)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in leaves(getattr(value, f.name))]
    return []


def same(a: Any, b: Any, what: str, atol: float = 0.0) -> None:
    """Every tensor of ``a`` equals the one of ``b`` (within ``atol``)."""
    xs, ys = leaves(a), leaves(b)
    expect(len(xs) == len(ys), f"{what}: {len(xs)} tensors, then {len(ys)}")
    for i, (x, y) in enumerate(zip(xs, ys)):
        expect(x.shape == y.shape, f"{what}: output {i} has shape {tuple(x.shape)}, then {tuple(y.shape)}")
        if atol == 0.0 or not x.is_floating_point():
            expect(torch.equal(x, y), f"{what}: output {i} differs")
        else:
            diff = float((x.detach().float() - y.detach().float()).abs().max()) if x.numel() else 0.0
            expect(diff <= atol, f"{what}: output {i} differs by up to {diff:.3g} (tolerance {atol:g})")


def determinism(subject: Subject, run: Callable[[Any], Any], **context: Any) -> None:
    """Two builds under one seed hold the same state, and one seed gives one output."""
    with subject.check("determinism"):
        first, second = subject.build(0, **context), subject.build(0, **context)
        if isinstance(first, nn.Module):
            same(list(first.state_dict().values()), list(second.state_dict().values()), "state after two builds under one seed")
        same(seeded(1, lambda: run(first)), seeded(1, lambda: run(first)), "two runs under one seed")
        same(seeded(1, lambda: run(first)), seeded(1, lambda: run(second)), "two builds under one seed")


def state_round_trip(subject: Subject, run: Callable[[Any], Any], **context: Any) -> None:
    """The state dict, saved as a checkpoint saves it and loaded (strictly) into a build under
    another seed, gives the same outputs."""
    original = subject.build(0, **context)
    if not isinstance(original, nn.Module):
        subject.skip("state_dict", "not a torch.nn.Module: nothing is saved in checkpoints")
        return
    with subject.check("state_dict"):
        twin = subject.build(1, **context)
        twin.load_state_dict(saved(original.state_dict()))
        same(seeded(2, lambda: run(original)), seeded(2, lambda: run(twin)), "outputs after a state-dict round trip")


def saved(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` written and read back as a checkpoint does (``weights_only``): no tensor shared."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def bf16() -> contextlib.AbstractContextManager[Any]:
    """CPU bfloat16 autocast, as ``trainer.precision: bf16-mixed`` runs on a CPU."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


def finite(tensor: Tensor, what: str) -> None:
    expect(tensor.is_floating_point(), f"{what}: expected a floating tensor, got {tensor.dtype}")
    expect(bool(torch.isfinite(tensor).all()), f"{what}: not finite")


# ---------------------------------------------------------------------------- tiny inputs


def valid(lengths: Tensor, size: int) -> Tensor:
    """(B, size) bool: position < length."""
    return torch.arange(size)[None, :] < lengths[:, None]


def feature_batch(channels: int, frames: int = FRAMES, lengths: tuple[int, ...] = FRAME_LENGTHS) -> tuple[Tensor, Tensor]:
    """(B, channels, frames) features, zero past each length, and the lengths (int64)."""
    g = torch.Generator().manual_seed(11)
    lens = torch.tensor([round(n * frames / FRAMES) for n in lengths], dtype=torch.int64)
    feats = torch.randn(len(lengths), channels, frames, generator=g)
    return feats * valid(lens, frames)[:, None, :], lens


def audio_batch(sample_rate: int, seconds: tuple[float, ...] = SECONDS) -> tuple[Tensor, Tensor]:
    """(B, S) float32 audio (a tone in noise), zero past each length, and the lengths (int64)."""
    g = torch.Generator().manual_seed(12)
    lens = torch.tensor([int(s * sample_rate) for s in seconds], dtype=torch.int64)
    t = torch.arange(int(lens.max())) / sample_rate
    tone = 0.3 * torch.sin(2 * torch.pi * 220.0 * t)[None, :] * torch.linspace(0.5, 1.0, len(seconds))[:, None]
    audio = tone + 0.05 * torch.randn(len(seconds), t.shape[0], generator=g)
    return audio * valid(lens, t.shape[0]), lens


def new_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """``x`` (B, ..., T) with other (large, random) content past each length along the last axis."""
    g = torch.Generator().manual_seed(13)
    inside = valid(lengths, x.shape[-1]).view(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
    return torch.where(inside, x, 3.0 * torch.randn(x.shape, generator=g))
