"""How fast `sepvae separate` is, and how much memory a long recording takes.

Measures, with a default-sized model (the paper's layers, encoder [bins, 256, 256, 128] and
decoder [256, 256, bins], at the shipped model's STFT setting A read as window / hop: 64 ms
window, 16 ms hop, 513 bins at 16 kHz; ``--setting D`` for 32 ms / 16 ms, 257 bins, ``--setting
E`` for the paper's 16 ms / 8 ms, 129 bins (``--reading overlap``: the paper's other reading
of its second number); random weights, as speed does not depend on them):

- ``sepvae --help`` wall time (imports must stay lazy);
- start-up: a fresh process importing sepvae and loading the checkpoints (``--members`` per
  source, 2 by default as in the shipped model);
- ``--shifts`` passes on shifted frame grids per recording (2 by default) and estimates
  smoothed over ``--smooth-frames`` frames on each side (2 by default), as the shipped
  model's card says, in the card of the model built here, so the CLI uses them too;
- separation speed after start-up, as x real time, through ``Separator.separate`` (the
  same streaming path as the CLI), for 16 kHz mono and 44.1 kHz stereo input, with torch's
  default thread count and with one thread;
- a long recording (60 minutes by default, generated in a temporary folder and deleted
  afterwards) separated by the CLI in a child process: wall time and peak RSS.

Writes ``benchmarks/results/separate.json``. Usage:

    .venv/bin/python benchmarks/separate_speed.py [--minutes 60] [--seconds 120]
"""

from __future__ import annotations

import os

# As `sepvae separate` does, before torch is imported (see sepvae/cli.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from sepvae.config import STFT_SETTINGS, StftConfig

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SCRIPT = Path(PYTHON).parent / "sepvae"
SEPVAE = [str(SCRIPT)] if SCRIPT.exists() else [PYTHON, "-c", "from sepvae.cli import app; app()"]
RATE = 16_000

# `sepvae` in a child that reports its own peak RSS (VmHWM) at exit. The child's
# ru_maxrss from wait4 would not do: it counts the pages a fork shares with this (large)
# benchmark process before the exec.
PEAK_RSS_CLI = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            sys.stderr.write("peak-rss-kb " + line.split()[1] + "\\n")
atexit.register(report)
sys.argv[0] = "sepvae"
from sepvae.cli import app
app()
"""


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Two harmonic 'voices' with syllable-rate envelopes: cheap fake speech (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mix = np.zeros_like(t)
    for f0 in (110.0, 210.0):
        envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6.3)))
        mix += envelope * sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 12))
    return (0.05 * mix + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def make_model(folder: Path, stft: StftConfig, members: int, shifts: int, smooth_frames: int) -> Path:
    """An untrained model folder of the paper's size (the speed does not depend on the
    weights) at ``stft``, with ``members`` networks per source as a shipped model of that many
    seeds, whose card tells ``separate`` to make ``shifts`` passes and smooth over ``smooth_frames``."""
    import torch

    import sepvae
    from sepvae.checkpoint import ModelCard, init_model_folder, join_members
    from sepvae.config import ModelConfig, SourceMode

    model = ModelConfig()
    n_bins = stft.n_bins(RATE)
    card = ModelCard(kind="vae", source_mode=SourceMode.GENDER, sources=("female", "male"), sample_rate=RATE,
                     stft=stft, n_bins=n_bins, model=model, version=sepvae.__version__)
    init_model_folder(folder / "member", card, torch.linspace(0.5, 2, n_bins))
    join_members(folder, [folder / "member"] * members, {"shifts": shifts, "smooth_frames": smooth_frames})
    (folder / "done").write_text("")
    return folder


def wall(command: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def separation_speed(model: Path, seconds: float, threads: int | None) -> list[dict]:
    import torch

    from sepvae.separator import Separator

    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    separator = Separator.from_run(model, device="cpu")
    rows = []
    for rate, channels in ((16_000, 1), (44_100, 2)):
        audio = speechlike(seconds, rate, seed=0)
        if channels > 1:
            audio = np.stack([audio, 0.8 * audio], axis=1)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            separator.separate(audio[: 5 * rate], rate)  # warm-up
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                separator.separate(audio, rate)
                runs.append(time.perf_counter() - start)
        best, median = min(runs), statistics.median(runs)
        rows.append({
            "input": f"{rate} Hz, {channels} channel(s)", "threads": torch.get_num_threads(),
            "audio_seconds": seconds, "seconds_best": round(best, 3), "seconds_median": round(median, 3),
            "x_realtime_best": round(seconds / best, 1), "x_realtime_median": round(seconds / median, 1),
        })
        print(f"separate {rows[-1]['input']}, {rows[-1]['threads']} thread(s): "
              f"{rows[-1]['x_realtime_median']}x real time (median of 3; best {rows[-1]['x_realtime_best']}x)", flush=True)
    torch.set_num_threads(default_threads)
    return rows


def write_long_file(path: Path, minutes: float, rate: int, channels: int) -> None:
    """Written block by block so the benchmark itself stays small; a minute repeats."""
    minute = speechlike(60, rate, seed=1)
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16", format="WAV") as out:
        left = int(minutes * 60 * rate)
        while left > 0:
            block = minute[: min(left, minute.size)]
            out.write(np.stack([block] * channels, axis=1) if channels > 1 else block)
            left -= block.size


def long_file(model: Path, minutes: float, rate: int, channels: int, threads: int | None) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="sepvae-long-"))
    try:
        path = folder / "long.wav"
        write_long_file(path, minutes, rate, channels)
        command = [PYTHON, "-c", PEAK_RSS_CLI, "separate", str(path), "--model", str(model), "--out", str(folder / "out")]
        if threads:
            command += ["--threads", str(threads)]
        start = time.perf_counter()
        child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if child.returncode != 0:
            raise SystemExit(f"sepvae separate failed: {child.stderr}")
        stdout = child.stdout
        peak_kb = next(int(line.split()[1]) for line in child.stderr.splitlines() if line.startswith("peak-rss-kb"))
        outputs = sorted((folder / "out").glob("*.wav"))
        frames = [sf.info(str(p)).frames for p in outputs]
        row = {
            "minutes": minutes, "input": f"{rate} Hz, {channels} channel(s), PCM_16 WAV",
            "input_bytes": path.stat().st_size, "threads": threads or "default",
            "seconds": round(seconds, 1), "x_realtime": round(minutes * 60 / seconds, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "outputs": len(outputs), "output_frames_equal_input": all(f == sf.info(str(path)).frames for f in frames),
            "stdout": stdout.strip().splitlines(),
        }
        print(f"long file {minutes:g} min ({row['input']}): {row['seconds']} s "
              f"({row['x_realtime']}x real time incl. start-up and I/O), peak RSS {row['peak_rss_mb']} MB", flush=True)
        return row
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="Length of the long recording (0 to skip).")
    parser.add_argument("--long-rate", type=int, default=44_100)
    parser.add_argument("--long-channels", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=120.0, help="Audio per speed measurement.")
    parser.add_argument("--members", type=int, default=2, help="Networks per source (the shipped model has 2).")
    parser.add_argument("--shifts", type=int, default=2, help="Passes on shifted frame grids (the shipped model makes 2).")
    parser.add_argument("--smooth-frames", type=int, default=2, help="Frames of smoothing on each side (the shipped model's 2).")
    parser.add_argument("--setting", default="A", choices=sorted(STFT_SETTINGS),
                        help="The paper's STFT setting (the shipped model's A, read as window / hop).")
    parser.add_argument("--reading", default="hop", choices=("hop", "overlap"),
                        help="Whether the setting's second number is the hop (the shipped model's) or the overlap.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "separate.json")
    args = parser.parse_args()
    stft = StftConfig.setting(args.setting, args.reading)

    import torch

    results: dict = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads_default": torch.get_num_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "load_average_at_start": os.getloadavg()},
        "model": "vae, encoder [bins, 256, 256, 128], decoder [256, 256, bins]",
        "stft": f"setting {args.setting}: {stft.window_ms:g} ms window, {stft.hop_ms:g} ms hop at 16 kHz",
        "members": args.members,
        "shifts": args.shifts,
        "smooth_frames": args.smooth_frames,
    }
    with tempfile.TemporaryDirectory(prefix="sepvae-bench-") as tmp:
        model = make_model(Path(tmp) / "model", stft, args.members, args.shifts, args.smooth_frames)
        results["help_seconds"] = round(wall([*SEPVAE, "--help"]), 3)
        print(f"sepvae --help: {results['help_seconds']} s", flush=True)
        load = [PYTHON, "-c", f"from sepvae.separator import Separator; Separator.from_run({str(model)!r}, device='cpu')"]
        results["startup_seconds"] = round(wall(load, 3), 3)
        print(f"start-up (import + load {2 * args.members} checkpoints): {results['startup_seconds']} s", flush=True)
        results["separation"] = separation_speed(model, args.seconds, None) + separation_speed(model, args.seconds, 1)
        if args.minutes > 0:
            results["long_file"] = [long_file(model, args.minutes, args.long_rate, args.long_channels, None)]
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
