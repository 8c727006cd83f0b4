"""Audio and file I/O with one-line errors: reading, downmixing, CSV tables, atomic writes."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from sepvae.errors import SepvaeError


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A crash or an exception leaves neither a half-written ``path`` nor the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes files private (0600); give the result the permissions open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def csv_text(rows: list[dict], fields: list[str]) -> str:
    """Rows as CSV text with a header, ``\\n`` line ends, keys outside ``fields`` ignored."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_csv(path: str | Path, what: str, required: tuple[str, ...] = (), hint: str = "") -> tuple[list[str], list[dict]]:
    """A CSV's header and rows. SepvaeError naming the file (as ``what``) if it is missing,
    has no header, or lacks one of the ``required`` columns; ``hint`` says how to make it."""
    path = Path(path)
    if not path.is_file():
        raise SepvaeError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if not header:
        raise SepvaeError(f"{path}: {what} is empty, expected a header with {', '.join(required) or 'columns'}")
    missing = [name for name in required if name not in header]
    if missing:
        raise SepvaeError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    return header, rows


def write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> None:
    """Write ``audio`` (frames,) or (frames, channels) as WAV, atomically."""
    with atomic_output(path) as tmp:
        sf.write(tmp, audio, sample_rate, subtype=subtype, format="WAV")


def to_mono(block: np.ndarray) -> np.ndarray:
    """Average the channels of ``block``: (frames,) or (frames, channels) -> float32 (frames,)."""
    block = np.asarray(block, dtype=np.float32)
    if block.ndim == 1:
        return np.ascontiguousarray(block)
    mono = block[:, 0].copy()
    for channel in range(1, block.shape[1]):  # column adds: several times faster than mean(axis=1)
        mono += block[:, channel]
    if block.shape[1] > 1:
        mono *= np.float32(1 / block.shape[1])
    return mono


def check_readable(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise SepvaeError(f"{path}: no such file")
    if path.is_dir():
        raise SepvaeError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise SepvaeError(f"{path}: file is empty")
    return path


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a whole audio file as float32, shape (frames,) for mono or (frames, channels).

    Raises SepvaeError naming the file for anything soundfile cannot read, zero samples,
    or NaN/Inf samples.
    """
    path = check_readable(path)
    try:
        audio, sample_rate = sf.read(path, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise SepvaeError(f"{path}: cannot read audio ({short_error(exc)})") from None
    if audio.shape[0] == 0:
        raise SepvaeError(f"{path}: has zero samples")
    if not np.isfinite(audio).all():
        raise SepvaeError(f"{path}: contains NaN or Inf samples")
    return audio, int(sample_rate)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    path = check_readable(path)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise SepvaeError(f"{path}: cannot read audio ({short_error(exc)})") from None


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def short_error(exc: Exception) -> str:
    """The last line of an exception's message (an OSError's strerror), for one-line errors."""
    text = getattr(exc, "strerror", None) or str(exc).strip()
    lines = str(text).splitlines()
    return lines[-1] if lines else type(exc).__name__
