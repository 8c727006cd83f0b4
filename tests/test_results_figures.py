import math

import numpy as np
import pytest

from sepvae.results import spectrogram_figure
from sepvae.results.figures import violin_figure
from tests.results_fixtures import fixture_rows


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


def test_spectrogram_figure_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="bins, frames"):
        spectrogram_figure(tmp_path / "s.png", 16_000, 128, {"mixture": np.ones(10)}, {})
    with pytest.raises(ValueError):
        spectrogram_figure(tmp_path / "s.png", 16_000, 128, {}, {})


def test_series_colors_stay_distinct_beyond_matplotlibs_ten_colour_cycle():
    from matplotlib.colors import to_rgba

    from sepvae.results.figures import series_colors

    few = series_colors(["a", "b", "c"])
    assert few == {"a": "C0", "b": "C1", "c": "C2"}  # the default cycle, as before
    many = series_colors([f"s{i}" for i in range(13)])
    assert len({to_rgba(color) for color in many.values()}) == 13  # "C10" would be "C0" again
