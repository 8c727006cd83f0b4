"""The verdict parts of ``RESULTS.md``: the Verdicts table, the two readings of "overlap",
and how the verdicts are reached. :mod:`sepvae.results.results_md` puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sepvae.config import STFT_SETTINGS
from sepvae.results.findings import (
    LARGE_SUFFIX,
    SLOWER_FACTOR,
    Comparison,
    ExperimentResults,
    FindingResult,
    Judged,
    family_of,
    judge_finding,
    split_label,
    window_findings,
)
from sepvae.results.stats import ALPHA, MARGIN_DB, WIDE_DB, metric_name, metric_values
from sepvae.results.tables import Cell, Styled, Table, markdown_lines

READINGS = {"": "overlap reading (hop = window − overlap)", "hop": "hop reading (hop = the 2nd number)"}


_MARK = {"agree": "**agree**", "disagree": "**disagree**", "inconclusive": "inconclusive"}  # the readings' cells


def _numbers(j: Judged) -> str:
    s = j.stats
    unit = f" {s['unit']}" if s["unit"] else ""
    name = metric_name(j.comparison.metric)
    return (f"{name}: {j.comparison.a} {s['median_a']:.2f} vs {j.comparison.b} {s['median_b']:.2f}{unit}; "
            f"Δ {s['median_diff']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]")


def _claim_text(c: Comparison) -> str:
    return {"a>b": ">", "a<b": "<", "a~b": "≈", "a>>b": "≫"}[c.claim]


def verdict_section(results: list[FindingResult]) -> list[str]:
    """The Verdicts table, one row per finding, and every comparison behind it."""
    lines = [
        "## Verdicts",
        "",
        "One row per finding of the paper's Section 8 (and, marked *sepvae:*, the project's own claims), "
        "tested on paired (mixture, source) estimates "
        "(gender models; window findings in sepvae's default overlap reading, both readings in the "
        "next section). *Our numbers*: the medians of the two methods, the median paired difference Δ = "
        "a − b and its bootstrap 95 % CI, for the comparison that decided the verdict; *p*: its "
        "two-sided Wilcoxon signed-rank p. A finding made of several comparisons agrees only if all "
        f"agree; how exactly: [How the verdicts are reached](#how-the-verdicts-are-reached). With the "
        f"default 10 test mixtures each violin holds 20 estimates, often too few to tell a difference "
        f"of ±{MARGIN_DB:g} dB from none: the `*{LARGE_SUFFIX}.toml` variants score the same models on "
        "all ~100 pairs of the held-out test utterances.",
        "",
    ]
    lines += markdown_lines(verdict_table(results))
    lines.append("")
    detailed = [r for r in results if r.judged]
    if detailed:
        lines += ["### Every comparison", ""]
        for result in detailed:
            lines += [f"<details><summary>{comparisons_summary(result)}</summary>", ""]
            lines += markdown_lines(comparison_table(result.judged)) + [""]
            lines += ["</details>", ""]
    return lines


def verdict_table(results: list[FindingResult]) -> Table:
    """One row per finding: the paper's words, our numbers for the deciding comparison, the verdict."""
    rows = []
    for i, result in enumerate(results, start=1):
        numbers = _numbers(result.shown) if result.shown else "–"
        if result.time_note:
            numbers += f"; {result.time_note}"
        p = f"{result.shown.stats['p_value']:.3g}" if result.shown else "–"
        claim = f"sepvae: {result.finding.paper}" if result.finding.ours else f"“{result.finding.paper}”"
        rows.append((str(i), result.finding.name, claim, result.experiment, numbers, p,
                     _mark(result.verdict), result.reason.replace("|", "/")))
    return Table(("#", "finding", "paper", "experiment", "our numbers", "p", "verdict", "why"), tuple(rows),
                 (True, False, False, False, False, True, False, False), "Verdicts on the paper's findings",
                 row_header=1)


def comparisons_summary(result: FindingResult) -> str:
    n = len(result.judged)
    return f"{result.finding.name} — {result.experiment}: {result.verdict} ({n} comparison{'s' if n > 1 else ''})"


def _mark(verdict: str) -> Cell:
    return Styled(verdict, "strong") if verdict in ("agree", "disagree") else verdict


def comparison_table(judged: list[Judged]) -> Table:
    rows = []
    for j in judged:
        s, c = j.stats, j.comparison
        rows.append((metric_name(c.metric), f"{c.a} {_claim_text(c)} {c.b}", f"{s['median_a']:.2f}",
                     f"{s['median_b']:.2f}", f"{s['median_diff']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]",
                     f"{s['p_value']:.3g}", str(s["n"]), j.verdict))
    return Table(("metric", "claim", "median a", "median b", "Δ median [95 % CI]", "p", "n", "verdict"), tuple(rows),
                 (False, False, True, True, False, True, True, False), "Every comparison behind the verdict", 1)


def reading_section(runs: Sequence[ExperimentResults]) -> list[str]:
    """Which reading of the paper's "overlap" reproduces its window findings."""
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


def method_section() -> list[str]:
    """How the verdicts are reached, with the thresholds in force."""
    return [
        "## How the verdicts are reached",
        "",
        "- Every comparison pairs the two methods' scores on the same (test mixture, source) and uses "
        "`sepvae.results.stats.paired_comparison`: Δ = a − b per pair, the median of Δ with a 95 % percentile "
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

