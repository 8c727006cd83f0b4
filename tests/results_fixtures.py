"""Fixture rows of ``metrics.csv`` shared by the tests of :mod:`sepvae.results`."""

import csv
import math
from pathlib import Path

import numpy as np

from sepvae.config import load_experiment
from sepvae.results import COLUMNS

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def experiment(name):
    return load_experiment(EXPERIMENTS / f"{name}.toml")


# (method, source_mode, SDR offset over the mixture); CSV order is the expected x axis order.
METHODS = [("mixture", "gender", 0.0), ("vae", "gender", 6.0), ("beta-vae", "gender", 5.5),
           ("itl-ae", "gender", 5.0), ("vae", "speaker", 7.0)]
N_MIXTURES = 6


def fixture_rows():
    rng = np.random.default_rng(1)
    rows = []
    for method, mode, offset in METHODS:
        for mixture in range(N_MIXTURES):
            for source in ("male", "female"):
                input_sdr = 0.2 * mixture - (0.5 if source == "female" else 0.0)
                sdr = input_sdr + (offset + rng.normal(0, 1) if method != "mixture" else 0.0)
                pesq = math.nan if method == "itl-ae" or (method == "vae" and mixture == 0) else 1.5 + rng.random()
                rows.append({
                    "experiment": "fixture", "method": method, "source_mode": mode,
                    "mixture_id": f"mix{mixture:03d}", "source": source,
                    "sdr": sdr, "sir": sdr + 5 + rng.random(),
                    # BSS Eval gives the mixture itself a SAR near 300 dB (no artifacts).
                    "sar": 300 + rng.random() if method == "mixture" else sdr + 2 + rng.random(),
                    "si_sdr": sdr - 0.3, "pesq": pesq, "stoi": 0.6 + 0.3 * rng.random(),
                    "input_sdr": input_sdr, "input_sir": input_sdr, "input_sar": 40.0,
                    "input_si_sdr": input_sdr - 0.1, "input_pesq": 1.2, "input_stoi": 0.55,
                })
    return rows


def write_csv(path, rows, columns=COLUMNS):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return path


def sweep_rows(name, effects, n_mixtures=10, seed=0, noise_db=0.05):
    """Rows of ``metrics.csv``: label -> (SDR offset, SIR offset, SAR offset), plus noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(5.0, 2.0, size=(n_mixtures, 2))
    rows = []
    for label, (d_sdr, d_sir, d_sar) in effects.items():
        for i in range(n_mixtures):
            for j, source in enumerate(("male", "female")):
                noise = rng.normal(0, noise_db, 3)
                sdr = base[i, j] + d_sdr + noise[0]
                rows.append({
                    "experiment": name, "method": label, "source_mode": "gender",
                    "mixture_id": f"test-{i:04d}", "source": source,
                    "sdr": sdr, "sir": sdr + 8 + d_sir + noise[1], "sar": sdr + 2 + d_sar + noise[2],
                    "si_sdr": sdr - 0.5, "pesq": 2.0 + 0.1 * d_sdr, "stoi": 0.8,
                    "input_sdr": 0.0, "input_sir": 0.0, "input_sar": 250.0,
                    "input_si_sdr": 0.0, "input_pesq": 1.2, "input_stoi": 0.6,
                })
    return rows


def write_sweep_metrics(reports, name, rows):
    out = reports / name / "metrics.csv"
    out.parent.mkdir(parents=True)
    return write_csv(out, rows)


def write_fixture_results(tmp_path):
    """RESULTS.md of four sweeps with known differences: (RESULTS.md, experiment files, reports root)."""
    from sepvae.results import write_results

    reports = tmp_path / "reports"
    # compare-models: VAE ~ beta-VAE; ITL-AE with 5 dB worse SAR, same SDR, 5 dB better SIR.
    compare = {m.label: (0.0, 0.0, 0.0) for m in experiment("compare-models").methods}
    compare["itl-ae"] = (0.0, 5.0, -5.0)
    compare["oracle-irm"] = (8.0, 8.0, 8.0)
    write_sweep_metrics(reports, "compare-models", sweep_rows("compare-models", compare))
    # sweep-beta: beta 16 is 5 dB worse everywhere: "no difference among beta > 1" must fail.
    beta = {m.label: (0.0, 0.0, 0.0) for m in experiment("sweep-beta").methods}
    beta["16"] = (-5.0, -5.0, -5.0)
    write_sweep_metrics(reports, "sweep-beta", sweep_rows("sweep-beta", beta))
    # sweep-window: E 5 dB better than every other setting, in both readings.
    window = {m.label: (0.0, 0.0, 0.0) for m in experiment("sweep-window").methods}
    window["E"] = window["E hop"] = (5.0, 0.0, 0.0)
    write_sweep_metrics(reports, "sweep-window", sweep_rows("sweep-window", window))
    experiments = [EXPERIMENTS / f"{name}.toml" for name in ("sweep-window", "sweep-latent", "sweep-beta",
                                                              "compare-models")]
    out = tmp_path / "experiments" / "RESULTS.md"
    return write_results(experiments, reports, out), experiments, reports
