"""The results layer: tables, statistics, figures and verdicts read from evaluation results.

It reads what the evaluate stage wrote into ``reports/<experiment>/`` (``metrics.csv``, one
row per mixture, source and method; ``training.json``, the wall times of the trained
models) and, for the listening page only, the audio files the report stage points it to:
it never runs a model, makes a mixture or opens a training run.

- :mod:`~sepvae.results.stats`: reading ``metrics.csv``, grouping, summary tables, dropped
  values, paired comparisons and their verdicts, the summary of a training history.
- :mod:`~sepvae.results.figures`: violins per method, sweep figures, spectrograms and masks.
- :mod:`~sepvae.results.findings`: the paper's Section 8 findings and how each is judged.
- :mod:`~sepvae.results.report_md`: an experiment's ``report.md`` and ``summary.json``.
- :mod:`~sepvae.results.results_md`: ``experiments/RESULTS.md``, the sweeps side by side,
  with its verdict sections from :mod:`~sepvae.results.verdicts_md`.
- :mod:`~sepvae.results.tables`: tables as data, rendered to Markdown by the two above and
  to HTML by :mod:`~sepvae.results.html`: ``index.html`` (with audio players) beside each
  report.md, and ``results.html`` beside RESULTS.md.

matplotlib and scipy are imported only by the functions that need them, so importing this
package stays cheap.
"""

from sepvae.results.figures import spectrogram_figure
from sepvae.results.report_md import markdown_table, write_report
from sepvae.results.results_md import default_experiments, write_results
from sepvae.results.stats import COLUMNS, read_metrics, summary_table, training_summary

__all__ = [
    "COLUMNS",
    "default_experiments",
    "markdown_table",
    "read_metrics",
    "spectrogram_figure",
    "summary_table",
    "training_summary",
    "write_report",
    "write_results",
]
