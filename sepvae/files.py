"""Separating users' files: what ``sepvae separate`` does.

``separate_files`` streams each input (any format soundfile reads, any rate, any channel
count) through :meth:`Separator.separate_blocks` and writes ``<stem>_<source>.wav`` per
source: at the input's rate and length, 32-bit float for float-coded input (FLOAT,
DOUBLE, and the lossy VORBIS / OPUS / MPEG, which decode to float) and 16-bit PCM for
integer-coded input (PCM, u-law, ADPCM, ...); above half the model's rate (8 kHz for
16 kHz models) they are silent. Outputs are written to temporary files beside
their final names and put in place only when the whole input has been separated, so a
failure never leaves an output behind; without ``overwrite`` they are created exclusively,
so of two runs writing the same outputs one fails. A truncated input (data ending before
its header's frame count) is an error, or with ``allow_truncated`` a warning. A failing
input does not stop the others.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sepvae.errors import SepvaeError, check_signals, deferred_signals

FLOAT_CODED = ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")
WAV_LIMIT = 0xFFFFFFFF - (1 << 16)  # bytes of samples a RIFF WAV holds; beyond it, RF64

Progress = Callable[[int, int], None]  # (input frames done, input frames in all)



@dataclass
class FileResult:
    """What happened to one input: its outputs, or the error that stopped it."""

    input: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    error: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    frames: int | None = None
    format: str | None = None
    subtype: str | None = None
    output_subtype: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        data = {"input": str(self.input), "ok": self.ok}
        if self.ok:
            data["outputs"] = {source: str(path) for source, path in self.outputs.items()}
        else:
            data["error"] = self.error
        data.update(
            sample_rate=self.sample_rate, channels=self.channels, frames=self.frames,
            duration=None if not self.frames or not self.sample_rate else self.frames / self.sample_rate,
            format=self.format, subtype=self.subtype, output_subtype=self.output_subtype,
            warnings=self.warnings, seconds=round(self.seconds, 3),
        )
        return data


def output_paths(path: Path, sources: list[str], out_dir: Path | None = None) -> dict[str, Path]:
    """source -> ``<out_dir or the input's folder>/<stem>_<source>.wav``."""
    folder = Path(out_dir) if out_dir is not None else Path(path).parent
    return {source: folder / f"{Path(path).stem}_{source}.wav" for source in sources}


def output_subtype(subtype: str) -> str:
    """The output WAV subtype for an input subtype: float stays float, the rest is PCM_16."""
    return "FLOAT" if subtype in FLOAT_CODED else "PCM_16"


def separate_files(
    separator,
    paths: list[Path],
    out_dir: Path | None = None,
    overwrite: bool = False,
    progress: Callable[[Path, int, int], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    allow_truncated: bool = False,
) -> list[FileResult]:
    """Separate each file with one loaded ``separator``; a bad file gives an error result.

    Never raises SepvaeError for a single file: its :class:`FileResult` says what went
    wrong and the next file is processed. ``on_result`` sees each result as it is made.
    """
    results = []
    inputs = {Path(p).resolve() for p in paths}
    written: dict[Path, Path] = {}  # output -> the input of this call that made it
    for path in paths:
        path = Path(path)
        started = time.perf_counter()
        try:
            planned = output_paths(path, separator.sources, out_dir)
            for output in planned.values():
                target = output.resolve()
                if target in written:
                    raise SepvaeError(f"{path}: its output {output} would replace that of {written[target]} (same name)")
                if target in inputs:
                    raise SepvaeError(f"{path}: its output {output} is one of the inputs")
            each = (lambda done, total: progress(path, done, total)) if progress else None
            result = separate_file(separator, path, out_dir, overwrite, each, allow_truncated)
            written.update({p.resolve(): path for p in result.outputs.values()})
        except SepvaeError as exc:
            result = FileResult(input=path, error=str(exc))
        result.seconds = time.perf_counter() - started
        results.append(result)
        if on_result:
            on_result(result)
    return results


def separate_file(
    separator,
    path: str | Path,
    out_dir: Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    allow_truncated: bool = False,
) -> FileResult:
    """Separate one file into ``<stem>_<source>.wav`` files; SepvaeError naming it if it fails.

    Warnings (downmix, silent input, clipping, a truncated file with ``allow_truncated``)
    are returned in the result, not raised. Without ``overwrite`` the outputs are created
    exclusively: if another run creates one meanwhile, this one fails and leaves it alone.
    """
    from sepvae.errors import SepvaeWarning
    from sepvae.io import audio_info

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SepvaeWarning)
        info = audio_info(path, allow_truncated)
        result = FileResult(
            input=path, sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames),
            format=info.format, subtype=info.subtype, output_subtype=output_subtype(info.subtype),
        )
        try:
            separator.check_length(result.frames, result.sample_rate)
        except SepvaeError as exc:
            raise SepvaeError(f"{path}: {exc}") from None
        outputs = _checked_outputs(path, separator.sources, out_dir, overwrite)
        clipped = _write_estimates(separator, Path(path), outputs, result, overwrite, progress, allow_truncated)
    if result.channels > 1:
        result.warnings.append(f"{result.channels} channels averaged to mono")
    result.warnings += [str(w.message) for w in caught if issubclass(w.category, SepvaeWarning)]
    if clipped:
        result.warnings.append(f"{clipped} output samples beyond [-1, 1] clipped for 16-bit PCM")
    result.outputs = outputs
    return result


def _checked_outputs(path, sources: list[str], out_dir: Path | None, overwrite: bool) -> dict[str, Path]:
    """The outputs of ``path``; SepvaeError if they cannot be written or exist without ``overwrite``."""
    outputs = output_paths(path, sources, out_dir)
    folder = next(iter(outputs.values())).parent
    if folder.exists() and not folder.is_dir():
        raise SepvaeError(f"{path}: cannot write to {folder}: it is a file, not a folder")
    for output in outputs.values():
        if output.is_dir():
            raise SepvaeError(f"{path}: output {output} is a folder")
        if output.exists() and not overwrite:
            raise SepvaeError(f"{path}: output {output} exists (use --overwrite to replace it)")
    return outputs


def _write_estimates(separator, path: Path, outputs: dict[str, Path], result: FileResult, overwrite: bool,
                     progress: Progress | None, allow_truncated: bool) -> int:
    """Stream ``path`` through ``separator`` into temporaries put in place at the end.

    Sets ``result.frames`` to the frames read; returns the count of samples clipped.
    """
    import soundfile as sf

    from sepvae.io import atomic_outputs, short_error, truncated

    declared = result.frames
    subtype = result.output_subtype
    sample_bytes = 4 if subtype == "FLOAT" else 2
    container = "RF64" if result.frames * sample_bytes > WAV_LIMIT else "WAV"
    folder = next(iter(outputs.values())).parent
    try:
        with contextlib.ExitStack() as stack:
            temporaries = stack.enter_context(atomic_outputs(list(outputs.values()), exclusive=not overwrite))
            writers = [
                stack.enter_context(sf.SoundFile(tmp, "w", samplerate=result.sample_rate, channels=1,
                                                 subtype=subtype, format=container))
                for tmp in temporaries
            ]
            try:
                reader = stack.enter_context(sf.SoundFile(str(path)))
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise SepvaeError(f"{path}: cannot read audio ({short_error(exc)})") from None
            try:
                clipped = _stream(separator, reader, writers, result, progress)
            except SepvaeError as exc:
                raise SepvaeError(f"{path}: {exc}") from None
            if result.frames < declared:  # a decoder that stopped early without an error
                truncated(path, declared, result.frames, result.sample_rate, allow_truncated)
            return clipped
    except FileExistsError as exc:
        raise SepvaeError(
            f"{path}: output {exc.filename} exists: another run created it meanwhile (use --overwrite to replace it)"
        ) from None
    except (OSError, sf.LibsndfileError) as exc:
        raise SepvaeError(f"{path}: cannot write to {folder} ({short_error(exc)})") from None


def _stream(separator, reader, writers, result: FileResult, progress: Progress | None) -> int:
    """Blocks of ``reader`` -> ``separator`` -> one writer per source; returns the samples clipped."""
    import numpy as np
    import soundfile as sf

    from sepvae.io import short_error, to_mono
    from sepvae.separator import BLOCK_FRAMES

    done = 0
    clipped = 0

    def blocks(report: bool = True):
        nonlocal done
        while True:
            check_signals()  # a safe point: between blocks, in Python
            try:
                block = reader.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                raise SepvaeError(f"cannot read audio after {done} frames ({short_error(exc)})") from None
            if not len(block):
                return
            done += len(block)
            if progress and report:
                progress(done, result.frames)
            yield to_mono(block)

    rms = None
    if separator.input_rms is not None:  # level matching: one pass for the level, then the separation
        from sepvae.loudness import ActiveLevel

        level = ActiveLevel(result.sample_rate)
        for block in blocks(report=False):
            level.add(block)
        rms, done = level.rms(), 0
        reader.seek(0)
    with deferred_signals():
        for estimates in separator.separate_blocks(blocks(), result.sample_rate, rms):
            if result.output_subtype == "PCM_16":
                # Rounded here: libsndfile's float -> 16-bit conversion floors (a
                # -0.5 LSB bias). x * 32768 is what soundfile's reading divides by.
                scaled = np.round(estimates * 32768.0)
                clipped += int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
                estimates = np.clip(scaled, -32768, 32767).astype(np.int16)
            for writer, estimate in zip(writers, estimates):
                writer.write(estimate)
    result.frames = done
    return clipped
