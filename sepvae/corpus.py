"""The corpus stage: find TIMIT (or fetch its free sample) and index it as a CSV table.

Two layouts are read:

- the free TIMIT sample (NLTK's ``timit.zip``): ``dr1-fvmh0/sa1.wav`` (RIFF), where the
  folder is ``<dialect region>-<gender letter><speaker id>``;
- LDC's full TIMIT (LDC93S1): ``TRAIN|TEST/DR1/FCJF0/SA1.WAV`` in any letter case, where
  ``.WAV`` is usually NIST SPHERE (soundfile reads it).

Any other corpus can be given as a CSV with at least ``path, speaker, gender`` columns.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from sepvae.io import atomic_output, audio_info, csv_text, file_md5, read_csv
from sepvae.errors import SepvaeError

SAMPLE_URL = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/timit.zip"
SAMPLE_MD5 = "34c047c4749a811287f2c652104d7849"
DEFAULT_RAW_DIR = Path("data/raw/timit")
DEFAULT_CORPUS_CSV = Path("data/corpus.csv")

_SAMPLE_SPEAKER = re.compile(r"^dr(\d)-([fm])([a-z0-9]+)$", re.IGNORECASE)
_LDC_SPEAKER = re.compile(r"^([fm])([a-z]{3}\d)$", re.IGNORECASE)
_LDC_REGION = re.compile(r"^dr(\d)$", re.IGNORECASE)
_GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female"}


@dataclass(frozen=True)
class Utterance:
    """One row of the corpus table."""

    path: str
    speaker: str
    gender: str  # "male" or "female"
    dialect_region: str = ""
    utterance: str = ""
    split: str = ""  # LDC's TRAIN/TEST, lower case; empty for the sample
    duration: float = 0.0  # seconds
    sample_rate: int = 0
    transcript: str = ""


CORPUS_COLUMNS = [f.name for f in fields(Utterance)]


def find_timit_root(timit_root: str | Path | None = None, raw_dir: Path = DEFAULT_RAW_DIR) -> Path | None:
    """The TIMIT root to use: ``timit_root``, else $TIMIT_ROOT, else ``raw_dir`` if it has audio."""
    given = timit_root or os.environ.get("TIMIT_ROOT") or None
    if given:
        root = Path(given).expanduser()
        if not root.is_dir():
            raise SepvaeError(f"{root}: TIMIT root does not exist (from --timit-root or TIMIT_ROOT)")
        return root
    if raw_dir.is_dir() and any(raw_dir.rglob("*.[wW][aA][vV]")):
        return raw_dir
    return None


def download_sample(dest: Path = DEFAULT_RAW_DIR, url: str | None = None, md5: str = SAMPLE_MD5) -> Path:
    """Download NLTK's free TIMIT sample, verify its md5 and unpack it into ``dest``."""
    url = url or SAMPLE_URL
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest.parent / "timit.zip") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise SepvaeError(
                f"could not download the TIMIT sample from {url} ({exc}); download timit.zip "
                f"yourself (md5 {md5}) and unpack it, then pass --timit-root DIR"
            ) from None
        unpack_sample(tmp, dest, md5)
    return dest


def unpack_sample(zip_path: str | Path, dest: Path, md5: str = SAMPLE_MD5) -> Path:
    """Verify ``zip_path`` against ``md5`` and unpack its audio tree into ``dest``.

    The zip's single top folder (``timit/``) is dropped, so ``dest`` holds ``dr1-fvmh0/...``.
    Unpacks into a temporary folder first: ``dest`` appears complete or not at all.
    """
    zip_path = Path(zip_path)
    actual = file_md5(zip_path)
    if actual != md5:
        raise SepvaeError(
            f"{zip_path}: md5 is {actual}, expected {md5} (corrupt or different download); "
            f"delete it and retry, or unpack a good copy and pass --timit-root DIR"
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(staging)
        except (zipfile.BadZipFile, OSError) as exc:
            raise SepvaeError(f"{zip_path}: cannot unpack ({exc})") from None
        entries = [p for p in staging.iterdir() if not p.name.startswith("__MACOSX")]
        top = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(top, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def index_timit(root: str | Path, progress: Callable[[int], None] | None = None,
                allow_truncated: bool = False) -> list[Utterance]:
    """Index every utterance of a TIMIT tree in either layout, sorted by path.

    A truncated file (data ending before its header's frame count) is a SepvaeError, or
    with ``allow_truncated`` a warning and its duration is that of the data present.
    """
    root = Path(root)
    if not root.is_dir():
        raise SepvaeError(f"{root}: TIMIT root does not exist")
    utterances = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() != ".wav" or not path.is_file():
            continue
        row = _parse_timit_path(path, root)
        if row is None:
            continue
        info = audio_info(path, allow_truncated)
        utterances.append(
            Utterance(
                **row,
                path=str(path.resolve()),
                duration=round(info.frames / info.samplerate, 4),
                sample_rate=int(info.samplerate),
                transcript=_transcript(path),
            )
        )
        if progress:
            progress(len(utterances))
    if not utterances:
        raise SepvaeError(
            f"{root}: no TIMIT utterances found (expected dr1-fvmh0/sa1.wav or TRAIN/DR1/FCJF0/SA1.WAV)"
        )
    return utterances


def _parse_timit_path(path: Path, root: Path) -> dict | None:
    # LDC ships converted copies as SA1.WAV.wav beside the SPHERE files: index only one.
    if path.stem.lower().endswith(".wav"):
        return None
    speaker_dir = path.parent.name
    utterance = path.stem.lower()
    match = _SAMPLE_SPEAKER.match(speaker_dir)
    if match:
        region, gender, _ = match.groups()
        speaker = speaker_dir.split("-", 1)[1].lower()
        return dict(speaker=speaker, gender=_GENDERS[gender.lower()], dialect_region=f"dr{region}",
                    utterance=utterance, split="")
    match = _LDC_SPEAKER.match(speaker_dir)
    region_match = _LDC_REGION.match(path.parent.parent.name)
    if match and region_match:
        split = path.parent.parent.parent.name.lower()
        return dict(
            speaker=speaker_dir.lower(),
            gender=_GENDERS[match.group(1).lower()],
            dialect_region=f"dr{region_match.group(1)}",
            utterance=utterance,
            split=split if split in ("train", "test") else "",
        )
    return None


def _transcript(wav: Path) -> str:
    for candidate in wav.parent.iterdir():
        if candidate.stem.lower() == wav.stem.lower() and candidate.suffix.lower() == ".txt":
            text = candidate.read_text(errors="replace").split(maxsplit=2)
            # "<start sample> <end sample> <sentence>"
            return text[2].strip() if len(text) == 3 else ""
    return ""


def read_corpus_csv(path: str | Path, allow_truncated: bool = False) -> list[Utterance]:
    """Read a corpus table: ours, or any CSV with at least path, speaker, gender.

    Relative paths are taken relative to the CSV's folder. Missing duration/sample rate are
    read from the audio files.
    """
    path = Path(path)
    _, rows = read_csv(path, "corpus CSV", ("gender", "path", "speaker"), "run `sepvae data` first")
    if not rows:
        raise SepvaeError(f"{path}: corpus CSV lists no utterances")
    utterances = []
    for line, row in enumerate(rows, start=2):
        gender = _GENDERS.get(row["gender"].strip().lower())
        if gender is None:
            raise SepvaeError(f"{path}:{line}: gender must be male/female (or m/f), got {row['gender']!r}")
        audio = Path(row["path"])
        if not audio.is_absolute():
            audio = path.parent / audio
        values = {k: row[k] for k in CORPUS_COLUMNS if row.get(k) not in (None, "")}
        values.update(path=str(audio), gender=gender)
        if "duration" not in values or "sample_rate" not in values:
            info = audio_info(audio, allow_truncated)
            values["duration"] = round(info.frames / info.samplerate, 4)
            values["sample_rate"] = info.samplerate
        values["utterance"] = values.get("utterance") or audio.stem.lower()
        values["duration"] = float(values["duration"])
        values["sample_rate"] = int(values["sample_rate"])
        utterances.append(Utterance(**values))
    return utterances


def corpus_csv_text(utterances: list[Utterance]) -> str:
    return csv_text([asdict(u) for u in utterances], CORPUS_COLUMNS)


def build_corpus(
    timit_root: str | Path | None = None,
    corpus_csv: str | Path | None = None,
    out: str | Path = DEFAULT_CORPUS_CSV,
    raw_dir: Path = DEFAULT_RAW_DIR,
    download: bool = True,
    progress: Callable[[int], None] | None = None,
    allow_truncated: bool = False,
) -> tuple[Path, list[Utterance]]:
    """The corpus stage: index TIMIT (or read ``corpus_csv``) and write the table to ``out``.

    Without a root, looks in ``raw_dir`` and otherwise downloads the free sample there.
    Leaves ``out`` untouched when its content would not change.
    """
    if corpus_csv:
        utterances = read_corpus_csv(corpus_csv, allow_truncated)
    else:
        root = find_timit_root(timit_root, raw_dir)
        if root is None:
            if not download:
                raise SepvaeError(
                    f"no TIMIT found: pass --timit-root DIR, set TIMIT_ROOT, or unpack timit.zip into {raw_dir}"
                )
            root = download_sample(raw_dir)
        utterances = index_timit(root, progress, allow_truncated)
    out = Path(out)
    text = corpus_csv_text(utterances)
    if not (out.is_file() and out.read_text() == text):
        with atomic_output(out) as tmp:
            tmp.write_text(text)
    return out, utterances
