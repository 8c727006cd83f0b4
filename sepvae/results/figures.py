"""Figures drawn from ``metrics.csv`` rows: violins per method, sweep figures, spectrograms.

``rows`` and metric names are those of :mod:`sepvae.results.stats`. Every figure is written
atomically as a PNG and its path returned. matplotlib is imported inside the functions that
draw, so that importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sepvae.config import STFT_SETTINGS, Experiment, SourceMode
from sepvae.errors import SepvaeError
from sepvae.results.findings import family_of, split_label
from sepvae.results.stats import (
    check_metric,
    group_by_method,
    method_labels,
    methods_in_order,
    metric_name,
    metric_unit,
    metric_values,
)

PAPER_METRICS = ("sar", "sdr", "sir", "pesq")  # Figures 21/22 order (a) SAR (b) SDR (c) SIR, plus PESQ
EXTRA_METRICS = ("si_sdr", "stoi", "sdri", "si_sdri")
SWEEP_DPI = 80  # sweep figures are committed beside RESULTS.md: kept small
# Methods drawn as a median and interquartile bar beside the violins of a sweep.

# Legend of the window sweep's series (the label's words after the setting letter).
WINDOW_SERIES = {
    "": "VAE, hop = window − overlap",
    "hop": "VAE, hop = 2nd number",
    "irm": "oracle IRM, hop = window − overlap",
    "hop irm": "oracle IRM, hop = 2nd number",
}

# The mixture used as its own estimate has no artifacts, so BSS Eval gives it a SAR near
# 300 dB; drawing that would flatten every other violin. Such values are counted at the top
# of the panel instead (they stay in the tables).
OFF_SCALE_DB = 100.0

_SOURCE_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive")


def draw_violin(ax, position: float, values: np.ndarray, *, width: float, rng: np.random.Generator,
                face: str = "0.75", alpha: float = 0.8, dot_size: float = 9, dot_colors: Any = "0.15",
                median: float | None = None) -> None:
    """One group at ``position``: a violin when the values spread, jittered dots, and a black
    median bar (of ``median`` if given, e.g. the median before off-scale values were removed)."""
    if values.size > 1 and np.ptp(values) > 0:
        body = ax.violinplot([values], positions=[position], widths=width, showextrema=False)
        for patch in body["bodies"]:
            patch.set_facecolor(face)
            patch.set_edgecolor("0.35")
            patch.set_alpha(alpha)
    jitter = rng.uniform(-0.15 * width, 0.15 * width, values.size)
    ax.scatter(position + jitter, values, s=dot_size, c=dot_colors, alpha=0.7, linewidths=0, zorder=3)
    median = float(np.median(values)) if median is None else median
    ax.hlines(median, position - 0.37 * width, position + 0.37 * width, colors="k", linewidths=2, zorder=4)


def label_panel(ax, letter: str, metric: str, fontsize: float = 10) -> None:
    """Title ``(a) SDR``, y label with unit, grid; says so when the panel has no values."""
    unit = {"dB": "dB", "MOS": "MOS-LQO", "": ""}[metric_unit(metric)]
    ax.set_ylabel(f"{metric_name(metric)} ({unit})" if unit else metric_name(metric), fontsize=fontsize - 1)
    ax.set_title(f"({letter}) {metric_name(metric)}", fontsize=fontsize)
    ax.grid(axis="y", alpha=0.3)
    if not ax.has_data():
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="0.4")


def violin_figure(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = PAPER_METRICS,
    *,
    title: str,
    out_png: str | Path,
) -> Path:
    """One violin panel per metric, side by side, as in the paper's Figures 21 and 22.

    x: methods in CSV order; y: the metric (dB, PESQ MOS-LQO, or STOI). Each violin is the
    distribution over (mixture, source) pooled over sources; the black bar is the median;
    dots are the single values coloured by source. dB values beyond +-``OFF_SCALE_DB`` (the
    mixture's own SAR) are not drawn but counted at the top of the panel. The tick label
    says ``n`` and how many NaN/Inf values were dropped. A method without any finite value leaves its slot empty,
    and a group of one value (or all equal) is drawn as dots and median only.
    Writes ``out_png`` atomically and returns its path.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not rows:
        raise SepvaeError(f"no metrics rows to plot for {out_png}")
    for metric in metrics:
        check_metric(metric)
    methods = methods_in_order(rows)
    labels = method_labels(rows)
    groups = group_by_method(rows)
    sources = list(dict.fromkeys(row["source"] for row in rows))
    colors = {source: _SOURCE_COLORS[i % len(_SOURCE_COLORS)] for i, source in enumerate(sources)}
    longest = max(len(label) for label in labels.values())

    panel_width = max(3.0, 0.55 * len(methods) + 1.0)
    fig = Figure(figsize=(panel_width * len(metrics), 4.6 + (0.06 * longest if longest > 9 else 0)),
                 layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rng = np.random.default_rng(0)  # jitter only; fixed so that figures are reproducible
    for letter, ax, metric in zip("abcdefghijklmnopqrstuvwxyz", axes, metrics):
        ticks = []
        headroom = False
        for position, key in enumerate(methods, start=1):
            group = groups[key]
            values = metric_values(group, metric)
            finite = np.isfinite(values)
            dropped = int(values.size - finite.sum())
            kind = "NaN" if np.isnan(values[~finite]).all() else "NaN/Inf"
            ticks.append(f"{labels[key]}\nn={int(finite.sum())}" + (f" ({dropped} {kind})" if dropped else ""))
            if not finite.any():
                continue
            kept = values[finite]
            group_sources = np.array([row["source"] for row, ok in zip(group, finite) if ok])
            median = float(np.median(kept))
            on_scale = np.abs(kept) <= OFF_SCALE_DB if metric_unit(metric) == "dB" else np.ones(kept.size, bool)
            if not on_scale.all():
                off = kept[~on_scale]
                ax.annotate(f"{off.size} ↑\n~{np.median(off):.0f} dB", (position, 0.99),
                            xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7, color="0.3")
                headroom = True
            kept, group_sources = kept[on_scale], group_sources[on_scale]
            if kept.size:
                draw_violin(ax, position, kept, width=0.8, rng=rng, dot_colors=[colors[s] for s in group_sources],
                            median=median if abs(median) <= OFF_SCALE_DB or metric_unit(metric) != "dB" else None)
        if headroom:
            low, high = ax.get_ylim()
            ax.set_ylim(low, high + 0.15 * (high - low))
        # About 9 characters of 8 pt text fit under one violin; longer labels are slanted.
        rotate = max(len(line) for tick in ticks for line in tick.split("\n")) > 9
        ax.set_xticks(range(1, len(methods) + 1), ticks, fontsize=8, rotation=35 if rotate else 0,
                      ha="right" if rotate else "center", rotation_mode="anchor" if rotate else "default")
        ax.set_xlim(0.4, len(methods) + 0.6)
        label_panel(ax, letter, metric)

    handles = [Line2D([], [], color="k", linewidth=2.2, label="median")]
    handles += [Line2D([], [], marker="o", linestyle="", color=colors[s], label=s) for s in sources]
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, x=0.01, ha="left")
    return _save_png(fig, out_png, dpi=120)


def spectrogram_figure(
    out_png: str | Path,
    sample_rate: int,
    hop_length: int,
    spectrograms: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray] | None = None,
    *,
    title: str = "",
    floor_db: float = 80.0,
) -> Path:
    """Spectrograms and masks of one test mixture, one labelled panel each, in dB.

    ``spectrograms``: ``{panel title: magnitude}`` (e.g. "mixture", "male (true)",
    "male (VAE)"), drawn as ``20 log10`` on one colour scale relative to their common maximum,
    ``floor_db`` below it. ``masks``: ``{panel title: mask in [0, 1]}``, drawn linearly.
    Spectrograms fill rows of three panels; masks start a new row.

    Shape:
        every array: (bins, frames), bins = n_fft // 2 + 1 (frequency axis 0 ... sample_rate/2);
        time of frame t is t * hop_length / sample_rate.
    Raises ValueError on an array that is not 2-D or empty, or if nothing is given.
    """
    from matplotlib.figure import Figure

    masks = dict(masks or {})
    spectrograms = dict(spectrograms)
    if not spectrograms and not masks:
        raise ValueError("spectrogram_figure needs at least one spectrogram or mask")
    for name, array in list(spectrograms.items()) + list(masks.items()):
        array = np.asarray(array)
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(f"panel {name!r}: expected a non-empty (bins, frames) array, got shape {array.shape}")
    if sample_rate <= 0 or hop_length <= 0:
        raise ValueError("sample_rate and hop_length must be positive")

    ncols = min(3, max(len(spectrograms), len(masks)))
    spec_rows = math.ceil(len(spectrograms) / ncols)
    mask_rows = math.ceil(len(masks) / ncols)
    nrows = spec_rows + mask_rows
    fig = Figure(figsize=(4.2 * ncols + 1.0, 2.8 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)

    magnitudes = {name: np.abs(np.asarray(array, dtype=float)) for name, array in spectrograms.items()}
    peak = max((float(m.max()) for m in magnitudes.values()), default=1.0) or 1.0
    image = mask_image = None
    for index, (name, magnitude) in enumerate(magnitudes.items()):
        ax = axes[index // ncols, index % ncols]
        db = 20 * np.log10(np.maximum(magnitude, peak * 10 ** (-floor_db / 20)) / peak)
        image = ax.imshow(db, **_image_args(db.shape, sample_rate, hop_length), vmin=-floor_db, vmax=0, cmap="magma")
        ax.set_title(name, fontsize=10)
    for index, (name, mask) in enumerate(masks.items()):
        ax = axes[spec_rows + index // ncols, index % ncols]
        mask = np.asarray(mask, dtype=float)
        mask_image = ax.imshow(mask, **_image_args(mask.shape, sample_rate, hop_length), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name, fontsize=10)
    used = {(i // ncols, i % ncols) for i in range(len(spectrograms))}
    used |= {(spec_rows + i // ncols, i % ncols) for i in range(len(masks))}
    for r in range(nrows):
        for c in range(ncols):
            if (r, c) not in used:
                axes[r, c].set_visible(False)
            else:
                if c == 0:
                    axes[r, c].set_ylabel("frequency (kHz)")
                axes[r, c].set_xlabel("time (s)")
                axes[r, c].xaxis.set_tick_params(labelbottom=True)
    if image is not None:
        fig.colorbar(image, ax=axes[:spec_rows, :].ravel().tolist(), label="dB (re. max)", shrink=0.9)
    if mask_image is not None:
        fig.colorbar(mask_image, ax=axes[spec_rows:, :].ravel().tolist(), label="mask", shrink=0.9)
    if title:
        fig.suptitle(title)
    return _save_png(fig, out_png, dpi=110)


def _image_args(shape: tuple[int, int], sample_rate: int, hop_length: int) -> dict[str, Any]:
    bins, frames = shape
    return {
        "origin": "lower",
        "aspect": "auto",
        "interpolation": "nearest",
        "extent": (0.0, frames * hop_length / sample_rate, 0.0, sample_rate / 2000.0),
    }


def series_colors(series: Sequence[str]) -> dict[str, Any]:
    """One colour per series: matplotlib's 10-colour cycle, or tab20's 20 colours for more
    series (the cycle would repeat a colour from the 11th on, e.g. in unseen-steps' 13)."""
    if len(series) <= 10:
        return {s: f"C{i}" for i, s in enumerate(series)}
    from matplotlib import colormaps

    tab20 = colormaps["tab20"]
    return {s: tab20(i % tab20.N) for i, s in enumerate(series)}


def sweep_figure(rows: Sequence[Mapping[str, Any]], experiment: Experiment, out_png: str | Path,
                 metrics: Sequence[str] = PAPER_METRICS) -> Path:
    """One violin panel per metric; x = the swept value, series side by side.

    Reference methods (oracle masks, mixture) that share their x with other series are drawn
    as a median marker with an interquartile bar; everything else as a violin with its
    median (black bar) and its single values (dots). dB values beyond ±``OFF_SCALE_DB`` (the
    mixture's own SAR) are counted at the top instead of drawn.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not rows:
        raise SepvaeError(f"no metrics rows to plot for {out_png}")
    trained = {m.label: m.entry.trains for m in experiment.methods if m.source_mode is SourceMode.GENDER}
    labels = list(dict.fromkeys(row["method"] for row in rows if row["source_mode"] == SourceMode.GENDER))
    groups = {label: [row for row in rows if row["method"] == label and row["source_mode"] == SourceMode.GENDER]
              for label in labels}
    xs = list(dict.fromkeys(split_label(label)[0] for label in labels))
    series = list(dict.fromkeys(split_label(label)[1] for label in labels))
    shared_x = {x: sum(split_label(label)[0] == x for label in labels) > 1 for x in xs}
    family = family_of(experiment.name)
    colors = series_colors(series)
    width = 0.84 / len(series)
    slots = len(xs) * len(series)

    ncols, nrows = (2, 2) if slots > 10 else (len(metrics), 1)
    if len(metrics) < 4:
        ncols, nrows = len(metrics), 1
    panel_width = max(2.6, 0.25 * slots + 0.9)
    fig = Figure(figsize=(panel_width * ncols, 2.9 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    rng = np.random.default_rng(0)  # jitter only
    counts = {len(group) for group in groups.values()}
    for letter, ax, metric in zip("abcdefgh", axes, metrics):
        dB = metric_unit(metric) == "dB"
        for label in labels:
            x, s = split_label(label)
            position = xs.index(x) + 1 + (series.index(s) - (len(series) - 1) / 2) * width
            values = metric_values(groups[label], metric)
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            off = values[np.abs(values) > OFF_SCALE_DB] if dB else values[:0]
            if off.size:
                ax.annotate(f"{off.size}↑", (position, 0.99), xycoords=("data", "axes fraction"),
                            ha="center", va="top", fontsize=6, color="0.3")
                values = values[np.abs(values) <= OFF_SCALE_DB]
                if values.size == 0:
                    continue
            median = float(np.median(values))
            if not trained.get(label, True) and shared_x[x]:  # a reference beside trained methods
                q1, q3 = np.percentile(values, [25, 75])
                ax.vlines(position, q1, q3, colors=colors[s], linewidths=1.5)
                ax.plot([position], [median], marker="D", markersize=4, color=colors[s], zorder=4)
                continue
            draw_violin(ax, position, values, width=width * 0.95, rng=rng, median=median, dot_size=3,
                        face=colors[s] if len(series) > 1 else "0.7", alpha=0.45)
        ticks = [f"{x}\n{STFT_SETTINGS[x][0]}/{STFT_SETTINGS[x][1]}" if family == "sweep-window" and x in STFT_SETTINGS
                 else x for x in xs]
        ax.set_xticks(range(1, len(xs) + 1), ticks, fontsize=7,
                      rotation=30 if max(len(t) for t in xs) > 6 else 0)
        ax.set_xlim(0.45, len(xs) + 0.55)
        ax.tick_params(axis="y", labelsize=7)
        label_panel(ax, letter, metric, fontsize=9)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if len(series) > 1:
        handles = []
        for s in series:
            text = WINDOW_SERIES.get(s, s) if family == "sweep-window" else (s or "default")
            handles.append(Line2D([], [], color=colors[s], linewidth=6, alpha=0.6, label=text))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7, frameon=False)
    n_text = f"n = {counts.pop()}" if len(counts) == 1 else f"n = {min(counts)}-{max(counts)}"
    fig.suptitle(f"{experiment.name}: x = {experiment.sweep or 'method'}; {n_text} estimates per violin",
                 fontsize=9, x=0.01, ha="left")
    return _save_png(fig, out_png, dpi=SWEEP_DPI, metadata={"Software": None})


def spectrogram_thumbnail(out_png: str | Path, magnitude: np.ndarray, peak: float, *, floor_db: float = 80.0,
                          pool: int = 2) -> Path:
    """A spectrogram as a bare image, one pixel per ``pool`` x ``pool`` (bins x frames)
    block (their maximum, so short onsets and thin harmonics stay visible), in dB re.
    ``peak`` down to ``floor_db``.

    No axes or figure: the listening page draws hundreds of these next to its players,
    where a figure each would be slow and large; the page states the axes once.

    Shape:
        magnitude: (bins, frames), low frequencies in row 0 (drawn at the bottom).
    Raises ValueError on an array that is not 2-D or empty.
    """
    from matplotlib.image import imsave

    from sepvae.io import atomic_output

    magnitude = np.abs(np.asarray(magnitude, dtype=float))
    if magnitude.ndim != 2 or 0 in magnitude.shape:
        raise ValueError(f"expected a non-empty (bins, frames) array, got shape {magnitude.shape}")
    rows, cols = (max(1, n // pool) for n in magnitude.shape)
    step_rows, step_cols = magnitude.shape[0] // rows, magnitude.shape[1] // cols
    pooled = magnitude[: rows * step_rows, : cols * step_cols].reshape(rows, step_rows, cols, step_cols).max(axis=(1, 3))
    peak = peak if peak > 0 else 1.0
    db = 20 * np.log10(np.maximum(pooled, peak * 10 ** (-floor_db / 20)) / peak)
    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        imsave(tmp, db, cmap="magma", vmin=-floor_db, vmax=0, origin="lower", format="png")
    return out_png


def _save_png(fig, out_png: str | Path, dpi: int, **savefig_args: Any) -> Path:
    from sepvae.io import atomic_output

    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig_args)
    return out_png
