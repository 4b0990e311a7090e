r"""From a float model: every method converted from the MNIST demo's float run, then fine-tuned, against
the same method trained from scratch for the same number of steps.

  python benchmarks/conversion_study.py --output=/tmp/conversion          # 73 runs, 2.6 h of run time
  python benchmarks/conversion_study.py --output=/tmp/conversion --quick  # the same code paths in a minute
  python benchmarks/conversion_study.py --output=/tmp/conversion --publish=docs/RESULTS.md

1. The float model: `train.py --config=configs/mnist.py --config.quant.method=float` (20 epochs, seed 0).
2. For S3, DenseShift, DeepShift-Q and DeepShift-PS at 2, 3 and 4 bits, 3 seeds each:
   - fine-tuned: `--config.init_from=<the float run>`, 3 epochs of the demo's recipe without warm-up
     (configs/mnist_finetune.py). Its eval at step 0 is the converted model before any update (the
     post-training number; the same for every seed), then after epochs 1 and 3;
   - from scratch: the demo's recipe over the same 3 epochs (one warm-up epoch), evaluated after
     epochs 1 and 3.
   "1 epoch" is the first epoch of these 3-epoch runs, not a separate 1-epoch schedule.
3. DeepShift's released conversion, `round_power_of_2(W)` (sign and rounded log2 of W itself, clamped to
   the method's range, no scale, BatchNorms unchanged), on the same float model, before any training.

Every run is a `train.py` run in <output>/runs/<name>_seed<k>; a rerun skips finished runs. Writes
<output>/RESULTS.md and <output>/results/conversion/{conversion.png, conversion.json}.
"""
import datetime
import json
import os
import platform
import sys
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from claims_page import format_duration, publish  # noqa: E402
from paper_claims import run_grid  # noqa: E402
from s3jax.cli import run  # noqa: E402
from s3jax.records.workdir_files import read_config, read_metrics  # noqa: E402

METHODS = (("s3", "S3"), ("denseshift", "DenseShift"), ("deepshift_q", "DeepShift-Q"),
           ("deepshift_ps", "DeepShift-PS"))
ARMS = ("post-conversion", "fine-tuned, 1 epoch", "fine-tuned, 3 epochs", "scratch, 1 epoch", "scratch, 3 epochs")
FIGURES = "results/conversion"

flags.DEFINE_string("output", None, "Directory for the runs, the figure and RESULTS.md.", required=True)
flags.DEFINE_integer("seeds", 3, "Seeds per fine-tuned and scratch arm.", lower_bound=1)
flags.DEFINE_list("bits", ["3", "2", "4"], "Bit widths, in the order they run.")
flags.DEFINE_list("methods", [m for m, _ in METHODS], "Methods, in the order they run.")
flags.DEFINE_bool("quick", False, "S3 and DeepShift-PS at 3 bits on the 8x8 digits, 6 steps, 1 seed.")
flags.DEFINE_string("publish", None, "Also put the page into this file's 'conversion' section.")


def grids(output: str, methods, bits, quick: bool):
  """(float grid args, shift grid args): what `paper_claims.run_grid` runs."""
  float_dir = os.path.abspath(os.path.join(output, "runs", "float_seed0"))
  config = "configs/digits.py" if quick else "configs/mnist.py"
  entries = []
  for b in bits:
    for m in methods:
      quant = {"quant.method": m, "quant.bits": b}
      entries.append((f"{m}_{b}b_finetuned", f"{m} {b}b fine-tuned",
                      {**quant, "init_from": float_dir, "optim.warmup_epochs": 0.0}))
      entries.append((f"{m}_{b}b_scratch", f"{m} {b}b scratch", quant))
  # --quick: paper_claims.py --quick's settings, so the two share compiled programs in the test suite.
  short = {"total_steps": 6, "eval_every_steps": 3, "log_every_steps": 3} if quick else {"num_epochs": 3}

  def args(grid, extra, seeds):
    suite = types.SimpleNamespace(grid=tuple(grid), quick=())
    return types.SimpleNamespace(output=output, quick=False, seeds=seeds, suite=suite, config=config, extra=extra)

  float_grid = [("float", "full precision", {"quant.method": "float"})]
  float_extra = short if quick else {}
  return args(float_grid, float_extra, 1), args(entries, short, 1 if quick else flags.FLAGS.seeds)


def eval_points(workdir: str) -> dict:  # {step: eval top-1}
  return {r["step"]: r["eval/top1"] for r in read_metrics(workdir) if "eval/top1" in r}


def collect(output: str, shift_args) -> dict:
  """{(method, bits): {arm: [top-1 per seed]}}: post-conversion from step 0, '1 epoch' the first eval after
  it, '3 epochs' the last."""
  table = {}
  for name, _, overrides in shift_args.suite.grid:
    key = (overrides["quant.method"], int(overrides["quant.bits"]))
    arms = table.setdefault(key, {arm: [] for arm in ARMS})
    kind = "fine-tuned" if "init_from" in overrides else "scratch"
    for seed in range(shift_args.seeds):
      points = eval_points(os.path.join(output, "runs", f"{name}_seed{seed}"))
      trained = sorted(s for s in points if s > 0)
      if kind == "fine-tuned" and seed == 0:
        arms["post-conversion"].append(points[0])
      arms[f"{kind}, 1 epoch"].append(points[trained[0]])
      arms[f"{kind}, 3 epochs"].append(points[trained[-1]])
  return table


def deepshift_conversion(float_dir: str, methods, bits) -> dict:
  """{(method, bits): top-1} of DeepShift's released conversion, applied to the float checkpoint and
  evaluated as is: DeepShift-Q's latent is W itself, DeepShift-PS's shift round(log2|W|) and sign
  sign(W), each clamped to the method's range; no scale, BatchNorms unchanged."""
  import jax.numpy as jnp
  from s3jax import data, models, quant
  from s3jax.deploy.from_workdir import restore_variables
  from s3jax.deploy.inference import evaluate_apply
  from s3jax.quant.tree import map_kernels
  from s3jax.records.eval_program import jit_eval_logits
  config = read_config(float_dir)
  model, variables, _, _ = restore_variables(config, float_dir)
  logits, dataset = jit_eval_logits(model), data.create_dataset(config)
  released = {
      "deepshift_q": lambda w, q: quant.DeepShiftQLatent(w, q.bits),
      "deepshift_ps": lambda w, q: quant.DeepShiftPSLatent(jnp.round(jnp.log2(jnp.abs(w))), jnp.sign(w), q.bits),
  }
  out = {}
  for m in (m for m in methods if m in released):
    for b in bits:
      rules = quant.rules_for(models.default_quant_patterns(config.model), quant.quantizer(m, b))
      latents = map_kernels(variables["params"], rules, lambda name, w, q, m=m: q.project(released[m](w, q)))
      weights = {"params": quant.materialize_tree(latents), "batch_stats": variables["batch_stats"]}
      out[(m, b)] = evaluate_apply(lambda images, w=weights: logits(w, images), dataset)[0]["eval/top1"]
  return out


def _cell(values) -> str:
  if not values:
    return "–"
  mean = 100 * np.mean(values)
  return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * np.std(values, ddof=1):.1f}"


def plot(table: dict, released: dict, float_top1: float, methods, bits, path: str):
  """Left: top-1 right after conversion, ours and DeepShift's; then one panel a method: fine-tuned against
  scratch after 1 and 3 epochs (means over seeds, bars one standard deviation)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  bits = sorted(bits)
  labels = dict(METHODS)
  rows = -(-(len(methods) + 2) // 3)  # the conversion panel, one a method, and the arms' legend
  fig, axes = plt.subplots(rows, 3, figsize=(13, 4.0 * rows), squeeze=False)
  axes = axes.ravel()
  ax = axes[0]
  # S3 and DeepShift-PS (DenseShift and DeepShift-Q) have one level set up to a scale: they convert alike.
  marks = {"s3": ("o", 11, "none"), "denseshift": ("s", 11, "none"), "deepshift_q": ("s", 5, None),
           "deepshift_ps": ("o", 5, None)}
  for m in methods:
    marker, size, face = marks[m]
    line, = ax.plot(bits, [100 * table[(m, b)]["post-conversion"][0] for b in bits], marker=marker, ms=size,
                    mfc=face, label=labels[m])
    if any((m, b) in released for b in bits):
      ax.plot(bits, [100 * released[(m, b)] for b in bits], "x--", color=line.get_color(),
              label=f"{labels[m]}, DeepShift's rounding")
  ax.axhline(100 * float_top1, color="gray", ls=":", label="float model")
  ax.set(title="Right after conversion (no training)", xlabel="bits", ylabel="eval top-1 (%)", xticks=bits,
         ylim=(0, 100))
  styles = {"fine-tuned, 1 epoch": ("C0", "o--"), "fine-tuned, 3 epochs": ("C0", "o-"),
            "scratch, 1 epoch": ("C3", "s--"), "scratch, 3 epochs": ("C3", "s-")}
  trained = [100 * v for key in table for arm in styles for v in table[key][arm]]
  low = min(trained + [100 * float_top1]) - 1
  for ax, m in zip(axes[1:], methods):
    for arm, (color, style) in styles.items():
      means = [100 * np.mean(table[(m, b)][arm]) for b in bits]
      sds = [100 * np.std(table[(m, b)][arm], ddof=1) if len(table[(m, b)][arm]) > 1 else 0 for b in bits]
      ax.errorbar(bits, means, yerr=sds, fmt=style, color=color, capsize=3, label=arm)
    ax.axhline(100 * float_top1, color="gray", ls=":", label="float model")
    ax.set(title=f"{labels[m]}: fine-tuned and from scratch", xlabel="bits", ylabel="eval top-1 (%)",
           xticks=bits, ylim=(low, 100))
  legend = axes[len(methods) + 1]  # both legends in the spare panel, off the data
  legend.axis("off")
  legend.add_artist(legend.legend(*axes[0].get_legend_handles_labels(), loc="upper center",
                                  title="right after conversion"))
  legend.legend(*axes[1].get_legend_handles_labels(), loc="lower center", title="trained: mean over seeds, bars 1 sd")
  for ax in axes[len(methods) + 2:]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_page(output: str, float_args, shift_args, methods, bits, seconds: float) -> str:
  import jax
  float_dir, results = os.path.join(output, "runs", "float_seed0"), os.path.join(output, FIGURES)
  float_top1 = max(eval_points(float_dir).items())[1]  # the last eval
  table, released = collect(output, shift_args), deepshift_conversion(float_dir, methods, bits)
  os.makedirs(results, exist_ok=True)
  plot(table, released, float_top1, methods, bits, os.path.join(results, "conversion.png"))
  with open(os.path.join(results, "conversion.json"), "w") as f:
    json.dump({"float_top1": float_top1, "runs": {f"{m} {b}b": arms for (m, b), arms in table.items()},
               "deepshift_rounding": {f"{m} {b}b": v for (m, b), v in released.items()}}, f, indent=1)
  machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python "
             f"{platform.python_version()}, jax {jax.__version__}")
  labels, seeds, quick = dict(METHODS), shift_args.seeds, shift_args.config.endswith("digits.py")
  header = ["method", "bits", "post-conversion", "DeepShift's rounding", *ARMS[1:]]
  lines = [
      "## From a float model", "",
      "Every method converted from the MNIST demo's float ResNet-20 (s3jax.quant.conversion: each kernel's "
      "nearest levels under a fitted per-channel scale, folded into its BatchNorm), then fine-tuned with "
      "`--config.init_from`, against the same method trained from scratch for the same steps.", "",
      f"- Command: `python benchmarks/conversion_study.py --output=DIR{' --quick' if quick else ''}` "
      "(then `--publish=docs/RESULTS.md`: this section and its figure)",
      f"- Date: {datetime.date.today().isoformat()}; machine: {machine}",
      f"- Run time of the {1 + len(shift_args.suite.grid) * seeds} runs, summed: {format_duration(seconds)} "
      "(runs that ran side by side count in full)",
      f"- Float model: `{float_args.config}` with `quant.method=float`, seed 0: top-1 {100 * float_top1:.1f}%.",
      f"- Fine-tuned: `init_from` that run, the same config's recipe without warm-up "
      f"(configs/mnist_finetune.py); scratch: the same recipe with its warm-up epoch. Both run "
      f"{', '.join(f'`{k}={v}`' for k, v in shift_args.extra.items())}, {seeds} seed(s) each "
      "(the seed sets data order, and the scratch init); '1 epoch' is the first epoch of those runs.",
      "- Post-conversion: step 0 of the fine-tuned runs, before any update (deterministic). DeepShift's "
      "rounding: the released DeepShift conversion (sign and rounded log2 of W itself, clamped to the "
      "method's range, no scale, BatchNorms unchanged) on the same float model.", "",
      f"Top-1 (%){', mean ± standard deviation over seeds' if seeds > 1 else ''}; the float model: "
      f"{100 * float_top1:.1f}.", "",
      "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
  ]
  for b in sorted(bits):
    for m in methods:
      arms = table[(m, b)]
      cells = [labels[m], str(b), _cell(arms["post-conversion"]),
               _cell([released[(m, b)]] if (m, b) in released else []), *(_cell(arms[a]) for a in ARMS[1:])]
      lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"![top-1 after conversion, fine-tuning and training from scratch]({FIGURES}/conversion.png)", ""]
  path = os.path.join(output, "RESULTS.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax's restore logs, when the page reads the float model
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if set(f.methods) - set(dict(METHODS)):
    raise SystemExit(f"error: --methods={','.join(f.methods)}; use some of {list(dict(METHODS))}.")
  methods, bits = (["s3", "deepshift_ps"], [3]) if f.quick else (f.methods, [int(b) for b in f.bits])
  float_args, shift_args = grids(f.output, methods, bits, f.quick)
  start = time.perf_counter()
  seconds = run_grid(float_args) + run_grid(shift_args)
  path = write_page(f.output, float_args, shift_args, methods, bits, seconds)
  print(f"{path} written ({format_duration(time.perf_counter() - start)} this invocation)")
  if f.publish:
    page = types.SimpleNamespace(output=f.output, suite=types.SimpleNamespace(name="conversion", figures=FIGURES))
    print(f"{publish(page, f.publish)}: section 'conversion' and its figure published")


if __name__ == "__main__":
  run(main, "finished runs are kept, an interrupted one resumes from its last checkpoint: rerun the same command")
