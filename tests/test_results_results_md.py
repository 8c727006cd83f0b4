import json
import shutil

import pytest

from sepvae.errors import SepvaeError
from sepvae.results import default_experiments, write_results
from sepvae.results.findings import FINDINGS, family_of
from sepvae.results.results_md import SWEEPS
from tests.results_fixtures import EXPERIMENTS, experiment, sweep_rows, write_fixture_results, write_sweep_metrics


@pytest.fixture
def fixture_results(tmp_path):
    return write_fixture_results(tmp_path)


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
    page = (out.parent / "results.html").read_text()  # the same figures and tables as a page
    assert "<caption>Verdicts on the paper&#x27;s findings</caption>" in page and "<strong>agree</strong>" in page
    assert all(f'src="results/{png.name}"' in page for png in figures) and page.count("<details>") > 3


def test_verdicts_follow_known_differences(fixture_results):
    text = fixture_results[0].read_text()
    assert "**agree**" in _verdict_row(text, "VAE and beta-VAE similar")
    assert "**agree**" in _verdict_row(text, "ITL-AE: worse SAR, similar SDR, better SIR than VAE")
    assert "**disagree**" in _verdict_row(text, "no discernible difference among beta > 1")
    assert "**agree**" in _verdict_row(text, "(16 ms, 8 ms) best by a wide margin")
    # E is better than G and H, but F is not: "8 ms worse than 16 ms" fails against F.
    assert "**disagree**" in _verdict_row(text, "8 ms worse than 16 ms")


def test_missing_experiment_is_listed_as_no_report_here(fixture_results):
    text = fixture_results[0].read_text()
    assert "| [sweep-latent](#sweep-latent) |" in text
    latent_row = next(line for line in text.splitlines() if line.startswith("| [sweep-latent]"))
    assert "no report here" in latent_row
    latent_verdict = _verdict_row(text, "no clear difference across latent sizes")
    assert "no report here" in latent_verdict and "`make sweep-latent`" in latent_verdict
    assert "not listed" in _verdict_row(text, "no clear difference across batch sizes 17-70")


def test_discussion_survives_regeneration(fixture_results):
    out, experiments, reports = fixture_results
    assert "## Discussion" in out.read_text()
    text = out.read_text().replace("(not written yet)", "Our E is better than the paper's.\n\n### More\n\nkept")
    out.write_text(text)
    write_results(experiments, reports, out)
    regenerated = out.read_text()
    assert "Our E is better than the paper's." in regenerated and "### More\n\nkept" in regenerated
    assert regenerated.count("## Discussion") == 1
    assert regenerated == text  # nothing else changed: the output is deterministic


def test_default_experiments_and_large_twins_not_run(tmp_path):
    found = default_experiments(EXPERIMENTS)
    assert [p.stem for p in found[:2]] == ["sweep-window", "sweep-window-large"]
    assert {family_of(p.stem) for p in found} == set(SWEEPS)
    reports = tmp_path / "reports"
    rows = sweep_rows("sweep-beta", {m.label: (0, 0, 0) for m in experiment("sweep-beta").methods})
    write_sweep_metrics(reports, "sweep-beta", rows)
    text = write_results([EXPERIMENTS / "sweep-beta.toml", EXPERIMENTS / "sweep-beta-large.toml"], reports,
                         tmp_path / "RESULTS.md").read_text()
    # The large twin is listed as not run, but adds no verdict row of its own.
    assert "| [sweep-beta-large](#sweep-beta-large) |" in text
    assert "**agree**" in _verdict_row(text, "no discernible difference among beta > 1")
    assert sum(line.startswith("| ") and "among beta > 1" in line for line in text.splitlines()) == 1


def _training_entry(seconds_per_epoch, epochs, budget, batch_size, source_mode="gender"):
    return {"source_mode": source_mode, "run": f"vae-{batch_size}", "epochs": epochs,
            "seconds": seconds_per_epoch * epochs, "seconds_per_epoch": seconds_per_epoch,
            "best_epoch": epochs - 1, "epoch_budget": budget, "batch_size": batch_size}


def _batch_metrics(reports):
    rows = sweep_rows("sweep-batch", {m.label: (0, 0, 0) for m in experiment("sweep-batch").methods})
    return write_sweep_metrics(reports, "sweep-batch", rows)


def test_results_read_reports_only(tmp_path, monkeypatch):
    """Only reports/ and the experiment files: no runs/, no data/; times from training.json."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    shutil.copy(EXPERIMENTS / "sweep-batch.toml", tmp_path / "experiments")
    metrics = _batch_metrics(tmp_path / "reports")
    times = {"1": _training_entry(100.0, 3, 3, 1), "17": _training_entry(4.0, 20, 30, 17),
             "34": _training_entry(3.0, 25, 30, 34), "70": _training_entry(2.0, 30, 30, 70),
             "70 speaker": _training_entry(9.0, 30, 30, 70, source_mode="speaker")}
    (metrics.parent / "training.json").write_text(json.dumps(times))

    out = write_results(default_experiments())
    text = out.read_text()
    assert out.resolve() == (tmp_path / "experiments" / "RESULTS.md").resolve()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["experiments", "reports"]
    assert "training.json" in text and "history.json" not in text
    assert "| 1 | 3 / 3 | 2 | 100.0 | 5.0 min |" in text and "| 70 | 30 / 30 | 29 | 2.0 | 60 s |" in text
    assert "70 speaker" not in text  # speaker-mode entries are left out
    assert "**agree**" in _verdict_row(text, "batch 1 costs time, not performance")


def test_results_without_training_json_have_no_times(tmp_path):
    _batch_metrics(tmp_path / "reports")
    text = write_results([EXPERIMENTS / "sweep-batch.toml"], tmp_path / "reports", tmp_path / "R.md").read_text()
    assert "| 1 | not found | – | – | – |" in text
    assert "(training.json missing)" in _verdict_row(text, "batch 1 costs time, not performance")


def test_bad_training_json_is_a_one_line_error(tmp_path):
    training = _batch_metrics(tmp_path / "reports").parent / "training.json"
    for text, message in (("{not json", "not valid JSON"), ("[1, 2]", "expected"),
                          ('{"1": {"source_mode": "gender", "epochs": 3}}', "'1' lacks seconds, seconds_per_epoch")):
        training.write_text(text)
        with pytest.raises(SepvaeError, match=message) as error:
            write_results([EXPERIMENTS / "sweep-batch.toml"], tmp_path / "reports", tmp_path / "R.md")
        assert "training.json" in str(error.value) and "\n" not in str(error.value)
