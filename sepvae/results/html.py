"""The HTML pages of the results: an experiment's listening report and the sweeps' results.

- :func:`write_report_html`: ``reports/<experiment>/index.html``, the tables and figures of
  ``report.md`` plus, for the first test mixtures, audio players for the mixture, the
  references and every method's estimates, each with its scores and a spectrogram.
- :func:`write_results_html`: ``experiments/results.html``, the figures and verdict tables
  of ``RESULTS.md``.

The pages are plain HTML with inline CSS and no script: the browser's own ``<audio
controls>`` plays the audio, and every link is relative, so a report folder opens from disk
or any static server. Every string from the data goes through :func:`html.escape`; tables
come as :class:`~sepvae.results.tables.Table`, the same data the Markdown writers render.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sepvae.results.tables import Cell, Styled, Table, cell_text

LISTEN_DEFAULT = 10  # mixtures with audio players: ~27 clips each at 12 methods keeps a report folder small
AUDIO_DIR = "audio"
CLIP_SCORES = (("sdr", "SDR", 1), ("sir", "SIR", 1), ("sar", "SAR", 1), ("pesq", "PESQ", 2))

CSS = """
body { font: 16px/1.45 system-ui, sans-serif; max-width: 75rem; margin: 0 auto; padding: 0 1rem 3rem;
       color: #1b1b1b; background: #fff; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.6rem; }
nav a { margin-right: 1.2rem; }
.wide { overflow-x: auto; margin: .4rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .85rem; }
.nowrap { white-space: nowrap; }
caption { caption-side: top; text-align: left; padding: .3rem 0; color: #333; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f2f2f2; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #444; }
.listen table { width: 100%; } .listen td { min-width: 14rem; } .listen th[scope="row"] { width: 9rem; }
.clip img { display: block; width: 100%; height: 64px; }
.clip audio { display: block; width: 100%; margin-top: .2rem; }
.scores { margin: .15rem 0 0; font-size: .82rem; font-variant-numeric: tabular-nums; color: #333; }
.note { background: #fff6dd; border-left: 4px solid #e0b000; padding: .4rem .8rem; }
"""


@dataclass(frozen=True)
class Figure:
    src: str  # relative to the page
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Section:
    """A ``<section>``: heading, paragraphs, figures, tables, collapsed tables, raw HTML."""

    heading: str
    anchor: str
    paragraphs: tuple[str, ...] = ()
    figures: tuple[Figure, ...] = ()
    tables: tuple[Table, ...] = ()
    details: tuple[tuple[str, Table], ...] = ()  # (summary, table), shown collapsed
    raw_html: str = ""  # already escaped (the listening tables)


@dataclass(frozen=True)
class MixtureAudio:
    """Where one test mixture's audio is: the mixture, each source's reference, and each
    method's estimates (``(method, source_mode) -> {source: wav}``, keys as in metrics.csv)."""

    mixture_id: str
    mixture: Path
    references: Mapping[str, Path]
    estimates: Mapping[tuple[str, str], Mapping[str, Path]] = field(default_factory=dict)


@dataclass(frozen=True)
class Listening:
    """The mixtures to put players on, how many test mixtures there are, and why audio is
    missing (shown on the page) if it is."""

    mixtures: tuple[MixtureAudio, ...] = ()
    n_test: int = 0
    problem: str = ""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: Table) -> str:
    """A ``<table>`` with its caption, column headers and row headers, in a scrolling box."""
    head = "".join(f'<th scope="col"{_classes(n)}>{_e(h)}</th>' for h, n in zip(table.header, table.numeric))
    # Short row names (methods) stay on one line; long ones (the findings) wrap.
    short = table.row_header is not None and all(len(cell_text(row[table.row_header])) <= 24 for row in table.rows)
    body = []
    for row in table.rows:
        cells = []
        for i, (cell, numeric) in enumerate(zip(row, table.numeric)):
            if i == table.row_header:
                cells.append(f'<th scope="row"{_classes(numeric, short)}>{_cell_html(cell, numeric)}</th>')
            else:
                cells.append(f"<td{_classes(numeric)}>{_cell_html(cell, numeric)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    label = f' aria-label="{_e(table.caption)}"' if table.caption else ""
    return (f'<div class="wide" role="region" tabindex="0"{label}><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _classes(numeric: bool, nowrap: bool = False) -> str:
    names = ["num"] * numeric + ["nowrap"] * nowrap
    return f' class="{" ".join(names)}"' if names else ""


def _cell_html(cell: Cell, numeric: bool = False) -> str:
    if numeric and not isinstance(cell, Styled):
        # A number never wraps (not even "1.91e-06" at its hyphen), but a wide table may
        # wrap "median (mean ± std)" before the parenthesis.
        head, parenthesis, tail = _e(cell).partition(" (")
        return f'<span class="nowrap">{head}</span>' + (f' <span class="nowrap">({tail}</span>' if parenthesis else "")
    if not isinstance(cell, Styled):
        return _e(cell)
    if cell.style == "link":
        return f'<a href="{_e(cell.href)}">{_e(cell.text)}</a>'
    return f"<{cell.style}>{_e(cell.text)}</{cell.style}>"


def figure_html(figure: Figure) -> str:
    caption = f"<figcaption>{_e(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure><img src="{_e(_url(figure.src))}" alt="{_e(figure.alt)}" loading="lazy">{caption}</figure>'


def _url(relative: str) -> str:
    """A relative file path as a URL path (spaces, ``#`` and ``?`` in names would break links)."""
    return quote(relative, safe="/")


def page(title: str, sections: Sequence[Section], intro: Sequence[str] = ()) -> str:
    """A whole HTML document: title, a contents bar of the sections, the sections."""
    nav = " ".join(f'<a href="#{_e(s.anchor)}">{_e(s.heading)}</a>' for s in sections)
    parts = [f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{_e(title)}</title>\n"
             # An empty icon: otherwise every visit asks the server for a favicon.ico that is not there.
             "<link rel=\"icon\" href=\"data:,\">\n"
             f"<style>{CSS}</style>\n</head>\n<body>\n<header><h1>{_e(title)}</h1>",
             *[f"<p>{_e(text)}</p>" for text in intro], f'<nav aria-label="Sections">{nav}</nav></header>\n<main>']
    for section in sections:
        parts.append(f'<section id="{_e(section.anchor)}" aria-labelledby="{_e(section.anchor)}-h">'
                     f'<h2 id="{_e(section.anchor)}-h">{_e(section.heading)}</h2>')
        parts += [f"<p>{_e(text)}</p>" for text in section.paragraphs]
        parts += [figure_html(figure) for figure in section.figures]
        parts += [table_html(table) for table in section.tables]
        parts += [f"<details><summary>{_e(summary)}</summary>{table_html(table)}</details>"
                  for summary, table in section.details]
        parts += [section.raw_html, "</section>"]
    return "\n".join(parts + ["</main>\n</body>\n</html>\n"])


def _write_page(path: Path, text: str) -> Path:
    from sepvae.io import write_text

    write_text(path, text)
    return path


# ---------------------------------------------------------------------------------------
# The results page


def write_results_html(out: Path, experiments: Table, results: Sequence[Any], sections: Sequence[Section]) -> Path:
    """``results.html``: the experiments, the verdicts with every comparison behind them
    (collapsed), and one section per experiment (its figure and tables)."""
    from sepvae.results.verdicts_md import comparison_table, comparisons_summary, verdict_table

    verdicts = Section(
        "Verdicts", "verdicts",
        paragraphs=("One row per finding of the paper's Section 8, tested on paired (mixture, source) estimates "
                    "of the gender models. Our numbers: the medians of the two methods and the median paired "
                    "difference Δ = a − b with its bootstrap 95 % CI; p: two-sided Wilcoxon signed-rank. "
                    "RESULTS.md beside this page says how the verdicts are reached and discusses them.",),
        tables=(verdict_table(list(results)),),
        details=tuple((comparisons_summary(r), comparison_table(r.judged)) for r in results if r.judged),
    )
    listed = Section("Experiments", "experiments", tables=(experiments,))
    intro = ["Generated by sepvae results from each experiment's metrics.csv and training.json; "
             "the same figures and tables as RESULTS.md."]
    return _write_page(out, page("Results: the paper's Section 8 findings, tested",
                                 [listed, verdicts, *sections], intro))


# ---------------------------------------------------------------------------------------
# The listening report


def write_report_html(metrics_csv: Path, out_dir: Path, title: str, listening: Listening,
                      spectrogram_png: Path | None = None) -> Path:
    """``out_dir/index.html`` beside the ``report.md`` that :func:`write_report` wrote there
    (its ``summary.json`` names the violin figures), with audio copied into ``out_dir/audio``.

    Every clip of a shown mixture becomes a 16-bit FLAC at its own level (so loudness
    differences between methods stay audible) with a spectrogram thumbnail on the mixture's
    colour scale. Returns the path of ``index.html``.
    """
    import json
    import shutil

    from sepvae.results.report_md import (
        RESULTS_NOTE, VIOLIN_FIGURES, VIOLIN_NOTE, dropped_lines, run_facts, summary_cells,
    )
    from sepvae.results.stats import TABLE_METRICS, dropped_counts, read_metrics, summary_table

    rows = read_metrics(metrics_csv)
    summary = out_dir / "summary.json"
    shown = set(json.loads(summary.read_text()).get("figures", [])) if summary.is_file() else set()
    figures = tuple(Figure(name, f"Violin plots: {caption}", f"{caption}. {VIOLIN_NOTE}")
                    for name, _, caption in VIOLIN_FIGURES if name in shown)
    sections = [
        Section("What was run", "run", paragraphs=tuple(run_facts(rows, metrics_csv))),
        Section("Results", "results", paragraphs=(RESULTS_NOTE,),
                tables=(summary_cells(summary_table(rows), caption="All sources"),
                        summary_cells(summary_table(rows, by_source=True), caption="Per source"))),
        Section("Violin plots", "violins", figures=figures),
    ]
    if spectrogram_png is not None:
        sections.append(Section("Spectrograms", "spectrograms", figures=(Figure(
            spectrogram_png.name, "Spectrograms and masks of the first test mixture: mixture, true sources, "
            "one model's estimates and masks"),)))
    shutil.rmtree(out_dir / AUDIO_DIR, ignore_errors=True)  # clips of mixtures no longer shown
    sections.append(Section("Listen", "listen", paragraphs=_listen_notes(listening),
                            raw_html=_listening_html(rows, listening, out_dir)))
    dropped = dropped_lines(dropped_counts(rows, TABLE_METRICS))
    sections.append(Section("Missing values", "missing", paragraphs=tuple(dropped) or ("None: every score in the "
                                                                                         "tables is finite.",)))
    return _write_page(out_dir / "index.html", page(title, sections))


def _listen_notes(listening: Listening) -> tuple[str, ...]:
    notes = []
    if listening.mixtures:
        notes.append(f"Showing {len(listening.mixtures)} of {listening.n_test} test mixtures (the first in the "
                     "manifest; sepvae report --listen N shows more, at about 0.2 MB per mixture and method). "
                     "Under each estimate: its SDR, SIR, SAR (dB) and PESQ; under the mixture: the unprocessed "
                     "mixture's scores against each source. Spectrograms: 0–8 kHz, time left to right, "
                     "80 dB range, one colour scale per mixture. Audio: 16-bit FLAC, levels as separated.")
    if listening.problem:
        notes.append(f"Audio: {listening.problem}")
    elif not listening.mixtures:
        notes.append("No audio: the report was written with sepvae report --listen 0.")
    return tuple(notes)


def _listening_html(rows: Sequence[Mapping[str, Any]], listening: Listening, out_dir: Path) -> str:
    from sepvae.results.stats import method_labels

    labels = method_labels(rows)
    scores = {(r["method"], r["source_mode"], r["mixture_id"], r["source"]): r for r in rows}
    inputs = {(r["mixture_id"], r["source"]): r for r in rows}  # input_* are the same on every method's row
    parts = []
    for mixture in listening.mixtures:
        clips = _Clips(out_dir, mixture)
        sources = list(mixture.references)
        mixture_scores = "; ".join(f"{source}: {_score_text(inputs[mixture.mixture_id, source], 'input_')}"
                                   for source in sources if (mixture.mixture_id, source) in inputs)
        head = "".join(f'<th scope="col">{_e(source)}</th>' for source in sources)
        body = [f'<tr><th scope="row">input mixture</th><td colspan="{len(sources)}">'
                f"{clips.cell('mixture', mixture.mixture, 'the mixture', mixture_scores)}</td></tr>",
                '<tr><th scope="row">true source</th>' + "".join(
                    f"<td>{clips.cell(f'reference {s}', mixture.references[s], f'the {s} reference', '')}</td>"
                    for s in sources) + "</tr>"]
        for key, estimates in mixture.estimates.items():
            label = labels.get(key, key[0])
            cells = []
            for source in sources:
                row = scores.get((*key, mixture.mixture_id, source))
                cell = clips.cell(f"{label} {source}", estimates[source], f"{label}'s {source} estimate",
                                  _score_text(row, "") if row else "")
                cells.append(f"<td>{cell}</td>")
            body.append(f'<tr><th scope="row">{_e(label)}</th>{"".join(cells)}</tr>')
        anchor = f"mixture-{_slug(mixture.mixture_id)}"
        parts.append(f'<h3 id="{_e(anchor)}">Mixture {_e(mixture.mixture_id)}</h3>'
                     f'<div class="wide listen" role="region" tabindex="0" aria-labelledby="{_e(anchor)}"><table>'
                     f"<caption>Mixture {_e(mixture.mixture_id)}: the mixture, the true sources and each method's "
                     f'estimates</caption><thead><tr><th scope="col">clip</th>{head}</tr></thead>'
                     f"<tbody>{''.join(body)}</tbody></table></div>")
    return "\n".join(parts)


def _score_text(row: Mapping[str, Any], prefix: str) -> str:
    parts = []
    for metric, name, digits in CLIP_SCORES:
        value = float(row[prefix + metric])
        parts.append(f"{name} {value:.{digits}f}" if math.isfinite(value) else f"{name} –")
    return " · ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


class _Clips:
    """Copies one mixture's clips into ``audio/<mixture>/`` and writes their player cells."""

    def __init__(self, out_dir: Path, mixture: MixtureAudio):
        from sepvae.io import read_audio, to_mono

        self.out_dir = out_dir
        self.folder = Path(AUDIO_DIR) / _slug(mixture.mixture_id)
        audio, self.rate = read_audio(mixture.mixture)
        self.peak = float(_magnitude(to_mono(audio), self.rate).max())  # the thumbnails' common colour scale
        self.count = 0

    def cell(self, name: str, source: Path, description: str, scores: str) -> str:
        from sepvae.results.figures import spectrogram_thumbnail

        self.count += 1  # numbered: two labels may have the same slug
        stem = (self.folder / f"{self.count:02d}-{_slug(name)}").as_posix()
        audio = _copy_clip(source, self.out_dir / f"{stem}.flac")
        spectrogram_thumbnail(self.out_dir / f"{stem}.png", _magnitude(audio, self.rate), self.peak)
        flac, png = _url(f"{stem}.flac"), _url(f"{stem}.png")
        text = f'<p class="scores">{_e(scores)}</p>' if scores else ""
        return (f'<div class="clip"><img src="{_e(png)}" alt="Spectrogram of {_e(description)}">'
                f'<audio controls preload="none" src="{_e(flac)}" aria-label="{_e(description)}">'
                f'<a href="{_e(flac)}">Download {_e(description)}</a></audio>{text}</div>')


def _copy_clip(source: Path, out: Path):
    """Write ``source`` (any WAV) as 16-bit FLAC at ``out``; returns the samples, mono float32."""
    import numpy as np
    import soundfile as sf

    from sepvae.io import atomic_output, read_audio, to_mono

    audio, rate = read_audio(source)
    audio = to_mono(audio)
    with atomic_output(out) as tmp:
        # Estimates may exceed full scale a little after masking: clip rather than wrap around.
        sf.write(tmp, np.clip(audio, -1.0, 1.0), rate, subtype="PCM_16", format="FLAC")
    return audio


def _magnitude(audio, rate: int):
    """The magnitude spectrogram (bins, frames) of a mono clip at the default STFT setting."""
    import torch

    from sepvae.config import StftConfig
    from sepvae.features import spectrogram

    return spectrogram(torch.from_numpy(audio), StftConfig(), rate).abs().numpy()
