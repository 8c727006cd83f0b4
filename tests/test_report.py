import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sepvae.errors import SepvaeError
from sepvae.report import (
    COLUMNS,
    markdown_table,
    method_labels,
    methods_in_order,
    paired_comparison,
    read_metrics,
    spectrogram_figure,
    summary_table,
    verdict,
    violin_figure,
    write_report,
)

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


def test_write_report_writes_markdown_json_and_figures(metrics_csv, tmp_path):
    spectrogram = spectrogram_figure(
        tmp_path / "elsewhere" / "spec.png", 16_000, 128,
        {"mixture": np.abs(np.random.default_rng(0).normal(size=(129, 50))), "male (true)": np.ones((129, 50))},
        {"male mask": np.full((129, 50), 0.3)},
    )
    out = tmp_path / "report"
    report = write_report(metrics_csv, out, "Fixture run", extra_sections={"Notes": "hello"},
                          spectrogram_png=spectrogram)
    assert report == out / "report.md"
    text = report.read_text()
    for name in ("report.md", "summary.json", "violins.png", "violins_extra.png", "spec.png"):
        assert (out / name).stat().st_size > 1000 or name == "summary.json"
        assert (out / name).stat().st_size > 0
    assert "](violins.png)" in text and "](violins_extra.png)" in text and "](spec.png)" in text
    assert "## Notes" in text and "hello" in text
    assert "itl-ae: " in text and "PESQ 12" in text  # NaN counts reported
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["mixture", "vae", "beta-vae", "itl-ae", "vae (speaker)"]
    assert summary["summary"][3]["pesq_median"] is None
    assert summary["dropped"]["vae"]["pesq"] == 2
    assert not list(out.glob("*.part"))


def test_violin_figure_survives_all_nan_and_single_values(tmp_path):
    rows = fixture_rows()
    for row in rows:
        if row["method"] == "beta-vae":
            row["sdr"] = math.nan
        row["pesq"] = math.nan if row["method"] != "vae" or row["mixture_id"] != "mix001" else 2.0
    out = violin_figure(rows, ("sar", "sdr", "sir", "pesq"), title="nan", out_png=tmp_path / "v.png")
    assert out.stat().st_size > 1000
    # A metric without a single finite value still gives a (labelled, empty) panel.
    for row in rows:
        row["stoi"] = math.nan
    assert violin_figure(rows, ("stoi",), title="empty", out_png=tmp_path / "e.png").stat().st_size > 0


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
    with pytest.raises(SepvaeError, match="nothere.csv"):
        write_report(tmp_path / "nothere.csv", tmp_path / "out", "x")


def test_spectrogram_figure_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="bins, frames"):
        spectrogram_figure(tmp_path / "s.png", 16_000, 128, {"mixture": np.ones(10)}, {})
    with pytest.raises(ValueError):
        spectrogram_figure(tmp_path / "s.png", 16_000, 128, {}, {})


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


def test_import_is_light():
    code = "import sys, sepvae.report; print('matplotlib' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
