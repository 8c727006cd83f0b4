"""How the shipped model fares when a recording is quieter or louder than its training mixtures.

TIMIT mixtures are peak-normalized (0.9), a user's recording comes at any level. This plays
the test mixtures of the paper's protocol (`[mix]` defaults: 10 mixtures of the TIMIT sample,
made in memory) at -30 to +10 dB and separates each with the shipped model as `sepvae
separate` does, with level matching on and off (`--match-level` / `--no-match-level`).
Median SDR over the 20 estimates per level. With matching the estimates scale with the input,
so every level gives the same SDR. Needs the TIMIT sample (TIMIT_ROOT or
../shared/data/timit-sample beside the checkout). Writes benchmarks/results/level.json.

    .venv/bin/python benchmarks/level_robustness.py [--model default]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from sepvae.catalog import load_separator
from sepvae.config import MixConfig
from sepvae.errors import SeparationWarning
from sepvae.corpus import index_timit
from sepvae.metrics import bss_eval
from sepvae.features import load_mono
from sepvae.mixing import mix_pair, plan_mixtures

OUT = Path(__file__).parent / "results" / "level.json"
LEVELS_DB = (-30, -20, -10, 0, 10)


def timit_root() -> Path | None:
    root = Path(os.environ.get("TIMIT_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data" / "timit-sample")
    return root if (root / "dr1-fvmh0").is_dir() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="shipped model name or model folder")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SeparationWarning)  # +10 dB peaks above 1.5 on purpose
    root = timit_root()
    if root is None:
        sys.exit("level_robustness: TIMIT sample not found (set TIMIT_ROOT)")
    config = MixConfig()
    tests = [(m, f) for split, m, f in plan_mixtures(index_timit(root), config) if split == "test"]
    pairs = [mix_pair(load_mono(m.path, config.sample_rate).numpy(), load_mono(f.path, config.sample_rate).numpy(), 0.0, config)[:3]
             for m, f in tests]
    results = {"model": args.model, "test_mixtures": len(pairs), "levels_db": list(LEVELS_DB), "median_sdr": {}}
    for matching in (True, False):
        separator, _ = load_separator(args.model, "cpu", match_level=matching)
        medians = []
        for level_db in LEVELS_DB:
            gain = 10 ** (level_db / 20)
            sdrs = []
            for mixture, male, female in pairs:
                estimates = separator.separate(mixture * gain, config.sample_rate)
                sdr, _, _ = bss_eval(np.stack([male, female]) * gain, np.stack([estimates["male"], estimates["female"]]))
                sdrs += list(sdr)
            medians.append(round(float(np.median(sdrs)), 2))
            print(f"match_level={matching} {level_db:+d} dB: median SDR {medians[-1]:.2f} dB", flush=True)
        results["median_sdr"]["match_level" if matching else "as_is"] = medians
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
