"""Runs side by side: figures and a summary table from the workdirs' records.

`write_report(workdirs, output)` writes curves.png, dynamics.png, levels.png, summary.md and summary.csv.
It reads only what training writes, so it works on runs still in progress and on any mix of methods.
"""
import os
import shutil

from s3jax.report.figures import color_runs, plot_curves, plot_dynamics, plot_levels
from s3jax.report.runs import average_over_seeds, load_runs
from s3jax.report.summary import summary_rows, write_summary

__all__ = ["load_runs", "write_report"]
REPORT_FILES = ("curves.png", "dynamics.png", "levels.png", "summary.md", "summary.csv")


def write_report(workdirs, output: str, average_seeds: bool = False) -> dict:
  """Writes the five report files into `output`; returns their paths. With `average_seeds`, the figures
  show one line per configuration, averaged over its seeds; the summary still lists every run."""
  runs = color_runs(load_runs(workdirs))
  plotted = color_runs(average_over_seeds(runs)) if average_seeds else runs
  # Written into a temporary folder first, then moved into place: a report cut short leaves the previous
  # files as they were, never a mix of half-written ones.
  partial = os.path.join(output, ".report.partial")
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    files = {name: os.path.join(partial, name) for name in REPORT_FILES}
    plot_curves(plotted, files["curves.png"])
    plot_dynamics(plotted, files["dynamics.png"])
    plot_levels(plotted, files["levels.png"])
    write_summary(summary_rows(runs), files["summary.md"], files["summary.csv"])
    for name in REPORT_FILES:
      os.replace(files[name], os.path.join(output, name))
  finally:
    shutil.rmtree(partial, ignore_errors=True)
  return {name: os.path.join(output, name) for name in REPORT_FILES}
