"""`sepvae separate` / `sepvae models` and the Separator's file-level API (issue 5)."""

from __future__ import annotations

import json
import subprocess
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from sepvae import pretrained
from sepvae.checkpoint import card_of, join_members, save_checkpoints
from sepvae.cli import app
from sepvae.config import ModelConfig, StftConfig
from sepvae.errors import SepvaeError
from sepvae.models import SourceModel, build_model
from sepvae.separator import SeparationWarning, Separator
from sepvae.files import output_subtype, separate_files

from tests.conftest import make_model_folder, speechlike, timit_sample_root

TINY = ModelConfig(hidden=(16,), latent=4, decoder_hidden=(16,))
RATE = 16_000


def make_checkpoints(folder: Path, stft: StftConfig = StftConfig(), model: ModelConfig = TINY,
                     sources=("male", "female"), done: bool = True, source_mode: str = "gender") -> Path:
    """A tiny gender-mode run folder: <source>.pt + model.json + done, as training writes it."""
    return make_model_folder(folder, stft, model, sources, done, source_mode, RATE)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_checkpoints(tmp_path_factory.mktemp("runs") / "models" / "vae-gender-0123456789ab")


@pytest.fixture(scope="module")
def separator(model_dir) -> Separator:
    return Separator.from_run(model_dir, device="cpu")


def mixture(seconds: float = 1.0, rate: int = RATE, channels: int = 0) -> np.ndarray:
    male = speechlike(seconds, rate, f0=110, seed=1)
    female = speechlike(seconds, rate, f0=220, seed=2)
    mono = 0.5 * (male + female)
    if not channels:
        return mono
    return np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def outputs_of(path: Path, folder: Path | None = None) -> list[Path]:
    folder = folder or path.parent
    return sorted(folder.glob(f"{path.stem}_*.wav")) + sorted(folder.glob(f".{path.stem}_*"))


# ---------------------------------------------------------------------------------------
# Bad input: one line on stderr naming the file and the problem, exit != 0, no output,
# and the other files of the call still separated.


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected words in the message)."""
    good = mixture()
    files = {}
    files["missing"] = (tmp_path / "missing.wav", "no such file")
    (tmp_path / "adir.wav").mkdir()
    files["directory"] = (tmp_path / "adir.wav", "is a directory")
    (tmp_path / "empty.wav").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.wav", "file is empty")
    (tmp_path / "notaudio.wav").write_bytes(b"this is a text file, not a recording\n" * 20)
    files["not audio"] = (tmp_path / "notaudio.wav", "cannot read audio")
    sf.write(tmp_path / "whole.wav", good, RATE, subtype="PCM_16")
    (tmp_path / "truncated.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[:30])
    files["truncated header"] = (tmp_path / "truncated.wav", "cannot read audio")
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), RATE, subtype="PCM_16")
    files["zero samples"] = (tmp_path / "zero.wav", "zero samples")
    sf.write(tmp_path / "short.wav", good[:255], RATE, subtype="PCM_16")
    files["shorter than a frame"] = (tmp_path / "short.wav", "too short")
    nan = good.copy()
    nan[RATE // 2] = np.nan
    sf.write(tmp_path / "nan.wav", nan, RATE, subtype="FLOAT")
    files["nan"] = (tmp_path / "nan.wav", "NaN or Inf")
    inf = good.copy()
    inf[-3] = np.inf
    sf.write(tmp_path / "inf.wav", inf, RATE, subtype="FLOAT")
    files["inf"] = (tmp_path / "inf.wav", "NaN or Inf")
    return files


@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "empty", "not audio", "truncated header", "zero samples",
     "shorter than a frame", "nan", "inf"],
)
def test_bad_input_is_one_line_no_output_and_others_still_run(tmp_path, model_dir, case):
    path, words = _bad_files(tmp_path)[case]
    good = tmp_path / "good.wav"
    sf.write(good, mixture(), RATE, subtype="PCM_16")
    result = run("separate", path, good, "--model", model_dir)
    assert result.exit_code == 1
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: ") and words in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert outputs_of(path) == [] or case == "directory"
    assert not list(tmp_path.glob(".*part"))
    assert [p.name for p in outputs_of(good)] == ["good_female.wav", "good_male.wav"]


def test_too_short_is_judged_at_the_model_rate(tmp_path, separator):
    # n_fft = 256 at 16 kHz is 705.6 samples at 44.1 kHz.
    ok, short = tmp_path / "ok.wav", tmp_path / "short.wav"
    sf.write(ok, mixture(0.1, 44100)[:706], 44100)
    sf.write(short, mixture(0.1, 44100)[:705], 44100)
    results = separate_files(separator, [ok, short])
    assert results[0].ok and sf.info(str(results[0].outputs["male"])).frames == 706
    assert "too short" in results[1].error and "706 samples at 44100 Hz" in results[1].error


def test_unwritable_output_folder(tmp_path, model_dir):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "sub"):
        result = run("separate", wav, "--model", model_dir, "--out", out)
        assert result.exit_code == 1
        lines = stderr_lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"error: {wav}: cannot write to"), result.stderr
    assert blocker.read_text() == "not a folder"
    assert outputs_of(wav) == []


def test_read_only_output_folder(tmp_path, model_dir):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the file-as-folder case covers this as root")
    wav, locked = tmp_path / "mix.wav", tmp_path / "locked"
    sf.write(wav, mixture(), RATE)
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("separate", wav, "--model", model_dir, "--out", locked)
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 1 and f"error: {wav}: cannot write to {locked}" in result.stderr
    assert list(locked.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path, model_dir):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    (tmp_path / "mix_male.wav").write_bytes(b"precious")
    result = run("separate", wav, "--model", model_dir)
    assert result.exit_code == 1
    lines = stderr_lines(result)
    assert len(lines) == 1 and "mix_male.wav exists (use --overwrite" in lines[0] and lines[0].startswith(f"error: {wav}:")
    assert (tmp_path / "mix_male.wav").read_bytes() == b"precious"
    assert not (tmp_path / "mix_female.wav").exists()
    result = run("separate", wav, "--model", model_dir, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sf.info(str(tmp_path / "mix_male.wav")).frames == RATE


def test_same_output_name_twice_in_one_call(tmp_path, model_dir):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "a" / "mix.wav", mixture(), RATE)
    sf.write(tmp_path / "b" / "mix.flac", mixture(), RATE)
    result = run("separate", tmp_path / "a" / "mix.wav", tmp_path / "b" / "mix.flac", "--model", model_dir,
                 "--out", tmp_path / "out", "--overwrite")
    assert result.exit_code == 1 and "would replace that of" in result.stderr
    assert len(list((tmp_path / "out").glob("*.wav"))) == 2


def test_unknown_model_name(tmp_path):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    result = run("separate", wav, "--model", "no-such-model")
    assert result.exit_code == 1
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'no-such-model'"), result.stderr
    assert outputs_of(wav) == []
    result = run("separate", wav, "--model", tmp_path / "nowhere")
    assert result.exit_code == 1 and "no such model folder" in result.stderr


def test_single_checkpoint_and_speaker_runs_are_refused(tmp_path, model_dir):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    result = run("separate", wav, "--model", model_dir / "male.pt")
    assert result.exit_code == 1 and "a single checkpoint holds one source's model" in result.stderr
    speakers = make_checkpoints(tmp_path / "speaker-run", sources=("fabc0", "mdef0"), source_mode="speaker")
    result = run("separate", wav, "--model", speakers)
    assert result.exit_code == 1 and "speaker-mode run" in result.stderr


def test_corrupted_checkpoint(tmp_path):
    from sepvae.checkpoint import card_of, sha256_of, write_card

    folder = make_checkpoints(tmp_path / "run")
    good = (folder / "female.pt").read_bytes()
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    flipped = bytearray(good)
    flipped[len(good) // 2 : len(good) // 2 + 64] = bytes(b ^ 0xFF for b in flipped[len(good) // 2 : len(good) // 2 + 64])
    for broken in (b"\x00garbage" * 100, good[: len(good) // 2], bytes(flipped)):
        (folder / "female.pt").write_bytes(broken)
        result = run("separate", wav, "--model", folder)
        assert result.exit_code == 1
        lines = stderr_lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'female.pt'}: sha256 does not match"), result.stderr
        assert outputs_of(wav) == []
        # A file its card vouches for that still does not load: a readable-checkpoint error.
        card = card_of(folder)
        write_card(folder, card.replace(sha256={**card.sha256, "female.pt": sha256_of(folder / "female.pt")}))
        if broken != bytes(flipped):
            result = run("separate", wav, "--model", folder)
            assert result.exit_code == 1
            assert stderr_lines(result)[0].startswith(f"error: {folder / 'female.pt'}: not a readable sepvae checkpoint")
        write_card(folder, card)


def test_checkpoint_shapes_not_matching_config(tmp_path):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    # Tensors of a wider model under a card that says 16 hidden units.
    folder = make_checkpoints(tmp_path / "run")
    card = card_of(folder)
    wide = SourceModel(build_model(ModelConfig(hidden=(32,), latent=4, decoder_hidden=(16,)), 129), torch.ones(129))
    save_checkpoints(folder, {"male": wide}, card)
    result = run("separate", wav, "--model", folder)
    assert result.exit_code == 1
    assert f"error: {folder / 'male.pt'}: checkpoint tensors do not match its card" in result.stderr
    # Consistent models whose bins do not match their own STFT settings.
    folder = make_checkpoints(tmp_path / "run2")
    narrow = SourceModel(build_model(TINY, 65), torch.ones(65))
    save_checkpoints(folder, {"male": narrow, "female": narrow}, card.replace(n_bins=65))
    result = run("separate", wav, "--model", folder)
    assert result.exit_code == 1 and "[65] frequency bins, but the STFT" in result.stderr
    assert outputs_of(wav) == []


# ---------------------------------------------------------------------------------------
# What comes out


def test_resampling_round_trip_stereo_44k(tmp_path, model_dir):
    wav = tmp_path / "stereo.wav"
    audio = mixture(1.3, 44100, channels=2)
    sf.write(wav, audio, 44100, subtype="PCM_24")
    result = run("separate", wav, "--model", model_dir, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "2 channels averaged to mono" in result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("stereo_" in line for line in lines)
    estimates = []
    for source in ("male", "female"):
        info = sf.info(str(tmp_path / "out" / f"stereo_{source}.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype, info.format) == (
            44100, 1, audio.shape[0], "PCM_16", "WAV"
        )
        estimates.append(sf.read(tmp_path / "out" / f"stereo_{source}.wav", dtype="float64")[0])
    # Masks sum to one: the estimates add up to the mixture band-limited to 8 kHz by the
    # round trip through the model's 16 kHz (up to 16-bit rounding).
    import soxr

    mono = audio.mean(axis=1, dtype=np.float32)
    band_limited = soxr.resample(soxr.resample(mono, 44100, RATE, "HQ"), RATE, 44100, "HQ")[: len(mono)]
    error = estimates[0] + estimates[1] - band_limited
    assert np.sqrt(np.mean(error**2)) < 1e-3 * np.sqrt(np.mean(mono**2))


@pytest.mark.parametrize("shifts, smooth_frames", [(1, 0), (3, 0), (2, 4)])
def test_chunked_equals_whole_signal(model_dir, shifts, smooth_frames):
    """Streaming in chunks gives the one-pass result, also for passes on shifted frame grids
    (a chunk's delayed frames are the whole signal's delayed frames under its kept part) and
    for estimates smoothed over neighbouring frames (the margins hold those frames too)."""
    rng = np.random.default_rng(0)
    signal = (0.1 * rng.standard_normal(RATE + 77)).astype(np.float32)
    for stft in (StftConfig(16, 8), StftConfig(16, 4)):  # hop 128 | n_fft 256, and hop 192 (not a divisor)
        folder = make_checkpoints(model_dir.parent / f"chunk-{stft.overlap_ms:g}-{shifts}-{smooth_frames}", stft=stft)
        separator = Separator.from_run(folder, device="cpu", shifts=shifts, smooth_frames=smooth_frames)
        whole = separator.separate_tensor(torch.from_numpy(signal))[0].numpy()
        for seconds in (0.01, 0.037, 0.3, 100.0):  # chunks of 1-2 hops up to a single chunk
            separator.chunk_seconds = seconds
            separated = separator.separate(signal, RATE)
            chunked = np.stack([separated[s] for s in separator.sources])
            assert chunked.shape == whole.shape
            np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6 * np.abs(whole).max())


def test_api_and_cli_give_identical_outputs(tmp_path, model_dir, separator):
    wav = tmp_path / "mix.wav"
    audio = mixture(2.5, 22050, channels=3).astype(np.float32)
    sf.write(wav, audio, 22050, subtype="FLOAT")
    result = run("separate", wav, "--model", model_dir)
    assert result.exit_code == 0, result.output
    with pytest.warns(SeparationWarning, match="3 channels averaged to mono"):
        api = separator.separate(audio, 22050)
    assert set(api) == {"male", "female"}
    for source, estimate in api.items():
        written, rate = sf.read(tmp_path / f"mix_{source}.wav", dtype="float32")
        assert rate == 22050 and sf.info(str(tmp_path / f"mix_{source}.wav")).subtype == "FLOAT"
        assert estimate.dtype == np.float32 and estimate.shape == (audio.shape[0],)
        np.testing.assert_array_equal(written, estimate)


def test_api_accepts_mono_any_rate_and_integer_arrays(separator):
    audio = mixture(0.5, 8000)
    out = separator.separate(audio, 8000)
    assert {k: v.shape for k, v in out.items()} == {"male": (4000,), "female": (4000,)}
    as_int = np.round(audio * 32767).astype(np.int16)
    from_int = separator.separate(as_int, 8000)
    np.testing.assert_allclose(from_int["male"], out["male"], atol=1e-3)
    with pytest.raises(SepvaeError, match="too short"):
        separator.separate(audio[:100], 8000)
    with pytest.raises(SepvaeError, match="NaN or Inf"):
        separator.separate(np.full(4000, np.nan), 8000)
    with pytest.raises(ValueError, match="more channels than samples"):
        separator.separate(mixture(0.5, 8000, channels=2).T, 8000)


def test_all_zero_input_gives_silent_outputs(tmp_path, model_dir, separator):
    with pytest.warns(SeparationWarning, match="silent"):
        out = separator.separate(np.zeros(RATE, dtype=np.float32), RATE)
    for estimate in out.values():
        assert np.all(estimate == 0) and estimate.shape == (RATE,)
    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros((44100, 2), dtype=np.int16), 44100, subtype="PCM_16")
    result = run("separate", wav, "--model", model_dir)
    assert result.exit_code == 0, result.output
    assert "silent" in result.stderr
    for source in ("male", "female"):
        estimate, rate = sf.read(tmp_path / f"silence_{source}.wav")
        assert rate == 44100 and estimate.shape == (44100,) and np.all(estimate == 0)


def test_formats_flac_ogg_and_output_subtypes(tmp_path, separator):
    paths = []
    for name, fmt, subtype in (("a.flac", "FLAC", "PCM_24"), ("b.ogg", "OGG", "VORBIS"), ("c.wav", "WAV", "DOUBLE"),
                               ("d.wav", "WAV", "PCM_U8")):
        sf.write(tmp_path / name, mixture(0.6, 32000), 32000, format=fmt, subtype=subtype)
        paths.append(tmp_path / name)
    results = separate_files(separator, paths, tmp_path / "out")
    assert all(r.ok for r in results), [r.error for r in results]
    got = [sf.info(str(r.outputs["female"])).subtype for r in results]
    assert got == ["PCM_16", "FLOAT", "FLOAT", "PCM_16"]
    assert output_subtype("ULAW") == "PCM_16" and output_subtype("FLOAT") == "FLOAT"
    for result in results:
        assert sf.info(str(result.outputs["male"])).frames == result.frames


def test_json_summary(tmp_path, model_dir):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, mixture(0.5), RATE, subtype="PCM_16")
    bad.write_bytes(b"RIFF....WAVEjunk")
    result = run("separate", good, bad, "--model", model_dir, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["failed"] == 1
    assert summary["model"]["sources"] == ["female", "male"] and summary["model"]["sample_rate"] == RATE
    first, second = summary["files"]
    assert first["ok"] and first["outputs"] == {s: str(tmp_path / f"good_{s}.wav") for s in ("female", "male")}
    assert first["sample_rate"] == RATE and first["frames"] == RATE // 2 and first["output_subtype"] == "PCM_16"
    assert not second["ok"] and second["error"].startswith(f"{bad}: cannot read audio")
    assert stderr_lines(result) == [f"error: {second['error']}"]
    # A model that cannot be loaded still gives one JSON document.
    result = run("separate", good, "--model", "no-such-model", "--json")
    assert result.exit_code == 1 and "unknown model" in json.loads(result.stdout)["error"]


def test_models_command(tmp_path, model_dir):
    runs = model_dir.parent.parent
    make_checkpoints(runs / "models" / "vae-gender-unfinished", done=False)
    joined = runs / "models" / f"{model_dir.name}-x2"
    join_members(joined, [model_dir, model_dir])
    (joined / "done").write_text("")
    result = run("models", "--runs", runs)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "default" in text.splitlines()[1]
    row = next(line for line in text.splitlines() if str(model_dir) in line)
    assert "vae (gender)" in row and "female, male" in row and "16 ms window, 8 ms overlap @ 16000 Hz" in row
    assert row.rstrip().endswith("yes")
    assert "vae x2 (gender)" in next(line for line in text.splitlines() if str(joined) in line)
    unfinished = next(line for line in text.splitlines() if "unfinished" in line)
    assert "no" in unfinished.split()[-4:] and "training not finished" in unfinished
    listed = json.loads(run("models", "--runs", runs, "--json").stdout)
    by_path = {m["path"]: m for m in listed}
    assert by_path[str(joined)]["members"] == 2 and by_path[str(model_dir)]["members"] == 1
    assert by_path[str(model_dir)]["usable"] and not by_path[str(runs / "models" / "vae-gender-unfinished")]["done"]
    assert listed[0]["name"] == "default" and listed[0]["origin"] == "shipped"


def test_from_pretrained_and_shipped_names(tmp_path, monkeypatch, model_dir):
    root = tmp_path / "pretrained"
    monkeypatch.setattr(pretrained, "ROOT", root)
    root.mkdir()
    with pytest.raises(SepvaeError, match="default model is not installed"):
        Separator.from_pretrained()
    pretrained.export(model_dir, "default", root=root)
    card = json.loads((root / "default" / "model.json").read_text())
    assert card["sources"] == ["female", "male"] and card["sample_rate"] == RATE
    separator = Separator.from_pretrained("default", device="cpu")
    assert separator.sources == ["female", "male"]
    with pytest.raises(SepvaeError, match="unknown model 'other'"):
        Separator.from_pretrained("other")


# ---------------------------------------------------------------------------------------
# The shipped model on real speech


def test_shipped_model_separates_a_timit_mixture():
    from sepvae.checkpoint import load_checkpoint
    from sepvae.metrics import bss_eval

    folder = pretrained.ROOT / pretrained.DEFAULT
    if not (folder / "model.json").is_file():
        pytest.skip(f"no shipped model yet in {folder} (make pretrained)")
    root = timit_sample_root()
    if root is None:
        pytest.skip("TIMIT sample not found: set TIMIT_ROOT or put it at ../shared/data/timit-sample")
    for source in card_of(folder).sources:
        load_checkpoint(folder / f"{source}.pt")  # weights_only=True inside
    separator = Separator.from_pretrained(device="cpu")
    assert sorted(separator.sources) == ["female", "male"]
    # SI utterances are read by one speaker only; dr8 is the last region, the least likely in training.
    speakers = sorted(p.name for p in root.iterdir() if p.is_dir())
    male_dir = next(s for s in reversed(speakers) if s.split("-")[1].startswith("m"))
    female_dir = next(s for s in reversed(speakers) if s.split("-")[1].startswith("f"))
    male, rate = sf.read(next(iter(sorted((root / male_dir).glob("si*.wav")))), dtype="float64")
    female, _ = sf.read(next(iter(sorted((root / female_dir).glob("si*.wav")))), dtype="float64")
    n = min(len(male), len(female))
    male, female = male[:n] / np.std(male[:n]), female[:n] / np.std(female[:n])
    mix = male + female
    peak = np.abs(mix).max() / 0.9
    references = np.stack([male, female]) / peak
    mix = mix / peak
    estimates = separator.separate(mix.astype(np.float32), rate)
    sdr, _, _ = bss_eval(references, np.stack([estimates["male"], estimates["female"]]))
    sdr_input, _, _ = bss_eval(references, np.stack([mix, mix]))
    improvement = sdr - sdr_input
    # The shipped model (64 ms window, 16 ms hop) gains 9.7 and 10.5 dB on this pair, the
    # setting-D model before it 9.9 and 10.5, the setting-E models 6.5-7.5; retraining moves
    # that by ~0.3 dB, so anything under 7 dB is a broken or a worse model, not noise.
    assert np.all(np.isfinite(improvement)) and improvement.min() > 7.0, (sdr, sdr_input)
    # Its card asks for level matching: the same recording 30x quieter gives the same
    # estimates, 30x quieter (without it the masks change with the input's level).
    assert separator.input_rms is not None
    quiet = separator.separate((mix / 30).astype(np.float32), rate)
    for source, estimate in estimates.items():
        np.testing.assert_allclose(quiet[source] * 30, estimate, atol=1e-4)


def test_cli_and_tool_import_without_torch():
    # `sepvae --help` and `sepvae models` stay fast: torch loads only when a model does.
    import subprocess
    import sys

    code = "import sys, sepvae.cli, sepvae.catalog, sepvae.files, sepvae.pretrained; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------
# Killed runs, truncated files, concurrent writers, the API's edge cases, --help (issue 15)


def _sepvae(*args, **popen) -> "subprocess.Popen":
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "sepvae", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_removes_temporaries_and_exits_non_zero(tmp_path, model_dir, signum, code):
    import signal
    import time

    wav = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(wav, (0.1 * rng.standard_normal(8000 * 60 * 20)).astype(np.float32), 8000, subtype="PCM_16")
    # The child must not inherit an ignored SIGINT (as jobs started with & do).
    process = _sepvae("separate", wav, "--model", model_dir, "--threads", "1",
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".long_*.part")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "separation ended before it could be interrupted"
    process.send_signal(getattr(signal, signum))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [f"interrupted by {signum}"]
    assert list(tmp_path.glob(".*part")) == [] and outputs_of(wav) == []


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path, separator):
    import subprocess
    import sys

    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [tmp_path / f".mix_male.{dead.stdout.strip()}.abcd_123.wav.part", tmp_path / ".mix_female.x1y2z3w4.wav.part"]
    live = tmp_path / f".mix_male.{os.getppid()}.live1234.wav.part"  # a running writer's
    other = tmp_path / f".other_male.{dead.stdout.strip()}.abcd_123.wav.part"  # not this run's output
    for path in (*stale, live, other):
        path.write_bytes(b"half")
    [result] = separate_files(separator, [wav])
    assert result.ok, result.error
    assert not any(path.exists() for path in stale) and live.exists() and other.exists()


def _truncated_wav(folder: Path, name: str = "cut.wav") -> Path:
    whole = folder / f"whole-{name}"
    sf.write(whole, mixture(2.0), RATE, subtype="PCM_16")
    data = whole.read_bytes()
    whole.unlink()
    (folder / name).write_bytes(data[: 44 + RATE * 2])  # header + the first of its 2 s
    return folder / name


def test_truncated_wav_is_an_error_or_with_allow_truncated_a_warning(tmp_path, model_dir):
    cut = _truncated_wav(tmp_path)
    result = run("separate", cut, "--model", model_dir)
    assert result.exit_code == 1
    [line] = stderr_lines(result)
    assert line.startswith(f"error: {cut}: truncated: its header says 32000 frames (2.00 s), its data hold 16000 (1.00 s)"), line
    assert outputs_of(cut) == []
    result = run("separate", cut, "--model", model_dir, "--allow-truncated")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "truncated" in result.stderr
    assert sf.info(str(tmp_path / "cut_male.wav")).frames == RATE


def test_truncated_stream_is_an_error(tmp_path, separator, monkeypatch):
    # Formats whose decoder simply stops early: fewer frames read than soundfile announced.
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    real = sf.info

    def announcing_more(path, *args, **kwargs):
        info = real(path, *args, **kwargs)
        info.frames += 100
        return info

    monkeypatch.setattr(sf, "info", announcing_more)
    [result] = separate_files(separator, [wav])
    assert "truncated: its header says 16100 frames" in result.error and outputs_of(wav) == []
    [result] = separate_files(separator, [wav], allow_truncated=True)
    assert result.ok and any("truncated" in w for w in result.warnings)


def test_output_created_meanwhile_by_another_run_is_kept(tmp_path, separator):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    theirs = tmp_path / "mix_male.wav"

    def other_run_writes(path, done, total):  # after our check that the outputs do not exist
        theirs.write_bytes(b"the other run's output")

    [result] = separate_files(separator, [wav], progress=other_run_writes)
    assert not result.ok and f"output {theirs} exists" in result.error, result.error
    assert theirs.read_bytes() == b"the other run's output"
    assert not (tmp_path / "mix_female.wav").exists() and not list(tmp_path.glob(".*part"))
    [result] = separate_files(separator, [wav], overwrite=True, progress=other_run_writes)
    assert result.ok and sf.info(str(theirs)).frames == RATE


def test_two_concurrent_runs_one_fails_with_exists(tmp_path, model_dir):
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(60.0, 8000), 8000, subtype="PCM_16")
    runs = [_sepvae("separate", wav, "--model", model_dir, "--threads", "1") for _ in range(2)]
    outcomes = sorted((p.wait(timeout=120), p.stderr.read()) for p in runs)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "exists" in outcomes[1][1]
    assert sf.info(str(tmp_path / "mix_male.wav")).frames == 8000 * 60 and not list(tmp_path.glob(".*part"))


def test_api_edge_cases(separator):
    with pytest.raises(SepvaeError, match="has zero samples"):
        separator.separate(np.zeros((0, 2), dtype=np.float32), RATE)
    with pytest.raises(ValueError, match="16000.7"):
        separator.separate(mixture(), 16000.7)
    assert separator.separate(mixture(), 16000.0)["male"].shape == (RATE,)
    with pytest.warns(SeparationWarning, match=r"peak 20\b.*outside \[-1, 1\]"):
        loud = separator.separate(mixture() / np.abs(mixture()).max() * 20, RATE)
    assert np.abs(loud["male"]).max() > 1.5  # the estimates scale with the input
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SeparationWarning)
        as_int = separator.separate(np.round(mixture() * 32767).astype(np.int16), RATE)
        separator.separate(mixture() / np.abs(mixture()).max() * 1.4, RATE)  # a little over full scale: no warning
    np.testing.assert_allclose(as_int["male"], separator.separate(mixture(), RATE)["male"], atol=1e-3)


def test_help_shows_flags_as_flags(tmp_path, model_dir):
    import re

    text = run("separate", "--help").stdout
    for flag in ("--overwrite", "--json", "--allow-truncated", "--help"):
        line = next(line for line in text.splitlines() if flag in line)
        assert not re.search(rf"{flag}\s+<bool>", line), line
    assert "<int range>" in text  # value options keep their type
    wav = tmp_path / "mix.wav"
    sf.write(wav, mixture(), RATE)
    result = run("separate", wav, "--model", model_dir, "--overwrite", "true")
    assert result.exit_code == 1 and outputs_of(wav) == []
    assert stderr_lines(result) == [
        "error: true: no such file; --overwrite, --json, --allow-truncated are flags and take no value (drop 'true')"
    ]


def test_level_matching_from_the_cli(tmp_path, model_dir):
    from sepvae.checkpoint import write_card

    wav = tmp_path / "mix.wav"
    audio = (0.05 * mixture(1.5, 22050)).astype(np.float32)
    sf.write(wav, audio, 22050, subtype="FLOAT")
    result = run("separate", wav, "--model", model_dir, "--match-level")
    assert result.exit_code == 1 and "level matching needs the training mixtures' level" in result.output
    assert not list(tmp_path.glob("mix_*.wav"))  # nothing half-written
    folder = make_checkpoints(tmp_path / "matching")
    write_card(folder, card_of(folder).replace(input_rms=0.1, info={"match_level": True}))
    assert run("separate", wav, "--model", folder).exit_code == 0
    api = Separator.from_run(folder, device="cpu").separate(audio, 22050)
    for source, estimate in api.items():
        np.testing.assert_array_equal(sf.read(tmp_path / f"mix_{source}.wav", dtype="float32")[0], estimate)
    # The file streamed at 10x the level gives 10x the estimates (the models saw the same input).
    sf.write(wav, 10 * audio, 22050, subtype="FLOAT")
    assert run("separate", wav, "--model", folder, "--overwrite").exit_code == 0
    for source, estimate in api.items():
        np.testing.assert_allclose(sf.read(tmp_path / f"mix_{source}.wav", dtype="float32")[0], 10 * estimate,
                                   atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("option, setting, value, off, bad, message", [
    ("--phase-iterations", "phase_iterations", 3, 0, -1, "phase_iterations must be >= 0, got -1"),
    ("--shifts", "shifts", 2, 1, 0, "shifts must be >= 1, got 0"),
    ("--smooth-frames", "smooth_frames", 5, 0, -1, "smooth_frames must be >= 0, got -1"),
])
def test_inference_settings_from_the_cli(tmp_path, model_dir, option, setting, value, off, bad, message):
    """An inference option (MISI rounds, passes on shifted frames, smoothed estimates) gives what the API's
    separator with that setting gives, which is not what it gives without; the card's value
    is the default; a value out of range is a usage error, and the API's error names it."""
    from sepvae.checkpoint import write_card

    wav = tmp_path / "mix.wav"
    audio = (0.3 * mixture(1.0, RATE)).astype(np.float32)
    sf.write(wav, audio, RATE, subtype="FLOAT")
    assert run("separate", wav, "--model", model_dir, option, str(value)).exit_code == 0
    chosen = Separator.from_run(model_dir, device="cpu", **{setting: value}).separate(audio, RATE)
    plain = Separator.from_run(model_dir, device="cpu").separate(audio, RATE)
    for source, estimate in chosen.items():
        np.testing.assert_array_equal(sf.read(tmp_path / f"mix_{source}.wav", dtype="float32")[0], estimate)
        assert not np.array_equal(estimate, plain[source])  # (the untrained model's frames differ little)
    folder = make_checkpoints(tmp_path / "card")
    write_card(folder, card_of(folder).replace(info={setting: value}))
    assert getattr(Separator.from_run(folder, device="cpu"), setting) == value
    assert getattr(Separator.from_run(folder, device="cpu", **{setting: off}), setting) == off
    result = run("separate", wav, "--model", model_dir, option, str(bad), "--overwrite")
    assert result.exit_code == 2 and option in result.output
    with pytest.raises(SepvaeError, match=message):
        Separator.from_run(model_dir, device="cpu", **{setting: bad})
