"""What the data commands tell the user: unwritable manifest targets as one line (nothing left
behind), malformed manifest lines named by file and line (training log, `nestkit extract`), and a
validation split far from the share asked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import nestkit
from conftest import RECIPES, run_nestkit
from nestkit.data import scan
from nestkit.data.config import DatasetConfig
from nestkit.data import build_dataloader
from nestkit.data.manifest import read_manifest
from nestkit.errors import NestkitError


def speakers(root: Path, sizes: dict[str, int], rate: int = 16000) -> Path:
    """Folders of short noise recordings, one folder per speaker."""
    rng = np.random.default_rng(0)
    for spk, n in sizes.items():
        (root / spk).mkdir(parents=True)
        for i in range(n):
            sf.write(root / spk / f"u{i}.wav", (0.1 * rng.standard_normal(rate // 2 + 800 * i)).astype(np.float32), rate)
    return root


def manifest_lines(audio: Path) -> list[str]:
    return [json.dumps({"audio_filepath": str(p), "duration": sf.info(p).duration}) for p in sorted(audio.rglob("*.wav"))]


# ---------------------------------------------------------------------------------------- nestkit manifest --out


def test_out_an_existing_folder_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    audio = speakers(tmp_path / "audio", {"spkA": 2})
    (tmp_path / "data").mkdir()
    result = run_nestkit("manifest", str(audio), "--out", "data", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: --out data: is a folder (name a manifest file, e.g. data/train.json)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "data"] and not any((tmp_path / "data").iterdir())


def test_out_below_a_file_is_one_line(tmp_path: Path) -> None:
    audio = speakers(tmp_path / "audio", {"spkA": 2})
    (tmp_path / "somefile.txt").write_text("notes")
    result = run_nestkit("manifest", str(audio), "--out", "somefile.txt/m.json", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: --out somefile.txt/m.json: somefile.txt is not a folder"
    assert (tmp_path / "somefile.txt").read_text() == "notes"


def test_out_never_overwrites_audio(tmp_path: Path) -> None:
    audio = speakers(tmp_path / "audio", {"spkA": 2})
    target = audio / "spkA" / "u0.wav"
    before = target.read_bytes()
    result = run_nestkit("manifest", str(audio), "--out", str(target))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --out {target}: is an audio file, not overwriting it (name a .json file)"
    assert target.read_bytes() == before


def test_validation_split_on_a_folder_refused_before_writing(tmp_path: Path) -> None:
    audio = speakers(tmp_path / "audio", {"spkA": 3})
    (tmp_path / "m_val.json").mkdir()
    result = run_nestkit("manifest", str(audio), "--out", "m.json", "--val-fraction", "0.3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --out m.json: its validation split m_val.json: is a folder"
    assert not (tmp_path / "m.json").exists() and not list(tmp_path.glob("*.tmp"))


def test_failed_write_keeps_the_old_pair_and_leaves_no_tmp(tmp_path: Path) -> None:
    """A write failing half-way (here: the val .tmp is a folder) leaves the old train and val
    manifests as they were, no .tmp file and no folder it created."""
    train, val = tmp_path / "m.json", tmp_path / "m_val.json"
    train.write_text("old train\n")
    val.write_text("old val\n")
    (tmp_path / "m_val.json.tmp").mkdir()
    entry = {"audio_filepath": "a.wav", "duration": 1.0}
    with pytest.raises(NestkitError, match=r"^.*m_val\.json: cannot write the manifest \(.*m_val\.json\.tmp: Is a directory\)$"):
        scan.write_manifests([([entry], train), ([entry], val)])
    assert train.read_text() == "old train\n" and val.read_text() == "old val\n"
    assert not (tmp_path / "m.json.tmp").exists()
    new = tmp_path / "new" / "deeper" / "m.json"
    with pytest.raises(NestkitError):
        scan.write_manifests([([entry], new), ([entry], val)])
    assert not (tmp_path / "new").exists()  # the folders it made for the failed write are gone
    scan.write_manifests([([entry], new)])
    assert json.loads(new.read_text()) == entry and not list(new.parent.glob("*.tmp"))


# ---------------------------------------------------------------------------------------- validation split note


def test_split_far_from_the_share_asked_is_noted(tmp_path: Path) -> None:
    audio = speakers(tmp_path / "audio", {"spkA": 5, "spkB": 5, "spkC": 5})
    out = tmp_path / "m.json"
    result = run_nestkit("manifest", str(audio), "--out", str(out), "--val-fraction", "0.05", "--group-by-folder", "1")
    assert result.returncode == 0, result.stderr
    note = re.search(r"note: val: (\d) of 3 groups, (\d+) of 15 recordings \((\d+)%\), asked 5%: groups are whole", result.stdout)
    assert note, result.stdout
    n_val = len((tmp_path / "m_val.json").read_text().splitlines())
    assert int(note[2]) == n_val == 5 * int(note[1]) and int(note[3]) == round(100 * n_val / 15)
    train_speakers = {Path(json.loads(line)["audio_filepath"]).parent.name for line in out.read_text().splitlines()}
    val_lines = (tmp_path / "m_val.json").read_text().splitlines()
    val_speakers = {Path(json.loads(line)["audio_filepath"]).parent.name for line in val_lines}
    assert len(train_speakers) + len(val_speakers) == 3 and not train_speakers & val_speakers  # groups stay whole


def test_split_note_only_when_far_off() -> None:
    item = {"audio_filepath": "a.wav", "duration": 1.0}
    grouped = scan.ScanResult(train=[item] * 31, validation=[item] * 12, groups=3, val_groups=1, grouped=True)
    assert grouped.split_note(0.05) == (
        "val: 1 of 3 groups, 12 of 43 recordings (28%), asked 5%: groups are whole "
        "(a deeper --group-by-folder level gives smaller ones)")
    assert grouped.split_note(0.25) is None and grouped.split_note(0.0) is None
    files = scan.ScanResult(train=[item] * 950, validation=[item] * 50, groups=1000, val_groups=50)
    assert files.split_note(0.05) is None
    assert files.split_note(0.2).startswith("val: 50 of 1000 recordings (5%), asked 20%: each recording is drawn by a hash")
    alone = scan.ScanResult(train=[], validation=[item] * 4, groups=1, val_groups=1, grouped=True)
    assert alone.split_note(0.05).startswith("val: 1 of 1 groups, 4 of 4 recordings (100%)")  # an empty train side


# ---------------------------------------------------------------------------------------- malformed lines


def bad_manifest(tmp_path: Path) -> Path:
    """9 lines over 9 real recordings: line 5 has a trailing comma, line 7 a string duration, line 8 none."""
    lines = manifest_lines(speakers(tmp_path / "audio", {"spkA": 9}))
    lines[4] = lines[4][:-1] + ", }"
    lines[6] = json.dumps({**json.loads(lines[6]), "duration": "2.5"})
    lines[7] = json.dumps({"audio_filepath": json.loads(lines[7])["audio_filepath"]})
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_training_log_names_malformed_lines(tmp_path: Path) -> None:
    """The `train data` line of the training log names the file and line of each bad line."""
    manifest = bad_manifest(tmp_path)
    cfg = DatasetConfig(manifest_filepath=str(manifest), batch_size=2)
    loader = build_dataloader(cfg, sample_rate=16000, train=True, seed=0)
    text = loader.describe()
    assert "skipped malformed lines: 2 bad_duration, 1 not_json" in text
    where = re.escape(str(manifest))
    found = re.search(rf"\({where} line 5: not JSON \(Expecting property name enclosed in double quotes at column \d+\); "
                      rf"{where} line 7: duration \"2\.5\" is not a number of seconds; {where} line 8: no duration\)", text)
    assert found, text


def test_many_malformed_lines_are_cut_short(tmp_path: Path) -> None:
    good = json.dumps({"audio_filepath": "a.wav", "duration": 1.0})
    path = tmp_path / "m.json"
    bad = ["[1]", '{"audio_filepath": "", "duration": 1}', '{"audio_filepath": "b.wav", "duration": 1, "offset": -2}']
    path.write_text("\n".join([good] + bad * 3) + "\n")
    report = read_manifest(path).report
    assert report.malformed_lines[:3] == [
        f"{path} line 2: not a JSON object (an array)", f'{path} line 3: audio_filepath "" is not a path',
        f"{path} line 4: offset -2 is negative",
    ]
    assert report.summary().endswith(f"{path} line 6: audio_filepath \"\" is not a path; and 4 more)")


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nestkit.pretrained import save_model

    recipe = nestkit.load_recipe(RECIPES / "nest_demo.yaml")
    return save_model(tmp_path_factory.mktemp("demo") / "demo.ckpt", nestkit.build_model(recipe), recipe)


def test_extract_counts_and_names_malformed_lines(demo_ckpt: Path, tmp_path: Path) -> None:
    manifest = bad_manifest(tmp_path)
    with manifest.open("a") as handle:
        handle.write(json.dumps({"audio_filepath": str(tmp_path / "gone.wav"), "duration": 1.0}) + "\n")
    out = tmp_path / "feats"
    result = run_nestkit("extract", str(demo_ckpt), str(manifest), str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    summary = next(line for line in lines if line.startswith("wrote "))
    assert summary.endswith("; skipped: 2 malformed line (bad duration), 1 malformed line (not json), 1 missing")
    assert summary.startswith("wrote 6 feature files (") and len(list(out.glob("*.npy"))) == 6
    named = lines[lines.index(summary) + 1:]
    assert [line.split(": ")[0] for line in named] == [f"  {manifest} line {n}" for n in (5, 7, 8)] + ["  missing"]
    assert named[-1] == f"  missing: {tmp_path / 'gone.wav'}"
