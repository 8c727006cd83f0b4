"""An experiment's ``report.md`` and ``summary.json``, and the Markdown table they share.

Everything here is read from one ``metrics.csv`` (see :mod:`sepvae.results.stats` for its
rows); the figures come from :mod:`sepvae.results.figures`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sepvae.errors import SepvaeError
from sepvae.results.figures import EXTRA_METRICS, OFF_SCALE_DB, PAPER_METRICS, violin_figure
from sepvae.results.stats import (
    IMPROVEMENTS,
    TABLE_METRICS,
    dropped_counts,
    method_labels,
    metric_name,
    metric_unit,
    metric_values,
    read_metrics,
    summary_table,
)
from sepvae.results.tables import Table, markdown_lines

# The report's violin figures: file, metrics, caption (report.md and index.html show them).
VIOLIN_FIGURES = (
    ("violins.png", PAPER_METRICS, "SAR, SDR and SIR as in the paper's Figures 21/22, plus PESQ"),
    ("violins_extra.png", EXTRA_METRICS, "SI-SDR, STOI and improvements over the unprocessed mixture"),
)
VIOLIN_NOTE = ("Black bar: median; dots: single (mixture, source) values coloured by source; n under each "
               f"method; dB values beyond ±{OFF_SCALE_DB:g} dB (the mixture's own SAR) are counted at the top.")
RESULTS_NOTE = ("Median (mean ± std) over all (mixture, source) pairs; SDRi is the median SDR improvement "
                "over the unprocessed mixture. *: some values were NaN and were left out (see Missing values).")


def markdown_table(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Render :func:`summary_table` as a Markdown table: ``median (mean ± std)`` per metric.

    Cells with NaN/Inf values dropped get ``*``; a metric without any value shows ``–``.
    """
    return "\n".join(markdown_lines(summary_cells(table, metrics))) + "\n"


def summary_cells(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] = TABLE_METRICS,
                  caption: str = "") -> Table:
    """:func:`summary_table` as a :class:`Table`: ``median (mean ± std)`` per metric, ``*``
    where NaN/Inf values were dropped, ``–`` for a metric without any value."""
    by_source = any("source" in entry for entry in table)
    header = ["method"] + (["source"] if by_source else []) + ["n"]
    header += [f"{metric_name(m)}" + (f" ({metric_unit(m)})" if metric_unit(m) else "") for m in metrics]
    header.append("SDRi median (dB)")
    n_text = len(header) - len(metrics) - 1
    digits = {m: 3 if IMPROVEMENTS.get(m, m) == "stoi" else 2 for m in metrics}
    rows = []
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
        rows.append(tuple(cells))
    return Table(tuple(header), tuple(rows), (False,) * n_text + (True,) * (len(metrics) + 1), caption)


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
    for name, metrics, caption in VIOLIN_FIGURES:
        shown = [m for m in metrics if np.isfinite(metric_values(rows, m)).any()]
        if shown:
            violin_figure(rows, shown, title=f"{title}: {', '.join(metric_name(m) for m in shown)}",
                          out_png=out_dir / name)
            figures.append((name, caption))

    all_metrics = sorted(set(TABLE_METRICS) | set(PAPER_METRICS) | set(EXTRA_METRICS), key=str)
    dropped = dropped_counts(rows, all_metrics)
    labels = list(method_labels(rows).values())
    lines = [f"# {title}", "", "## What was run", ""]
    lines += [f"- {fact}" for fact in run_facts(rows, metrics_csv)]
    lines += [
        "",
        "## Results",
        "",
        RESULTS_NOTE,
        "",
        markdown_table(table),
        "### Per source",
        "",
        markdown_table(by_source),
    ]
    if figures:
        lines += ["## Violin plots", ""]
        for name, caption in figures:
            lines += [f"![{caption}]({name})", "", f"*{caption}. {VIOLIN_NOTE}*", ""]
    if spectrogram_png is not None:
        lines += ["## Spectrograms", "", f"![spectrograms]({_place(Path(spectrogram_png), out_dir)})", ""]
    for heading, body in (extra_sections or {}).items():
        lines += [f"## {heading}", "", body.rstrip(), ""]
    lines += ["## Missing values", ""]
    if dropped:
        lines.append("NaN/Inf values left out of the table and plots (method: metric count):")
        lines.append("")
        lines += [f"- {text}" for text in dropped_lines(dropped)]
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


def run_facts(rows: Sequence[Mapping[str, Any]], metrics_csv: Path) -> list[str]:
    """What was run, one sentence each: the metrics file, experiments, mixtures, sources, methods."""
    labels = list(method_labels(rows).values())
    experiments = list(dict.fromkeys(row["experiment"] for row in rows))
    sources = list(dict.fromkeys(row["source"] for row in rows))
    mixtures = {(row["experiment"], row["mixture_id"]) for row in rows}
    return [
        f"metrics: {metrics_csv} ({len(rows)} rows, one per mixture, source and method)",
        f"experiment{'s' if len(experiments) > 1 else ''}: {', '.join(experiments)}",
        f"{len({m for _, m in mixtures})} test mixture(s); sources: {', '.join(sources)}",
        f"methods (x axis order): {', '.join(labels)}",
        f"source mode(s): {', '.join(dict.fromkeys(row['source_mode'] for row in rows))}",
    ]


def dropped_lines(dropped: Mapping[str, Mapping[str, int]]) -> list[str]:
    """``method: metric count, ...`` per method of :func:`dropped_counts`."""
    return [f"{label}: " + ", ".join(f"{metric_name(m)} {n}" for m, n in counts.items())
            for label, counts in dropped.items()]


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

