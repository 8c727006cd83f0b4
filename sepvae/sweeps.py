"""The paper's sweeps side by side, and its findings tested: ``experiments/RESULTS.md``.

:func:`write_results` reads each experiment's ``reports/<name>/metrics.csv`` (and the
``history.json`` of its trained models for wall times) and writes ``RESULTS.md`` with one
small violin figure per experiment under ``results/`` beside it, a table of medians per
experiment, and a **Verdicts** table: one row per finding that Section 8 of the paper
states, each tested with paired comparisons on the same (mixture, source) estimates.

Labels. An experiment's method label is ``"<x value>[ <series>]"``: the first word is the
value on the x axis (``"E"``, ``"64"``, ``"vae"``), the rest names a series drawn beside
the others at that x (``"hop"``, ``"irm"``, ``"hop irm"`` in the window sweep). The x axis
keeps file order.

Findings belong to an experiment *family*: the experiment name without ``-large``, so the
larger test set of a sweep (``test_pairs = "all"``) is judged by the same findings.

How a finding is judged. A finding is one or more paired comparisons ``(metric, claim, a,
b)`` judged by :func:`sepvae.report.verdict` on :func:`sepvae.report.paired_comparison`
(the bootstrap 95 % CI of the median paired difference and the Wilcoxon signed-rank p):

- ``"a>b"``, ``"a<b"``: a direction; ``"a~b"``: no clear difference, i.e. the CI lies within
  ±``MARGIN_DB``; ``"a>>b"``: better *by a wide margin*, i.e. ``a>b`` and the CI lies above
  ``WIDE_DB``. A direction not shown while the CI lies within ±``MARGIN_DB`` disagrees: the
  claimed difference is absent.
- A finding of k comparisons *agrees* only if every comparison agrees, each at alpha = 0.05
  (an intersection-union test: valid without a multiplicity correction, and conservative);
  it *disagrees* if at least one comparison disagrees at alpha / k (Bonferroni); otherwise
  it is *inconclusive*.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sepvae.config import STFT_SETTINGS, Experiment, load_experiment
from sepvae.errors import SepvaeError
from sepvae.pipeline import Paths, manifest_of, metrics_path
from sepvae.report import (
    OFF_SCALE_DB,
    draw_violin,
    label_panel,
    metric_name,
    metric_unit,
    metric_values,
    paired_comparison,
    read_metrics,
    summary_table,
    verdict,
)

ALPHA = 0.05
MARGIN_DB = 1.0  # "no clear difference": the CI of the median paired difference within ±1 dB
WIDE_DB = 1.0  # "by a wide margin": the CI of the median paired difference above 1 dB
FIGURE_METRICS = ("sar", "sdr", "sir", "pesq")  # the paper's panels (a) SAR (b) SDR (c) SIR, plus PESQ
BSS_METRICS = ("sdr", "sir", "sar")  # what the paper's "no clear difference in SIR, SDR, and SAR" covers
LARGE_SUFFIX = "-large"
# The experiments RESULTS.md covers, in its order; each may have a "-large" twin.
SWEEPS = ("sweep-window", "sweep-latent", "sweep-batch", "sweep-beta", "sweep-itl-latent", "compare-models")
FIGURE_DPI = 80
REFERENCE_KINDS = ("mixture", "oracle-irm", "oracle-ibm")
DISCUSSION = "## Discussion"
DISCUSSION_PLACEHOLDER = (
    "*Hand-written: what the verdicts mean, what differs from the paper and why. "
    "`sepvae results` keeps this section as it is and regenerates everything else.*\n\n"
    "(not written yet)\n"
)

# Legend of the window sweep's series (the label's words after the setting letter).
WINDOW_SERIES = {
    "": "VAE, hop = window − overlap",
    "hop": "VAE, hop = 2nd number",
    "irm": "oracle IRM, hop = window − overlap",
    "hop irm": "oracle IRM, hop = 2nd number",
}
READINGS = {"": "overlap reading (hop = window − overlap)", "hop": "hop reading (hop = the 2nd number)"}


# ---------------------------------------------------------------------------------------
# The paper's findings


@dataclass(frozen=True)
class Comparison:
    """One paired test: ``claim`` ("a>b", "a<b", "a~b", "a>>b") about ``metric`` of a vs b."""

    metric: str
    claim: str
    a: str
    b: str


@dataclass(frozen=True)
class Finding:
    """A statement of the paper's Section 8 and the comparisons that test it."""

    family: str  # the experiment it is tested on (name without "-large")
    name: str  # short form, the row's first cell
    paper: str  # the paper's words
    comparisons: tuple[Comparison, ...]
    # (a, b): a's training takes more wall time per epoch than b's (from history.json).
    slower: tuple[str, str] | None = None


def _pairs(metrics: Sequence[str], claim: str, group_a: Sequence[str], group_b: Sequence[str]) -> tuple[Comparison, ...]:
    return tuple(Comparison(m, claim, a, b) for m in metrics for a in group_a for b in group_b)


def _within(metrics: Sequence[str], group: Sequence[str]) -> tuple[Comparison, ...]:
    """Every pair of the group: "no clear difference among them"."""
    return tuple(Comparison(m, "a~b", a, b) for m in metrics for a, b in itertools.combinations(group, 2))


def window_findings(series: str = "") -> list[Finding]:
    """The window sweep's findings under one reading: ``series`` "" (overlap) or "hop".

    "Fared worse", "best overall" and "worse" are judged on SDR, the BSS Eval measure that
    counts both interference and artifacts.
    """
    s = f" {series}" if series else ""
    label = {letter: letter + s for letter in STFT_SETTINGS}
    A, B, C, D, E, F, G, H = (label[x] for x in "ABCDEFGH")
    return [
        Finding("sweep-window", "64 ms windows fared worse than 32 and 16 ms",
                "Using a 64 ms window size fared worse than a 32 ms window and a 16 ms window.",
                _pairs(["sdr"], "a<b", [A, B], [C, D, E, F])),
        Finding("sweep-window", "64/32 gives better SAR than 64/16",
                "Using 64 ms window with 32 ms overlap size resulted in a better SAR than using "
                "64 ms window with 16 ms overlap size.",
                _pairs(["sar"], "a>b", [B], [A])),
        Finding("sweep-window", "(16 ms, 8 ms) best by a wide margin",
                "Using a 16 ms window size with 8 ms overlap size had the best overall results by a wide margin.",
                _pairs(["sdr"], "a>>b", [E], [A, B, C, D, F, G, H])),
        Finding("sweep-window", "8 ms worse than 16 ms",
                "When the window size went down to 8 ms, the results became worse than 16 ms window size.",
                _pairs(["sdr"], "a<b", [G, H], [E, F])),
    ]


FINDINGS: tuple[Finding, ...] = (
    *window_findings(""),
    Finding("sweep-latent", "no clear difference across latent sizes",
            "We varied the latent code size d. [...] The experiment found no clear difference in SIR, SDR, and SAR.",
            _within(BSS_METRICS, ["8", "16", "32", "64", "128"])),
    Finding("sweep-batch", "no clear difference across batch sizes 17-70",
            "For batch sizes 17, 34, and 70, there was no clear difference between varying the batch size.",
            _within(BSS_METRICS, ["17", "34", "70"])),
    Finding("sweep-batch", "batch 1 costs time, not performance",
            "Using batch size 1 increased the time while not changing the performance.",
            _pairs(BSS_METRICS, "a~b", ["1"], ["70"]), slower=("1", "70")),
    Finding("sweep-beta", "no discernible difference among beta > 1",
            "For beta > 1, there is no discernible difference between the various beta's.",
            _within(BSS_METRICS, ["2", "4", "8", "16"])),
    Finding("sweep-itl-latent", "no difference across ITL-AE latent sizes",
            "We varied the latent code size in the range [32, 64, 128, 256]. There was no discernible "
            "difference between the various latent codes.",
            _within(BSS_METRICS, ["32", "64", "128", "256"])),
    Finding("compare-models", "VAE and beta-VAE similar",
            "The VAE and beta-VAE have similar results.",
            _pairs(BSS_METRICS, "a~b", ["vae"], ["beta-vae"])),
    Finding("compare-models", "ITL-AE: worse SAR, similar SDR, better SIR than VAE",
            "The ITL-AE has a worse SAR, similar SDR, and a better SIR.",
            (Comparison("sar", "a<b", "itl-ae", "vae"), Comparison("sdr", "a~b", "itl-ae", "vae"),
             Comparison("sir", "a>b", "itl-ae", "vae"))),
)

# "Batch 1 costs time": its mean epoch wall time at least this many times batch 70's.
SLOWER_FACTOR = 1.5


# ---------------------------------------------------------------------------------------
# Judging


@dataclass
class Judged:
    """A comparison with its statistics and its verdict."""

    comparison: Comparison
    stats: dict[str, Any]
    verdict: str
    reason: str


@dataclass
class FindingResult:
    finding: Finding
    experiment: str  # the experiment's name
    verdict: str  # agree, disagree, inconclusive, not run yet, unavailable
    reason: str
    judged: list[Judged] = field(default_factory=list)
    shown: Judged | None = None  # the comparison that decided the verdict
    time_note: str = ""


def judge(stats: Mapping[str, Any], claim: str, alpha: float = ALPHA) -> tuple[str, str]:
    """:func:`sepvae.report.verdict`, extended in two ways.

    ``"a>>b"``: ``a>b`` with the CI above ``WIDE_DB`` ("by a wide margin"). And a direction
    (``"a>b"``, ``"a<b"``, ``"a>>b"``) that is not shown while the CI lies within
    ±``MARGIN_DB`` is a disagreement: the two are equivalent, the claimed difference absent.
    """
    unit = f" {stats['unit']}" if stats.get("unit") else ""
    result, reason = verdict(stats, "a>b" if claim == "a>>b" else claim, margin=MARGIN_DB, alpha=alpha)
    low, high = stats["ci_low"], stats["ci_high"]
    if result == "inconclusive" and claim != "a~b" and -MARGIN_DB <= low and high <= MARGIN_DB:
        return "disagree", f"no difference of {MARGIN_DB:g}{unit} either way: {reason}"
    if claim != "a>>b" or result != "agree":
        return result, reason
    if low >= WIDE_DB:
        return "agree", f"{reason}; CI above the {WIDE_DB:g}{unit} margin"
    if high < WIDE_DB:
        return "disagree", f"better, but not by a wide margin: {reason}, CI below {WIDE_DB:g}{unit}"
    return "inconclusive", f"better, but the CI reaches below {WIDE_DB:g}{unit}: {reason}"


def _weakness(j: Judged) -> float:
    """How close a comparison is to not supporting its claim (larger = weaker)."""
    if j.comparison.claim == "a~b":
        low, high = j.stats["ci_low"], j.stats["ci_high"]
        return max(abs(low), abs(high)) if math.isfinite(low) else math.inf
    p = j.stats["p_value"]
    return p if math.isfinite(p) else math.inf


def judge_finding(finding: Finding, rows: Sequence[Mapping[str, Any]], experiment: str,
                  times: Mapping[str, Mapping[str, Any]] | None = None, large: bool = False) -> FindingResult:
    """Test one finding on one experiment's rows (see the module docstring for the rule)."""
    k = len(finding.comparisons)
    judged = []
    for comparison in finding.comparisons:
        try:
            stats = paired_comparison(rows, comparison.metric, comparison.a, comparison.b)
        except SepvaeError as exc:
            return FindingResult(finding, experiment, "unavailable", str(exc))
        result, reason = judge(stats, comparison.claim, ALPHA)
        if result == "disagree":
            strict, strict_reason = judge(stats, comparison.claim, ALPHA / k)
            if strict != "disagree":
                result, reason = "inconclusive", f"{reason}, but not at alpha/{k} = {ALPHA / k:.3g}"
            else:
                reason = strict_reason
        judged.append(Judged(comparison, stats, result, reason))

    verdicts = [j.verdict for j in judged]
    n_agree = verdicts.count("agree")
    if "disagree" in verdicts:
        result = "disagree"
        shown = min((j for j in judged if j.verdict == "disagree"), key=lambda j: j.stats["p_value"])
    elif n_agree == k:
        result = "agree"
        shown = max(judged, key=_weakness)
    else:
        result = "inconclusive"
        shown = max((j for j in judged if j.verdict == "inconclusive"), key=_weakness)
    reason = shown.reason
    if k > 1:
        reason = f"{n_agree}/{k} comparisons agree, {verdicts.count('disagree')} disagree; shown: {reason}"

    time_note = ""
    if finding.slower is not None:
        slow, fast = finding.slower
        t_slow, t_fast = (times or {}).get(slow), (times or {}).get(fast)
        if not (t_slow and t_fast and t_slow.get("seconds_per_epoch") and t_fast.get("seconds_per_epoch")):
            time_note = "training times not found (run dirs or history.json missing)"
            if result == "agree":
                result = "inconclusive"
        else:
            ratio = t_slow["seconds_per_epoch"] / t_fast["seconds_per_epoch"]
            time_note = (f"time per epoch: {slow} {t_slow['seconds_per_epoch']:.1f} s vs {fast} "
                         f"{t_fast['seconds_per_epoch']:.1f} s ({ratio:.0f}x); whole training {slow} "
                         f"{_minutes(t_slow['seconds'])} ({t_slow['epochs']} epochs) vs {fast} "
                         f"{_minutes(t_fast['seconds'])} ({t_fast['epochs']} epochs)")
            if ratio < SLOWER_FACTOR:
                result = "disagree"
                reason = f"batch {slow} is not slower per epoch ({ratio:.2f}x); {reason}"
    if result == "inconclusive" and not large:
        n = shown.stats["n"]
        reason += (f". {n} estimates per violin are too few to decide: run "
                   f"experiments/{finding.family}{LARGE_SUFFIX}.toml (test_pairs = \"all\")")
    return FindingResult(finding, experiment, result, reason, judged, shown, time_note)


# ---------------------------------------------------------------------------------------
# Training wall times


def training_time(run: Path) -> dict[str, Any] | None:
    """Wall time of a finished training run from its ``history.json``, or None.

    Returns ``{"epochs", "seconds", "seconds_per_epoch", "best_epoch"}``: epochs run, their
    summed wall time, its mean per epoch, and the epoch with the lowest summed validation
    loss (the weights kept).
    """
    path = Path(run) / "history.json"
    if not path.is_file():
        return None
    history = json.loads(path.read_text())
    if not history:
        return None
    seconds = [float(epoch.get("seconds", math.nan)) for epoch in history]
    validation = [sum(v["val_recon"] for v in epoch.values() if isinstance(v, dict) and "val_recon" in v)
                  for epoch in history]
    total = float(np.sum(seconds))
    return {
        "epochs": len(history),
        "seconds": total,
        "seconds_per_epoch": total / len(history),
        "best_epoch": int(history[int(np.argmin(validation))]["epoch"]) if validation else None,
    }


def training_times(experiment: Experiment, paths: Paths = Paths()) -> dict[str, dict[str, Any]]:
    """label -> :func:`training_time` of each trained model method (gender mode) found.

    Looks the run directory up without making mixtures: methods whose mixtures or runs are
    not there are left out.
    """
    from sepvae.pipeline import sample_rate_of
    from sepvae.train import run_dir

    manifest = _existing_manifest(experiment, paths)
    if manifest is None:
        return {}
    try:
        rate = sample_rate_of(manifest)
    except (SepvaeError, OSError):
        return {}
    times = {}
    for method in experiment.methods:
        if method.model is None or method.source_mode != "gender":
            continue
        found = training_time(run_dir(method, manifest, rate, paths.runs))
        if found is not None:
            times[method.label] = {**found, "epoch_budget": method.train.epochs,
                                   "batch_size": method.train.batch_size}
    return times


def _existing_manifest(experiment: Experiment, paths: Paths) -> Path | None:
    try:
        manifest = manifest_of(experiment, paths, make=False)
    except (SepvaeError, OSError):
        return None
    return manifest if manifest.is_file() else None


def _minutes(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------------------------------
# Figures


def split_label(label: str) -> tuple[str, str]:
    """``"A hop irm"`` -> ``("A", "hop irm")``: the x value and the series."""
    x, _, series = label.strip().partition(" ")
    return x, series.strip()


def family_of(name: str) -> str:
    return name[: -len(LARGE_SUFFIX)] if name.endswith(LARGE_SUFFIX) else name


def sweep_figure(rows: Sequence[Mapping[str, Any]], experiment: Experiment, out_png: str | Path,
                 metrics: Sequence[str] = FIGURE_METRICS) -> Path:
    """One violin panel per metric; x = the swept value, series side by side.

    Reference methods (oracle masks, mixture) that share their x with other series are drawn
    as a median marker with an interquartile bar; everything else as a violin with its
    median (black bar) and its single values (dots). dB values beyond ±``OFF_SCALE_DB`` (the
    mixture's own SAR) are counted at the top instead of drawn.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from sepvae.io import atomic_output

    if not rows:
        raise SepvaeError(f"no metrics rows to plot for {out_png}")
    kinds = {m.label: m.kind for m in experiment.methods if m.source_mode == "gender"}
    labels = list(dict.fromkeys(row["method"] for row in rows if row["source_mode"] == "gender"))
    groups = {label: [row for row in rows if row["method"] == label and row["source_mode"] == "gender"]
              for label in labels}
    xs = list(dict.fromkeys(split_label(label)[0] for label in labels))
    series = list(dict.fromkeys(split_label(label)[1] for label in labels))
    shared_x = {x: sum(split_label(label)[0] == x for label in labels) > 1 for x in xs}
    family = family_of(experiment.name)
    colors = {s: f"C{i}" for i, s in enumerate(series)}
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
            if kinds.get(label) in REFERENCE_KINDS and shared_x[x]:
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
    out_png = Path(out_png)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    return out_png


# ---------------------------------------------------------------------------------------
# RESULTS.md


@dataclass
class _Run:
    """One experiment as found on disk."""

    path: Path
    experiment: Experiment
    rows: list[dict[str, Any]] | None  # None: not run yet
    times: dict[str, dict[str, Any]]
    problem: str = ""

    @property
    def large(self) -> bool:
        return self.experiment.mix.test_pairs == "all"


def write_results(experiments: list[Path], paths: Paths = Paths(),
                  out: Path = Path("experiments/RESULTS.md")) -> Path:
    """Write ``out`` (RESULTS.md) and one violin PNG per experiment in ``out.parent/results/``.

    ``experiments``: experiment TOML files, in the order their sections appear. An
    experiment whose ``metrics.csv`` is missing is listed as not run yet. The section under
    ``## Discussion`` of an existing ``out`` is kept as it is; the rest is regenerated.
    Returns ``out``.
    """
    from sepvae.io import write_text

    out = Path(out)
    figures_dir = out.parent / "results"
    discussion = _existing_discussion(out)
    runs = [_load_run(Path(path), paths) for path in experiments]

    lines = [
        "# Results: the paper's Section 8 findings, tested",
        "",
        "Generated by `sepvae results` (`sepvae.sweeps.write_results`) from each experiment's "
        f"`{_shown_path(paths.reports)}/<name>/metrics.csv` and the `history.json` of its trained models. Everything "
        "but the Discussion section at the end is rewritten on each run.",
        "",
        "## Experiments",
        "",
        "| experiment | config | what | test set | status |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(f"| [{run.experiment.name}](#{_anchor(run.experiment.name)}) | `{_shown_path(run.path)}` | "
                     f"{_description(run.path)} | {_test_set(run)} | {_status(run)} |")
    lines.append("")

    results = _judge_all(runs)
    lines += _verdict_section(results, runs)
    lines += _reading_section(runs)
    for run in runs:
        if run.rows is not None or not run.large:  # a twin not run is listed in the table above only
            lines += _experiment_section(run, figures_dir, out.parent)
    lines += _method_section()
    lines += [discussion.rstrip(), ""]
    write_text(out, "\n".join(lines))
    return out


def default_experiments(root: Path = Path("experiments")) -> list[Path]:
    """The files of ``SWEEPS`` under ``root``, each followed by its ``-large`` twin if present."""
    found = []
    for name in SWEEPS:
        for stem in (name, name + LARGE_SUFFIX):
            if (root / f"{stem}.toml").is_file():
                found.append(root / f"{stem}.toml")
    return found


def _load_run(path: Path, paths: Paths) -> _Run:
    experiment = load_experiment(path)
    metrics = metrics_path(experiment, paths)
    if not metrics.is_file():
        return _Run(path, experiment, None, {})
    rows = read_metrics(metrics)
    missing = [m.label for m in experiment.methods if m.source_mode == "gender"
               and not any(row["method"] == m.label for row in rows)]
    problem = f"metrics.csv lacks {', '.join(missing)} (older than the config? rerun evaluate)" if missing else ""
    return _Run(path, experiment, rows, training_times(experiment, paths), problem)


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (RESULTS.md is committed)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _description(path: Path) -> str:
    from sepvae.config import tomllib

    return str(tomllib.loads(path.read_text()).get("description", "")).replace("|", "/")


def _test_set(run: _Run) -> str:
    if run.rows is None:
        return "all pairs of the test utterances" if run.large else f"{run.experiment.mix.n_test} mixtures"
    n_mixtures = len({row["mixture_id"] for row in run.rows})
    first = run.rows[0]["method"]
    n_estimates = sum(row["method"] == first for row in run.rows)
    return f"{n_mixtures} mixtures, {n_estimates} estimates per violin"


def _status(run: _Run) -> str:
    if run.rows is None:
        return "**not run yet**"
    return f"run ({len(run.rows)} rows)" + (f"; {run.problem}" if run.problem else "")


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def _judge_all(runs: list[_Run]) -> list[FindingResult]:
    results = []
    for finding in FINDINGS:
        family = [run for run in runs if family_of(run.experiment.name) == finding.family]
        if not family:
            results.append(FindingResult(finding, finding.family, "not listed",
                                         f"experiments/{finding.family}.toml was not given to write_results"))
        for run in family:
            if run.rows is None:
                if run.large and len(family) > 1:
                    continue  # the base experiment's row stands for the family; no row per twin not run
                results.append(FindingResult(finding, run.experiment.name, "not run yet",
                                             f"no {run.experiment.name} metrics.csv yet"))
            else:
                results.append(judge_finding(finding, run.rows, run.experiment.name, run.times, run.large))
    return results


_MARK = {"agree": "**agree**", "disagree": "**disagree**", "inconclusive": "inconclusive"}


def _numbers(j: Judged) -> str:
    s = j.stats
    unit = f" {s['unit']}" if s["unit"] else ""
    name = metric_name(j.comparison.metric)
    return (f"{name}: {j.comparison.a} {s['median_a']:.2f} vs {j.comparison.b} {s['median_b']:.2f}{unit}; "
            f"Δ {s['median_diff']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]")


def _claim_text(c: Comparison) -> str:
    return {"a>b": ">", "a<b": "<", "a~b": "≈", "a>>b": "≫"}[c.claim]


def _verdict_section(results: list[FindingResult], runs: list[_Run]) -> list[str]:
    lines = [
        "## Verdicts",
        "",
        "One row per finding of the paper's Section 8, tested on paired (mixture, source) estimates "
        "(gender models; window findings in sepvae's default overlap reading, both readings in the "
        "next section). *Our numbers*: the medians of the two methods, the median paired difference Δ = "
        "a − b and its bootstrap 95 % CI, for the comparison that decided the verdict; *p*: its "
        "two-sided Wilcoxon signed-rank p. A finding made of several comparisons agrees only if all "
        f"agree; how exactly: [How the verdicts are reached](#how-the-verdicts-are-reached). With the "
        f"default 10 test mixtures each violin holds 20 estimates, often too few to tell a difference "
        f"of ±{MARGIN_DB:g} dB from none: the `*{LARGE_SUFFIX}.toml` variants score the same models on "
        "all ~100 pairs of the held-out test utterances.",
        "",
        "| # | finding | paper | experiment | our numbers | p | verdict | why |",
        "|--:|---|---|---|---|--:|---|---|",
    ]
    for i, result in enumerate(results, start=1):
        numbers = _numbers(result.shown) if result.shown else "–"
        if result.time_note:
            numbers += f"; {result.time_note}"
        p = f"{result.shown.stats['p_value']:.3g}" if result.shown else "–"
        lines.append(f"| {i} | {result.finding.name} | “{result.finding.paper}” | {result.experiment} | "
                     f"{numbers} | {p} | {_MARK.get(result.verdict, result.verdict)} | "
                     f"{result.reason.replace('|', '/')} |")
    lines.append("")
    detailed = [r for r in results if r.judged]
    if detailed:
        lines += ["### Every comparison", ""]
        for result in detailed:
            lines += [f"<details><summary>{result.finding.name} — {result.experiment}: {result.verdict} "
                      f"({len(result.judged)} comparison{'s' if len(result.judged) > 1 else ''})</summary>", ""]
            lines += _comparison_table(result.judged)
            lines += ["</details>", ""]
    return lines


def _comparison_table(judged: list[Judged]) -> list[str]:
    lines = ["| metric | claim | median a | median b | Δ median [95 % CI] | p | n | verdict |",
             "|---|---|--:|--:|---|--:|--:|---|"]
    for j in judged:
        s, c = j.stats, j.comparison
        lines.append(f"| {metric_name(c.metric)} | {c.a} {_claim_text(c)} {c.b} | {s['median_a']:.2f} | "
                     f"{s['median_b']:.2f} | {s['median_diff']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}] | "
                     f"{s['p_value']:.3g} | {s['n']} | {j.verdict} |")
    return lines + [""]


def _reading_section(runs: list[_Run]) -> list[str]:
    lines = [
        "## Which reading of “overlap”?",
        "",
        "The paper gives each STFT setting as (window size, overlap size). sepvae reads the second "
        "number as an overlap (hop = window − overlap, labels `A` … `H`); it may also be the hop "
        "(labels `A hop` … `H hop`). The two agree for B, D, E and G (overlap = window / 2) and differ "
        "for A (hop 48 vs 16 ms), C (24 vs 8), F (12 vs 4) and H (6 vs 2). Which reading reproduces the "
        "paper's statements about Figure 21?",
        "",
    ]
    window = [run for run in runs if family_of(run.experiment.name) == "sweep-window" and run.rows]
    if not window:
        return lines + ["*Not run yet: needs `experiments/sweep-window.toml`.*", ""]
    for run in window:
        labels = {row["method"] for row in run.rows}
        lines += [f"### {run.experiment.name}", "",
                  f"| finding | {READINGS['']} | {READINGS['hop']} |", "|---|---|---|"]
        score = {"": 0, "hop": 0}
        for overlap, hop in zip(window_findings(""), window_findings("hop")):
            cells = []
            for series, finding in (("", overlap), ("hop", hop)):
                result = judge_finding(finding, run.rows, run.experiment.name, large=run.large)
                score[series] += result.verdict == "agree"
                numbers = f" ({_numbers(result.shown)}; p={result.shown.stats['p_value']:.2g})" if result.shown else ""
                cells.append(f"{_MARK.get(result.verdict, result.verdict)}{numbers}")
            lines.append(f"| {overlap.name} | {cells[0]} | {cells[1]} |")
        n = len(window_findings())
        if score[""] == score["hop"]:
            fit = "neither reading fits the paper's statements better"
        else:
            fit = f"the {'overlap' if score[''] > score['hop'] else 'hop'} reading fits the paper's statements better"
        lines += ["", f"Findings reproduced: overlap reading {score['']}/{n}, hop reading {score['hop']}/{n}: {fit} "
                  "(B, D, E and G are the same STFT in both, so only A, C, F and H can tell them apart).", ""]
        for series in ("", "hop"):
            ranking = _ranking(run.rows, [letter + (f" {series}" if series else "") for letter in STFT_SETTINGS],
                               labels, "sdr")
            irm = _ranking(run.rows, [letter + (f" {series} irm" if series else " irm") for letter in STFT_SETTINGS],
                           labels, "sdr")
            if ranking:
                lines.append(f"- {READINGS[series]}: VAE median SDR, best first: {ranking}")
            if irm:
                lines.append(f"  (oracle IRM at the same STFTs: {irm})")
        lines.append("")
    return lines


def _ranking(rows, labels: Sequence[str], present: set[str], metric: str) -> str:
    medians = []
    for label in labels:
        if label not in present:
            continue
        values = metric_values([row for row in rows if row["method"] == label], metric)
        values = values[np.isfinite(values)]
        if values.size:
            medians.append((float(np.median(values)), split_label(label)[0]))
    medians.sort(reverse=True)
    return ", ".join(f"{x} {m:.1f}" for m, x in medians)


def _experiment_section(run: _Run, figures_dir: Path, base: Path) -> list[str]:
    experiment = run.experiment
    lines = [f"## {experiment.name}", "", f"`{_shown_path(run.path)}`: {_description(run.path)}. "
             f"x = {experiment.sweep or 'method'}.", ""]
    if run.rows is None:
        return lines + [f"*Not run yet*: `make {experiment.name}`, or `sepvae train`, `evaluate`, `report` "
                        f"with `--config {_shown_path(run.path)}`, then `sepvae results`.", ""]
    if run.problem:
        lines += [f"*Note*: {run.problem}.", ""]
    png = sweep_figure(run.rows, experiment, figures_dir / f"{experiment.name}.png")
    lines += [f"![{experiment.name}]({png.relative_to(base).as_posix() if png.is_relative_to(base) else png})", "",
              "*Violins: the distribution over (mixture, source); black bar: median; dots: single estimates; "
              "diamonds with bars (reference methods beside a sweep): median and interquartile range.*", ""]
    lines += _medians_table(run)
    if family_of(experiment.name) == "sweep-batch":
        lines += _batch_times(run)
    return lines


def _medians_table(run: _Run) -> list[str]:
    methods = {m.label: m for m in run.experiment.methods if m.source_mode == "gender"}
    several_stfts = len({(m.stft.window_ms, m.stft.hop_ms) for m in methods.values()}) > 1
    table = summary_table([row for row in run.rows if row["source_mode"] == "gender"], FIGURE_METRICS)
    header = ["method", "kind"] + (["window / hop (ms)"] if several_stfts else []) + ["n"]
    header += [f"{metric_name(m)} ({metric_unit(m)})" for m in FIGURE_METRICS] + ["SDRi (dB)", "training"]
    lines = ["Medians over all (mixture, source) estimates; SDRi: median SDR improvement over the mixture; "
             "training: epochs run (best) and wall time.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---"] * (len(header) - len(FIGURE_METRICS) - 2)
                                                          + ["--:"] * (len(FIGURE_METRICS) + 1) + ["---"]) + "|"]
    for entry in table:
        method = methods.get(entry["method"])
        cells = [entry["method"], method.kind if method else "?"]
        if several_stfts:
            cells.append(f"{method.stft.window_ms:g} / {method.stft.hop_ms:g}" if method else "?")
        cells.append(str(entry["sar_n"]))
        for metric in FIGURE_METRICS:
            median = entry[f"{metric}_median"]
            cells.append(f"{median:.2f}" if math.isfinite(median) else "–")
        cells.append(f"{entry['sdri_median']:.2f}" if math.isfinite(entry["sdri_median"]) else "–")
        time = run.times.get(entry["method"])
        cells.append(f"{time['epochs']} ({time['best_epoch']}), {_minutes(time['seconds'])}" if time else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _batch_times(run: _Run) -> list[str]:
    lines = ["Training wall time (the sum of history.json \"seconds\" over epochs; both sources' models "
             "train together; measured on whatever else the machine was doing):", "",
             "| batch | epochs run / budget | best epoch | s per epoch | total |", "|--:|---|--:|--:|--:|"]
    for method in run.experiment.methods:
        time = run.times.get(method.label)
        if time is None:
            lines.append(f"| {method.label} | not found | – | – | – |")
            continue
        lines.append(f"| {method.label} | {time['epochs']} / {time['epoch_budget']} | {time['best_epoch']} | "
                     f"{time['seconds_per_epoch']:.1f} | {_minutes(time['seconds'])} |")
    return lines + ["", "Batch 1 trains under a smaller epoch budget (see `experiments/sweep-batch.toml`): "
                    "compare its time per epoch, not its total.", ""]


def _method_section() -> list[str]:
    return [
        "## How the verdicts are reached",
        "",
        "- Every comparison pairs the two methods' scores on the same (test mixture, source) and uses "
        "`sepvae.report.paired_comparison`: Δ = a − b per pair, the median of Δ with a 95 % percentile "
        "bootstrap CI (5000 resamples, seed 0), and the two-sided Wilcoxon signed-rank p of Δ.",
        f"- *a > b* (a < b): agree if p < {ALPHA:g} and the CI lies above (below) 0; disagree if p < alpha "
        f"and the CI lies on the other side; else inconclusive. *a ≫ b* (\"by a wide margin\"): a > b and the "
        f"CI above {WIDE_DB:g} dB; disagree as well if the CI lies entirely below {WIDE_DB:g} dB. *a ≈ b* "
        f"(\"no clear difference\"): agree if the CI lies within ±{MARGIN_DB:g} dB; disagree if p < alpha and "
        f"the CI excludes 0; else inconclusive. A direction (>, <, ≫) that is not shown while the CI lies "
        f"within ±{MARGIN_DB:g} dB disagrees: the two settings are equivalent, the claimed difference absent.",
        "- \"Fared worse\", \"best overall\", \"worse\" are judged on SDR; \"no clear difference\" on each of "
        "SDR, SIR and SAR, as the paper names them; a group claim (\"64 ms worse than 32 and 16 ms\", "
        "\"no difference among beta > 1\") on every pair it implies.",
        f"- A finding of k comparisons **agrees** only if all k agree at alpha = {ALPHA:g} (an "
        "intersection-union test: it needs no multiplicity correction and is conservative); it "
        "**disagrees** if at least one comparison disagrees at alpha / k (Bonferroni); otherwise it is "
        "inconclusive. The row shows the deciding comparison: the strongest disagreement, else the "
        "weakest agreement or the most uncertain comparison.",
        f"- \"Batch 1 costs time\" also needs batch 1's mean epoch wall time to be at least {SLOWER_FACTOR:g}x "
        "batch 70's.",
        "- 20 estimates (10 mixtures x 2 sources) give a CI of the median a few dB wide, so an "
        "\"inconclusive\" mostly says the test set is too small. The `-large` variants use every pair of "
        "the same held-out test utterances (~100 mixtures): far steadier medians and CIs, but each "
        "utterance appears in ~10 mixtures, so those estimates are not independent and their p-values "
        "are optimistic.",
        "",
    ]


def _existing_discussion(out: Path) -> str:
    """The ``## Discussion`` section of an existing file (up to the next ``## `` heading)."""
    if out.is_file():
        text = out.read_text()
        match = re.search(r"^## Discussion[ \t]*\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
        if match:
            return DISCUSSION + "\n" + match.group(1)
    return f"{DISCUSSION}\n\n{DISCUSSION_PLACEHOLDER}"
