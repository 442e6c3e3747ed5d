"""NEST: denoising masked-token prediction (NeMo's ``EncDecDenoiseMaskedTokenPredModel``).

Targets are BEST-RQ tokens of the clean audio's features; the encoder sees the noisy audio's
features with random blocks replaced by the mask embedding and predicts the clean tokens at
masked positions. With ``mask_position: post_conv`` masking and tokens use the subsampled
features instead (NeMo's quantizer/masking/loss adjustments are applied automatically).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, model_validator
from torch import Tensor, nn

from nestkit.contracts import SUBSAMPLING, require
from nestkit.errors import RecipeError
from nestkit.models.boundary import audio_problem, checked, encoding_problem, loss_problem
from nestkit.registry import Component, ComponentConfig, Registry, section_field

from nestkit.components.conformer import FastConformerConfig
from nestkit.components.decoder import MultiSoftmaxConfig
from nestkit.components.loss import MLMConfig, MultiMLMConfig, masked_accuracy
from nestkit.components.masking import RandomBlockMaskingConfig
from nestkit.components.preprocessor import MelSpectrogramConfig
from nestkit.components.quantizer import RandomProjectionConfig

# Built-in configs: where the model's cross-field checks read defaults when no registry is at
# hand (a NestConfig made directly, not from a recipe).
_BUILTIN_CONFIGS: dict[str, type[ComponentConfig]] = {
    "mel_spectrogram": MelSpectrogramConfig,
    "fast_conformer": FastConformerConfig,
    "random_block": RandomBlockMaskingConfig,
    "random_projection": RandomProjectionConfig,
    "multi_softmax": MultiSoftmaxConfig,
    "mlm": MLMConfig,
    "multi_mlm": MultiMLMConfig,
}


def _config_of(kind: str, name: str, registry: Registry | None) -> type[ComponentConfig] | None:
    """The config model of the component ``name`` of ``kind``: a plugin's too when the recipe's
    registry is known; None when the name is unknown (the section's own check reports it)."""
    if registry is None:
        return _BUILTIN_CONFIGS.get(name.rpartition(":")[2])
    try:
        return registry.get(kind, name).config
    except RecipeError:
        return None


def _value(section: Mapping[str, Any] | None, kind: str, key: str, registry: Registry | None) -> Any:
    """``section[key]``, else the default of the component's config, else None (unknown)."""
    if not section:
        return None
    if key in section:
        return section[key]
    config = _config_of(kind, str(section.get("name", "")), registry)
    if config is None or key not in config.model_fields:
        return None
    field = config.model_fields[key]
    return None if field.is_required() else field.get_default(call_default_factory=True)


@dataclass
class NestOutput:
    """One forward pass. Layouts as in NeMo: masks (B, D, T) with 1 = masked, encoded
    (B, d_model, T'), log_probs (B, T', classes[, books]), tokens (B, T'[, books])."""

    loss: Tensor
    log_probs: Tensor
    encoded: Tensor
    encoded_len: Tensor
    masks: Tensor
    tokens: Tensor
    masked_accuracy: Tensor  # top-1 accuracy on masked tokens (0-dim)
    masked_fraction: Tensor  # share of valid input frames that were masked (0-dim)
    # (B, T'') bool over the T'' <= T' positions the loss scores (nestkit.health's contract):
    token_mask: Tensor  # scored by the masked loss
    token_valid: Tensor  # inside the utterance (position < encoded_len), not padding


class NestConfig(ComponentConfig):
    """NeMo's model-level keys of ``nest_fast-conformer.yaml`` (datasets and optim live elsewhere)."""

    sample_rate: int = Field(16000, gt=0, description="audio sample rate in Hz")
    num_classes: int = Field(8192, gt=1, description="codebook entries (token vocabulary)")
    num_books: int = Field(1, ge=1, description="codebooks")
    code_dim: int = Field(16, gt=0, description="codebook vector size")
    squeeze_single: bool = Field(False, description="drop the codebook axis when num_books is 1")
    mask_position: Literal["pre_conv", "post_conv"] = Field(
        "pre_conv", description="mask features before the subsampling convs, or the subsampled features"
    )
    preprocessor: dict[str, Any] = section_field("preprocessor")
    masking: dict[str, Any] = section_field("masking")
    quantizer: dict[str, Any] = section_field("quantizer")
    encoder: dict[str, Any] = section_field("encoder")
    decoder: dict[str, Any] = section_field("decoder")
    loss: dict[str, Any] = section_field("loss")
    spec_augment: dict[str, Any] | None = section_field(
        "feature_augmentor", None,
        "optional feature augmentor (e.g. SpecAugment from a plugin) applied to the noisy features in training, before masking",
    )

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> NestConfig:
        registry = (info.context or {}).get("registry")
        pre, enc, msk, qnt, dec, lss = (  # each reads a key of its section (field and kind share the name)
            functools.partial(_value, getattr(self, kind), kind, registry=registry)
            for kind in ("preprocessor", "encoder", "masking", "quantizer", "decoder", "loss")
        )

        def same(a: str, va: Any, b: str, vb: Any) -> None:
            if va is not None and vb is not None and va != vb:
                raise ValueError(f"{a} ({va}) must equal {b} ({vb})")

        same("preprocessor.sample_rate", pre("sample_rate"), "sample_rate", self.sample_rate)
        feats = pre("features")
        same("encoder.feat_in", enc("feat_in"), "preprocessor.features", feats)
        factor = enc("subsampling_factor")
        d_model = enc("d_model")
        feat_out = enc("feat_out")
        enc_out = feat_out if isinstance(feat_out, int) and feat_out > 0 else d_model
        if self.mask_position == "pre_conv":
            same("masking.feat_in", msk("feat_in"), "preprocessor.features", feats)
            same("quantizer.feat_in", qnt("feat_in"), "preprocessor.features", feats)
            same("quantizer.combine_time_steps", qnt("combine_time_steps"), "encoder.subsampling_factor", factor)
            same("loss.combine_time_steps", lss("combine_time_steps"), "encoder.subsampling_factor", factor)
            block = msk("block_size")
            if isinstance(block, int) and isinstance(factor, int) and block < factor:
                raise ValueError(f"masking.block_size ({block}) is shorter than one token ({factor} frames): no token could ever be masked")
        same("quantizer.num_classes", qnt("num_classes"), "num_classes", self.num_classes)
        same("decoder.num_classes", dec("num_classes"), "num_classes", self.num_classes)
        same("quantizer.code_dim", qnt("code_dim"), "code_dim", self.code_dim)
        same("quantizer.num_books", qnt("num_books"), "num_books", self.num_books)
        same("decoder.num_decoders", dec("num_decoders"), "num_books", self.num_books)
        if self.loss.get("name") == "mlm" and self.num_books != 1:
            raise ValueError(f"loss 'mlm' handles one codebook; use 'multi_mlm' for num_books={self.num_books}")
        same("loss.num_decoders", lss("num_decoders"), "num_books", self.num_books)
        same("decoder.feat_in", dec("feat_in"), "the encoder output size", enc_out)
        same("quantizer.squeeze_single", qnt("squeeze_single"), "squeeze_single", self.squeeze_single)
        same("decoder.squeeze_single", dec("squeeze_single"), "squeeze_single", self.squeeze_single)
        return self


class NestModel(nn.Module):
    """preprocessor -> (quantizer on clean | masking + encoder on noisy) -> decoder -> loss."""

    preprocessor: nn.Module  # with ``encoder`` and ``extract``: a nestkit.contracts.EncoderModel
    encoder: nn.Module

    def __init__(
        self,
        *,
        preprocessor: nn.Module,
        encoder: nn.Module,
        quantizer: nn.Module,
        masking: nn.Module,
        decoder: nn.Module,
        loss: nn.Module,
        mask_position: str = "pre_conv",
        spec_augment: Any = None,
        names: Mapping[str, str] | None = None,
        encoded_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.preprocessor = preprocessor
        self.encoder = encoder
        self.quantizer = quantizer
        self.masking = masking
        self.decoder = decoder
        self.loss = loss
        self.mask_position = mask_position
        self.spec_augment = spec_augment  # a callable (feats, lengths) -> feats, or None
        self.names = dict(names or {})  # kind -> the component's registry name, for errors
        self.encoded_channels = encoded_channels  # what the decoder takes (None: unknown)

    def forward(
        self,
        audio: Tensor,
        audio_len: Tensor,
        noisy_audio: Tensor | None = None,
        noisy_audio_len: Tensor | None = None,
        apply_mask: bool = True,
    ) -> NestOutput:
        """audio (B, T) clean, noisy_audio (B, T) or None (then the clean audio is the input)."""
        problem = audio_problem(audio, audio_len) or (
            None if noisy_audio is None else audio_problem(noisy_audio, audio_len if noisy_audio_len is None else noisy_audio_len, "noisy_audio"))
        if problem is not None:
            raise ValueError(f"NEST model input: {problem}")
        feats, feats_len = self.preprocessor(audio, audio_len)
        if noisy_audio is None:
            noisy, noisy_len = feats, feats_len
        else:
            noisy, noisy_len = self.preprocessor(noisy_audio, audio_len if noisy_audio_len is None else noisy_audio_len)
        if self.spec_augment is not None and self.training:
            noisy = self.spec_augment(noisy, noisy_len)
        if self.mask_position == "pre_conv":
            tokens = self.quantizer(feats)
            masked, masks = self._mask(noisy, noisy_len, apply_mask)
            encoded, encoded_len = self._encoded(self.encoder(masked, noisy_len), noisy.shape[0])
            frames = noisy_len
        else:
            with torch.no_grad():
                clean_sub, _ = self.encoder.subsample(feats, feats_len)
                tokens = self.quantizer(clean_sub.transpose(1, 2))
            # As in NeMo, the masked path is detached: the subsampling is not trained by this loss.
            sub, frames = self.encoder.subsample(noisy, noisy_len)
            masked, masks = self._mask(sub.detach().transpose(1, 2), frames, apply_mask)
            encoded, encoded_len = self._encoded(self.encoder.encode(masked.transpose(1, 2), frames), noisy.shape[0])
        log_probs = self.decoder(encoded)
        loss = self.loss(masks=masks, log_probs=log_probs, tokens=tokens, encoded_len=encoded_len)
        checked(loss_problem(loss, self.training), "model.loss", self.names.get("loss", "loss"))
        token_mask, scored_log_probs, scored_tokens = self.loss.aligned(masks, log_probs.detach(), tokens)
        accuracy = masked_accuracy(token_mask, scored_log_probs, scored_tokens)
        masked_fraction = masks[:, 0, :].detach().float().sum() / frames.sum().clamp_min(1)
        token_valid = torch.arange(token_mask.shape[1], device=encoded_len.device) < encoded_len[:, None]
        return NestOutput(loss, log_probs, encoded, encoded_len, masks, tokens, accuracy, masked_fraction,
                          token_mask, token_valid)

    def _encoded(self, out: Any, batch: int) -> tuple[Tensor, Tensor]:
        """The encoder's (encoded, lengths), or one line naming it when they break its contract."""
        checked(encoding_problem(out, batch, self.encoded_channels), "model.encoder", self.names.get("encoder", "encoder"))
        return out[0], out[1]

    def _mask(self, feats: Tensor, lengths: Tensor, apply_mask: bool) -> tuple[Tensor, Tensor]:
        if apply_mask:
            return self.masking(feats, lengths)
        return feats, torch.zeros_like(feats)

    @torch.no_grad()
    def extract(
        self, audio: Tensor, audio_len: Tensor, layers: Sequence[int] | None = None
    ) -> tuple[list[Tensor], Tensor]:
        """Encoder features in eval mode, no masking: the outputs (B, d_model, T') of the blocks
        ``layers`` (0-based; negatives count from the end; None: the final encoder output)."""
        was_training = self.training
        self.eval()
        try:
            feats, feats_len = self.preprocessor(audio, audio_len)
            if layers is None:
                encoded, lengths = self.encoder(feats, feats_len)
                return [encoded], lengths
            return self.encoder.forward_layers(feats, feats_len, list(layers))
        finally:
            self.train(was_training)


def post_conv_sections(
    sections: dict[str, dict[str, Any]], d_model: int, factor: int, registry: Registry | None = None
) -> dict[str, dict[str, Any]]:
    """NeMo's adjustments for post-conv masking: quantizer and masking work on d_model-sized
    subsampled frames, blocks shrink by the subsampling factor, one frame per token."""
    out = copy.deepcopy(sections)
    out["quantizer"].update(feat_in=d_model, combine_time_steps=1)
    out["masking"]["feat_in"] = d_model
    out["masking"]["block_size"] = max(1, int(_value(out["masking"], "masking", "block_size", registry) or 1) // factor)
    out["loss"]["combine_time_steps"] = 1
    return out


def build_nest(cfg: NestConfig, *, registry: Registry) -> NestModel:
    """Build each component section from ``registry`` (the one the model section was validated
    with) and compose them. For post-conv masking the encoder comes first: the model needs its
    ``subsample``/``encode``, and the masking and the quantizer work on its subsampled frames."""
    sections = {"preprocessor": cfg.preprocessor, "masking": cfg.masking, "quantizer": cfg.quantizer,
                "encoder": cfg.encoder, "decoder": cfg.decoder, "loss": cfg.loss}
    built: dict[str, Any] = {}
    if cfg.mask_position == "post_conv":
        encoder = built["encoder"] = registry.build("encoder", cfg.encoder, key="encoder")
        require(encoder, SUBSAMPLING, component=f"encoder {cfg.encoder['name']}", needed_by="mask_position post_conv",
                fix="use model.mask_position: pre_conv", key="encoder")
        sections = post_conv_sections(sections, int(encoder.d_model), int(encoder.subsampling_factor), registry)
    for kind, section in sections.items():
        if kind not in built:
            built[kind] = registry.build(kind, section, key=kind)
    augment = None
    if cfg.spec_augment is not None:
        augment = registry.build("feature_augmentor", cfg.spec_augment, key="spec_augment")
    names = {kind: registry.get(kind, str(section["name"])).qualified_name for kind, section in sections.items()}
    channels = _value(cfg.decoder, "decoder", "feat_in", registry)
    return NestModel(**built, mask_position=cfg.mask_position, spec_augment=augment, names=names,
                     encoded_channels=channels if isinstance(channels, int) else None)


def components() -> list[Component]:
    return [
        Component(
            kind="model", name="nest", factory=build_nest, config=NestConfig,
            summary="NEST denoising masked-token prediction (BEST-RQ targets), NeMo-compatible",
        )
    ]
