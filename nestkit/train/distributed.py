"""Processes and devices: one process per device, started by torchrun or by ``--devices N``.

``nestkit train --devices N`` re-launches itself through ``torch.distributed.run`` (torchrun's
elastic launcher), which also stops every worker when one dies. Inside a worker the
environment (RANK, WORLD_SIZE, LOCAL_RANK) says where it stands. Collectives use bounded
timeouts so a dead rank cannot hang the others forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nestkit.errors import NestkitError, RecipeError
from nestkit.train import worker_errors
from nestkit.train.experiment import process_alive

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


def check_nodes(num_nodes: int, source: str = "") -> None:
    """``trainer.num_nodes`` > 1 is a run torchrun starts on each machine; from one plain process
    it would silently train on this machine alone."""
    if num_nodes > 1 and not launched_by_torchrun():
        raise RecipeError(f"{num_nodes} machines need torchrun on each of them (torchrun --nnodes {num_nodes} "
                          "--nproc-per-node N --rdzv-endpoint HOST:PORT -m nestkit.cli.main train RECIPE); "
                          "for this machine alone set trainer.num_nodes=1", key="trainer.num_nodes", file=source)


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


LAUNCHED_ENV = worker_errors.LAUNCHED_ENV
PEER_LOST_EXIT = 3  # a worker that stopped because another one died (not the cause)
_QUIET_EXITS = (PEER_LOST_EXIT, 129, 130, 143)


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run ``nestkit <argv>`` as ``nproc`` workers under torchrun's elastic launcher (in this
    process, so a failure is reported as one line naming the rank that died); their exit code."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    os.environ[LAUNCHED_ENV] = str(os.getpid())  # the workers' parent: they stop when it dies
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    for name in list(logging.root.manager.loggerDict):  # the launcher's own chatter; failures are ours to report
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    args = get_args_parser().parse_args([
        "--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=1",
        "-m", "nestkit.cli.main", *argv,
    ])
    with tempfile.TemporaryDirectory(prefix="nestkit-launch-") as launch:
        errors = os.path.join(launch, "errors")
        os.mkdir(errors)
        os.environ[worker_errors.ERRORS_ENV] = errors
        args.log_dir = os.path.join(launch, "logs")  # else the launcher leaves a /tmp/torchelastic_* folder per run
        try:
            run(args)
        except ChildFailedError as err:
            worker_errors.print_unseen(Path(errors))
            return _report_failure(err)
        except KeyboardInterrupt:  # the workers got the signal too and save a checkpoint
            return 130
        except SignalException as err:  # the launcher's own way to report SIGINT/SIGTERM to it
            return 128 + int(err.sigval)
    return 0


def _report_failure(err: Any) -> int:
    """The exit code for a failed launch; raises a one-line error when a worker died."""
    failures = sorted(err.failures.items(), key=lambda kv: (kv[1].exitcode in _QUIET_EXITS, kv[1].timestamp))
    rank, failure = failures[0]
    if failure.exitcode < 0:
        raise NestkitError(
            f"training process rank {rank} died ({failure.signal_name()}); the other ranks stopped. "
            "Rerun the same command to resume from the last checkpoint"
        )
    if failure.exitcode in (2, *_QUIET_EXITS):  # the worker has printed its own one-line message
        return failure.exitcode if failure.exitcode != PEER_LOST_EXIT else 1
    raise NestkitError(f"training process rank {rank} failed with exit code {failure.exitcode} (see its messages above)")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank went away."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(s in text for s in ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "ProcessGroupGloo", "NCCL"))


def stop_with_launcher() -> None:
    """Ask Linux to send this worker SIGHUP when its launcher dies, even by SIGKILL: the ranks then
    save and stop instead of training on, orphaned, and holding the run folder's lock."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGHUP)
    launcher = os.environ.get(LAUNCHED_ENV, "")
    if launcher.isdigit() and not process_alive(int(launcher)):  # gone before the request took hold
        os.kill(os.getpid(), signal.SIGHUP)


def setup(devices: int | str, accelerator: str) -> DistInfo:
    """Pick this process's device and join the process group when there are several ranks."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and devices != "cpu" and accelerator != "cpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise RecipeError("'gpu' but no CUDA device is available here (use 'auto' or 'cpu')", key="trainer.accelerator")
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


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: without SyncBatchNorm (CPU) each
    rank's last forward updates its own statistics, so the ranks end with identical models."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
