"""The report's figures: eval top-1 and training loss, weight dynamics, and the share of each weight level.
Each run keeps one colour and line style in every figure."""
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

FIGURE_DPI = 110
LINESTYLES = ("-", "--", "-.", ":")


def color_runs(runs) -> list:
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
