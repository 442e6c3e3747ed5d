"""Tar shards: written from a manifest, streamed back across ranks and workers."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_nestkit
from nestkit.data import build_dataloader, demo_manifests
from nestkit.data.config import DatasetConfig
from nestkit.data.tarred import expand_braces, shard_paths


def test_brace_expansion() -> None:
    assert expand_braces("a_{0..2}.tar") == ["a_0.tar", "a_1.tar", "a_2.tar"]
    assert expand_braces("a__OP_08..10_CL_.tar") == ["a_08.tar", "a_09.tar", "a_10.tar"]
    assert expand_braces("{x,y}/s_{1..2}.tar") == ["x/s_1.tar", "x/s_2.tar", "y/s_1.tar", "y/s_2.tar"]
    assert shard_paths(["a_{0..1}.tar", "b.tar,c.tar"]) == ["a_0.tar", "a_1.tar", "b.tar", "c.tar"]


def test_write_then_read_each_item_once(tmp_path: Path) -> None:
    train, _, _ = demo_manifests()
    result = run_nestkit("shard", str(train), "--out-dir", str(tmp_path), "--num-shards", "4")
    assert result.returncode == 0, result.stderr
    assert "audio_{0..3}.tar" in result.stdout
    shards = sorted(tmp_path.glob("audio_*.tar"))
    assert [p.name for p in shards] == [f"audio_{k}.tar" for k in range(4)]
    lines = [json.loads(x) for x in (tmp_path / "tarred_audio_manifest.json").read_text().splitlines()]
    assert len(lines) == 480 and {x["shard_id"] for x in lines} == {0, 1, 2, 3}
    with tarfile.open(shards[1]) as tar:
        assert sorted(tar.getnames()) == sorted(x["audio_filepath"] for x in lines if x["shard_id"] == 1)
    cfg = DatasetConfig(
        manifest_filepath=str(tmp_path / "tarred_audio_manifest.json"),
        is_tarred=True,
        tarred_audio_filepaths=str(tmp_path / "audio_{0..3}.tar"),
        sample_rate=8000,  # the prompts' own rate: no resampling (what is read, not how, is checked here)
        batch_size=16,
        shuffle_n=32,
        num_workers=2,
    )
    for epoch in (0, 1):
        seen: Counter[int] = Counter()
        for rank in (0, 1):
            loader = build_dataloader(cfg, sample_rate=8000, train=True, seed=4, rank=rank, world_size=2, epoch=epoch)
            for batch in loader:
                assert len(batch) <= 16
                seen.update(batch.indices.tolist())
            assert loader.skipped == {}
        assert set(seen.values()) == {1} and len(seen) == 480


def test_a_shard_damaged_mid_file_is_reported_not_silently_cut(tmp_path: Path) -> None:
    """tarfile ends a streamed archive quietly at a damaged member header: the items after it
    would vanish without a count. The shard is reported unreadable, the items before it kept."""
    train, _, _ = demo_manifests()
    assert run_nestkit("shard", str(train), "--out-dir", str(tmp_path), "--num-shards", "2").returncode == 0
    shard = tmp_path / "audio_1.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    damaged = bytearray(shard.read_bytes())
    damaged[members[5].offset:members[5].offset + 100] = b"\xff" * 100  # the sixth member's header
    shard.write_bytes(bytes(damaged))
    cfg = DatasetConfig(manifest_filepath=str(tmp_path / "tarred_audio_manifest.json"), is_tarred=True,
                        tarred_audio_filepaths=str(tmp_path / "audio_{0..1}.tar"), sample_rate=8000, batch_size=16,
                        shuffle_n=0, num_workers=0)
    loader = build_dataloader(cfg, sample_rate=8000, train=False, seed=0)
    read = sum(len(batch) for batch in loader)
    assert loader.skipped == {"shard_unreadable": 1}
    assert read == 240 + 5  # the intact shard, and the five members before the damage
    assert loader.skipped_report().first == {"shard_unreadable": [str(shard)]}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shards_that_all_fail_are_still_counted(tmp_path: Path, num_workers: int) -> None:
    """With no item read at all there is no batch to carry the counts: they come in an empty one,
    so a run stops with 'all 2 shards ... missing' instead of blaming the batch size."""
    train, _, _ = demo_manifests()
    assert run_nestkit("shard", str(train), "--out-dir", str(tmp_path), "--num-shards", "2").returncode == 0
    cfg = DatasetConfig(manifest_filepath=str(tmp_path / "tarred_audio_manifest.json"), is_tarred=True,
                        tarred_audio_filepaths=str(tmp_path / "gone_{0..1}.tar"), sample_rate=8000, batch_size=16,
                        shuffle_n=16, num_workers=num_workers)
    loader = build_dataloader(cfg, sample_rate=8000, train=True, seed=0)
    assert sum(len(batch) for batch in loader) == 0
    assert loader.skipped == {"shard_missing": 2}
    assert loader.skipped_report().explain().startswith(f"all 2 shards of {tmp_path / 'tarred_audio_manifest.json'} were skipped")


def test_an_epoch_bound_is_refused_for_ranks_reading_their_own_shards(tmp_path: Path) -> None:
    """Three shards for two ranks: one rank ends its epoch early and stopped while the other still
    stepped (a gloo 'collective mismatch' abort at the run's end). Refused before the first step."""
    train, _, _ = demo_manifests()
    assert run_nestkit("shard", str(train), "--out-dir", str(tmp_path), "--num-shards", "3").returncode == 0
    tarred = ["model.train_ds.is_tarred=true", f"model.train_ds.manifest_filepath={tmp_path / 'tarred_audio_manifest.json'}",
              f"model.train_ds.tarred_audio_filepaths={tmp_path / 'audio_{0..2}.tar'}", "model.train_ds.shuffle_n=16"]
    result = run_nestkit("train", str(ROOT / "recipes" / "nest_demo.yaml"), "--devices", "2", *tarred,
                         f"exp_manager.exp_dir={tmp_path / 'exp'}", "trainer.max_steps=-1", "trainer.max_epochs=1")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "trainer.max_epochs: cannot bound a run of 2 processes on tarred or Lhotse data" in lines[0]
    assert not (tmp_path / "exp").exists()

    from nestkit.train.batches import check_epoch_bound
    from nestkit.train.distributed import DistInfo

    cfg = DatasetConfig(manifest_filepath=str(tmp_path / "tarred_audio_manifest.json"), is_tarred=True,
                        tarred_audio_filepaths=str(tmp_path / "audio_{0..2}.tar"), sample_rate=8000, batch_size=8)
    shards = build_dataloader(cfg, sample_rate=8000, train=True, seed=0)
    listed = build_dataloader(DatasetConfig(manifest_filepath=str(train), sample_rate=8000, batch_size=8),
                              sample_rate=8000, train=True, seed=0)
    two, one = (DistInfo(rank=0, world_size=n, local_rank=0, device=torch.device("cpu")) for n in (2, 1))
    check_epoch_bound(1, one, shards)  # alone: its epochs are the run's
    check_epoch_bound(1, two, listed)  # a manifest is split evenly between ranks
    check_epoch_bound(None, two, shards)
