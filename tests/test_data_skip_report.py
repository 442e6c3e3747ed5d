"""The skip report counts each unusable item once, however many epochs read it; validation's
skips are reported too; the report survives a resume and merges across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from _train_recipe import RATE, write_recipe
from conftest import run_nestkit
from nestkit.data import build_dataloader
from nestkit.data.config import DatasetConfig
from nestkit.data.skips import SkipTally, merge_reports
from nestkit.data.tarred import write_shards

FAST = {"OMP_NUM_THREADS": "1"}


def mixed(folder: Path, good: int, name: str = "train.json", segments: bool = False) -> Path:
    """``good`` short clips, then an empty, an unreadable and a missing file (and, with
    ``segments``, two more items: two segments of one missing file)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(good):
        x = (0.1 * rng.standard_normal(RATE + 800 * (i % 3))).astype(np.float32)
        sf.write(folder / f"u{i}.wav", x, RATE)
        lines.append({"audio_filepath": f"u{i}.wav", "duration": len(x) / RATE})
    (folder / "empty.flac").write_bytes(b"")
    (folder / "garbage.flac").write_bytes(b"not audio" * 100)
    lines += [{"audio_filepath": p, "duration": 1.0} for p in ("empty.flac", "garbage.flac", "gone.flac")]
    if segments:
        lines += [{"audio_filepath": "long_gone.flac", "duration": 1.0, "offset": t} for t in (0.0, 5.0)]
    manifest = folder / name
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return manifest


def loader(manifest: Path, **cfg):
    section = {"manifest_filepath": str(manifest), "batch_size": 4, "sample_rate": RATE, **cfg}
    return build_dataloader(DatasetConfig(**section), sample_rate=RATE, train=True, seed=3)


def test_each_skipped_item_counts_once_however_many_epochs_read_it(tmp_path: Path) -> None:
    manifest = mixed(tmp_path, good=9, segments=True)
    data = loader(manifest, max_skipped_items=5)  # 5 bad items: more only if repeats were counted
    for epoch in range(3):
        data.set_epoch(epoch)
        assert sum(len(b) for b in data) == 9
    report = data.skipped_report()
    assert report.counts == {"empty": 1, "unreadable": 1, "missing": 3}  # the two segments are two items
    assert report.delivered == 9 and report.skipped_items == 5
    assert report.explain().startswith(f"5 of 14 items of {manifest} skipped (9 used): 3 missing, 1 empty, 1 unreadable")
    listed = report.lines()
    assert len(listed) == 5 and len(set(listed)) == 5
    assert f"missing\t{tmp_path / 'long_gone.flac'} (offset 5 s)" in listed
    # the per-step counters (TensorBoard) keep counting occurrences, as they document
    assert data.skipped == {"empty": 3, "unreadable": 3, "missing": 9}


def test_a_loader_that_has_not_read_everything_says_so(tmp_path: Path) -> None:
    data = loader(mixed(tmp_path, good=9), shuffle=False)
    next(iter(data))  # the first batch: 4 good clips
    assert data.skipped_report().explain() == f"nothing of {tmp_path / 'train.json'} was skipped"
    for _ in data:
        pass
    assert "3 of 12 items" in data.skipped_report().explain()
    short = loader(mixed(tmp_path / "b", good=9), shuffle=False, batch_size=2)
    batches = iter(short)
    for _ in range(5):  # 4 + 1 batches: 9 good clips and the empty file read, 2 items not yet
        next(batches)
    assert "1 of 10 items of" in short.skipped_report().explain() and "(9 used, 2 not read)" in short.skipped_report().explain()


def test_the_report_survives_a_resume(tmp_path: Path) -> None:
    manifest = mixed(tmp_path, good=9)
    whole = loader(manifest, shuffle=False, batch_size=2)
    for _ in whole:
        pass
    first = loader(manifest, shuffle=False, batch_size=2)
    batches = iter(first)
    for _ in range(5):  # past the empty file; the other two not read yet
        next(batches)
    path = tmp_path / "state.pt"
    torch.save(first.state_dict(), path)
    resumed = loader(manifest, shuffle=False, batch_size=2)
    resumed.load_state_dict(torch.load(path, weights_only=True))  # what a checkpoint holds, read the safe way
    for _ in resumed:
        pass
    got, want = resumed.skipped_report(), whole.skipped_report()
    assert (got.counts, got.items, got.delivered) == (want.counts, want.items, want.delivered) == (
        {"empty": 1, "unreadable": 1, "missing": 1}, want.items, 9)
    assert len(want.items) == 3


def test_reports_of_ranks_merge_without_counting_an_item_twice() -> None:
    ranks = [SkipTally("d.json", size=10), SkipTally("d.json", size=10)]
    ranks[0].add({"missing": 1}, ["missing: a.wav"], torch.tensor([0, 1, 2]))
    ranks[1].add({"missing": 1, "empty": 1}, ["missing: a.wav", "empty: b.wav"], torch.tensor([2, 3]))
    merged = merge_reports(t.report() for t in ranks)
    assert merged.counts == {"missing": 1, "empty": 1} and merged.delivered == 4
    assert merged.explain().startswith("2 of 6 items of d.json skipped (4 used, 4 not read): ")


def test_a_lost_shard_counts_once_and_is_no_item(tmp_path: Path) -> None:
    source = mixed(tmp_path / "src", good=8)
    shards = write_shards(source, tmp_path / "shards", 2, progress=False)
    shards[1].unlink()
    data = loader(tmp_path / "shards" / "tarred_audio_manifest.json", is_tarred=True,
                  tarred_audio_filepaths=str(tmp_path / "shards" / "audio_{0..1}.tar"))
    for epoch in range(2):
        data.set_epoch(epoch)
        for _ in data:
            pass
    report = data.skipped_report()
    assert report.counts["shard_missing"] == 1 and report.items[0] == ("shard_missing", str(shards[1]))
    assert report.skipped_items == report.counts.get("empty", 0) + report.counts.get("unreadable", 0)


def test_the_end_summary_and_the_list_tell_training_and_validation_skips_once(tmp_path: Path) -> None:
    train = mixed(tmp_path / "train", good=9)
    val = mixed(tmp_path / "val", good=5, name="val.json")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "exp", max_steps=9, val_check_interval=3, log_every_n_steps=3,
                          limit_val_batches=1.0)
    result = run_nestkit("train", str(recipe), f"model.train_ds.manifest_filepath={train}", "model.train_ds.batch_size=4",
                         f"model.validation_ds.manifest_filepath={val}", env=FAST)
    assert result.returncode == 0, result.stderr
    summary = result.stdout[result.stdout.rindex("done"):]
    assert f"training: 3 of 12 items of {train} skipped (9 used): " in summary, summary  # 3 epochs read them
    assert f"validation: 3 of 8 items of {val} skipped (5 used): " in summary, summary  # 3 validations read them
    listed = (tmp_path / "exp" / "tiny" / "skipped_items.txt").read_text().splitlines()
    assert sorted(listed) == sorted(
        [f"{r}\t{tmp_path / 'train' / p}" for r, p in (("empty", "empty.flac"), ("unreadable", "garbage.flac"), ("missing", "gone.flac"))]
        + [f"validation:{r}\t{tmp_path / 'val' / p}" for r, p in (("empty", "empty.flac"), ("unreadable", "garbage.flac"), ("missing", "gone.flac"))])
    assert "skipped unusable validation audio (missing: " in result.stderr


def test_sparse_item_numbers_cost_no_memory() -> None:
    """Lhotse Shar numbers its cuts (shard << 32) + line: the record of what was used stays small."""
    tally = SkipTally("shar")
    tally.add({}, [], torch.tensor([(7 << 32) + 2, (7 << 32) + 3, 1]))
    tally.add({}, [], torch.tensor([(7 << 32) + 2]))
    assert tally.report().delivered == 3 and sum(m.size for m in tally.used.values()) < 100
