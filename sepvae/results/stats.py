"""Statistics read from one ``metrics.csv``: summaries, paired comparisons, verdicts.

``metrics.csv`` (written by the evaluate stage) holds one row per (mixture, source, method)
with the scores of the estimate and the ``input_`` scores of the unprocessed mixture.

``rows``, the structure every function takes, is a ``list[dict]``, one dict per CSV row, in
file order. The text columns ``experiment, method, source_mode, mixture_id, source`` are
``str``; the score columns (``sdr`` ... ``input_stoi``) are ``float`` with NaN where the
CSV cell is empty or ``nan``. Extra CSV columns are kept as ``str``. Rows built in memory
work as well if they carry the same keys.

A *method* is identified by ``(method, source_mode)``; methods keep the order in which they
first appear (the x axis of the plots). A *metric* is a score column (``"sdr"``, ``"pesq"``
...) or an improvement over the mixture (``"sdri"`` = ``sdr - input_sdr``, likewise
``"siri"``, ``"sari"``, ``"si_sdri"``, ``"pesqi"``, ``"stoii"``). NaN and +-Inf scores are
dropped from every statistic, and counted.

scipy is imported inside the function that needs it, so that importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sepvae.config import SourceMode
from sepvae.errors import SepvaeError
from sepvae.metrics import METRICS

KEY_COLUMNS = ("experiment", "method", "source_mode", "mixture_id", "source")
SCORE_COLUMNS = METRICS
COLUMNS = KEY_COLUMNS + SCORE_COLUMNS + tuple(f"input_{name}" for name in SCORE_COLUMNS)

# Improvement over the unprocessed mixture: name -> score column.
IMPROVEMENTS = {f"{name}i": name for name in SCORE_COLUMNS}

TABLE_METRICS = ("sdr", "sir", "sar", "si_sdr", "pesq", "stoi")

_NAMES = {"sdr": "SDR", "sir": "SIR", "sar": "SAR", "si_sdr": "SI-SDR", "pesq": "PESQ", "stoi": "STOI"}

# How claims about two methods are judged (:func:`judge`); RESULTS.md quotes these numbers.
ALPHA = 0.05
MARGIN_DB = 1.0  # "no clear difference": the CI of the median paired difference within ±1 dB
WIDE_DB = 1.0  # "by a wide margin": the CI of the median paired difference above 1 dB


# ---------------------------------------------------------------------------------------
# Reading and grouping


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
        (method, mode): f"{method} ({mode})" if several_modes and mode != SourceMode.GENDER else method
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


def check_metric(metric: str) -> None:
    """Raise SepvaeError unless ``metric`` is a score column or an improvement over the mixture."""
    if metric not in SCORE_COLUMNS and metric not in IMPROVEMENTS:
        known = ", ".join(SCORE_COLUMNS + tuple(IMPROVEMENTS))
        raise SepvaeError(f"unknown metric {metric!r}; known: {known}")


def group_by_method(rows: Sequence[Mapping[str, Any]], by_source: bool = False) -> dict[tuple, list]:
    """``{(method, source_mode[, source]): rows}`` in order of first appearance."""
    groups: dict[tuple, list] = {}
    for row in rows:
        key = (row["method"], row["source_mode"]) + ((row["source"],) if by_source else ())
        groups.setdefault(key, []).append(row)
    return groups


def dropped_counts(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{method label: {metric: number of NaN/Inf values dropped}}``, only non-zero counts."""
    labels = method_labels(rows)
    counts: dict[str, dict[str, int]] = {}
    for key, group in group_by_method(rows).items():
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
        check_metric(metric)
    labels = method_labels(rows)
    table = []
    for key, group in group_by_method(rows, by_source).items():
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


# ---------------------------------------------------------------------------------------
# Paired comparisons and verdicts


def paired_comparison(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    method_a: str,
    method_b: str,
    source_mode: str = SourceMode.GENDER,
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
    check_metric(metric)
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


def judge(stats: Mapping[str, Any], claim: str, alpha: float = ALPHA) -> tuple[str, str]:
    """:func:`verdict`, extended in two ways.

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


# ---------------------------------------------------------------------------------------
# Training wall times


def training_summary(history: list[dict]) -> dict[str, Any]:
    """How long a training run took, from its per-epoch history as training writes it.

    ``history``: one dict per epoch, ``{"epoch": n, "seconds": wall time, <source>:
    {"val_recon": ..., ...}, ...}``. Returns ``{"epochs", "seconds", "seconds_per_epoch",
    "best_epoch"}``: epochs run, their summed wall time, its mean per epoch, and the epoch
    with the lowest validation loss summed over sources (the weights kept).
    Raises SepvaeError on an empty history.
    """
    if not history:
        raise SepvaeError("training history is empty: no epoch was run")
    seconds = [float(epoch.get("seconds", math.nan)) for epoch in history]
    validation = [sum(v["val_recon"] for v in epoch.values() if isinstance(v, dict) and "val_recon" in v)
                  for epoch in history]
    total = float(np.sum(seconds))
    return {
        "epochs": len(history),
        "seconds": total,
        "seconds_per_epoch": total / len(history),
        "best_epoch": int(history[int(np.argmin(validation))]["epoch"]),
    }
