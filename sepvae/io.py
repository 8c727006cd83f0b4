"""Audio and file I/O with one-line errors: reading, downmixing, CSV tables, atomic writes."""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import io
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from sepvae.errors import SepvaeError, SepvaeWarning


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    A crash or an exception leaves neither a half-written ``path`` nor the temporary file.
    """
    with atomic_outputs([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(paths: list[str | Path], exclusive: bool = False) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; put them all in place on success.

    Stale temporaries of ``paths`` left by killed runs are removed first. ``exclusive``:
    each output is created only if it does not exist at that moment (a hard link fails
    if its name is taken, unlike a rename), so of two runs writing the same outputs one
    gets FileExistsError naming the output; outputs this call placed are removed again.
    """
    paths = [Path(p) for p in paths]
    temporaries: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            # The pid in the name tells a later run whether the writer is still alive.
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=path.suffix + ".part", dir=path.parent)
            os.close(fd)
            temporaries.append(Path(tmp))
        yield temporaries
        _put_in_place(temporaries, paths, exclusive)
    except BaseException:
        if exclusive:
            _remove_placed(temporaries, paths)
        raise
    finally:
        # By name rather than from ``temporaries``: SIGTERM may strike (see cli.py)
        # between mkstemp creating a file and its name being recorded.
        for path in paths:
            for tmp, pid in _temporaries_of(path):
                if pid == os.getpid():
                    tmp.unlink(missing_ok=True)


def _put_in_place(temporaries: list[Path], paths: list[Path], exclusive: bool) -> None:
    # mkstemp makes files private (0600); give the results the permissions open() would.
    umask = os.umask(0)
    os.umask(umask)
    for tmp, path in zip(temporaries, paths):
        os.chmod(tmp, 0o666 & ~umask)
        if exclusive:
            _link_exclusively(tmp, path)
        else:
            os.replace(tmp, path)


def _remove_placed(temporaries: list[Path], paths: list[Path]) -> None:
    """Remove the outputs that are hard links of our temporaries: ours, no one else's file."""
    for tmp, path in zip(temporaries, paths):
        with contextlib.suppress(OSError):
            if os.path.samefile(tmp, path):
                path.unlink()


def _link_exclusively(tmp: Path, path: Path) -> None:
    """Create ``path`` with ``tmp``'s content; FileExistsError (naming ``path``) if it exists."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError:
        # A file system without hard links (FAT, some network shares): claim the name
        # with O_EXCL (FileExistsError if taken), then rename onto the claim.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(tmp, path)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` whose writer is gone (killed by SIGKILL, or by a
    power cut); a live writer's are kept. Returns the removed."""
    removed = []
    for tmp, pid in _temporaries_of(path):
        if pid is None or not _alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _temporaries_of(path: str | Path) -> Iterator[tuple[Path, int | None]]:
    """(temporary, writer's pid) of ``path``: ``.<stem>.<pid>.XXXXXXXX<suffix>.part``, or
    without the pid as sepvae 0.1 named them."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.stem)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}{re.escape(path.suffix)}\.part")
    for candidate in path.parent.glob(f".{glob.escape(path.stem)}.*.part"):
        match = pattern.fullmatch(candidate.name)
        if match:
            yield candidate, int(match.group(1)) if match.group(1) else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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


def audio_info(path: str | Path, allow_truncated: bool = False) -> sf._SoundFileInfo:
    """soundfile's info of an audio file; SepvaeError naming it if it cannot be read or is
    truncated (its data end before its header's frame count), or with ``allow_truncated``
    a :class:`SepvaeWarning`, and ``frames`` counts the frames that are there."""
    path = check_readable(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise SepvaeError(f"{path}: cannot read audio ({short_error(exc)})") from None
    declared = header_frames(path, info)
    if declared is not None and declared > info.frames:
        truncated(path, declared, info.frames, info.samplerate, allow_truncated)
    return info


def truncated(path: Path, declared: int, frames: int, sample_rate: int, allow: bool) -> None:
    """Raise (or with ``allow`` warn) that ``path`` holds ``frames`` of the ``declared``."""
    problem = (
        f"truncated: its header says {declared} frames ({declared / sample_rate:.2f} s), "
        f"its data hold {frames} ({frames / sample_rate:.2f} s)"
    )
    if not allow:
        raise SepvaeError(f"{path}: {problem}; --allow-truncated uses what is there")
    warnings.warn(SepvaeWarning(f"{problem}; using what is there", path), stacklevel=3)


# Subtypes whose WAV / AIFF block is one frame, so that a data size gives a frame count.
_FRAME_BLOCKS = ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW")
_HEADER_BYTES = 1 << 16  # headers (fmt, ds64, COMM, NIST text) sit in the first few KB


def header_frames(path: str | Path, info: sf._SoundFileInfo) -> int | None:
    """The frame count a WAV / RF64 / AIFF / NIST file's header declares, None if unknown.

    libsndfile quietly clamps a header's count to the bytes present (``info.frames`` is
    what is there), so a cut-off file is found by reading the header ourselves: a few
    KB, however long the recording. Other formats announce a short file by a decoding
    error or by fewer frames read than ``info.frames`` (see files.separate_file).
    """
    if info.subtype not in _FRAME_BLOCKS and info.format != "NIST":
        return None
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    if info.format in ("WAV", "WAVEX", "RF64"):
        return _riff_frames(head)
    if info.format == "AIFF":
        return _aiff_frames(head)
    if info.format == "NIST":
        match = re.search(rb"\nsample_count -i (\d+)", head[:1024])
        return int(match.group(1)) if match else None
    return None


def _chunks(head: bytes, start: int, endian: str) -> Iterator[tuple[bytes, int, bytes]]:
    """(id, declared size, the part of the body within ``head``) of RIFF / IFF chunks."""
    pos = start
    while pos + 8 <= len(head):
        size = struct.unpack(endian + "I", head[pos + 4 : pos + 8])[0]
        yield head[pos : pos + 4], size, head[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes


def _riff_frames(head: bytes) -> int | None:
    endian = {b"RIFF": "<", b"RF64": "<", b"RIFX": ">"}.get(head[:4])
    if endian is None or head[8:12] != b"WAVE":
        return None
    block_align, rf64_size = 0, None
    for chunk, size, body in _chunks(head, 12, endian):
        if chunk == b"ds64" and len(body) >= 16:
            rf64_size = struct.unpack("<Q", body[8:16])[0]
        elif chunk == b"fmt " and len(body) >= 14:
            block_align = struct.unpack(endian + "H", body[12:14])[0]
        elif chunk == b"data":
            if head[:4] == b"RF64" and size == 0xFFFFFFFF:
                size = rf64_size
            # Streaming writers leave the size 0 or 0xFFFFFFFF: no count to hold the data to.
            if not block_align or size in (None, 0, 0xFFFFFFFF):
                return None
            return size // block_align
    return None


def _aiff_frames(head: bytes) -> int | None:
    if head[:4] != b"FORM" or head[8:12] not in (b"AIFF", b"AIFC"):
        return None
    for chunk, _, body in _chunks(head, 12, ">"):
        if chunk == b"COMM" and len(body) >= 6:
            return struct.unpack(">I", body[2:6])[0]
    return None


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
