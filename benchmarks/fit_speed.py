"""What separation by latent-code fitting (vae-fit, sepvae.fitting) costs, and what its steps buy.

- Cost: seconds to separate a 3 s mixture through ``Separator.separate_tensor`` with a
  default-sized vae-fit pair (encoder [129, 256, 256, 128], decoder [128, 256, 256, 129],
  setting E: 375 frames; random weights, as the cost does not depend on them) at the default
  number of steps and a few others. The fit runs on one CPU thread whatever torch's thread
  count (``sepvae.fitting.LatentFit``). Target (issue 14): <= 10 s at the default steps on
  2 CPU cores. The machine's load average is recorded: on a shared machine it matters.
- Trade-off: median SDR (BSS Eval) against the number of steps on a few test mixtures of
  ``compare-fit.toml``, with its trained vae-fit run, if that run and its manifest exist
  (``sepvae mix/train -c experiments/compare-fit.toml``); plotted to ``fit_steps.png``.

Writes ``benchmarks/results/fit_speed.json`` (and ``fit_steps.png``). Usage:

    .venv/bin/python benchmarks/fit_speed.py [--mixtures 4] [--steps 0 25 50 100 200 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
RATE = 16_000
CONFIG = ROOT / "experiments" / "compare-fit.toml"


def make_model(folder: Path) -> Path:
    """An untrained vae-fit folder of the paper's size with the default fitting settings."""
    import sepvae
    from sepvae.checkpoint import ModelCard, init_model_folder
    from sepvae.config import FitConfig, SourceMode, StftConfig, model_config

    stft = StftConfig(16.0, 8.0)
    card = ModelCard(kind="vae-fit", source_mode=SourceMode.GENDER, sources=("female", "male"), sample_rate=RATE,
                     stft=stft, n_bins=stft.n_bins(RATE), model=model_config({"name": "vae-fit"}), fit=FitConfig(),
                     version=sepvae.__version__)
    init_model_folder(folder, card, torch.linspace(0.5, 2, card.n_bins))
    return folder


def seconds_per_mixture(separator, steps: int, repeats: int = 3) -> float:
    from sepvae.fitting import LatentFit

    separator.estimator = LatentFit(dataclasses.replace(separator.estimator.config, steps=steps))
    mixture = 0.1 * torch.randn(3 * RATE, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        separator.separate_tensor(mixture)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cost(steps: list[int]) -> list[dict]:
    from sepvae.config import FitConfig
    from sepvae.separator import Separator

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        separator = Separator.from_run(make_model(Path(tmp) / "vae-fit"), device="cpu")
        seconds_per_mixture(separator, 5, repeats=1)  # warm-up
        for n in steps:
            rows.append({"steps": n, "default": n == FitConfig().steps,
                         "seconds_3s_mixture": seconds_per_mixture(separator, n)})
            print(rows[-1], flush=True)
    return rows


def trade_off(steps: list[int], n_mixtures: int) -> dict | None:
    """SDR vs steps on the first test mixtures of compare-fit, from its trained run (or None)."""
    from sepvae.config import load_experiment
    from sepvae.features import load_mono
    from sepvae.fitting import LatentFit
    from sepvae.layout import Layout
    from sepvae.metrics import bss_eval
    from sepvae.mixing import read_manifest, training_key
    from sepvae.pipeline import find_manifest
    from sepvae.separator import Separator

    experiment = load_experiment(CONFIG)
    method = next(m for m in experiment.methods if m.kind == "vae-fit")
    try:
        manifest = find_manifest(experiment, Layout(corpus=ROOT / "data/corpus.csv", mixtures=ROOT / "data/mixtures"))
    except Exception as exc:  # no corpus or mixtures here: the cost is still measured
        print(f"trade-off skipped: {exc}", file=sys.stderr)
        return None
    run = Layout(runs=ROOT / "runs").model_run(method, training_key(manifest), RATE)
    if not (run / "done").is_file():
        print(f"trade-off skipped: {run} not trained (sepvae train -c {CONFIG})", file=sys.stderr)
        return None
    separator = Separator.from_run(run, device="cpu")
    config = separator.estimator.config
    tests = read_manifest(manifest, "test")[:n_mixtures]
    medians = []
    for n in steps:
        separator.estimator = LatentFit(dataclasses.replace(config, steps=n))
        sdrs = []
        for mixture in tests:
            estimates, _ = separator.separate_tensor(load_mono(mixture.mixture_path, RATE))
            references = np.stack([load_mono(mixture.source_paths[s], RATE).numpy() for s in separator.sources])
            sdrs += list(bss_eval(references, estimates.numpy())[0])
        medians.append(float(np.median(sdrs)))
        print({"steps": n, "median_sdr": medians[-1]}, flush=True)
    return {"run": run.name, "mixtures": [m.id for m in tests], "fit": dataclasses.asdict(config),
            "steps": steps, "median_sdr_db": medians}


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(result["steps"], result["median_sdr_db"], "o-")
    ax.axvline(result["fit"]["steps"], color="grey", linestyle=":", label="default steps")
    ax.set_xlabel("Adam steps of the latent fit")
    ax.set_ylabel("median SDR (dB)")
    ax.set_title(f"vae-fit: SDR vs steps ({len(result['mixtures'])} test mixtures)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    from sepvae.config import FitConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixtures", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100, 200, 400])
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0], "torch": torch.__version__},
        "cost": cost(sorted({n for n in args.steps if 0 < n <= 200} | {FitConfig().steps})),
        "trade_off": trade_off(args.steps, args.mixtures),
    }
    (OUT / "fit_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    if result["trade_off"]:
        plot(result["trade_off"], OUT / "fit_steps.png")


if __name__ == "__main__":
    main()
