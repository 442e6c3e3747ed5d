"""The ``trainer`` and ``exp_manager`` sections (NeMo's key names)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nestkit.health.warnings import TargetHealthConfig


def folder_name_problem(value: str) -> str | None:
    """Why ``value`` cannot name a run's folder below ``exp_dir`` (None when it can): an empty
    name would write into ``exp_dir`` itself, a path would leave it."""
    if not value.strip():
        return "an empty name would put the run's files straight into exp_dir"
    if value in (".", "..") or "/" in value or "\\" in value:
        return f"'{value}' is a path, not a folder name: the run's folder must stay inside exp_dir"
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainerConfig(_Section):
    """How to train: devices, length, precision, validation and logging cadence."""

    devices: Annotated[int, Field(ge=1)] | Literal["auto", "cpu"] = Field(
        "auto", description="'auto' (all GPUs, else CPU; NeMo's -1), 'cpu', or a number of processes"
    )
    accelerator: Literal["auto", "gpu", "cpu"] = Field("auto", description="kept for NeMo recipes; 'cpu' forces the CPU")
    num_nodes: int = Field(1, ge=1, description="machines; multi-node runs are started by torchrun")
    strategy: str = Field("ddp", description="only 'ddp' (or 'auto') is supported")
    max_epochs: int | None = Field(None, ge=1, description="stop after this many epochs (null: no limit)")
    max_steps: int = Field(-1, ge=-1, description="stop after this many optimizer steps (-1: no limit)")
    val_check_interval: int | float = Field(1000, gt=0, description="validate every N steps (a float <= 1: fraction of an epoch)")
    check_val_every_n_epoch: Literal[1] = Field(1, description="NeMo key; nestkit validates on val_check_interval, so only 1")
    limit_val_batches: int | float = Field(1.0, ge=0, description="batches per validation (a float <= 1: fraction)")
    precision: Literal[32, "32", "bf16-mixed", "16-mixed", "bf16", 16] = Field(32, description="32, bf16-mixed or 16-mixed")
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, ge=0, description="clip the gradient norm to this (null/0: off)")
    log_every_n_steps: int = Field(10, ge=1)
    sync_batchnorm: bool = Field(True, description="SyncBatchNorm across ranks (NEST default)")
    enable_checkpointing: Literal[False] = Field(False, description="NeMo key; checkpoints are exp_manager's job, so only false")
    logger: Literal[False] = Field(False, description="NeMo key; logging is exp_manager's job, so only false")
    benchmark: bool = Field(False, description="cudnn.benchmark (off for variable-length audio)")
    compile: bool | None = Field(
        None, description="torch.compile the encoder blocks (null: on for GPU training, off on the CPU where compiling outlasts short runs)"
    )
    activation_checkpointing: int = Field(
        0, ge=-1, description="encoder blocks that recompute their activations in backward instead of keeping them (0: none, -1: all); same results, less memory, more compute"
    )
    enable_progress_bar: bool = Field(True, description="live progress bar on a terminal (plain log lines otherwise)")
    num_sanity_val_steps: Literal[0] = Field(0, description="NeMo key; no sanity validation, so only 0")
    seed: int = Field(42, description="seed for Python, NumPy and torch")
    max_nonfinite_steps: int = Field(10, ge=1, description="abort after this many consecutive non-finite losses")
    target_health: TargetHealthConfig = Field(
        default_factory=TargetHealthConfig, description="warnings about collapsed targets or no context gain over the token prior"
    )

    @field_validator("val_check_interval", "limit_val_batches")
    @classmethod
    def _fraction_or_count(cls, value: int | float) -> int | float:
        """A float is a fraction (<= 1); above 1 it must be a whole count: 1.5 would act as 1."""
        if isinstance(value, float) and value > 1:
            if not value.is_integer():
                raise ValueError("a float is a fraction of an epoch (at most 1.0); a count is a whole number")
            return int(value)
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in ("ddp", "auto", "ddp_find_unused_parameters_true", "single_device"):
            raise ValueError("only DistributedDataParallel is supported ('ddp' or 'auto')")
        return value


class CheckpointConfig(_Section):
    monitor: Literal["val_loss"] = Field("val_loss", description="the metric that ranks checkpoints")
    mode: Literal["min", "max"] = "min"
    save_top_k: int = Field(1, ge=-1, description="best checkpoints kept (-1: all), plus last.ckpt")
    every_n_train_steps: int | None = Field(None, ge=1, description="also save every N steps")


class ExpManagerConfig(_Section):
    """Where the experiment lives and how it resumes."""

    exp_dir: str | None = Field(None, description="root folder (default: ./nest_experiments)")
    name: str | None = Field(None, description="experiment folder name (default: the recipe name)")
    create_tensorboard_logger: bool = True
    create_checkpoint_callback: bool = True
    checkpoint_callback_params: CheckpointConfig = CheckpointConfig()
    resume_from_checkpoint: str | None = None
    resume_if_exists: bool = True
    resume_ignore_no_checkpoint: bool = Field(True, description="with resume_if_exists, start fresh when there is no checkpoint (false: fail)")
    create_wandb_logger: Literal[False] = Field(False, description="NeMo key; nestkit logs to TensorBoard only")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        problem = folder_name_problem(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value
