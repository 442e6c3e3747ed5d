"""Rebuild nestkit's bundled demo data (``nestkit/demo_data/``) from Debian packages.

Speech: five voices of Asterisk's telephone prompts (``asterisk-core-sounds-{en,es,fr,it,ru}-wav``,
8 kHz; ``en`` and ``es`` are the same speaker), 120 clips of 1-4.5 s each, picked evenly from the
sorted file list and stored as 8 kHz 16-bit FLAC; every 5th clip of a voice goes to validation, so
no clip is on both sides. Manifest keys besides the audio: ``speaker`` (the voice), ``text`` (the
package's transcript) and ``words`` (its word count in three classes, a content label for
``nestkit probe``). Noise: about one minute of ambient sounds from ``minetest-data``
(``env_sounds``: water, lava; ``fire``: fire, large fire), copied unchanged as Ogg Vorbis.
The selection depends only on the package contents, so a rebuild gives the same files.

    python scripts/build_demo_data.py                 # apt-get download + dpkg -x into a temp dir
    python scripts/build_demo_data.py --root /tmp/x   # packages already extracted under /tmp/x
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import soundfile as sf

PACKAGES = (
    "asterisk-core-sounds-en-wav",
    "asterisk-core-sounds-es-wav",
    "asterisk-core-sounds-fr-wav",
    "asterisk-core-sounds-it-wav",
    "asterisk-core-sounds-ru-wav",
    *(f"asterisk-core-sounds-{lang}" for lang in ("en", "es", "fr", "it", "ru")),  # transcripts (core-sounds-*.txt)
    "minetest-data",
)
SPEAKERS = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison", "fr": "fr_CA_f_June", "it": "it_IT_m_Carlo", "ru": "ru_RU_f_IvrvoiceRU"}
CLIPS_PER_SPEAKER = 120
MIN_SECONDS, MAX_SECONDS = 1.0, 4.5
VAL_EVERY = 5  # every 5th selected clip of a speaker goes to validation
MODS = "usr/share/games/minetest/games/minetest_game/mods"
NOISE_FILES = (
    "env_sounds/sounds/env_sounds_water.1.ogg",
    "env_sounds/sounds/env_sounds_water.2.ogg",
    "env_sounds/sounds/env_sounds_water.3.ogg",
    "env_sounds/sounds/env_sounds_water.4.ogg",
    "env_sounds/sounds/env_sounds_lava.1.ogg",
    "env_sounds/sounds/env_sounds_lava.2.ogg",
    "fire/sounds/fire_fire.1.ogg",
    "fire/sounds/fire_fire.2.ogg",
    "fire/sounds/fire_fire.3.ogg",
    "fire/sounds/fire_large.ogg",
)
OUT = Path(__file__).resolve().parent.parent / "nestkit" / "demo_data"


def fetch(root: Path) -> None:
    """Download the packages with apt and unpack them under ``root`` (no installation)."""
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)


def pick(files: list[Path]) -> list[Path]:
    """``CLIPS_PER_SPEAKER`` clips of 1-4.5 s, evenly spread over the sorted list (the packages'
    ``silence/`` files hold no speech and are left out)."""
    ok = [f for f in files if f.parent.name != "silence" and MIN_SECONDS <= sf.info(str(f)).duration <= MAX_SECONDS]
    if len(ok) < CLIPS_PER_SPEAKER:
        raise SystemExit(f"only {len(ok)} usable clips in {files[0].parent}")
    step = len(ok) / CLIPS_PER_SPEAKER
    return [ok[int(i * step)] for i in range(CLIPS_PER_SPEAKER)]


def transcripts(root: Path, lang: str) -> dict[str, str]:
    """Prompt name (``digits/5``, ``vm-goodbye``) -> its text, from the package's core-sounds-LANG.txt."""
    path = root / f"usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    texts = {}
    for row in gzip.open(path, "rt", encoding="utf-8-sig"):
        name, sep, text = row.partition(":")
        if sep and not row.startswith(";"):
            texts[name.strip()] = " ".join(text.split())
    return texts


def word_class(text: str) -> str:
    """The ``words`` label: how many words the prompt says, in three classes."""
    n = len(re.findall(r"\w+", text))
    return "1-2" if n <= 2 else "3-5" if n <= 5 else "6+"


def line(path: str, seconds: float, **extra: str) -> str:
    return json.dumps({"audio_filepath": path, "duration": round(seconds, 4), **extra})


def build(root: Path, out: Path) -> None:
    sounds = root / "usr/share/asterisk/sounds"
    if out.exists():
        shutil.rmtree(out)
    (out / "speech").mkdir(parents=True)
    (out / "noise").mkdir()
    train, val, noise = [], [], []
    for lang, folder in SPEAKERS.items():
        files = sorted((sounds / folder).rglob("*.wav"))
        texts = transcripts(root, lang)
        for k, src in enumerate(pick(files)):
            audio, rate = sf.read(str(src), dtype="int16")
            stem = "_".join(src.relative_to(sounds / folder).with_suffix("").parts)
            rel = f"speech/{lang}_{stem}.flac"
            sf.write(str(out / rel), audio, rate, format="FLAC", subtype="PCM_16")
            prompt = "/".join(src.relative_to(sounds / folder).with_suffix("").parts)
            labels = {"text": texts[prompt], "words": word_class(texts[prompt])} if prompt in texts else {}
            entry = line(rel, len(audio) / rate, speaker=lang, **labels)
            (val if k % VAL_EVERY == VAL_EVERY - 1 else train).append(entry)
    for name in NOISE_FILES:
        src = root / MODS / name
        rel = f"noise/{src.name}"
        shutil.copyfile(src, out / rel)
        noise.append(line(rel, sf.info(str(src)).duration))
    for fname, lines in (("train_manifest.json", train), ("val_manifest.json", val), ("noise_manifest.json", noise)):
        (out / fname).write_text("\n".join(lines) + "\n")
    (out / "__init__.py").write_text('"""Bundled demo data (see LICENSE.md); read it through nestkit.data.demo_manifests()."""\n')
    (out / "LICENSE.md").write_text(LICENSE)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    crc = zlib.crc32("".join(train + val + noise).encode())
    print(f"{len(train)} train, {len(val)} val, {len(noise)} noise clips; {total / 1e6:.2f} MB; manifest crc {crc:08x}")


LICENSE = """\
# nestkit demo data: sources and licences

Rebuilt by `scripts/build_demo_data.py` from Debian (bookworm) packages.

## Speech (`speech/*.flac`, 8 kHz, 16-bit FLAC converted from the packages' WAV files)
From the Asterisk core sound prompts (https://downloads.asterisk.org/pub/telephony/sounds/):
- `en_*`: Debian package `asterisk-core-sounds-en-wav`, recorded by Allison Smith
  (http://www.theivrvoice.com), (c) 2003-2010 Allison Smith, financial contributions by
  Digium, Inc. Licence: CC-BY-SA-3.0.
- `es_*`: Debian package `asterisk-core-sounds-es-wav` (Mexican Spanish), recorded by Allison
  Smith (http://www.theivrvoice.com), (c) 2003-2010 Allison Smith, financial contributions by
  Digium, Inc. Licence: CC-BY-SA-3.0.
- `fr_*`: Debian package `asterisk-core-sounds-fr-wav`, recorded by June Wallack
  (http://www.junewallack.com), (c) 2006-2008 June Wallack; translated by Clod Patry,
  Kristopher Lalletti and June Wallack. Licence: CC-BY-SA-3.0.
- `it_*`: Debian package `asterisk-core-sounds-it-wav`, recorded by Carlo Flora
  (http://www.carloflora.com), (c) 2012 Carlo Flora; translated by Silvia Petrin.
  Licence (as stated in the package's copyright file): CC-BY-3.0.
- `ru_*`: Debian package `asterisk-core-sounds-ru-wav`, provided by Maxim Topal
  (http://www.ivrvoice.ru), (c) 2010 Maxim. Licence: CC-BY-3.0.

The manifests' `text` key is the prompt's transcript from the same voice's package
(`asterisk-core-sounds-LANG`, file `core-sounds-LANG.txt`, same authors and licence); `words`
is its word count in three classes (1-2, 3-5, 6+), a content label for `nestkit probe`.

## Noise (`noise/*.ogg`, copied unchanged from Debian package `minetest-data`)
- `env_sounds_water.*.ogg`: Yuval, https://freesound.org/people/Yuval/sounds/197023/ (CC0-1.0)
- `env_sounds_lava.*.ogg`: Halion, https://freesound.org/people/Halion/sounds/17785/ (CC0-1.0)
- `fire_fire.*.ogg`, `fire_large.ogg`: Dynamicell,
  http://www.freesound.org/people/Dynamicell/sounds/17548/ (CC-BY-3.0)
Minetest Game media are distributed under CC-BY-SA-3.0 with the per-file exceptions above
(see /usr/share/doc/minetest-data/copyright and the mods' README.txt).

Licence texts: https://creativecommons.org/licenses/by-sa/3.0/legalcode,
https://creativecommons.org/licenses/by/3.0/legalcode,
https://creativecommons.org/publicdomain/zero/1.0/legalcode.
The clips were shortened to a selection and re-encoded (speech) by the nestkit authors.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="folder where the packages are already extracted")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.root is not None:
        build(args.root, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fetch(Path(tmp))
        build(Path(tmp), args.out)


if __name__ == "__main__":
    main()
