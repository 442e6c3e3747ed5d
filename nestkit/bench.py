"""Training-step benchmark of a recipe's model: step time, throughput, FLOPs/MFU, memory, per component.

Used by ``nestkit bench`` and ``benchmarks/model_step.py``. The step is the trainer's own
(:mod:`nestkit.train.setup` builds the parts, :class:`nestkit.train.step.StepRunner` runs them,
with the trainer's device-side metrics and target statistics), so what is timed is what
training runs. The batch is synthetic and seeded (uniform durations, Gaussian "speech", noise
mixed in at a random SNR), so two runs of the same settings time the same work; a recipe with
``augment_on_device: true`` has it remixed inside the step, as training does. Timing
synchronises the device only at step boundaries; nothing inside a step reads a device value on
the host.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from nestkit.data.batch import AudioBatch, augment_on_its_device
from nestkit.data.config import DatasetConfig
from nestkit.devices import resolve_device
from nestkit.errors import NestkitError
from nestkit.train.metrics import TrainMetrics
from nestkit.train.setup import PRECISIONS, autocast, build_parts, configure_blocks
from nestkit.train.step import StepRunner

if TYPE_CHECKING:
    from nestkit.recipe import Recipe

BENCH_FLAGS = {"compile": "--compile", "activation_checkpointing": "--activation-checkpointing"}

__all__ = ["PRECISIONS", "autocast", "forward_loss", "host_syncs", "run_bench", "synthetic_batch"]

# Dense (no sparsity) bf16/fp16 tensor-core peak of common GPUs, TFLOP/s, from the vendors' data
# sheets; matched in order against torch.cuda.get_device_name(). Used only for mixed precision.
PEAK_TFLOPS_16BIT: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
)

# Ops that make the host wait for the device (a value read back, or an output shape that
# depends on the data). One of them inside the training step stalls the GPU pipeline.
HOST_SYNC_OPS = frozenset(
    {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive", "item"}
)
_BOOL_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})  # x[mask]: a nonzero inside


def synthetic_batch(
    batch: int, min_sec: float, max_sec: float, sample_rate: int, seed: int, device: torch.device
) -> tuple[AudioBatch, float]:
    """A seeded batch of ``batch`` utterances with durations uniform in [min_sec, max_sec], and
    its total audio seconds. Drawn on the CPU (the same numbers on every device), then moved.

    Shaped as the loader's batches are: ``noise`` holds each utterance's noise, already at an SNR
    of the NEST recipe's range, and ``noisy_audio = audio + noise``; a batch augmentor run on
    the device (``augment_on_device``) remixes them as it would a real batch."""
    if batch < 1:
        raise NestkitError(f"--batch must be at least 1, got {batch}")
    if not 0 < min_sec <= max_sec:
        raise NestkitError(f"need 0 < --min-sec <= --max-sec, got {min_sec} and {max_sec}")
    g = torch.Generator().manual_seed(seed)
    seconds = min_sec + (max_sec - min_sec) * torch.rand(batch, generator=g, dtype=torch.float64)
    lengths = (seconds * sample_rate).long().clamp_min(1)
    total = int(lengths.max())
    inside = torch.arange(total)[None, :] < lengths[:, None]
    audio = 0.1 * torch.randn(batch, total, generator=g) * inside
    snr_db = -5.0 + 25.0 * torch.rand(batch, 1, generator=g)  # the NEST recipe's noise SNR range
    noise = torch.randn(batch, total, generator=g) * inside
    noise = noise * (0.1 / 10 ** (snr_db / 20))
    out = AudioBatch(audio=audio, audio_len=lengths, noise=noise, noise_len=lengths, noisy_audio=audio + noise,
                     noisy_audio_len=lengths, indices=torch.arange(batch), seed=seed)
    return out.to(device), float(lengths.sum()) / sample_rate


def peak_tflops_for(device: torch.device, precision: str, given: float | None) -> tuple[float | None, str]:
    """Peak TFLOP/s for MFU and where it came from: ``--peak-tflops``, the GPU table, or none."""
    if given is not None:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, "none: CPU (pass --peak-tflops to get an MFU)"
    name = torch.cuda.get_device_name(device)
    if precision not in ("bf16-mixed", "16-mixed"):
        return None, f"none: no float32 peak is tabulated for {name} (pass --peak-tflops)"
    for key, value in PEAK_TFLOPS_16BIT:
        if key in name:
            return value, f"table: {name} dense 16-bit tensor-core peak"
    return None, f"none: {name} is not in the table (pass --peak-tflops)"


def sync(device: torch.device) -> None:
    """Wait for the device (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """CUDA: the most memory allocated since the last reset; CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    import resource  # POSIX only: imported where it is used, so the module imports everywhere

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"


def forward_loss(model: nn.Module, batch: AudioBatch) -> Tensor:
    """The model's training loss (masking on) for ``batch``."""
    return model(batch.audio, batch.audio_len, batch.noisy_audio, batch.noisy_audio_len).loss


class _OpRecorder(TorchDispatchMode):
    """Records the names of host-syncing ops dispatched while active."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.found: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket.__name__
        if name in _BOOL_INDEX_OPS and len(args) > 1 and isinstance(args[1], (list, tuple)):
            if any(isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
                self.found.append(f"{name} (boolean mask)")
        elif name in HOST_SYNC_OPS:
            tensor = args[0] if args and isinstance(args[0], Tensor) else None
            # A 0-dim CPU draw (stochastic depth) is not a device sync on a GPU run.
            if not (self.device.type == "cuda" and tensor is not None and tensor.device.type == "cpu"):
                self.found.append(name)
        return func(*args, **(kwargs or {}))


def host_syncs(fn: Callable[[], Any], device: torch.device) -> list[str]:
    """Host-syncing ops run by ``fn`` (empty: the device never has to report back)."""
    recorder = _OpRecorder(device)
    with recorder:
        fn()
    return recorder.found


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn`` as counted by ``torch.utils.flop_counter`` (matmuls, convs, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def component_times(
    model: nn.Module, batch: AudioBatch, device: torch.device, amp: Callable[[], Any], repeats: int = 3
) -> dict[str, dict[str, float | None]]:
    """Median forward and backward milliseconds of preprocessor (clean + noisy audio), quantizer,
    masking, encoder (backward of a random output gradient) and decoder+loss. The first three
    have nothing to train (frozen or no parameters): their backward is null."""
    with torch.no_grad(), amp():
        feats, feats_len = model.preprocessor(batch.audio, batch.audio_len)
        noisy, _ = model.preprocessor(batch.noisy_audio, batch.noisy_audio_len)
        masked, masks = model.masking(noisy, feats_len)
        tokens = model.quantizer(feats)
        encoded, encoded_len = model.encoder(masked, feats_len)
    grad = torch.randn_like(encoded)
    masked = masked.detach()

    def preprocessor() -> tuple[Callable[[], Any], None]:
        return (lambda: (model.preprocessor(batch.audio, batch.audio_len),
                         model.preprocessor(batch.noisy_audio, batch.noisy_audio_len))), None

    def encoder() -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        return (lambda: model.encoder(masked, feats_len)[0]), (lambda out: out.backward(grad))

    def head() -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        def fwd() -> Tensor:
            enc = encoded.detach().requires_grad_(True)
            return model.loss(masks=masks, log_probs=model.decoder(enc), tokens=tokens, encoded_len=encoded_len)

        return fwd, lambda loss: loss.backward()

    stages: dict[str, Callable[[], tuple[Callable[[], Any], Callable[[Any], Any] | None]]] = {
        "preprocessor": preprocessor,
        "quantizer": lambda: ((lambda: model.quantizer(feats)), None),
        "masking": lambda: ((lambda: model.masking(noisy, feats_len)), None),
        "encoder": encoder,
        "decoder+loss": head,
    }
    report: dict[str, dict[str, float | None]] = {}
    for name, make in stages.items():
        forward, backward = make()
        fwd_times: list[float] = []
        bwd_times: list[float] = []
        for i in range(repeats + 1):  # the first round warms up
            if backward is None:
                with torch.no_grad(), amp():
                    _, f = _timed(forward, device)
            else:
                with amp():
                    out, f = _timed(forward, device)
                _, b = _timed(lambda: backward(out), device)
                if i:
                    bwd_times.append(b)
            if i:
                fwd_times.append(f)
            model.zero_grad(set_to_none=True)
        report[name] = {
            "forward_ms": round(1e3 * statistics.median(fwd_times), 2),
            "backward_ms": round(1e3 * statistics.median(bwd_times), 2) if bwd_times else None,
        }
    return report


@dataclass
class BenchSettings:
    """What ``nestkit bench`` runs (see the CLI for the meaning of each)."""

    batch: int = 128
    min_sec: float = 8.0
    max_sec: float = 16.0
    steps: int = 20
    warmup: int = 5
    precision: str = "bf16-mixed"
    compile: bool | None = None  # None: on for CUDA, off for CPU
    activation_checkpointing: int = 0  # encoder blocks recomputed in backward (-1: all)
    device: str = "auto"
    peak_tflops: float | None = None
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default)
    components: bool = True


def device_augmentation(recipe: Recipe, data: DatasetConfig) -> Callable[[AudioBatch], AudioBatch] | None:
    """The batch augmentor that training runs inside its step (``augment_on_device: true``), or
    None when the recipe augments in the loader workers, outside the timed step."""
    if not data.augment_on_device or data.batch_augmentor is None:
        return None
    augmentor = recipe.registry.build("augmentor", data.batch_augmentor, key="batch_augmentor")
    generators: dict[str, torch.Generator] = {}
    return lambda batch: augment_on_its_device(augmentor, generators, batch)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_bench(recipe: Any, settings: BenchSettings) -> dict[str, Any]:
    """Benchmark ``recipe`` (a Recipe, path or mapping) and return the JSON-ready report."""
    from nestkit.recipe import Recipe, load_recipe

    if settings.steps < 1 or settings.warmup < 0:
        raise NestkitError(f"need --steps >= 1 and --warmup >= 0, got {settings.steps} and {settings.warmup}")
    if settings.peak_tflops is not None and settings.peak_tflops <= 0:
        raise NestkitError(f"--peak-tflops must be positive, got {settings.peak_tflops}")
    if settings.precision not in PRECISIONS:
        raise NestkitError(f"--precision must be one of {', '.join(PRECISIONS)}; got '{settings.precision}'")
    device = resolve_device(settings.device)
    use_compile = device.type == "cuda" if settings.compile is None else settings.compile
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if recipe.optimizer_section is None:
        raise NestkitError("the recipe has no model.optim section: nothing to benchmark the optimizer step with")

    with _threads(settings.threads):
        torch.manual_seed(settings.seed)
        parts = build_parts(recipe, device=device, precision=settings.precision,
                            scheduler_steps=settings.warmup + settings.steps + 3)
        model = parts.model.train()
        data = recipe.train_ds or DatasetConfig(sample_rate=recipe.sample_rate)  # as the trainer's data path
        batch, audio_seconds = synthetic_batch(
            settings.batch, settings.min_sec, settings.max_sec, data.sample_rate, settings.seed, device
        )
        prepare = device_augmentation(recipe, data)
        metrics = TrainMetrics(device, data.sample_rate)
        runner = StepRunner(parts, sink=metrics.add)
        steps = iter(range(1, 10**9))

        def step() -> None:
            runner.step(next(steps), [batch], prepare=prepare)

        # Counted on the eager model (the same math as the compiled one), before any timing. Two
        # steps: the second also reads the first one's flags, as every training step does.
        flops = count_flops(step)
        syncs = host_syncs(lambda: (step(), step()), device)

        components = component_times(model, batch, device, parts.autocast) if settings.components else None
        model.zero_grad(set_to_none=True)

        configure_blocks(parts, compile=use_compile, activation_checkpointing=settings.activation_checkpointing,
                         names=BENCH_FLAGS)
        _, first_step = _timed(step, device)
        for _ in range(max(settings.warmup - 1, 0)):
            step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        metrics.read(None, 1.0)  # the timed steps' own loss below
        times = [_timed(step, device)[1] for _ in range(settings.steps)]
        memory, memory_kind = peak_memory_mb(device)
        final_loss = metrics.read(None, 1.0).get("train_loss", math.nan)  # read after timing

    median = statistics.median(times)
    peak, peak_source = peak_tflops_for(device, settings.precision, settings.peak_tflops)
    achieved = flops / median / 1e12
    return {
        "recipe": recipe.source or None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": settings.threads or torch.get_num_threads(),
        "precision": settings.precision,
        "compile": use_compile,
        "compiled_layers": parts.compiled_layers,
        "checkpointed_layers": parts.checkpointed_layers,
        "batch": settings.batch,
        "min_sec": settings.min_sec,
        "max_sec": settings.max_sec,
        "seed": settings.seed,
        "audio_seconds_per_batch": round(audio_seconds, 3),
        "augment_on_device": prepare is not None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "warmup": settings.warmup,
        "steps": settings.steps,
        "first_step_s": round(first_step, 4),
        "step_time_s": {"median": round(median, 4), "min": round(min(times), 4), "max": round(max(times), 4)},
        "audio_seconds_per_second": round(audio_seconds / median, 2),
        "flops_per_step": flops,
        "model_tflops": round(achieved, 6),
        "peak_tflops": peak,
        "peak_tflops_source": peak_source,
        "mfu": round(achieved / peak, 6) if peak else None,
        "peak_memory_mb": round(memory, 1),
        "peak_memory_kind": memory_kind,
        "host_syncs_in_step": syncs,
        "components": components,
        "final_loss": round(final_loss, 5),
    }
