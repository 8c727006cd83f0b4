import math
import subprocess
import sys

import numpy as np
import pytest

from sepvae.errors import SepvaeError
from sepvae.results import COLUMNS, markdown_table, read_metrics, summary_table, training_summary
from sepvae.results.stats import method_labels, methods_in_order, paired_comparison, verdict
from tests.results_fixtures import METHODS, N_MIXTURES, fixture_rows, write_csv


@pytest.fixture
def metrics_csv(tmp_path):
    return write_csv(tmp_path / "metrics.csv", fixture_rows())


def test_read_metrics_parses_numbers_and_nan(metrics_csv):
    rows = read_metrics(metrics_csv)
    assert len(rows) == len(METHODS) * N_MIXTURES * 2
    assert isinstance(rows[0]["sdr"], float) and isinstance(rows[0]["mixture_id"], str)
    assert sum(math.isnan(r["pesq"]) for r in rows) == N_MIXTURES * 2 + 4  # itl-ae, and mixture 0 of both vae


def test_methods_keep_csv_order_and_speaker_mode_is_labelled(metrics_csv):
    rows = read_metrics(metrics_csv)
    assert methods_in_order(rows) == [(m, s) for m, s, _ in METHODS]
    assert list(method_labels(rows).values()) == ["mixture", "vae", "beta-vae", "itl-ae", "vae (speaker)"]
    gender_only = [r for r in rows if r["source_mode"] == "gender"]
    assert list(method_labels(gender_only).values()) == ["mixture", "vae", "beta-vae", "itl-ae"]


def test_summary_table_equals_numpy_statistics(metrics_csv):
    rows = read_metrics(metrics_csv)
    table = summary_table(rows)
    assert [entry["label"] for entry in table] == ["mixture", "vae", "beta-vae", "itl-ae", "vae (speaker)"]
    for entry, (method, mode, _) in zip(table, METHODS):
        group = [r for r in rows if r["method"] == method and r["source_mode"] == mode]
        assert entry["n"] == len(group) == 2 * N_MIXTURES
        for metric in ("sdr", "sir", "sar", "stoi"):
            values = np.array([r[metric] for r in group])
            assert entry[f"{metric}_median"] == pytest.approx(np.median(values))
            assert entry[f"{metric}_mean"] == pytest.approx(np.mean(values))
            assert entry[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
        sdri = np.array([r["sdr"] - r["input_sdr"] for r in group])
        assert entry["sdri_median"] == pytest.approx(np.median(sdri))
        pesq = np.array([r["pesq"] for r in group])
        assert entry["pesq_dropped"] == int(np.isnan(pesq).sum())
        if np.isnan(pesq).all():
            assert math.isnan(entry["pesq_median"])
        else:
            assert entry["pesq_median"] == pytest.approx(np.nanmedian(pesq))
    mixture = table[0]
    assert mixture["sdri_median"] == pytest.approx(0.0)
    text = markdown_table(table)
    assert text.count("\n") == len(table) + 2
    assert "vae (speaker)" in text and "–" in text  # itl-ae has no PESQ


def test_summary_table_by_source(metrics_csv):
    table = summary_table(read_metrics(metrics_csv), by_source=True)
    assert len(table) == 2 * len(METHODS)
    assert {entry["source"] for entry in table} == {"male", "female"}
    assert all(entry["n"] == N_MIXTURES for entry in table)


def test_missing_file_and_missing_column_name_the_file(tmp_path):
    with pytest.raises(SepvaeError, match="nothere.csv"):
        read_metrics(tmp_path / "nothere.csv")
    bad = write_csv(tmp_path / "bad.csv", fixture_rows(), [c for c in COLUMNS if c not in ("sir", "input_pesq")])
    with pytest.raises(SepvaeError, match=r"bad\.csv.*sir, input_pesq"):
        read_metrics(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SepvaeError, match="empty.csv"):
        read_metrics(empty)


def shifted_rows(shift, n=30, noise=0.5, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    base = rng.normal(5, 2, n)
    for method, values in (("a", base + shift + rng.normal(0, noise, n)), ("b", base)):
        for i, value in enumerate(values):
            rows.append({"experiment": "s", "method": method, "source_mode": "gender",
                         "mixture_id": str(i // 2), "source": ("male", "female")[i % 2],
                         "sdr": float(value), "input_sdr": 0.0})
    return rows


def test_paired_comparison_finds_a_known_shift():
    result = paired_comparison(shifted_rows(2.0), "sdr", "a", "b")
    assert result["n"] == 30 and result["n_unpaired"] == 0
    assert result["ci_low"] < 2.0 < result["ci_high"]
    assert result["p_value"] < 0.001
    assert verdict(result, "a>b")[0] == "agree"
    assert verdict(result, "a<b")[0] == "disagree"
    assert verdict(result, "a~b")[0] == "disagree"
    # Reproducible: same seed, same CI.
    assert paired_comparison(shifted_rows(2.0), "sdr", "a", "b")["ci_low"] == result["ci_low"]


def test_identical_methods_are_equivalent_and_small_samples_inconclusive():
    rows = shifted_rows(0.0, noise=0.0)
    result = paired_comparison(rows, "sdr", "a", "b")
    assert result["p_value"] == 1.0 and result["median_diff"] == 0.0
    assert verdict(result, "a~b")[0] == "agree"
    assert verdict(result, "a>b")[0] == "inconclusive"

    few = paired_comparison(shifted_rows(3.0, n=4, noise=2.0), "sdr", "a", "b")
    outcome, reason = verdict(few, "a>b")
    assert outcome == "inconclusive" and "cannot reach" in reason

    wide = paired_comparison(shifted_rows(0.0, n=8, noise=3.0), "sdr", "a", "b")
    outcome, reason = verdict(wide, "a~b")
    assert outcome == "inconclusive" and "includes 0" in reason and "too small" in reason


def test_paired_comparison_handles_nan_and_unknown_method():
    rows = shifted_rows(1.0)
    rows[0]["sdr"] = math.nan
    result = paired_comparison(rows, "sdr", "a", "b")
    assert result["n"] == 29 and result["n_dropped"] == 1
    with pytest.raises(SepvaeError, match="'c'"):
        paired_comparison(rows, "sdr", "c", "b")
    assert verdict(paired_comparison(rows, "sdri", "a", "b"), "a>b")[0] == "agree"


def test_training_summary_of_a_history():
    history = [{"epoch": e, "male": {"val_recon": 5.0 - e}, "female": {"val_recon": 5.0 - e}, "seconds": 2.0}
               for e in (1, 2, 3)]
    history.append({"epoch": 4, "male": {"val_recon": 9.0}, "female": {"val_recon": 9.0}, "seconds": 4.0})
    found = training_summary(history)
    assert found == {"epochs": 4, "seconds": 10.0, "seconds_per_epoch": 2.5, "best_epoch": 3}
    with pytest.raises(SepvaeError, match="empty"):
        training_summary([])


def test_import_is_light_and_reads_results_only():
    code = ("import sys, sepvae.results; print(*(name in sys.modules for name in "
            "('matplotlib', 'scipy', 'sepvae.pipeline', 'sepvae.train', 'sepvae.mixing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * 5
