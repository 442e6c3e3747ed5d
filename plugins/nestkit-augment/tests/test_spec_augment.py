"""SpecAugment: what gets masked, how much, and never past an utterance's length."""

from __future__ import annotations

import pytest
import torch

import nestkit
from nestkit.errors import RecipeError
from nestkit_augment.spec_augment import SpecAugment

D, T = 40, 120


def _aug(**kw: object) -> SpecAugment:
    section = {"name": "spec_augment", "freq_masks": 0, "time_masks": 0, **kw}
    return nestkit.build("feature_augmentor", section)


def _feats(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, T + 1, (b,), generator=g)
    lengths[0] = T
    feats = torch.randn(b, D, T, generator=g)
    feats = feats.masked_fill(torch.arange(T)[None, None, :] >= lengths[:, None, None], 0.0)
    return feats, lengths


def test_masked_bins_take_the_mask_value_and_nothing_else_changes() -> None:
    aug = _aug(freq_masks=2, freq_width=8, time_masks=3, time_width=15, mask_value=-7.5)
    feats, lengths = _feats(16)
    before = feats.clone()
    out = aug(feats, lengths, generator=torch.Generator().manual_seed(3))
    mask = aug.masks(feats.shape, lengths, torch.Generator().manual_seed(3))
    assert torch.equal(feats, before)  # not in place
    assert mask.any()
    assert torch.equal(out, torch.where(mask, torch.tensor(-7.5), feats))
    past = torch.arange(T)[None, None, :] >= lengths[:, None, None]
    assert not (mask & past).any()
    assert torch.equal(out[past.expand_as(out)], feats[past.expand_as(feats)])


def test_frequency_bands_cover_whole_valid_frames_with_nemo_width_distribution() -> None:
    aug = _aug(freq_masks=1, freq_width=6)
    feats, lengths = _feats(2000, seed=1)
    mask = aug.masks(feats.shape, lengths, torch.Generator().manual_seed(0))
    valid = torch.arange(T)[None, :] < lengths[:, None]
    band = mask[:, :, 0]  # every utterance has at least 5 valid frames
    # a masked bin is masked over exactly the valid frames of its band
    assert torch.equal(mask, band[:, :, None] & valid[:, None, :])
    widths = band.sum(1)
    assert int(widths.max()) <= 6 and int(widths.min()) == 0
    assert set(widths.tolist()) == set(range(7))  # width uniform in [0, 6]
    assert abs(widths.float().mean().item() - 3.0) < 0.15
    # one contiguous band per utterance
    edges = (band[:, 1:] != band[:, :-1]).sum(1) + band[:, 0].long() + band[:, -1].long()
    assert int(edges.max()) <= 2


def test_time_spans_respect_length_and_adaptive_width() -> None:
    aug = _aug(time_masks=1, time_width=0.2)
    feats, lengths = _feats(3000, seed=2)
    mask = aug.masks(feats.shape, lengths, torch.Generator().manual_seed(5))
    frames = mask[:, 0, :]
    assert torch.equal(mask, frames[:, None, :].expand_as(mask))  # whole frames (all bins)
    width = frames.sum(1)
    max_width = torch.clamp(torch.floor(lengths * 0.2).long(), min=1)
    assert bool((width <= max_width).all())
    assert bool((frames & (torch.arange(T)[None, :] >= lengths[:, None])).sum() == 0)
    full = lengths == T  # these draw widths uniformly in [0, 24]
    assert int(width[full].max()) == 24
    assert abs(width[full].float().mean().item() - 12.0) < 1.5


def test_fixed_time_width_longer_than_the_utterance_stays_inside() -> None:
    aug = _aug(time_masks=4, time_width=30, mask_value=9.0)
    feats = torch.randn(64, D, T)
    lengths = torch.full((64,), 12)
    out = aug(feats, lengths, generator=torch.Generator().manual_seed(0))
    assert bool((out[:, :, :12] == 9.0).any())
    assert torch.equal(out[:, :, 12:], feats[:, :, 12:])


def test_seeded_and_identity_in_eval() -> None:
    aug = _aug(freq_masks=2, freq_width=5, time_masks=2, time_width=0.05)
    feats, lengths = _feats(4)
    a = aug(feats, lengths, generator=torch.Generator().manual_seed(9))
    b = aug(feats, lengths, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and not torch.equal(a, feats)
    aug.eval()
    assert aug(feats, lengths, generator=torch.Generator().manual_seed(9)) is feats


def test_bad_fraction_is_a_one_line_recipe_error() -> None:
    with pytest.raises(RecipeError, match="time_width as a float") as info:
        _aug(time_masks=1, time_width=1.5)
    assert "\n" not in str(info.value)
