"""Seed-driven generators of bad inputs: corrupt audio files, manifest lines, recipe mutations.

Each generator maps an integer seed to one case, so the fuzz tests (a fixed list of seeds) and
the report script (which sweeps thousands of seeds) share the same cases.
"""

from __future__ import annotations

import copy
import io
import json
import math
import random
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf

AUDIO_KINDS = ("magic_then_noise", "truncated", "bit_flips", "huge_sizes", "wrong_container")
_MAGICS = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"ID3\x03", b"\xff\xfb", b"caff", b".snd")


@dataclass(frozen=True)
class AudioCase:
    kind: str
    data: bytes
    note: str


def valid_audio(rng: random.Random) -> tuple[bytes, str]:
    """A small real audio file (wav/flac/ogg, random rate, channels and sample format)."""
    fmt, subtype = rng.choice([("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"), ("FLAC", "PCM_16"),
                               ("FLAC", "PCM_24"), ("OGG", "VORBIS")])
    rate = rng.choice([8000, 16000, 22050, 44100])
    channels = rng.choice([1, 1, 2])
    frames = rng.randint(1, 4000)
    x = np.random.default_rng(rng.getrandbits(32)).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue(), f"{fmt}/{subtype} {rate} Hz x{channels} {frames} frames"


def _huge_wav(rng: random.Random) -> tuple[bytes, str]:
    """A WAV whose header declares absurd sizes, channel counts or rates."""
    data, _ = valid_audio(random.Random(rng.getrandbits(32)))
    pcm = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 256)))
    channels = rng.choice([1, 2, 0, 255, 65535])
    rate = rng.choice([16000, 0, 1, 2**31 - 1, 2**32 - 1])
    bits = rng.choice([16, 0, 7, 64, 65535])
    data_size = rng.choice([len(pcm), 0xFFFFFFFF, 0x7FFFFFFF, 2**31 + 17])
    riff_size = rng.choice([36 + len(pcm), 0xFFFFFFFF, 4])
    block = max(1, channels * bits // 8) & 0xFFFF
    header = (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
              (rate * block) & 0xFFFFFFFF, block, bits) + b"data" + struct.pack("<I", data_size))
    return header + pcm, f"wav header: {channels} ch, {rate} Hz, {bits} bit, data size {data_size}, riff size {riff_size}"


def _huge_flac(rng: random.Random) -> tuple[bytes, str]:
    """A FLAC whose STREAMINFO declares a huge (or zero) sample count / rate, then garbage frames."""
    rate = rng.choice([16000, 0, 655350, 2**20 - 1])
    total = rng.choice([0, 2**36 - 1, 2**35, 16000])
    channels, bits = rng.randint(1, 8), rng.choice([4, 8, 16, 24, 32])
    info = struct.pack(">HH", rng.choice([16, 4096, 65535]), rng.choice([16, 4096, 65535]))
    info += bytes(6)  # min/max frame size unknown
    packed = (rate << 44) | ((channels - 1) << 41) | ((bits - 1) << 36) | total
    info += packed.to_bytes(8, "big") + bytes(rng.getrandbits(8) for _ in range(16))
    block = bytes([0x80]) + len(info).to_bytes(3, "big") + info
    body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 512)))
    return b"fLaC" + block + body, f"flac streaminfo: {rate} Hz, {channels} ch, {bits} bit, {total} samples"


def audio_case(seed: int) -> AudioCase:
    """One corrupt (or borderline) audio file, fully determined by ``seed``."""
    rng = random.Random(seed)
    kind = AUDIO_KINDS[seed % len(AUDIO_KINDS)]
    if kind == "magic_then_noise":
        magic = rng.choice(_MAGICS)
        n = rng.choice([0, 1, 8, 40, 300, 3000])
        return AudioCase(kind, magic + bytes(rng.getrandbits(8) for _ in range(n)), f"{magic!r} + {n} random bytes")
    if kind == "truncated":
        data, note = valid_audio(rng)
        cut = rng.randint(0, len(data) - 1)
        return AudioCase(kind, data[:cut], f"{note} cut at {cut}/{len(data)} bytes")
    if kind == "bit_flips":
        data, note = valid_audio(rng)
        raw = bytearray(data)
        limit = min(len(raw), rng.choice([64, len(raw)]))  # often in the header, where it hurts most
        flips = rng.randint(1, 12)
        for _ in range(flips):
            raw[rng.randrange(limit)] ^= 1 << rng.randrange(8)
        return AudioCase(kind, bytes(raw), f"{note} with {flips} flipped bits in the first {limit} bytes")
    if kind == "huge_sizes":
        data, note = _huge_wav(rng) if rng.random() < 0.5 else _huge_flac(rng)
        return AudioCase(kind, data, note)
    # wrong_container: one format's header glued onto another's body
    a, na = valid_audio(rng)
    b, nb = valid_audio(rng)
    cut_a, cut_b = rng.randint(4, min(64, len(a))), rng.randint(0, min(64, len(b)))
    return AudioCase(kind, a[:cut_a] + b[cut_b:], f"first {cut_a} bytes of {na} + {nb} from byte {cut_b}")


# ---------------------------------------------------------------------------- manifests

_ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2.5, -0.0, 1e-300, 1e308, 10**400, -(10**400), "1.0", "", "nan", [], [1.0], {},
    {"a": 1}, "\u0000", "\ud7ff\ue000", 3.0,
)


def manifest_lines(seed: int, huge_ints: bool = True) -> bytes:
    """A manifest file's bytes: a mix of good lines and every kind of broken one
    (``huge_ints=False`` leaves out integers beyond the float range)."""
    rng = random.Random(seed)
    odd = _ODD_VALUES if huge_ints else tuple(v for v in _ODD_VALUES if not (isinstance(v, int) and abs(v) > 1e300))
    lines: list[bytes] = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        if r < 0.25:  # plausible line
            entry: dict[str, Any] = {"audio_filepath": f"audio/{rng.randint(0, 99)}.wav",
                                     "duration": round(rng.uniform(0.1, 20), 3)}
            if rng.random() < 0.3:
                entry["offset"] = round(rng.uniform(0, 5), 3)
            lines.append(json.dumps(entry).encode())
        elif r < 0.65:  # right keys, odd values
            entry = {}
            for key in ("audio_filepath", "audio_filename", "duration", "offset", "text"):
                if rng.random() < 0.6:
                    entry[key] = rng.choice(odd) if rng.random() < 0.7 else f"x/{rng.randint(0, 9)}.flac"
            text = json.dumps(entry, allow_nan=True)
            if rng.random() < 0.2:
                text = text.replace("1e+308", "1e999")  # json reads 1e999 as inf
            lines.append(text.encode())
        elif r < 0.8:  # JSON that is not an object, or cut short
            good = json.dumps({"audio_filepath": "a.wav", "duration": 1.0})
            lines.append(rng.choice([b"[]", b"null", b"3", b'"a.wav"', good[: rng.randint(0, len(good))].encode()]))
        elif r < 0.9:  # raw bytes, invalid UTF-8 included
            lines.append(bytes(rng.choice([rng.getrandbits(8), 0x22, 0x7B, 0x7D]) for _ in range(rng.randint(0, 40))).replace(b"\n", b" "))
        else:
            lines.append(rng.choice([b"", b"   ", b"\t", b"\r"]))
    sep = rng.choice([b"\n", b"\r\n"])
    return sep.join(lines) + (sep if rng.random() < 0.5 else b"")


# ---------------------------------------------------------------------------- recipes

RECIPE_MUTATIONS = ("wrong_type", "negative", "zero", "not_finite", "unknown_key", "delete_key", "semantic")
_WRONG_TYPES: tuple[Any, ...] = ("eight", "", None, [], [1, 2], {}, {"x": 1}, True, "${model.nope}", "1e", 2.5)
# Cross-field and range mistakes users make (dotted path, value).
SEMANTIC_MISTAKES: tuple[tuple[str, Any], ...] = (
    ("model.optim.lr", -0.001),
    ("model.optim.lr", 0.0),
    ("model.encoder.n_heads", 3),  # does not divide d_model 32
    ("model.encoder.n_heads", 64),
    ("model.masking.block_size", 0),
    ("model.masking.mask_prob", 1.5),
    ("model.masking.mask_prob", -0.1),
    ("model.quantizer.combine_time_steps", 3),
    ("model.quantizer.feat_in", 41),
    ("model.decoder.feat_in", 33),
    ("model.decoder.num_classes", 31),
    ("model.loss.combine_time_steps", 4),
    ("model.encoder.subsampling_factor", 3),
    ("model.encoder.conv_kernel_size", 8),
    ("model.encoder.conv_kernel_size", 0),
    ("model.preprocessor.sample_rate", 22050),
    ("model.sample_rate", 0),
    ("model.train_ds.batch_size", 0),
    ("model.train_ds.num_workers", -2),
    ("model.train_ds.min_duration", 5.0),  # with max_duration below: an empty window
    ("trainer.max_steps", -7),
    ("trainer.accumulate_grad_batches", 0),
    ("trainer.val_check_interval", 0),
    ("trainer.gradient_clip_val", -1.0),
    ("trainer.precision", "fp8"),
    ("trainer.devices", -1),
    ("trainer.max_nonfinite_steps", 0),
    ("model.optim.sched.warmup_steps", -5),
    ("model.optim.betas", [0.9]),
    ("model.optim.betas", [1.5, 0.98]),
    ("exp_manager.checkpoint_callback_params.save_top_k", -2),
    ("model.encoder.name", "os.system"),
    ("model.name", "subprocess.run"),
    ("model.encoder._target_", "os.system"),
)


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        out = [prefix] if prefix else []
        for k, v in node.items():
            out += _leaves(v, (*prefix, str(k)))
        return out
    return [prefix]


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[path[-1]] = value


def mutate_recipe(base: dict[str, Any], seed: int) -> tuple[dict[str, Any], list[str]]:
    """``base`` with one to three mistakes; returns (mutated copy, descriptions)."""
    rng = random.Random(seed)
    data = copy.deepcopy(base)
    notes: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(RECIPE_MUTATIONS)
        paths = [p for p in _leaves(data) if p[-1] != "name" or kind in ("wrong_type", "delete_key")]
        path = rng.choice(paths)
        where = ".".join(path)
        if kind == "wrong_type":
            value = rng.choice(_WRONG_TYPES)
            _set(data, path, value)
            notes.append(f"{where}={value!r}")
        elif kind in ("negative", "zero"):
            value = 0 if kind == "zero" else rng.choice([-1, -3, -0.5, -(10**6)])
            _set(data, path, value)
            notes.append(f"{where}={value!r}")
        elif kind == "not_finite":
            value = rng.choice([math.nan, math.inf, -math.inf])
            _set(data, path, value)
            notes.append(f"{where}={value!r}")
        elif kind == "unknown_key":
            key = rng.choice(["n_layer", "_target_", "learning_rate", "extra", "__class__"])
            _set(data, (*path[:-1], key), rng.choice([1, "os.system", None]))
            notes.append(f"new key {'.'.join((*path[:-1], key))}")
        elif kind == "delete_key":
            node: Any = data
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)
            notes.append(f"deleted {where}")
        else:
            where, value = rng.choice(SEMANTIC_MISTAKES)
            _set(data, tuple(where.split(".")), value)
            if where == "model.train_ds.min_duration":
                _set(data, ("model", "train_ds", "max_duration"), 1.0)
            notes.append(f"{where}={value!r}")
    return data, notes
