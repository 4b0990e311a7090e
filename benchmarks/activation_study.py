r"""Quantized activations: what 8- and 4-bit layer inputs cost 3-bit shift networks, on images and speech.

  python benchmarks/activation_study.py --output=/tmp/activations          # 48 runs
  python benchmarks/activation_study.py --output=/tmp/activations --quick  # the same code paths in a minute
  python benchmarks/activation_study.py --output=/tmp/activations --publish=docs/RESULTS.md

S3 and DenseShift at 3 bits with float inputs (32 bits) and with every quantized layer's input on an LSQ
grid of 8 and of 4 bits (`quant.activations=lsq`), and DeepShift-PS at 3 bits with float inputs and with its
own 16.16 fixed point (`quant.activations=fixed_point`); each on the MNIST demo (`configs/mnist_quick.py`)
and the spoken digits (`configs/speech_digits.py`), with each config's own recipe, 3 seeds. Runs go seed by
seed, so an interrupted study has every arm's first seeds; a rerun skips finished runs (and resumes a cut
one). Writes <output>/RESULTS.md and <output>/results/activations/{activations.png, activations.json}.
"""
import datetime
import json
import os
import platform
import sys
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchlib import cpu_name  # noqa: E402
from claims_page import format_duration, publish  # noqa: E402
from paper_claims import run_grid  # noqa: E402
from s3jax.cli import run  # noqa: E402
from s3jax.records.workdir_files import read_metrics  # noqa: E402

LSQ = lambda bits: {"quant.activations": "lsq", "quant.activation_bits": bits}  # noqa: E731
ARMS = (  # (name, method, label of the inputs, overrides)
    ("s3_a32", "S3", "32 (float)", {"quant.method": "s3"}),
    ("s3_a8", "S3", "8 (LSQ)", {"quant.method": "s3", **LSQ(8)}),
    ("s3_a4", "S3", "4 (LSQ)", {"quant.method": "s3", **LSQ(4)}),
    ("denseshift_a32", "DenseShift", "32 (float)", {"quant.method": "denseshift"}),
    ("denseshift_a8", "DenseShift", "8 (LSQ)", {"quant.method": "denseshift", **LSQ(8)}),
    ("denseshift_a4", "DenseShift", "4 (LSQ)", {"quant.method": "denseshift", **LSQ(4)}),
    ("deepshift_ps_a32", "DeepShift-PS", "32 (float)", {"quant.method": "deepshift_ps"}),
    ("deepshift_ps_fixed", "DeepShift-PS", "16.16 fixed point", {"quant.method": "deepshift_ps",
                                                                 "quant.activations": "fixed_point"}),
)
DATASETS = (("mnist", "MNIST demo", "configs/mnist_quick.py"), ("speech", "spoken digits", "configs/speech_digits.py"))
FIGURES = "results/activations"

flags.DEFINE_string("output", None, "Directory for the runs, the figure and RESULTS.md.", required=True)
flags.DEFINE_integer("seeds", 3, "Seeds per arm.", lower_bound=1)
flags.DEFINE_list("datasets", [d for d, _, _ in DATASETS], "Datasets, in the order they run.")
flags.DEFINE_bool("quick", False, "Two arms on the 8x8 digits, 6 steps, 1 seed.")
flags.DEFINE_string("publish", None, "Also put the page into this file's 'activations' section.")
flags.DEFINE_bool("page_only", False, "Write the page from the runs finished so far, training none.")


def grid_args(output: str, dataset: str, seeds: int, quick: bool):
  """What `paper_claims.run_grid` runs for one dataset."""
  config = "configs/digits.py" if quick else dict((d, c) for d, _, c in DATASETS)[dataset]
  arms = [a for a in ARMS if a[0] in ("s3_a8", "deepshift_ps_fixed")] if quick else ARMS
  grid = tuple((f"{dataset}_{name}", f"{dataset} {method} inputs {label}", overrides)
               for name, method, label, overrides in arms)
  extra = {"total_steps": 6, "eval_every_steps": 3, "log_every_steps": 3} if quick else {}
  return types.SimpleNamespace(output=output, quick=False, seeds=seeds, config=config, extra=extra,
                               suite=types.SimpleNamespace(grid=grid, quick=()))


def collect(output: str, dataset: str, args) -> dict:
  """{arm name: [final top-1 of each finished seed]}."""
  table = {}
  for name, _, _ in args.suite.grid:
    table[name] = []
    for seed in range(args.seeds):
      workdir = os.path.join(output, "runs", f"{name}_seed{seed}")
      if os.path.exists(os.path.join(workdir, "paper_claims_done.json")):
        table[name].append([r for r in read_metrics(workdir) if "eval/top1" in r][-1]["eval/top1"])
  return table


def finished_seconds(output: str, args) -> float:
  """The summed run time of the grid's finished runs (from their markers)."""
  total = 0.0
  for name, _, _ in args.suite.grid:
    for seed in range(args.seeds):
      marker = os.path.join(output, "runs", f"{name}_seed{seed}", "paper_claims_done.json")
      if os.path.exists(marker):
        total += json.load(open(marker))["seconds"]
  return total


def _cell(values) -> str:
  if not values:
    return "–"
  mean = 100 * np.mean(values)
  spread = f" ± {100 * np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
  return f"{mean:.2f}{spread} ({len(values)})"


def plot(tables: dict, titles: dict, path: str):
  """One panel a dataset: top-1 of each method by its inputs' width, mean over seeds, bars 1 sd."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 4.6), squeeze=False)
  for ax, (dataset, table) in zip(axes[0], tables.items()):
    methods = list(dict.fromkeys(m for _, m, _, _ in ARMS))
    inputs = list(dict.fromkeys(i for _, _, i, _ in ARMS))
    width = 0.8 / len(inputs)
    for j, (label, color) in enumerate(zip(inputs, ("0.55", "C0", "C1", "C3"))):
      xs, means, sds = [], [], []
      for i, method in enumerate(methods):
        values = [table.get(f"{dataset}_{n}", []) for n, m, l, _ in ARMS if m == method and l == label]
        if values and values[0]:
          xs.append(i + (j - (len(inputs) - 1) / 2) * width)
          means.append(100 * np.mean(values[0]))
          sds.append(100 * np.std(values[0], ddof=1) if len(values[0]) > 1 else 0)
      if xs:
        ax.bar(xs, means, width, yerr=sds, capsize=3, color=color, label=f"inputs: {label}")
    every = [100 * v for values in table.values() for v in values]
    ax.set(title=titles[dataset], ylabel="eval top-1 (%) over seeds, bars 1 sd",
           xticks=range(len(methods)), xticklabels=[f"{m} 3 bits" for m in methods],
           ylim=(max(0, min(every, default=0) - 2), 100), xlim=(-0.6, len(methods) - 0.4))
  legend = {}
  for ax in axes[0]:  # one legend for both panels, below them, off the bars
    legend.update(zip(ax.get_legend_handles_labels()[1], ax.get_legend_handles_labels()[0]))
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  if legend:
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=len(legend), fontsize=9, frameon=False)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_page(output: str, datasets, seeds: int, quick: bool, seconds: float) -> str:
  import jax
  tables = {d: collect(output, d, grid_args(output, d, seeds, quick)) for d in datasets}
  os.makedirs(os.path.join(output, FIGURES), exist_ok=True)
  titles = {d: f"{t}, `{grid_args(output, d, seeds, quick).config}`".replace("`", "") for d, t, _ in DATASETS}
  plot(tables, titles, os.path.join(output, FIGURES, "activations.png"))
  with open(os.path.join(output, FIGURES, "activations.json"), "w") as f:
    json.dump(tables, f, indent=1)
  machine = (f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, {platform.system()}, Python "
             f"{platform.python_version()}, jax {jax.__version__}")
  lines = [
      "## Quantized activations", "",
      "3-bit S3 and DenseShift with every quantized layer's input in float32, on an 8-bit and on a 4-bit LSQ "
      "grid (`quant.activations=lsq`, step sizes learned from LSQ's first-batch init), and DeepShift-PS with "
      "float inputs and with its own 16.16 fixed point (`quant.activations=fixed_point`). The stem, the "
      "classifier and their inputs stay float, as the weight rules leave them.", "",
      "- Command: `python benchmarks/activation_study.py --output=DIR` (then `--publish=docs/RESULTS.md`: this "
      "section and its figure)",
      f"- Date: {datetime.date.today().isoformat()}; machine: {machine}",
      f"- Run time of the runs, summed: {format_duration(seconds)} (runs that shared the machine with other work count "
      "in full)",
      "- Recipes: " + "; ".join(f"{t}: `{grid_args(output, d, seeds, quick).config}` as it is "
                                f"({'6 steps, ' if quick else ''}seeds 0..{seeds - 1})"
                                for d, t, _ in DATASETS if d in datasets), "",
      "Top-1 (%), mean ± standard deviation over seeds (the number of finished seeds in brackets):", "",
      "| method (3 bits) | inputs | " + " | ".join(t for d, t, _ in DATASETS if d in datasets) + " |",
      "|---|---|" + "---|" * len(datasets),
  ]
  for name, method, label, _ in ARMS:
    if any(f"{d}_{name}" in tables[d] for d in datasets):
      lines.append(f"| {method} | {label} | " + " | ".join(_cell(tables[d].get(f"{d}_{name}", [])) for d in datasets)
                   + " |")
  lines += ["", f"![top-1 by the width of the layers' inputs]({FIGURES}/activations.png)"]
  with open(os.path.join(output, "RESULTS.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return os.path.join(output, "RESULTS.md")


def main(argv):
  del argv
  args = flags.FLAGS
  seeds = 1 if args.quick else args.seeds
  datasets = args.datasets[:1] if args.quick else args.datasets
  for known in datasets:
    if known not in dict((d, c) for d, _, c in DATASETS):
      raise SystemExit(f"error: --datasets={known!r} is unknown; use {[d for d, _, _ in DATASETS]}.")
  seconds = 0.0
  for upto in range(1, seeds + 1) if not args.page_only else ():  # seed by seed: every arm's first seed first
    seconds = sum(run_grid(grid_args(args.output, d, upto, args.quick)) for d in datasets)
  if args.page_only:
    seconds = sum(finished_seconds(args.output, grid_args(args.output, d, seeds, args.quick)) for d in datasets)
  page = write_page(args.output, datasets, seeds, args.quick, seconds)
  print(f"wrote {page}")
  if args.publish:
    print(f"published to {publish(types.SimpleNamespace(output=args.output, suite=types.SimpleNamespace(name='activations', figures=FIGURES)), args.publish)}")


if __name__ == "__main__":
  run(main)
