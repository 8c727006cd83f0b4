import json

import numpy as np
import pytest

from sepvae.errors import SepvaeError
from sepvae.results import spectrogram_figure, write_report
from tests.results_fixtures import fixture_rows, write_csv


@pytest.fixture
def metrics_csv(tmp_path):
    return write_csv(tmp_path / "metrics.csv", fixture_rows())


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


def test_write_report_names_a_missing_metrics_file(tmp_path):
    with pytest.raises(SepvaeError, match="nothere.csv"):
        write_report(tmp_path / "nothere.csv", tmp_path / "out", "x")
