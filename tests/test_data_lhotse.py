"""Lhotse data: a CutSet manifest and a Shar directory written by Lhotse from the demo speech,
trained on, split across ranks and workers, resumed; the keys nestkit refuses; Lhotse missing."""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lhotse import CutSet, Recording, RecordingSet
from lhotse.audio import AudioSource

from nestkit.data import build_dataloader, demo_manifests
from nestkit.data.config import DatasetConfig
from nestkit.data.loader import lhotse_loader_builder
from nestkit.data.lhotse_sources import SHARD_BITS
from nestkit.errors import DataError, RecipeError
from nestkit.recipe import load_recipe
from nestkit.train.loop import Trainer

from _train_recipe import tiny_recipe
from conftest import ROOT

SPEECH, SHARD_SIZE = 32, 8  # utterances written, and per Shar shard
ALL_SHAR = {(k << SHARD_BITS) + line for k in range(SPEECH // SHARD_SIZE) for line in range(SHARD_SIZE)}
MIX = {"name": "multi_speaker_noise", "prob": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """cuts.jsonl.gz (the speech plus one cut whose file is gone), shar/ (the speech in 4 shards),
    noise.jsonl.gz (the demo noise as a CutSet), all written by Lhotse."""
    root = tmp_path_factory.mktemp("lhotse")
    train, _, noise = demo_manifests()

    def recordings(manifest: Path, n: int | None = None) -> RecordingSet:
        lines = manifest.read_text().splitlines()[:n]
        return RecordingSet.from_recordings(Recording.from_file(manifest.parent / json.loads(x)["audio_filepath"]) for x in lines)

    speech = CutSet.from_manifests(recordings=recordings(train, SPEECH))
    (root / "shar").mkdir()
    speech.to_shar(root / "shar", fields={"recording": "flac"}, shard_size=SHARD_SIZE)
    gone = Recording(id="gone", sources=[AudioSource(type="file", channels=[0], source=str(root / "gone.flac"))],
                     sampling_rate=8000, num_samples=16000, duration=2.0)
    CutSet.from_cuts([*speech, gone.to_cut()]).to_file(root / "cuts.jsonl.gz")
    CutSet.from_manifests(recordings=recordings(noise)).to_file(root / "noise.jsonl.gz")
    return {"cuts": str(root / "cuts.jsonl.gz"), "shar": str(root / "shar"), "noise_cuts": str(root / "noise.jsonl.gz"),
            "noise_nemo": str(noise)}


def lhotse_ds(**keys: Any) -> dict[str, Any]:
    return {"use_lhotse": True, "batch_duration": 8.0, "num_buckets": 3, **keys}


def train(recipe: dict[str, Any], folder: Path) -> Any:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Trainer(load_recipe(path), announce=lambda s: None).run()


def epoch_batches(cfg: DatasetConfig, state: dict[str, Any] | None = None, stop: int | None = None,
                  seed: int = 5) -> tuple[list[tuple[tuple[int, ...], torch.Tensor]], dict[str, Any]]:
    """(indices, noisy audio) of each batch, up to ``stop`` batches, and the loader's state then."""
    loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=seed)
    if state is not None:
        loader.load_state_dict(state)
    out = []
    for batch in loader:
        out.append((tuple(batch.indices.tolist()), batch.noisy_audio))
        if len(out) == stop:
            break
    return out, loader.state_dict()


def same(a: list[tuple[tuple[int, ...], torch.Tensor]], b: list[tuple[tuple[int, ...], torch.Tensor]]) -> bool:
    return [k for k, _ in a] == [k for k, _ in b] and all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_trains_from_cuts_and_resumes_exactly(data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NESTKIT_TRACE_DIR", str(tmp_path))
    recipe = tiny_recipe(tmp_path / "exp", max_steps=2, val_check_interval=2, limit_val_batches=2)
    train_ds = lhotse_ds(cuts_path=data["cuts"], noise_manifest=data["noise_cuts"], batch_augmentor=MIX)
    recipe["model"]["train_ds"] = train_ds
    recipe["model"]["validation_ds"] = lhotse_ds(shar_path=data["shar"], shuffle=False, noise_manifest=data["noise_nemo"])
    first = train(recipe, tmp_path)
    recipe["trainer"]["max_steps"] = 3
    second = train(recipe, tmp_path)
    assert (first.steps, second.steps) == (2, 3)
    assert math.isfinite(first.last_validation["val_loss"])  # validated on the Shar directory
    saved = torch.load(second.last_checkpoint, weights_only=True)
    assert {k: v for k, v in saved["per_rank"][0]["loader"].items() if k != "skips"} == {"epoch": 0, "position": 3, "worker_batches": [3]}
    # the stopped-and-resumed run trained on the batches an uninterrupted loader gives, in order
    traced = [tuple(int(i) for i in line.split()) for line in (tmp_path / "rank0_indices.txt").read_text().splitlines()]
    fresh, _ = epoch_batches(DatasetConfig(**train_ds), stop=3, seed=recipe["trainer"]["seed"])
    assert traced == [k for k, _ in fresh]


def test_trains_from_shar(data: dict[str, str], tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path / "exp", max_steps=3)
    recipe["model"]["train_ds"] = lhotse_ds(shar_path=data["shar"], noise_manifest=data["noise_nemo"], batch_augmentor=MIX)
    result = train(recipe, tmp_path)
    assert result.steps == 3 and result.last_checkpoint is not None
    loader_state = torch.load(result.last_checkpoint, weights_only=True)["per_rank"][0]["loader"]
    assert {k: v for k, v in loader_state.items() if k != "skips"} == {"epoch": 0, "position": 3, "worker_batches": [3]}
    assert loader_state["skips"]["items"] == []  # the skip report travels with the loader's state


def test_ranks_and_workers_never_overlap(data: dict[str, str]) -> None:
    for source, workers, everything in (("cuts", 0, set(range(SPEECH))), ("shar", 2, ALL_SHAR)):
        seen: Counter[int] = Counter()
        batches, skipped = [], Counter()
        for rank in (0, 1):
            cfg = DatasetConfig(**lhotse_ds(**{f"{source}_path": data[source]}), num_workers=workers)
            loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=1, rank=rank, world_size=2, epoch=1)
            mine = [batch.indices.tolist() for batch in loader]
            batches.append(loader.state_dict()["position"])  # batches made, a batch of only unusable cuts included
            seen.update(i for batch in mine for i in batch)
            skipped.update(loader.skipped)
        assert set(seen.values()) == {1} and set(seen) == everything, source
        if source == "cuts":  # Lhotse's rank split: equal batch counts; the cut whose file is gone is skipped
            assert batches[0] == batches[1] and skipped == {"missing": 1}
        else:
            assert skipped == {}


def test_a_section_seed_replaces_the_trainer_seed(data: dict[str, str]) -> None:
    def first(trainer_seed: int, **keys: Any) -> list[list[int]]:
        cfg = DatasetConfig(**lhotse_ds(cuts_path=data["cuts"], **keys))
        loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=trainer_seed)
        return [batch.indices.tolist() for batch in islice(loader, 3)]

    assert first(1, seed=9) == first(9) != first(1)


def test_mixing_touches_real_samples_only_in_the_loader_or_on_the_device(data: dict[str, str]) -> None:
    common = lhotse_ds(shar_path=data["shar"], noise_manifest=data["noise_cuts"], batch_augmentor=MIX)
    in_loader = build_dataloader(DatasetConfig(**common), sample_rate=16000, train=True, seed=3)
    on_device = build_dataloader(DatasetConfig(**common, augment_on_device=True), sample_rate=16000, train=True, seed=3)
    padded = 0
    for a, b in islice(zip(in_loader, on_device), 4):
        assert a.augmented and not b.augmented and torch.equal(b.noisy_audio, b.audio + b.noise)
        c = on_device.device_augmentor(b)
        assert torch.allclose(a.noisy_audio, c.noisy_audio, atol=1e-6) and not torch.equal(c.noisy_audio, c.audio)
        padding = torch.arange(a.audio.shape[1]) >= a.audio_len[:, None]
        assert not a.noisy_audio[padding].any() and not c.noisy_audio[padding].any()
        padded += int(padding.sum())
    assert padded > 0


def test_resume_statement(data: dict[str, str]) -> None:
    """What the docstring of nestkit.data.lhotse says is resumed exactly, and what approximately."""
    mixed = lhotse_ds(noise_manifest=data["noise_cuts"], batch_augmentor=MIX)
    cuts = DatasetConfig(**mixed, cuts_path=data["cuts"], num_workers=1)
    full, _ = epoch_batches(cuts)
    head, state = epoch_batches(cuts, stop=3)
    tail, _ = epoch_batches(cuts, state)
    assert same(head + tail, full)  # cuts_path: the same batches, noise and mixing, in order, prefetching workers or not
    shar = DatasetConfig(**mixed, shar_path=data["shar"], num_workers=2)
    full, _ = epoch_batches(shar)
    head, state = epoch_batches(shar, stop=4)
    tail, _ = epoch_batches(shar, state)
    assert sorted(state["worker_batches"]) == [2, 2]
    # shar_path: the same batches, noise and mixing; the workers' turns may interleave differently
    assert same(sorted(head + tail, key=lambda b: b[0]), sorted(full, key=lambda b: b[0]))
    alone = DatasetConfig(**lhotse_ds(shar_path=data["shar"]), num_workers=0)
    full, _ = epoch_batches(alone)
    head, one_state = epoch_batches(alone, stop=4)
    assert same(head + epoch_batches(alone, one_state)[0], full)  # one worker: in order too
    # saved with 2 workers, resumed with 1: the shards are dealt anew; it goes on after as many batches
    assert same(epoch_batches(alone, state)[0], full[4:])


def test_recipe_keys_nestkit_refuses(data: dict[str, str], tmp_path: Path) -> None:
    def problem(**train_ds: Any) -> str:
        recipe = tiny_recipe(tmp_path)
        recipe["model"]["train_ds"] = train_ds
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(recipe))
        with pytest.raises(RecipeError) as err:
            load_recipe(path)
        assert len(str(err.value).splitlines()) == 1
        return str(err.value)

    line = problem(**lhotse_ds(cuts_path=data["cuts"], perturb_speed=True, shard_seed="trng"))
    assert line.startswith(f"{tmp_path / 'bad.yaml'}: model.train_ds: perturb_speed, shard_seed: NeMo Lhotse options")
    assert "augmentation" in line and "use seed" in line and "remove them" in line
    assert "exactly one of cuts_path" in problem(**lhotse_ds(cuts_path=data["cuts"], shar_path=data["shar"]))
    assert "cuts_path, bucket_buffer_size need use_lhotse: true" in problem(cuts_path=data["cuts"], bucket_buffer_size=5)
    assert "manifest_filepath is a NeMo manifest" in problem(**lhotse_ds(cuts_path=data["cuts"], manifest_filepath="x.json"))
    # a shipped recipe (a NeMo tarred-data section) switches to Lhotse once its tar shuffle buffer is null and
    # validation comes every N steps (its 1.0, once an epoch, needs an epoch length that Lhotse data lacks)
    switch = ["model.train_ds.use_lhotse=true", f"model.train_ds.cuts_path={data['cuts']}", "trainer.val_check_interval=500"]
    with pytest.raises(RecipeError, match=r"model.train_ds: shuffle_n is the buffer of NeMo tarred data; with use_lhotse: true set shuffle_n: null"):
        load_recipe(ROOT / "recipes" / "nest_fast_conformer.yaml", switch)
    assert load_recipe(ROOT / "recipes" / "nest_fast_conformer.yaml", [*switch, "model.train_ds.shuffle_n=null"]).train_ds.use_lhotse
    with pytest.raises(DataError, match=r"reads CutSets lazily from \.jsonl or \.jsonl\.gz"):
        build_dataloader(DatasetConfig(**lhotse_ds(cuts_path=str(tmp_path / "cuts.json"))), sample_rate=16000, train=True, seed=0)


def test_without_lhotse(data: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lhotse", None)  # what `import lhotse` meets where it is not installed
    for module in ("nestkit.data.lhotse", "nestkit.data.lhotse_sources"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    recipe = tiny_recipe(tmp_path)
    recipe["model"]["train_ds"] = lhotse_ds(cuts_path=data["cuts"])
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as err:  # `nestkit validate` and `nestkit train` print this line, exit code 2
        load_recipe(tmp_path / "r.yaml")
    assert str(err.value) == (f'{tmp_path / "r.yaml"}: model.train_ds: use_lhotse: true needs Lhotse, which is not '
                              'installed (pip install "nestkit[lhotse]")')
    with pytest.raises(DataError, match=r'^model.validation_ds.use_lhotse: true needs Lhotse, which is not installed'):
        lhotse_loader_builder(train=False)  # Lhotse installed but failing to import: the loader says so
    train, _, noise = demo_manifests()  # the NeMo-manifest path never needs Lhotse
    cfg = DatasetConfig(manifest_filepath=str(train), noise_manifest=str(noise), batch_size=4, batch_augmentor=MIX)
    batch = next(iter(build_dataloader(cfg, sample_rate=16000, train=True, seed=0)))
    assert len(batch) == 4 and batch.augmented


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_broken_shar_shard_is_skipped_and_named(data: dict[str, str], tmp_path: Path, num_workers: int) -> None:
    """A truncated recording tar ends its shard (counted as a NeMo tar shard is); a truncated cuts
    file is a one-line error naming it. Neither is a traceback from a loader worker."""
    shar = tmp_path / "shar"
    shutil.copytree(data["shar"], shar)
    recording = shar / "recording.000001.tar"
    recording.write_bytes(recording.read_bytes()[: recording.stat().st_size // 2])
    cfg = DatasetConfig(**lhotse_ds(shar_path=str(shar)), sample_rate=8000, num_workers=num_workers)
    loader = build_dataloader(cfg, sample_rate=8000, train=True, seed=0)
    read = sum(len(batch) for batch in loader)
    assert loader.skipped == {"shard_unreadable": 1}
    assert SPEECH - SHARD_SIZE < read < SPEECH  # the shard's cuts before the cut-off are kept
    assert loader.skipped_report().first == {"shard_unreadable": [str(recording)]}

    cuts = shar / "cuts.000000.jsonl.gz"
    cuts.write_bytes(cuts.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"^{cuts}: unreadable cuts file \(EOFError: "):
        sum(len(batch) for batch in build_dataloader(cfg, sample_rate=8000, train=True, seed=0))
