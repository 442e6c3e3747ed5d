"""What each kind of component receives and returns: the typed contracts a plugin implements.

One protocol per kind says the call nestkit makes (NeMo's layouts: channels first, (B, D, T)
features and masks, (B, d_model, T') encoder output). Optional capabilities are separate
protocols: nestkit checks them with ``isinstance`` where a recipe or a command needs one, and a
component without it is a one-line error naming what needs it (:func:`require`), never an
``AttributeError``. ``nestkit describe KIND NAME`` lists the capabilities a component declares
(:func:`declared_capabilities`); ``nestkit.testing.check_component`` exercises them.

The trainer's side (what a model's forward returns, what a data loader provides) lives in
:mod:`nestkit.train.contracts`; :class:`Model` returns its ``TrainingOutput``. This module imports
neither torch nor the rest of nestkit at run time, so ``import nestkit`` stays light.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from nestkit.errors import RecipeError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from nestkit.data.batch import AudioBatch
    from nestkit.registry import Component
    from nestkit.train.contracts import TrainingOutput


# ---------------------------------------------------------------------------- one call per kind


@runtime_checkable
class Preprocessor(Protocol):
    """``(audio (B, S) float32, audio_len (B,) int64) -> (feats (B, D, T) float32, feats_len (B,)
    int64)``. Features of valid frames do not depend on the samples past ``audio_len``; in eval
    mode the output is deterministic."""

    def __call__(self, audio: Tensor, audio_len: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Encoder(Protocol):
    """``(feats (B, feat_in, T), lengths (B,)) -> (encoded (B, d_out, T'), lengths' (B,) int64)``
    with ``lengths' <= T'``; d_out is the config's ``feat_out`` when positive, else ``d_model``.
    Outputs at valid frames do not depend on the features past each length."""

    def __call__(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Masking(Protocol):
    """``(feats (B, D, T), lengths (B,)) -> (masked (B, D, T), masks (B, D, T))``: masks are 1 at
    masked values and 0 elsewhere (always 0 past a length); ``masked`` equals ``feats`` where the
    mask is 0. Random draws come from torch's global generator (the trainer seeds it)."""

    def __call__(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Quantizer(Protocol):
    """``feats (B, D, T) -> tokens (B, T // combine_time_steps, H)`` int64 in ``[0, num_classes)``
    (``(B, T')`` with ``squeeze_single`` and one codebook). No gradient; the same tokens under
    autocast. A token depends only on its own frames."""

    def __call__(self, feats: Tensor) -> Tensor: ...


@runtime_checkable
class Decoder(Protocol):
    """``encoded (B, feat_in, T') -> log_probs (B, T', C, H)`` (``(B, T', C)`` squeezed): log-softmax
    over the C classes of each of H codebooks."""

    def __call__(self, encoded: Tensor) -> Tensor: ...


@runtime_checkable
class Loss(Protocol):
    """``loss(masks=(B, D, T), log_probs=(B, T', C[, H]), tokens=(B, T'[, H]), encoded_len=(B,))``
    -> a 0-dim tensor that scores masked tokens only (finite when nothing is masked).

    ``aligned`` tells which tokens it scores: ``(token_mask (B, T'') bool, log_probs (B, T'', C,
    H), tokens (B, T'', H))`` cut to one length; the model's accuracy and the trainer's target
    statistics read it. Subclass ``nestkit.MaskedTokenLoss`` to inherit it (and NeMo's token
    grouping: ``combine_time_steps``, ``mask_threshold``)."""

    def __call__(self, *, masks: Tensor, log_probs: Tensor, tokens: Tensor, encoded_len: Tensor | None = None) -> Tensor: ...

    def aligned(self, masks: Tensor, log_probs: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...


@runtime_checkable
class BatchAugmentor(Protocol):
    """What an ``augmentor`` builds: ``(batch: nestkit.AudioBatch, generator) -> AudioBatch`` with
    ``noisy_audio`` (B, S) and ``noisy_audio_len`` (B,) set (zero past the length) and the clean
    ``audio`` untouched (it is the target). All randomness comes from ``generator``, a
    ``torch.Generator`` on the batch's device; it runs on the CPU (loader workers) and on the
    training device."""

    def __call__(self, batch: AudioBatch, generator: torch.Generator) -> AudioBatch: ...


@runtime_checkable
class FeatureAugmentor(Protocol):
    """What a ``feature_augmentor`` builds (e.g. SpecAugment): ``(feats (B, D, T), feats_len (B,))
    -> feats (B, D, T)``, called on the noisy view in training mode only; frames past a length
    are left as they are and the input is not modified in place."""

    def __call__(self, feats: Tensor, feats_len: Tensor) -> Tensor: ...


@runtime_checkable
class Optimizer(Protocol):
    """What an ``optimizer`` factory returns from ``factory(config, params=[(name, parameter),
    ...])``: a ``torch.optim.Optimizer`` (the trainer steps it, clips its gradients and saves its
    state)."""

    param_groups: list[dict[str, Any]]

    def step(self, closure: Any = None) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@runtime_checkable
class Scheduler(Protocol):
    """What a ``scheduler`` factory returns from ``factory(config, optimizer=...,
    trainer_max_steps=N or None)``: stepped once per optimizer step, saved in checkpoints."""

    def step(self) -> None: ...

    def get_last_lr(self) -> list[float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


@runtime_checkable
class Model(Protocol):
    """A ``torch.nn.Module`` whose training forward
    ``model(audio (B, S), audio_len (B,), noisy_audio=..., noisy_audio_len=..., apply_mask=True)``
    returns a :class:`nestkit.train.contracts.TrainingOutput` (and, for target statistics, a
    ``MaskedTokenOutput``)."""

    def __call__(self, audio: Tensor, audio_len: Tensor, noisy_audio: Tensor | None = None,
                 noisy_audio_len: Tensor | None = None, apply_mask: bool = True) -> TrainingOutput: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> Any: ...


KIND_CONTRACTS: dict[str, type] = {
    "preprocessor": Preprocessor,
    "encoder": Encoder,
    "masking": Masking,
    "quantizer": Quantizer,
    "decoder": Decoder,
    "loss": Loss,
    "augmentor": BatchAugmentor,
    "feature_augmentor": FeatureAugmentor,
    "optimizer": Optimizer,
    "scheduler": Scheduler,
    "model": Model,
}


# ---------------------------------------------------------------------------- optional capabilities


@runtime_checkable
class SubsamplingEncoder(Protocol):
    """The two halves of ``forward``, so a model can mask the subsampled frames in between:
    ``subsample(feats (B, feat_in, T), lengths) -> (x (B, T', d_model), lengths')`` and
    ``encode(x (B, T', d_model), lengths') -> (encoded (B, d_out, T'), lengths')``;
    ``encode(*subsample(f, l))`` equals ``forward(f, l)``."""

    d_model: int
    subsampling_factor: int

    def subsample(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class BlockEncoder(Protocol):
    """``blocks()``: the encoder's repeated blocks in order, submodules run by ``forward``.
    Compiling and activation checkpointing wrap them in place (parameter names do not change)."""

    def blocks(self) -> Sequence[nn.Module]: ...


@runtime_checkable
class LayeredEncoder(Protocol):
    """``forward_layers(feats, lengths, layers) -> ([(B, d_model, T') per layer], lengths')``: the
    outputs of the chosen ``blocks()`` (0-based, negatives from the end); an index outside them
    raises ``ValueError``, never picks another block."""

    def blocks(self) -> Sequence[nn.Module]: ...

    def forward_layers(self, feats: Tensor, lengths: Tensor, layers: Sequence[int]) -> tuple[list[Tensor], Tensor]: ...


@runtime_checkable
class EncoderModel(Protocol):
    """A model with a ``preprocessor`` and an ``encoder``, and ``extract(audio, audio_len,
    layers=None) -> ([(B, d_model, T')], lengths)`` in eval mode without masking."""

    preprocessor: Preprocessor
    encoder: Encoder

    def extract(self, audio: Tensor, audio_len: Tensor, layers: Sequence[int] | None = None) -> tuple[list[Tensor], Tensor]: ...


@dataclass(frozen=True)
class Capability:
    """An optional capability of a kind: its protocol, and what needs it (for messages and docs)."""

    kind: str
    protocol: type
    needed_by: str

    @property
    def name(self) -> str:
        return self.protocol.__name__

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(m for m, v in vars(self.protocol).items() if callable(v) and not m.startswith("_"))

    @property
    def members(self) -> tuple[str, ...]:
        """Methods first, then attributes, as the protocol declares them."""
        return self.methods + tuple(a for a in self.protocol.__dict__.get("__annotations__", {}) if a not in self.methods)

    def missing(self, obj: Any) -> list[str]:
        """The members ``obj`` (a built component, or the class a factory builds) lacks."""
        if not isinstance(obj, type):
            return [] if isinstance(obj, self.protocol) else [m for m in self.members if not hasattr(obj, m)]
        declared = {a for cls in obj.__mro__ for a in cls.__dict__.get("__annotations__", {})}
        return [m for m in self.members if not hasattr(obj, m) and m not in declared]


SUBSAMPLING = Capability("encoder", SubsamplingEncoder, "model.mask_position post_conv")
BLOCKS = Capability("encoder", BlockEncoder, "trainer.compile, trainer.activation_checkpointing")
LAYERS = Capability("encoder", LayeredEncoder, "nestkit extract --layer, nestkit probe")
EXTRACTION = Capability("model", EncoderModel, "nestkit extract, nestkit probe")
CAPABILITIES: tuple[Capability, ...] = (SUBSAMPLING, BLOCKS, LAYERS, EXTRACTION)


def lacking(obj: Any, capability: Capability, *, component: str, needed_by: str, fix: str, key: str = "") -> RecipeError | None:
    """The one-line error when ``obj`` (the built ``component``, e.g. ``encoder my_lstm``) lacks
    ``capability`` (``encoder my_lstm has no subsample/encode: mask_position post_conv needs them
    (<fix>; see nestkit.SubsamplingEncoder)``), else None."""
    missing = capability.missing(obj)
    if not missing:
        return None
    named = [m for m in missing if m in capability.methods] or missing  # the methods say most
    them = "them" if len(named) > 1 else "it"
    return RecipeError(f"{component} has no {'/'.join(named)}: {needed_by} needs {them} ({fix}; see nestkit.{capability.name})", key=key)


def require(obj: Any, capability: Capability, *, component: str, needed_by: str, fix: str, key: str = "") -> None:
    """Raise :func:`lacking`'s error when ``obj`` lacks ``capability``."""
    error = lacking(obj, capability, component=component, needed_by=needed_by, fix=fix, key=key)
    if error is not None:
        raise error


def built_type(component: Component) -> type | None:
    """The class ``component``'s factory builds: the factory itself when it is a class, else its
    return annotation; None when neither says (``-> Any`` or ``-> object`` names no class: the
    adapter of a 0.1-style keyword factory says ``Any``, and on Python 3.11 ``Any`` is a class)."""
    factory: Callable[..., Any] = component.factory
    if isinstance(factory, type):
        return factory
    try:
        returned = typing.get_type_hints(factory).get("return")
    except Exception:  # noqa: BLE001 - an annotation that does not resolve declares nothing
        return None
    return returned if isinstance(returned, type) and returned not in (Any, object) else None


def declared_capabilities(component: Component) -> dict[str, bool] | None:
    """``{capability name: provided}`` for ``component``'s kind, read from the class its factory
    builds (methods, and attributes annotated in the class body); None when that class is unknown."""
    cls = built_type(component)
    if cls is None:
        return None
    return {c.name: not c.missing(cls) for c in CAPABILITIES if c.kind == component.kind}


def encoder_depth(model: Any, *, encoder_name: str, needed_by: str, fix: str) -> int:
    """How many blocks ``model.encoder.forward_layers`` chooses from; one line naming
    ``needed_by`` (e.g. ``--layer``) when the encoder (``encoder_name``) cannot choose any."""
    encoder = model.encoder if isinstance(model, EncoderModel) else model
    require(encoder, LAYERS, component=f"encoder {encoder_name}", needed_by=needed_by, fix=fix)
    return len(encoder.blocks())
