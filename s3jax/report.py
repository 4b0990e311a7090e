"""Runs side by side: figures and a summary table from the workdirs' config.json and metrics.jsonl.

`write_report(workdirs, output)` writes curves.png, dynamics.png, levels.png, summary.md and summary.csv.
It reads only what training writes, so it works on runs still in progress and on any mix of methods. Each
run is labelled from its config (e.g. 's3 3b normal seed0') and keeps one colour in every figure.
"""
import csv
import dataclasses
import glob
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

from s3jax.errors import ConfigError  # noqa: E402

FIGURE_DPI = 110
LINESTYLES = ("-", "--", "-.", ":")
SUMMARY_COLUMNS = ("run", "method", "bits", "init", "seed", "model", "data", "steps", "final_top1",
                   "best_top1", "params", "float32_MB", "stored_MB", "compression", "workdir")


@dataclasses.dataclass
class Run:
  workdir: str
  config: dict
  records: list
  label: str = ""
  color: str = ""
  linestyle: str = "-"

  @property
  def method(self) -> str:
    return self.config.get("quant", {}).get("method", "s3")

  def series(self, key: str) -> tuple[list, list]:
    """(steps, values) of every record holding `key`."""
    rows = [(r["step"], r[key]) for r in self.records if key in r]
    return [s for s, _ in rows], [v for _, v in rows]

  def level_keys(self) -> list[str]:
    keys = {k for r in self.records for k in r if k.startswith("quant/share_")}
    return sorted(keys, key=lambda k: _level_value(k))


def _level_value(key: str) -> float:
  name = key.rsplit("_", 1)[1]
  return 2.0 ** int(name[2:]) if name.startswith("2^") else float(name)


def find_workdirs(specs) -> list[str]:
  """Workdirs from comma-separated names or globs (e.g. 'runs/*'); only those holding a config.json."""
  if isinstance(specs, str):
    specs = [s for s in specs.split(",") if s.strip()]
  found = []
  for spec in specs:
    matches = sorted(glob.glob(os.path.expanduser(spec.strip()))) or [spec.strip()]
    for path in matches:
      if os.path.isfile(os.path.join(path, "config.json")) and path not in found:
        found.append(path)
  if not found:
    raise ConfigError(f"no run found in --workdirs={','.join(specs)!r}: each workdir needs the "
                      "config.json that train.py writes.")
  return found


def _read_records(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line being written right now
        continue
  return records


def run_label(config: dict) -> str:
  """'s3 3b normal seed0', 'denseshift 3b seed1', 'float seed0' (+ ' fixed-scale' etc. when not none)."""
  quant = config.get("quant", {})
  method = quant.get("method", "s3")
  seed = f"seed{config.get('seed', 0)}"
  if method == "float":
    return f"float {seed}"
  parts = [method, f"{quant.get('bits', 3)}b"]
  if method == "s3":
    parts.append(quant.get("init", "normal"))
  if quant.get("scale", "none") != "none":
    parts.append(f"{quant['scale']}-scale")
  return " ".join(parts + [seed])


def load_runs(workdirs) -> list[Run]:
  runs = []
  for workdir in find_workdirs(workdirs):
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    runs.append(Run(workdir, config, _read_records(workdir), run_label(config)))
  return _colored(runs)


def average_over_seeds(runs) -> list[Run]:
  """One run per label without its seed: each metric averaged, at each step, over the seeds that logged
  it (labelled e.g. 's3 3b normal, mean of 3 seeds')."""
  groups = {}
  for run in runs:
    groups.setdefault(run.label.split(" seed")[0], []).append(run)
  averaged = []
  for label, members in groups.items():
    per_step = {}
    for run in members:
      for record in run.records:
        for key, value in record.items():
          if key != "step" and isinstance(value, (int, float)):
            per_step.setdefault(record["step"], {}).setdefault(key, []).append(value)
    records = [{"step": step, **{k: sum(v) / len(v) for k, v in values.items() if len(v) == len(members)}}
               for step, values in sorted(per_step.items())]
    seeds = f"mean of {len(members)} seeds" if len(members) > 1 else f"seed {members[0].config.get('seed', 0)}"
    averaged.append(Run(members[0].workdir, members[0].config, records, f"{label}, {seeds}"))
  return _colored(averaged)


def _colored(runs) -> list[Run]:
  labels = [r.label for r in runs]
  colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
  for i, run in enumerate(runs):
    if labels.count(run.label) > 1:  # same config label: tell them apart by workdir
      run.label = f"{run.label} ({os.path.basename(os.path.normpath(run.workdir))})"
    run.color = colors[i % len(colors)]
    run.linestyle = LINESTYLES[i % len(LINESTYLES)]  # runs that coincide (at 0, say) stay visible
  return runs


def _legend_below(fig, axes, runs):
  handles = [plt.Line2D([], [], color=r.color, lw=2, linestyle=r.linestyle) for r in runs]
  fig.legend(handles, [r.label for r in runs], loc="lower center", ncol=min(len(runs), 3),
             frameon=False, fontsize=9)
  rows = math.ceil(len(runs) / 3)
  fig.tight_layout(rect=(0, 0.04 + 0.045 * rows, 1, 1))


def _empty_note(ax, text):
  ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _plot_panels(runs, path: str, panels):
  """One row of line panels; each panel: (metric, factor, marker, axis settings)."""
  fig, axes = plt.subplots(1, len(panels), figsize=(11, 4.2))
  for ax, (key, factor, marker, settings) in zip(axes, panels):
    for run in runs:
      steps, values = run.series(key)
      ax.plot(steps, [factor * v for v in values], color=run.color, lw=1.5, linestyle=run.linestyle,
              **({"marker": "o", "ms": 3} if marker else {}))
    ax.set(xlabel="training step", **settings)
    ax.grid(alpha=0.3)
    if not any(run.series(key)[0] for run in runs):
      _empty_note(ax, f"no {key} logged yet")
  _legend_below(fig, axes, runs)
  fig.savefig(path, dpi=FIGURE_DPI)
  plt.close(fig)


def plot_curves(runs, path: str):
  _plot_panels(runs, path, [
      ("eval/top1", 100, True, dict(title="Eval top-1 accuracy", ylabel="top-1 (%)")),
      ("train/loss", 1, False, dict(title="Training loss", ylabel="cross-entropy (log scale)",
                                    yscale="log")),
  ])


def plot_dynamics(runs, path: str):
  _plot_panels(runs, path, [
      ("dynamics/sign_flip_rate_per_1k_steps", 100, True,
       dict(title="Sign-flip rate (WSVR), scaled to 1,000 steps",
            ylabel="weights changing sign (% per 1k steps)", yscale="symlog", ylim=(0, None))),
      ("dynamics/low_value_rate", 100, True,
       dict(title="Low-value rate (WLVR)", ylabel="weights at the lowest level (%)", ylim=(0, 100))),
  ])


def plot_levels(runs, path: str):
  quantized = [r for r in runs if r.level_keys()]
  cols = min(max(len(quantized), 1), 3)
  rows = max(math.ceil(len(quantized) / cols), 1)
  fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols + 1.6, 3.4 * rows + 0.9), squeeze=False)
  cmap = plt.get_cmap("viridis")
  for ax, run in zip(axes.flat, quantized):
    keys = run.level_keys()
    steps = run.series(keys[0])[0]
    shares = [[100 * v for v in run.series(k)[1]] for k in keys]
    colors = [cmap(i / max(len(keys) - 1, 1)) for i in range(len(keys))]
    labels = [f"|w| = {k.rsplit('_', 1)[1]}" for k in keys]
    ax.stackplot(steps, shares, labels=labels, colors=colors, alpha=0.9)
    ax.set(xlabel="training step", ylabel="share of weights (%)", ylim=(0, 100))
    ax.set_title(run.label, color=run.color, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
  for ax in list(axes.flat)[len(quantized):]:
    ax.axis("off")
  if not quantized:
    _empty_note(axes[0, 0], "no quantized runs (full precision has no levels)")
  skipped = [r.label for r in runs if not r.level_keys()]
  title = "Share of weights at each magnitude level"
  if skipped:
    title += f"\n(not shown, full precision has no levels: {', '.join(skipped)})"
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=FIGURE_DPI)
  plt.close(fig)


def model_size(config: dict) -> dict:
  """Parameter count, and bytes as float32 and as stored at the method's bit width (BatchNorm statistics
  not included). Empty when the config does not fix the number of classes."""
  import jax
  import jax.numpy as jnp
  import ml_collections

  from s3jax import input_pipeline, quant
  from s3jax.models import create_model

  if not config.get("num_classes"):
    return {}
  cfg = ml_collections.ConfigDict(config)
  channels = 1 if cfg.data.name in input_pipeline.IN_MEMORY else 3
  model = create_model(cfg.model, cfg.num_classes)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, channels)),
                                             train=False)["params"])
  quantizer = quant.quantizer_from_config(cfg.quant)
  if quantizer is not None:
    params = jax.eval_shape(lambda p: quant.to_latents(p, cfg.quant.rules, jax.random.key(0),
                                                       quantizer=quantizer), params)
  bits = quant.storage_bits(params)
  count = bits["quantized_weights"] + bits["float_params"]
  stored = (bits["quantized_bits"] + bits["float_bits"]) / 8
  return {"params": count, "float32_MB": count * 4 / 1e6, "stored_MB": stored / 1e6,
          "compression": count * 4 / stored}


def summary_rows(runs) -> list[dict]:
  rows = []
  for run in runs:
    config = run.config
    _, top1 = run.series("eval/top1")
    steps = max((r["step"] for r in run.records), default=0)
    row = {"run": run.label, "method": run.method,
           "bits": "32" if run.method == "float" else config.get("quant", {}).get("bits", ""),
           "init": config.get("quant", {}).get("init", "") if run.method == "s3" else "",
           "seed": config.get("seed", ""), "model": config.get("model", ""),
           "data": config.get("data", {}).get("name", ""), "steps": steps,
           "final_top1": top1[-1] if top1 else "", "best_top1": max(top1) if top1 else "",
           "workdir": run.workdir}
    row.update(model_size(config))
    rows.append(row)
  return rows


def _fmt(key: str, value) -> str:
  if value == "" or value is None:
    return ""
  if key.endswith("top1"):
    return f"{100 * value:.2f}%"
  if key.endswith("_MB"):
    return f"{value:.3f}"
  if key == "compression":
    return f"{value:.1f}x"
  if key == "params":
    return f"{value:,}"
  return str(value)


def write_summary(rows, md_path: str, csv_path: str):
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  header = ("run", "method", "bits", "init", "seed", "model", "data", "steps", "final top-1",
            "best top-1", "params", "float32 MB", "stored MB", "compression")
  keys = SUMMARY_COLUMNS[:-1]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(k, row.get(k, "")) for k in keys) + " |")
  note = ("Stored size: each quantized weight at its method's bit width (plus float32 scales), every "
          "other parameter as float32; BatchNorm statistics not counted. Top-1 on the eval split.")
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n\n" + note + "\n")


def write_report(workdirs, output: str, average_seeds: bool = False) -> dict:
  """Writes the five report files into `output`; returns their paths. With `average_seeds`, the figures
  show one line per configuration, averaged over its seeds; the summary still lists every run."""
  runs = load_runs(workdirs)
  plotted = average_over_seeds(runs) if average_seeds else runs
  os.makedirs(output, exist_ok=True)
  paths = {name: os.path.join(output, name) for name in
           ("curves.png", "dynamics.png", "levels.png", "summary.md", "summary.csv")}
  plot_curves(plotted, paths["curves.png"])
  plot_dynamics(plotted, paths["dynamics.png"])
  plot_levels(plotted, paths["levels.png"])
  write_summary(summary_rows(runs), paths["summary.md"], paths["summary.csv"])
  return paths
