"""Violin plots, tables and paired statistics read from one ``metrics.csv``.

``metrics.csv`` (written by the evaluate stage) holds one row per (mixture, source, method)
with the scores of the estimate and the ``input_`` scores of the unprocessed mixture. It is
the only input of everything here.

``rows``, the structure every function takes, is a ``list[dict]``, one dict per CSV row, in
file order. The text columns ``experiment, method, source_mode, mixture_id, source`` are
``str``; the score columns (``sdr`` ... ``input_stoi``) are ``float`` with NaN where the
CSV cell is empty or ``nan``. Extra CSV columns are kept as ``str``. Rows built in memory
work as well if they carry the same keys.

A *method* is identified by ``(method, source_mode)``; methods keep the order in which they
first appear (the x axis of the plots). A *metric* is a score column (``"sdr"``, ``"pesq"``
...) or an improvement over the mixture (``"sdri"`` = ``sdr - input_sdr``, likewise
``"siri"``, ``"sari"``, ``"si_sdri"``, ``"pesqi"``, ``"stoii"``). NaN and +-Inf scores are
dropped from every plot and statistic, and counted.

matplotlib and scipy are imported inside the functions that need them, so that importing
this module stays cheap.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sepvae.errors import SepvaeError
from sepvae.metrics import METRICS

KEY_COLUMNS = ("experiment", "method", "source_mode", "mixture_id", "source")
SCORE_COLUMNS = METRICS
COLUMNS = KEY_COLUMNS + SCORE_COLUMNS + tuple(f"input_{name}" for name in SCORE_COLUMNS)

# Improvement over the unprocessed mixture: name -> score column.
IMPROVEMENTS = {f"{name}i": name for name in SCORE_COLUMNS}

PAPER_METRICS = ("sar", "sdr", "sir", "pesq")  # Figures 21/22 order (a) SAR (b) SDR (c) SIR
EXTRA_METRICS = ("si_sdr", "stoi", "sdri", "si_sdri")
TABLE_METRICS = ("sdr", "sir", "sar", "si_sdr", "pesq", "stoi")

_NAMES = {"sdr": "SDR", "sir": "SIR", "sar": "SAR", "si_sdr": "SI-SDR", "pesq": "PESQ", "stoi": "STOI"}


# ---------------------------------------------------------------------------------------
# Reading and naming


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read ``metrics.csv`` into ``rows`` (see the module docstring).

    Raises SepvaeError naming the file if it is missing, empty, lacks one of ``COLUMNS``,
    or holds a score that is not a number.
    """
    from sepvae.io import read_csv

    path = Path(path)
    _, records = read_csv(path, "metrics file", COLUMNS, "run the evaluate stage first")
    rows = []
    for line, record in enumerate(records, start=2):
        row: dict[str, Any] = dict(record)
        for name in COLUMNS[len(KEY_COLUMNS):]:
            row[name] = _to_float(row[name], path, line, name)
        rows.append(row)
    return rows


def _to_float(text: str | None, path: Path, line: int, column: str) -> float:
    if text is None or text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise SepvaeError(f"{path}:{line}: column {column} is not a number: {text!r}") from None


def methods_in_order(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ``(method, source_mode)`` pairs in order of first appearance."""
    return list(dict.fromkeys((row["method"], row["source_mode"]) for row in rows))


def method_labels(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """Display name of each method: ``method``, or ``method (speaker)`` when both modes appear.

    Any mode other than ``gender`` gets the suffix when more than one mode appears.
    """
    methods = methods_in_order(rows)
    several_modes = len({mode for _, mode in methods}) > 1
    return {
        (method, mode): f"{method} ({mode})" if several_modes and mode != "gender" else method
        for method, mode in methods
    }


def metric_unit(metric: str) -> str:
    """``"dB"`` for the BSS Eval family and their improvements, ``"MOS"`` for PESQ, else ``""``."""
    base = IMPROVEMENTS.get(metric, metric)
    if base == "pesq":
        return "MOS"
    if base == "stoi":
        return ""
    return "dB"


def metric_name(metric: str) -> str:
    """Display name: ``"SDR"``, ``"SDRi"``, ``"SI-SDR"``, ``"PESQ"`` ..."""
    if metric in IMPROVEMENTS:
        return _NAMES[IMPROVEMENTS[metric]] + "i"
    return _NAMES.get(metric, metric)


def metric_values(rows: Iterable[Mapping[str, Any]], metric: str) -> np.ndarray:
    """The metric of each row, float64, NaN kept (improvements are ``x - input_x``)."""
    if metric in IMPROVEMENTS:
        base = IMPROVEMENTS[metric]
        return np.array([float(row[base]) - float(row[f"input_{base}"]) for row in rows], dtype=float)
    return np.array([float(row[metric]) for row in rows], dtype=float)


def _check_metric(metric: str) -> None:
    if metric not in SCORE_COLUMNS and metric not in IMPROVEMENTS:
        known = ", ".join(SCORE_COLUMNS + tuple(IMPROVEMENTS))
        raise SepvaeError(f"unknown metric {metric!r}; known: {known}")


def _group(rows: Sequence[Mapping[str, Any]], by_source: bool = False) -> dict[tuple, list]:
    groups: dict[tuple, list] = {}
    for row in rows:
        key = (row["method"], row["source_mode"]) + ((row["source"],) if by_source else ())
        groups.setdefault(key, []).append(row)
    return groups


def dropped_counts(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{method label: {metric: number of NaN/Inf values dropped}}``, only non-zero counts."""
    labels = method_labels(rows)
    counts: dict[str, dict[str, int]] = {}
    for key, group in _group(rows).items():
        for metric in metrics:
            dropped = int(np.sum(~np.isfinite(metric_values(group, metric))))
            if dropped:
                counts.setdefault(labels[key], {})[metric] = dropped
    return counts


# ---------------------------------------------------------------------------------------
# Tables


def summary_table(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = TABLE_METRICS,
    by_source: bool = False,
) -> list[dict[str, Any]]:
    """One dict per ``(method, source_mode)`` (and ``source`` if ``by_source``), in CSV order.

    Keys: ``label, method, source_mode, [source,] n`` (rows), then for each metric ``m``:
    ``m_n`` (finite values used), ``m_dropped`` (NaN/Inf dropped), ``m_median``,
    ``m_mean``, ``m_std`` (sample std, ddof=1; NaN when fewer than two values), and
    ``sdri_median``: the median of ``sdr - input_sdr``, the SDR improvement over the
    mixture. Statistics of a metric with no finite value are NaN.
    """
    for metric in metrics:
        _check_metric(metric)
    labels = method_labels(rows)
    table = []
    for key, group in _group(rows, by_source).items():
        entry: dict[str, Any] = {"label": labels[key[:2]], "method": key[0], "source_mode": key[1]}
        if by_source:
            entry["source"] = key[2]
        entry["n"] = len(group)
        for metric in metrics:
            values = metric_values(group, metric)
            finite = values[np.isfinite(values)]
            entry[f"{metric}_n"] = int(finite.size)
            entry[f"{metric}_dropped"] = int(values.size - finite.size)
            for name, value in _stats(finite).items():
                entry[f"{metric}_{name}"] = value
        improvement = metric_values(group, "sdri")
        entry["sdri_median"] = _stats(improvement[np.isfinite(improvement)])["median"]
        table.append(entry)
    return table


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {"median": math.nan, "mean": math.nan, "std": math.nan}
    return {
        "median": float(np.median(values)),
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if values.size > 1 else math.nan,
    }


def markdown_table(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Render :func:`summary_table` as a Markdown table: ``median (mean ± std)`` per metric.

    Cells with NaN/Inf values dropped get ``*``; a metric without any value shows ``–``.
    """
    by_source = any("source" in entry for entry in table)
    header = ["method"] + (["source"] if by_source else []) + ["n"]
    header += [f"{metric_name(m)}" + (f" ({metric_unit(m)})" if metric_unit(m) else "") for m in metrics]
    header.append("SDRi median (dB)")
    n_text = len(header) - len(metrics) - 1
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * n_text + ["--:"] * (len(metrics) + 1)) + "|"]
    digits = {m: 3 if IMPROVEMENTS.get(m, m) == "stoi" else 2 for m in metrics}
    for entry in table:
        cells = [entry["label"]] + ([entry.get("source", "")] if by_source else []) + [str(entry["n"])]
        for metric in metrics:
            median = entry[f"{metric}_median"]
            if not math.isfinite(median):
                cells.append("–")
                continue
            d = digits[metric]
            cell = f"{median:.{d}f} ({entry[f'{metric}_mean']:.{d}f} ± {_fmt(entry[f'{metric}_std'], d)})"
            if entry[f"{metric}_dropped"]:
                cell += "*"
            cells.append(cell)
        cells.append(_fmt(entry["sdri_median"], 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def write_summary_json(table: Any, path: str | Path, **extra: Any) -> Path:
    """Write ``{"summary": table, **extra}`` as JSON (NaN/Inf become ``null``), atomically."""
    from sepvae.io import write_text

    path = Path(path)
    write_text(path, json.dumps(_json_safe({"summary": table, **extra}), indent=2, allow_nan=False) + "\n")
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------
# Figures

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

    from sepvae.io import atomic_output

    if not rows:
        raise SepvaeError(f"no metrics rows to plot for {out_png}")
    for metric in metrics:
        _check_metric(metric)
    methods = methods_in_order(rows)
    labels = method_labels(rows)
    groups = _group(rows)
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
    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return out_png


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

    from sepvae.io import atomic_output

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
    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out_png


def _image_args(shape: tuple[int, int], sample_rate: int, hop_length: int) -> dict[str, Any]:
    bins, frames = shape
    return {
        "origin": "lower",
        "aspect": "auto",
        "interpolation": "nearest",
        "extent": (0.0, frames * hop_length / sample_rate, 0.0, sample_rate / 2000.0),
    }


# ---------------------------------------------------------------------------------------
# The report


def write_report(
    metrics_csv: str | Path,
    out_dir: str | Path,
    title: str,
    extra_sections: Mapping[str, str] | None = None,
    spectrogram_png: str | Path | None = None,
) -> Path:
    """Write ``report.md``, ``summary.json`` and the violin PNGs into ``out_dir``.

    ``report.md``: the title, what was run (file, experiments, mixtures, sources, methods),
    the summary table pooled over sources and per source, the violin figures (the paper's
    SAR/SDR/SIR plus PESQ in ``violins.png``; SI-SDR, STOI and improvements over the mixture
    in ``violins_extra.png``) linked relatively, the spectrogram figure if given (copied into
    ``out_dir`` unless it already is there), ``extra_sections`` (``{heading: markdown}``),
    and the NaN/Inf values dropped. Returns the path of ``report.md``.
    """
    from sepvae.io import write_text

    metrics_csv = Path(metrics_csv)
    out_dir = Path(out_dir)
    rows = read_metrics(metrics_csv)
    if not rows:
        raise SepvaeError(f"{metrics_csv}: has a header but no rows")
    out_dir.mkdir(parents=True, exist_ok=True)

    table = summary_table(rows)
    by_source = summary_table(rows, by_source=True)
    figures = []
    for name, metrics, caption in (
        ("violins.png", PAPER_METRICS, "SAR, SDR and SIR as in the paper's Figures 21/22, plus PESQ"),
        ("violins_extra.png", EXTRA_METRICS, "SI-SDR, STOI and improvements over the unprocessed mixture"),
    ):
        shown = [m for m in metrics if np.isfinite(metric_values(rows, m)).any()]
        if shown:
            violin_figure(rows, shown, title=f"{title}: {', '.join(metric_name(m) for m in shown)}",
                          out_png=out_dir / name)
            figures.append((name, caption))

    all_metrics = sorted(set(TABLE_METRICS) | set(PAPER_METRICS) | set(EXTRA_METRICS), key=str)
    dropped = dropped_counts(rows, all_metrics)
    labels = list(method_labels(rows).values())
    experiments = list(dict.fromkeys(row["experiment"] for row in rows))
    sources = list(dict.fromkeys(row["source"] for row in rows))
    mixtures = {(row["experiment"], row["mixture_id"]) for row in rows}

    lines = [f"# {title}", "", "## What was run", ""]
    lines += [
        f"- metrics: `{metrics_csv}` ({len(rows)} rows, one per mixture, source and method)",
        f"- experiment{'s' if len(experiments) > 1 else ''}: {', '.join(experiments)}",
        f"- {len({m for _, m in mixtures})} test mixture(s); sources: {', '.join(sources)}",
        f"- methods (x axis order): {', '.join(labels)}",
        f"- source mode(s): {', '.join(dict.fromkeys(row['source_mode'] for row in rows))}",
        "",
        "## Results",
        "",
        "Median (mean ± std) over all (mixture, source) pairs; SDRi is the median SDR improvement "
        "over the unprocessed mixture. `*`: some values were NaN and were left out (see below).",
        "",
        markdown_table(table),
        "### Per source",
        "",
        markdown_table(by_source),
    ]
    if figures:
        lines += ["## Violin plots", ""]
        for name, caption in figures:
            lines += [f"![{caption}]({name})", "", f"*{caption}. Black bar: median; dots: single "
                      "(mixture, source) values coloured by source; n under each method; dB values beyond "
                      f"±{OFF_SCALE_DB:g} dB (the mixture's own SAR) are counted at the top.*", ""]
    if spectrogram_png is not None:
        lines += ["## Spectrograms", "", f"![spectrograms]({_place(Path(spectrogram_png), out_dir)})", ""]
    for heading, body in (extra_sections or {}).items():
        lines += [f"## {heading}", "", body.rstrip(), ""]
    lines += ["## Missing values", ""]
    if dropped:
        lines.append("NaN/Inf values left out of the table and plots (method: metric count):")
        lines.append("")
        for label, counts in dropped.items():
            lines.append(f"- {label}: " + ", ".join(f"{metric_name(m)} {n}" for m, n in counts.items()))
    else:
        lines.append("None: every score is a finite number.")
    lines.append("")

    write_summary_json(
        table,
        out_dir / "summary.json",
        title=title,
        metrics_csv=str(metrics_csv),
        n_rows=len(rows),
        methods=labels,
        by_source=by_source,
        dropped=dropped,
        figures=[name for name, _ in figures],
    )
    report = out_dir / "report.md"
    write_text(report, "\n".join(lines))
    return report


def _place(png: Path, out_dir: Path) -> str:
    """A link to ``png`` relative to ``out_dir``, copying it there if it lies outside."""
    if not png.is_file():
        raise SepvaeError(f"{png}: no such spectrogram figure")
    try:
        return png.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        from sepvae.io import atomic_output

        with atomic_output(out_dir / png.name) as tmp:
            shutil.copyfile(png, tmp)
        return png.name


# ---------------------------------------------------------------------------------------
# Statistics for the paper's claims


def paired_comparison(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    method_a: str,
    method_b: str,
    source_mode: str = "gender",
    *,
    source_mode_b: str | None = None,
    n_boot: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two methods on the same (mixture_id, source) pairs.

    Rows of ``(method_a, source_mode)`` and ``(method_b, source_mode_b or source_mode)`` are
    paired by ``(mixture_id, source)``; pairs where either value is NaN/Inf are dropped. The
    difference is ``d = a - b`` per pair. Returns a dict with ``metric, unit, method_a,
    method_b, source_mode, source_mode_b, n`` (pairs used), ``n_dropped`` (pairs with a
    NaN/Inf), ``n_unpaired`` (rows without a partner), ``median_a, median_b``,
    ``median_diff`` (the median of ``d``, not the difference of medians), ``ci_low,
    ci_high`` (95 % percentile bootstrap CI of the median of ``d``: ``n_boot`` resamples of
    the pairs with replacement, ``numpy.random.default_rng(seed)``), ``p_value``
    (two-sided Wilcoxon signed-rank test of ``d``, zero differences discarded; 1.0 if
    every ``d`` is 0; NaN without pairs) and ``note`` (why the test is weak, or "").
    Raises SepvaeError if a method is absent or a (mixture_id, source) appears twice.
    """
    _check_metric(metric)
    mode_b = source_mode_b or source_mode
    values_a = _paired_values(rows, metric, method_a, source_mode)
    values_b = _paired_values(rows, metric, method_b, mode_b)
    keys = [key for key in values_a if key in values_b]
    a = np.array([values_a[key] for key in keys], dtype=float)
    b = np.array([values_b[key] for key in keys], dtype=float)
    usable = np.isfinite(a) & np.isfinite(b)
    a, b = a[usable], b[usable]
    diff = a - b
    n = int(diff.size)

    result: dict[str, Any] = {
        "metric": metric,
        "unit": metric_unit(metric),
        "method_a": method_a,
        "method_b": method_b,
        "source_mode": source_mode,
        "source_mode_b": mode_b,
        "n": n,
        "n_dropped": int((~usable).sum()),
        "n_unpaired": len(values_a) + len(values_b) - 2 * len(keys),
        "median_a": float(np.median(a)) if n else math.nan,
        "median_b": float(np.median(b)) if n else math.nan,
        "median_diff": float(np.median(diff)) if n else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "ci_level": 0.95,
        "n_boot": n_boot,
        "seed": seed,
        "p_value": math.nan,
        "test": "Wilcoxon signed-rank, two-sided",
        "note": "",
    }
    if n == 0:
        result["note"] = "no pairs with finite values"
        return result
    rng = np.random.default_rng(seed)
    medians = np.median(diff[rng.integers(0, n, size=(n_boot, n))], axis=1)
    result["ci_low"], result["ci_high"] = (float(q) for q in np.percentile(medians, [2.5, 97.5]))
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        result["p_value"] = 1.0
        result["note"] = "all differences are 0"
        return result
    from scipy.stats import wilcoxon

    result["p_value"] = float(wilcoxon(diff).pvalue)
    if nonzero < 6:
        # With 5 or fewer non-zero differences the exact two-sided p is never below 0.0625.
        result["note"] = f"only {nonzero} non-zero differences: the Wilcoxon test cannot reach p < 0.05"
    return result


def _paired_values(rows, metric: str, method: str, source_mode: str) -> dict[tuple[str, str], float]:
    selected = [row for row in rows if row["method"] == method and row["source_mode"] == source_mode]
    if not selected:
        present = ", ".join(f"{m} ({s})" for m, s in methods_in_order(rows))
        raise SepvaeError(f"no rows for method {method!r} in {source_mode} mode; present: {present}")
    values: dict[tuple[str, str], float] = {}
    for row, value in zip(selected, metric_values(selected, metric)):
        key = (str(row["mixture_id"]), str(row["source"]))
        if key in values:
            raise SepvaeError(
                f"method {method!r} ({source_mode}) has two rows for mixture {key[0]}, source {key[1]}; "
                "compare one experiment at a time"
            )
        values[key] = float(value)
    return values


def verdict(comparison: Mapping[str, Any], claim: str, *, margin: float = 1.0, alpha: float = 0.05) -> tuple[str, str]:
    """Judge a claim about ``a`` vs ``b`` from :func:`paired_comparison`.

    Returns ``(verdict, reason)`` with verdict ``"agree"``, ``"disagree"`` or ``"inconclusive"``.
    With CI = the bootstrap 95 % CI of the median difference a - b and p = the Wilcoxon p:

    - ``"a>b"``: agree if p < alpha and CI > 0 (lower end above 0); disagree if p < alpha
      and CI < 0 (upper end below 0); else inconclusive.
    - ``"a<b"``: the mirror image.
    - ``"a~b"`` (no clear difference): agree if the CI lies within ``[-margin, +margin]``
      (the equivalence margin, in the metric's unit: 1 dB by default; pass e.g. 0.1 for PESQ
      MOS); else disagree if p < alpha and the CI excludes 0; else inconclusive. A small but
      significant difference inside the margin therefore counts as agreement.

    Without pairs the verdict is inconclusive.
    """
    if claim not in ("a>b", "a<b", "a~b"):
        raise SepvaeError(f"claim must be 'a>b', 'a<b' or 'a~b', got {claim!r}")
    n = comparison["n"]
    unit = comparison.get("unit", "")
    unit = f" {unit}" if unit else ""
    low, high, p = comparison["ci_low"], comparison["ci_high"], comparison["p_value"]
    a, b = comparison["method_a"], comparison["method_b"]
    if n == 0 or not math.isfinite(low):
        return "inconclusive", f"no pairs of {a} and {b} with finite {comparison['metric']}"
    ci = f"CI of median diff [{low:.2f}, {high:.2f}]{unit}"
    test = f"Wilcoxon p={p:.3g}, n={n}"
    significant = p < alpha

    if claim == "a~b":
        if -margin <= low and high <= margin:
            return "agree", f"{ci} lies within ±{margin:g}{unit} ({test})"
        if significant and (low > 0 or high < 0):
            side = "above" if low > 0 else "below"
            return "disagree", f"{a} is {side} {b}: {ci} excludes 0, {test}"
        if low <= 0 <= high:
            return "inconclusive", (f"{ci} includes 0 but reaches beyond ±{margin:g}{unit}; "
                                    f"n={n} too small to rule out a {margin:g}{unit} difference")
        return "inconclusive", f"{ci} excludes 0 but {test} is not below {alpha:g}"

    sign = 1 if claim == "a>b" else -1
    if significant and sign * low > 0 and sign * high > 0:
        return "agree", f"{ci} {'above' if sign > 0 else 'below'} 0, {test}"
    if significant and sign * low < 0 and sign * high < 0:
        return "disagree", f"opposite direction: {ci} {'below' if sign > 0 else 'above'} 0, {test}"
    if not significant:
        reason = f"{test} not below {alpha:g}; {ci}"
    else:
        reason = f"{ci} includes 0 although {test}"
    if comparison.get("note"):
        reason += f" ({comparison['note']})"
    return "inconclusive", reason
