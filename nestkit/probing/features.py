"""Utterance-level features for a probe: mean and standard deviation over each utterance's valid
frames, of every chosen encoder block (pretrained and randomly initialised) and of log-mel.

Utterances are read and encoded in duration-sorted batches of bounded padded length; pooling is
masked over the frame axis, so padding never counts and no Python loop runs over frames.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from nestkit.components.preprocessor import MelSpectrogram
from nestkit.data.audio import AudioReadError, read_audio
from nestkit.extract import duration_batches
from nestkit.probing.items import ProbeItems

T = TypeVar("T")


def tracked(steps: Sequence[T], description: str, enabled: bool) -> Iterable[T]:
    """``steps`` with a rich progress bar on a terminal (nothing printed elsewhere)."""
    from rich.console import Console

    if not enabled or not Console().is_terminal:
        return steps
    from rich.progress import track

    return track(steps, description=description, transient=True)


def pool(x: Tensor, lengths: Tensor) -> Tensor:
    """(B, D, T) frames, (B,) valid lengths -> (B, 2D): mean and std over the valid frames."""
    valid = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[:, None, :]
    count = valid.sum(-1).clamp_min(1.0)
    mean = (x * valid).sum(-1) / count
    var = ((x - mean[:, :, None]).square() * valid).sum(-1) / count
    return torch.cat([mean, var.sqrt()], dim=1)


def log_mel_frontend(preprocessor: nn.Module) -> nn.Module:
    """The model's preprocessor without its per-utterance normalisation: the pooled mean and std
    of normalised features are 0 and 1 by construction, which would be an empty baseline."""
    if isinstance(preprocessor, MelSpectrogram) and preprocessor.normalize is not None:
        preprocessor = copy.deepcopy(preprocessor)
        preprocessor.normalize = None
    return preprocessor


@dataclass
class PooledFeatures:
    """Pooled features of the items whose audio was read (``kept``, in item order)."""

    pretrained: Tensor  # (layers, N, 2 * d_model)
    random_init: Tensor  # (layers, N, 2 * d_model)
    log_mel: Tensor  # (N, 2 * features)
    kept: list[int]
    unreadable: Counter[str]


@torch.inference_mode()
def pooled_features(
    items: ProbeItems, pretrained: nn.Module, random_init: nn.Module, layers: list[int], *,
    sample_rate: int, device: torch.device, batch_seconds: float, progress: bool,
) -> PooledFeatures:
    """Encode every readable item once per model; unreadable audio is skipped and counted."""
    log_mel = log_mel_frontend(pretrained.preprocessor)
    batches = duration_batches(items.durations, batch_seconds)
    steps = tracked(batches, f"encoding {len(items)} utterances", progress)
    parts: dict[str, list[Tensor]] = {"pretrained": [], "random_init": [], "log_mel": []}
    kept: list[int] = []
    unreadable: Counter[str] = Counter()
    for batch in steps:
        audios = []
        for i in batch:
            try:
                audios.append(read_audio(items.paths[i], sample_rate=sample_rate, offset=float(items.offsets[i]),
                                         duration=float(items.durations[i])))
                kept.append(i)
            except AudioReadError as err:
                unreadable[f"audio {err.reason.replace('_', ' ')}"] += 1
        if not audios:
            continue
        lengths = torch.tensor([a.shape[0] for a in audios], device=device)
        audio = torch.nn.utils.rnn.pad_sequence(audios, batch_first=True).to(device)
        for name, model in (("pretrained", pretrained), ("random_init", random_init)):
            outputs, out_len = model.extract(audio, lengths, layers=layers)
            parts[name].append(torch.stack([pool(o.float(), out_len) for o in outputs]).cpu())
        mel, mel_len = log_mel(audio, lengths)
        parts["log_mel"].append(pool(mel.float(), mel_len).cpu())
    if not kept:
        return PooledFeatures(torch.empty(0), torch.empty(0), torch.empty(0), kept, unreadable)
    order = torch.tensor(kept).argsort()  # back to item order: folds do not depend on batching
    return PooledFeatures(
        torch.cat(parts["pretrained"], dim=1)[:, order], torch.cat(parts["random_init"], dim=1)[:, order],
        torch.cat(parts["log_mel"])[order], sorted(kept), unreadable,
    )
