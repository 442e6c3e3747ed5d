"""Processes and devices: one process per device, started by torchrun or by ``--devices N``.

``nestkit train --devices N`` re-launches itself through ``torch.distributed.run`` (torchrun's
elastic launcher), which also stops every worker when one dies. Inside a worker the
environment (RANK, WORLD_SIZE, LOCAL_RANK) says where it stands. Collectives use bounded
timeouts so a dead rank cannot hang the others forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from nestkit.errors import NestkitError

DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True inside a worker started by torchrun (or ``--devices N``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def wanted_processes(devices: int | str, accelerator: str) -> int:
    """How many processes a ``trainer.devices`` setting asks for on this machine."""
    if devices == "cpu":
        return 1
    if devices == "auto":
        return 1 if accelerator == "cpu" else max(1, torch.cuda.device_count())
    count = int(devices)
    if count < 1:
        raise NestkitError(f"trainer.devices must be 'auto', 'cpu' or a positive number, got {devices}")
    return count


def parse_devices(text: str) -> int | str:
    """``--devices`` value: auto, cpu or a number."""
    value = text.strip().lower()
    if value in ("auto", "cpu"):
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise NestkitError(f"--devices: expected 'auto', 'cpu' or a positive number, got '{text}'")


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run ``nestkit <argv>`` as ``nproc`` workers under torchrun; the workers' exit code."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "--max-restarts=0", "--monitor-interval=1", "-m", "nestkit.cli.main", *argv,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    env.setdefault("LOGLEVEL", "WARNING")
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:  # the workers got the signal too and save a checkpoint
        return 130


def setup(devices: int | str, accelerator: str) -> DistInfo:
    """Pick this process's device and join the process group when there are several ranks."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and devices != "cpu" and accelerator != "cpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise NestkitError("trainer.accelerator is 'gpu' but no CUDA device is available (use 'auto' or 'cpu')")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise NestkitError(f"local rank {local} has no GPU: only {torch.cuda.device_count()} visible")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("NESTKIT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        kwargs: dict[str, Any] = {"backend": "nccl" if use_cuda else "gloo", "timeout": timeout}
        if use_cuda:
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place max over ranks (no-op on one rank)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op on one rank)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """Every rank's ``obj`` (plain data and CPU tensors), on every rank."""
    if world_size == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: without SyncBatchNorm (CPU) each
    rank's last forward updates its own statistics, so the ranks end with identical models."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
