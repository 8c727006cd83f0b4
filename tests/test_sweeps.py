import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sepvae.config import STFT_SETTINGS, load_experiment
from sepvae.pipeline import Paths
from sepvae.report import COLUMNS
from sepvae.sweeps import FINDINGS, family_of, judge_finding, split_label, training_time, write_results

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TOMLS = sorted(EXPERIMENTS.glob("*.toml"))


def experiment(name):
    return load_experiment(EXPERIMENTS / f"{name}.toml")


# ---------------------------------------------------------------------------------------
# The experiment files


@pytest.mark.parametrize("path", TOMLS, ids=lambda p: p.name)
def test_every_experiment_loads_with_unique_labels(path):
    loaded = load_experiment(path)
    keys = [(m.label, m.source_mode) for m in loaded.methods]
    assert len(keys) == len(set(keys))
    assert loaded.name == path.stem


def test_the_sweeps_and_the_comparison_exist():
    names = {p.stem for p in TOMLS}
    for base in ("sweep-window", "sweep-latent", "sweep-batch", "sweep-beta", "sweep-itl-latent", "compare-models"):
        assert base in names and f"{base}-large" in names


@pytest.mark.parametrize("path", [p for p in TOMLS if p.stem.endswith("-large")], ids=lambda p: p.name)
def test_large_variants_differ_only_in_the_test_set(path):
    large = load_experiment(path)
    base = load_experiment(path.with_name(path.name.replace("-large", "")))
    assert large.mix.test_pairs == "all" and base.mix.test_pairs == "distinct"
    same = dataclasses.replace(large, name=base.name, path=base.path,
                               mix=dataclasses.replace(large.mix, test_pairs="distinct"))
    assert same == base


def _model_key(method):
    return (method.kind, method.source_mode, method.stft, method.model, method.train)


def test_all_experiments_use_the_mixtures_of_reproduce():
    mix = experiment("reproduce").mix
    for path in TOMLS:
        loaded = load_experiment(path)
        assert dataclasses.replace(loaded.mix, test_pairs="distinct") == mix, path.name
        assert all(m.source_mode == "gender" for m in loaded.methods) or loaded.name == "reproduce"


def test_window_sweep_has_all_settings_under_both_readings_with_irm():
    methods = {m.label: m for m in experiment("sweep-window").methods}
    for letter, (window, overlap) in STFT_SETTINGS.items():
        for suffix, hop in (("", window - overlap), (" hop", overlap)):
            vae, irm = methods[letter + suffix], methods[f"{letter}{suffix} irm"]
            assert vae.kind == "vae" and irm.kind == "oracle-irm"
            for method in (vae, irm):
                assert (method.stft.window_ms, method.stft.hop_ms) == (window, hop)
            assert vae.model.hidden == (256, 256) and vae.model.latent == 128 and vae.model.decoder_hidden == (256, 256)
    # Where both readings give the same STFT, the hop entry is the same model (trained once).
    assert _model_key(methods["E hop"]) == _model_key(methods["E"])
    assert methods["H hop"].stft.hop_length(16000) == 32  # the 2 ms hop: 4x the frames of E
    xs = list(dict.fromkeys(split_label(m.label)[0] for m in experiment("sweep-window").methods))
    assert xs == list("ABCDEFGH")


def test_swept_values():
    latent = experiment("sweep-latent").methods
    assert [m.model.latent for m in latent] == [8, 16, 32, 64, 128]
    assert all(m.model.hidden == (128,) and m.model.decoder_hidden == (128,) and m.stft.n_bins(16000) == 129
               for m in latent)
    batch = experiment("sweep-batch").methods
    assert [m.train.batch_size for m in batch] == [1, 17, 34, 70]
    assert batch[0].train.epochs < batch[1].train.epochs  # batch 1's smaller, documented budget
    beta = experiment("sweep-beta").methods
    assert [m.model.beta for m in beta] == [1, 2, 4, 8, 16]
    assert [m.model.latent for m in experiment("sweep-itl-latent").methods] == [32, 64, 128, 256]
    assert {m.kind for m in experiment("sweep-itl-latent").methods} == {"itl-ae"}
    kinds = [m.kind for m in experiment("compare-models").methods]
    assert {"vae", "beta-vae", "itl-ae", "ae", "nmf", "oracle-irm"} <= set(kinds)


def test_defaults_are_shared_with_reproduce():
    """The default models of the sweeps are the models of reproduce.toml: trained once."""
    reproduce = {_model_key(m) for m in experiment("reproduce").methods if m.model is not None}
    compare = [m for m in experiment("compare-models").methods if m.model is not None]
    assert compare and all(_model_key(m) in reproduce for m in compare)
    shared = {"sweep-window": "E", "sweep-batch": "70", "sweep-beta": "1", "sweep-itl-latent": "128"}
    for name, label in shared.items():
        method = next(m for m in experiment(name).methods if m.label == label)
        assert _model_key(method) in reproduce, name
    beta4 = next(m for m in experiment("sweep-beta").methods if m.label == "4")
    assert _model_key(beta4) in reproduce


# ---------------------------------------------------------------------------------------
# write_results on fixture metrics


def _rows(name, effects, n_mixtures=10, seed=0, noise_db=0.05):
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


def _write_metrics(reports, name, rows):
    out = reports / name / "metrics.csv"
    out.parent.mkdir(parents=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture
def fixture_results(tmp_path):
    paths = Paths(corpus=tmp_path / "no-corpus.csv", mixtures=tmp_path / "mixtures",
                  runs=tmp_path / "runs", reports=tmp_path / "reports")
    # compare-models: VAE ~ beta-VAE; ITL-AE with 5 dB worse SAR, same SDR, 5 dB better SIR.
    compare = {m.label: (0.0, 0.0, 0.0) for m in experiment("compare-models").methods}
    compare["itl-ae"] = (0.0, 5.0, -5.0)
    compare["oracle-irm"] = (8.0, 8.0, 8.0)
    _write_metrics(paths.reports, "compare-models", _rows("compare-models", compare))
    # sweep-beta: beta 16 is 5 dB worse everywhere: "no difference among beta > 1" must fail.
    beta = {m.label: (0.0, 0.0, 0.0) for m in experiment("sweep-beta").methods}
    beta["16"] = (-5.0, -5.0, -5.0)
    _write_metrics(paths.reports, "sweep-beta", _rows("sweep-beta", beta))
    # sweep-window: E 5 dB better than every other setting, in both readings.
    window = {m.label: (0.0, 0.0, 0.0) for m in experiment("sweep-window").methods}
    window["E"] = window["E hop"] = (5.0, 0.0, 0.0)
    _write_metrics(paths.reports, "sweep-window", _rows("sweep-window", window))
    experiments = [EXPERIMENTS / f"{name}.toml" for name in ("sweep-window", "sweep-latent", "sweep-beta",
                                                              "compare-models")]
    out = tmp_path / "experiments" / "RESULTS.md"
    return write_results(experiments, paths, out), experiments, paths


def _verdict_row(text, finding):
    line = next(line for line in text.splitlines() if line.startswith("| ") and f"| {finding} |" in line)
    return line


def test_write_results_writes_verdicts_and_small_figures(fixture_results):
    out, _, _ = fixture_results
    text = out.read_text()
    assert "## Verdicts" in text and "| # | finding | paper | experiment |" in text
    for finding in FINDINGS:
        assert f"| {finding.name} |" in text
    figures = sorted((out.parent / "results").glob("*.png"))
    assert [p.stem for p in figures] == ["compare-models", "sweep-beta", "sweep-window"]
    for png in figures:
        assert png.stat().st_size < 200_000
        assert f"](results/{png.name})" in text
    assert "Which reading of “overlap”?" in text


def test_verdicts_follow_known_differences(fixture_results):
    text = fixture_results[0].read_text()
    assert "**agree**" in _verdict_row(text, "VAE and beta-VAE similar")
    assert "**agree**" in _verdict_row(text, "ITL-AE: worse SAR, similar SDR, better SIR than VAE")
    assert "**disagree**" in _verdict_row(text, "no discernible difference among beta > 1")
    assert "**agree**" in _verdict_row(text, "(16 ms, 8 ms) best by a wide margin")
    # E is better than G and H, but F is not: "8 ms worse than 16 ms" fails against F.
    assert "**disagree**" in _verdict_row(text, "8 ms worse than 16 ms")


def test_missing_experiment_is_listed_as_not_run(fixture_results):
    text = fixture_results[0].read_text()
    assert "| [sweep-latent](#sweep-latent) |" in text
    latent_row = next(line for line in text.splitlines() if line.startswith("| [sweep-latent]"))
    assert "not run yet" in latent_row
    assert "not run yet" in _verdict_row(text, "no clear difference across latent sizes")
    assert "not listed" in _verdict_row(text, "no clear difference across batch sizes 17-70")


def test_discussion_survives_regeneration(fixture_results):
    out, experiments, paths = fixture_results
    assert "## Discussion" in out.read_text()
    text = out.read_text().replace("(not written yet)", "Our E is better than the paper's.\n\n### More\n\nkept")
    out.write_text(text)
    write_results(experiments, paths, out)
    regenerated = out.read_text()
    assert "Our E is better than the paper's." in regenerated and "### More\n\nkept" in regenerated
    assert regenerated.count("## Discussion") == 1
    assert regenerated == text  # nothing else changed: the output is deterministic


def test_judge_finding_on_a_large_difference():
    finding = next(f for f in FINDINGS if f.name == "64/32 gives better SAR than 64/16")
    better = _rows("w", {"A": (0, 0, 0), "B": (0, 0, 3.0)})
    worse = _rows("w", {"A": (0, 0, 0), "B": (0, 0, -3.0)})
    assert judge_finding(finding, better, "w").verdict == "agree"
    assert judge_finding(finding, worse, "w").verdict == "disagree"
    # Equal within a few hundredths of a dB: the claimed difference is absent.
    assert judge_finding(finding, _rows("w", {"A": (0, 0, 0), "B": (0, 0, 0)}), "w").verdict == "disagree"
    noisy = _rows("w", {"A": (0, 0, 0), "B": (0, 0, 0)}, n_mixtures=3, noise_db=3.0)
    result = judge_finding(finding, noisy, "w")
    assert result.verdict == "inconclusive" and "sweep-window-large.toml" in result.reason
    assert judge_finding(finding, noisy, "w", large=True).reason.count("large.toml") == 0


def test_batch_one_needs_time_evidence():
    finding = next(f for f in FINDINGS if f.slower)
    rows = _rows("b", {"1": (0, 0, 0), "70": (0, 0, 0)})
    fast = {"seconds_per_epoch": 2.0, "seconds": 60.0, "epochs": 30}
    slow = {"seconds_per_epoch": 100.0, "seconds": 300.0, "epochs": 3}
    assert judge_finding(finding, rows, "b", {"1": slow, "70": fast}).verdict == "agree"
    assert judge_finding(finding, rows, "b", {"1": fast, "70": fast}).verdict == "disagree"
    assert judge_finding(finding, rows, "b", {}).verdict == "inconclusive"


def test_training_time_reads_history(tmp_path):
    history = [{"epoch": e, "male": {"val_recon": 5.0 - e}, "female": {"val_recon": 5.0 - e}, "seconds": 2.0}
               for e in (1, 2, 3)]
    history.append({"epoch": 4, "male": {"val_recon": 9.0}, "female": {"val_recon": 9.0}, "seconds": 4.0})
    (tmp_path / "history.json").write_text(json.dumps(history))
    found = training_time(tmp_path)
    assert found == {"epochs": 4, "seconds": 10.0, "seconds_per_epoch": 2.5, "best_epoch": 3}
    assert training_time(tmp_path / "missing") is None


def test_family_and_labels():
    assert family_of("sweep-beta-large") == "sweep-beta" and family_of("compare-models") == "compare-models"
    assert split_label("A hop irm") == ("A", "hop irm") and split_label("vae") == ("vae", "")


def test_default_experiments_and_large_twins_not_run(tmp_path):
    from sepvae.sweeps import SWEEPS, default_experiments

    found = default_experiments(EXPERIMENTS)
    assert [p.stem for p in found[:2]] == ["sweep-window", "sweep-window-large"]
    assert {family_of(p.stem) for p in found} == set(SWEEPS)
    paths = Paths(corpus=tmp_path / "none.csv", runs=tmp_path / "runs", reports=tmp_path / "reports")
    rows = _rows("sweep-beta", {m.label: (0, 0, 0) for m in experiment("sweep-beta").methods})
    _write_metrics(paths.reports, "sweep-beta", rows)
    text = write_results([EXPERIMENTS / "sweep-beta.toml", EXPERIMENTS / "sweep-beta-large.toml"], paths,
                         tmp_path / "RESULTS.md").read_text()
    # The large twin is listed as not run, but adds no verdict row of its own.
    assert "| [sweep-beta-large](#sweep-beta-large) |" in text
    assert "**agree**" in _verdict_row(text, "no discernible difference among beta > 1")
    assert sum(line.startswith("| ") and "among beta > 1" in line for line in text.splitlines()) == 1
