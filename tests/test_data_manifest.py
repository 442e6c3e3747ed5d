"""Manifest reading: NeMo semantics, compact columns, kept label keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nestkit.data import manifest as manifest_module
from nestkit.data.manifest import ALL_KEYS, first_existing, read_manifest


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_text(newline.join(lines) + newline)
    return path


def test_paths_resolve_like_nemo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sub = tmp_path / "sets"
    sub.mkdir()
    lines = [
        json.dumps({"audio_filepath": "a/b.wav", "duration": 1.0, "offset": 0.5, "text": "x"}),
        json.dumps({"audio_filepath": "/abs/c.flac", "duration": 2}),
        json.dumps({"audio_filepath": "~/d.wav", "duration": 1.5}),
        json.dumps({"audio_filename": "e.wav", "duration": 0.5}),
        json.dumps({"audio_filepath": "./f/../g.wav", "duration": 0.25, "offset": None}),
    ]
    m = read_manifest(write_lines(sub / "m.json", lines))
    assert list(m.paths) == [
        str(sub / "a/b.wav"), "/abs/c.flac", str(tmp_path / "home/d.wav"), str(sub / "e.wav"), str(sub / "f/../g.wav"),
    ]
    assert m.durations.tolist() == [1.0, 2.0, 1.5, 0.5, 0.25] and m.offsets.tolist() == [0.5, 0, 0, 0, 0]
    assert m.extras[0] == {} and len(m.extras) == 5  # extra keys are dropped unless kept
    as_written = read_manifest(sub / "m.json", resolve_paths=False)
    assert as_written.paths[0] == "a/b.wav" and as_written.paths[2] == "~/d.wav"


def test_malformed_lines_counted_with_numbers_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "READ_BLOCK", 64)  # many blocks, lines cut at block ends
    good = [json.dumps({"audio_filepath": f"x{i}.wav", "duration": 1.0 + i}) for i in range(30)]
    lines = good[:10] + ["", "{not json", json.dumps({"duration": 1}), json.dumps({"audio_filepath": "y.wav", "duration": True}),
                         json.dumps({"audio_filepath": "z.wav", "duration": 1, "offset": -1}), "[1, 2]", "   "] + good[10:]
    path = write_lines(tmp_path / "m.json", lines, newline="\r\n")
    m = read_manifest(path, min_duration=3.0, max_duration=27.5)
    assert m.report.malformed == {"not_json": 2, "no_audio_filepath": 1, "bad_duration": 1, "bad_offset": 1}
    assert m.report.malformed_lines[:2] == [f"{path} line 12: not JSON (Expecting property name enclosed in double quotes at column 2)",
                                          f"{path} line 13: no audio_filepath"]
    assert m.report.too_short == 2 and m.report.too_long == 3 and len(m) == 25
    assert [Path(p).name for p in m.paths][:2] == ["x2.wav", "x3.wav"]
    # bare carriage returns split lines as text mode does
    (tmp_path / "cr.json").write_bytes(b"\r".join(line.encode() for line in good[:3]) + b"\r")
    assert len(read_manifest(tmp_path / "cr.json")) == 3


def test_kept_keys_and_all_keys(tmp_path: Path) -> None:
    lines = [json.dumps({"audio_filepath": f"s{i % 3}/u{i}.wav", "duration": 1.0, "speaker": f"spk{i % 3}",
                         "text": "hello", "lang": "en"}) for i in range(6)]
    lines.append(json.dumps({"audio_filepath": "u.wav", "duration": 1.0}))
    path = write_lines(tmp_path / "m.json", lines)
    m = read_manifest(path, keep=("speaker",))
    assert m.column("speaker") == ["spk0", "spk1", "spk2", "spk0", "spk1", "spk2", None]
    assert m.extras[1] == {"speaker": "spk1"}
    assert read_manifest(path, keep="speaker").column("speaker") == m.column("speaker")
    everything = read_manifest(path, keep=ALL_KEYS)
    assert everything.extras[0] == {"speaker": "spk0", "text": "hello", "lang": "en"}
    assert len(m.paths.folders) == 4  # s0/, s1/, s2/ and the manifest folder itself: each stored once


def test_columns_are_compact(tmp_path: Path) -> None:
    n = 20000
    lines = [json.dumps({"audio_filepath": f"audio/spk{i % 100:03d}/utt_{i:07d}.flac", "duration": 1 + i % 17,
                         "text": "a transcript that is not kept"}) for i in range(n)]
    m = read_manifest(write_lines(tmp_path / "m.json", lines))
    assert len(m) == n and m.paths[n - 1] == str(tmp_path / f"audio/spk099/utt_{n - 1:07d}.flac")
    # names (16 B) + end offsets (4 B) + folder index (1 B) + duration and offset (16 B)
    assert m.nbytes < 40 * n
    assert not any(isinstance(v, list) and len(v) == n for v in vars(m).values())


def test_first_existing_finds_a_present_file(tmp_path: Path) -> None:
    (tmp_path / "here.wav").write_bytes(b"")
    lines = [json.dumps({"audio_filepath": f"gone{i}.wav", "duration": 1.0}) for i in range(100)]
    path = write_lines(tmp_path / "m.json", lines)
    assert first_existing(read_manifest(path)) is None
    lines[77] = json.dumps({"audio_filepath": "here.wav", "duration": 1.0})
    assert first_existing(read_manifest(write_lines(path, lines))) == 77
    assert os.path.basename(read_manifest(path).paths[77]) == "here.wav"
