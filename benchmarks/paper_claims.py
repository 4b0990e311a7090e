r"""The S3 paper's four claims, tested at CPU scale: a grid of trainings, figures and a results page.

  python benchmarks/paper_claims.py --output=/tmp/claims          # the default grid, about 70 min on 2 cores
  python benchmarks/paper_claims.py --output=/tmp/claims --quick  # the same code paths in about a minute
  cp -r /tmp/claims/RESULTS.md /tmp/claims/results docs/          # publish (what docs/RESULTS.md is)

Each run is `python train.py --config=configs/mnist.py` with overrides, in <output>/runs/<name>, so a
run is an ordinary trainer run: checkpointed, resumable, and readable by report.py. A rerun skips the
runs that finished with the same command and resumes an interrupted one from its last checkpoint.

Default grid: ResNet-20 on the 5,000 shipped MNIST digits (4,000 train / 1,000 test), 8 epochs, the
demo's recipe (SGD, lr 0.4 at batch 128, cosine with 1 warm-up epoch, weight decay 5e-4 on every
parameter) for every method; 3 seeds of: full precision; S3 2/3/4 bits (normal init), S3 3 bits (dense
init); DenseShift 3 bits; DeepShift-Q 3 bits; DeepShift-PS 3 and 2 bits. Eight epochs, not the demo's
20: at 20 every method reaches 96.7-98.6% and the differences shrink into seed noise.

Writes <output>/RESULTS.md (tables, claim verdicts, figures) and <output>/results/ (curves.png,
dynamics.png, levels.png as seed means, summary.md/csv per run, claims.json).
"""
import datetime
import json
import types
import os
import platform
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402
from flax import traverse_util  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from claims_analysis import GRID, PAPER_NOTE, QUICK, accuracy_table, collect, judge_claims  # noqa: E402
from s3jax.cli import config_value, exit_with_error, run  # noqa: E402
from s3jax.report import load_runs, write_report  # noqa: E402

def run_command(overrides: dict, seed: int, args, workdir: str) -> list[str]:
  # Relative to the repository (the command runs there), so a marker stays valid in another checkout.
  cmd = [sys.executable, "train.py", f"--config={args.config}", f"--workdir={os.path.abspath(workdir)}",
         f"--config.seed={seed}"]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  cmd += [f"--config.{k}={v}" for k, v in args.extra.items()]
  return cmd


def _format_duration(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(round(seconds))))


def run_grid(args) -> float:
  """Trains every (grid entry, seed) not yet done; returns the summed wall time of every run."""
  names = QUICK if args.quick else [g[0] for g in GRID]
  todo = [(g, seed) for g in GRID if g[0] in names for seed in range(args.seeds)]
  total_seconds, fresh_seconds, fresh = 0.0, 0.0, 0
  for i, ((name, label, overrides), seed) in enumerate(todo):
    workdir = os.path.join(args.output, "runs", f"{name}_seed{seed}")
    marker = os.path.join(workdir, "paper_claims_done.json")
    cmd = run_command(overrides, seed, args, workdir)
    if os.path.exists(marker):
      with open(marker) as f:
        done = json.load(f)
      if done["command"] == cmd[1:]:
        total_seconds += done["seconds"]
        print(f"[{i + 1}/{len(todo)}] {label} seed {seed}: done before, top-1 {done['top1']}", flush=True)
        continue
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    with open(os.path.join(workdir, "stdout.log"), "a") as log:
      log.write("$ " + shlex.join(cmd) + "\n")
      log.flush()
      result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO)
      log.write(result.stdout)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
      raise SystemExit(f"error: {label} seed {seed} failed (exit {result.returncode}); its log is "
                       f"{os.path.join(workdir, 'stdout.log')}. Fix it and rerun: finished runs are kept.")
    final = [line for line in result.stdout.splitlines() if line.startswith("final eval/top1")]
    if not final:  # preempted or Ctrl-C: the trainer saved a checkpoint, and the run is not done
      raise SystemExit(f"error: {label} seed {seed} stopped before its end ({result.stdout.strip()[-200:]}); "
                       "rerun the same command to resume it.")
    top1 = final[-1].split()[3]
    with open(marker, "w") as f:
      json.dump({"command": cmd[1:], "seconds": seconds, "top1": top1}, f)
    total_seconds += seconds
    fresh_seconds += seconds
    fresh += 1
    left = len(todo) - i - 1
    eta = fresh_seconds / fresh * left
    print(f"[{i + 1}/{len(todo)}] {label} seed {seed}: top-1 {top1} in {seconds:.0f} s | "
          f"{left} runs left, ETA {_format_duration(eta)}", flush=True)
  return total_seconds


def write_results(args, total_seconds: float) -> str:
  results = os.path.join(args.output, "results")
  runs_glob = os.path.join(args.output, "runs", "*")
  write_report(runs_glob, results, average_seeds=True)
  groups = collect(args.output)
  claims = judge_claims(groups)
  with open(os.path.join(results, "claims.json"), "w") as f:
    json.dump({"groups": {k: v["top1"] for k, v in groups.items()}, "claims": claims}, f, indent=1)
  runs = load_runs(runs_glob)
  steps = max((r["step"] for run in runs for r in run.records), default=0)
  model, data = runs[0].config["model"], runs[0].config["data"]["name"]
  import jax
  command = "python benchmarks/paper_claims.py --output=DIR" + (" --quick" if args.quick else "")
  machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python "
             f"{platform.python_version()}, jax {jax.__version__}")
  lines = [
      "# The S3 paper's claims at CPU scale",
      "",
      "Li et al. (NeurIPS 2021) report S3 on ImageNet over 200 epochs. This page tests the paper's four "
      "claims on a model and data that 2 CPU cores train in about an hour, and reports what it measures, "
      "whichever way it goes. Every method trains with one recipe; none is tuned.",
      "",
      f"- Command: `{command}` (then `cp -r DIR/RESULTS.md DIR/results docs/`)",
      f"- Date: {datetime.date.today().isoformat()}; machine: {machine}",
      f"- Wall time of the {len(runs)} runs: {_format_duration(total_seconds)}",
      f"- Setup: `{args.config}` ({model} on {data}), {steps} steps each, seeds 0..{args.seeds - 1}; overrides "
      f"{', '.join(f'`{k}={v}`' for k, v in args.extra.items()) or 'none'}.",
      "",
      "## Top-1 accuracy",
      "",
      *accuracy_table(groups),
      "",
      "The ImageNet column is the published ResNet-18 number for the same method and width, for orientation "
      "only: the two settings differ by orders of magnitude in data and training. " + PAPER_NOTE,
      "",
      "## The claims",
      "",
      "A verdict is *holds* or *does not hold* only when the measured difference clears the claim's bound "
      "by two standard errors (over seeds); otherwise it is *unclear at this scale*. The thresholds were "
      "fixed before the grid ran (`judge_claims` in `benchmarks/paper_claims.py`).",
      "",
  ]
  for i, claim in enumerate(claims, 1):
    lines += [f"{i}. **{claim['claim']}** Verdict: **{claim['verdict']}**.  ", f"   {claim['evidence']}", ""]
  lines += [
      "## Figures (means over seeds)",
      "",
      "![eval top-1 and training loss](results/curves.png)",
      "",
      "![sign-flip and low-value rates](results/dynamics.png)",
      "",
      "![share of weights at each level](results/levels.png)",
      "",
      "Every run, one row each: [results/summary.md](results/summary.md).",
      "",
  ]
  path = os.path.join(args.output, "RESULTS.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def _define_flags():
  flags.DEFINE_string("output", None, "Directory for the runs, figures and RESULTS.md.", required=True)
  flags.DEFINE_integer("seeds", None, "Seeds per grid entry (default 3; 1 with --quick).", lower_bound=1)
  flags.DEFINE_float("epochs", 8, "Epochs per run (the default grid; --quick runs 6 steps).")
  config_flags.DEFINE_config_file(
      "config", "configs/mnist.py", "The train.py config every run starts from; --config.<key>=<value> "
      "overrides reach every run (the grid's own keys excepted).", lock_config=True)
  flags.DEFINE_bool("quick", False, "A subset of the grid on scikit-learn's 8x8 digits, 6 steps each, 1 seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  config_value(f["config"])  # a config file that does not load: one line
  overrides = traverse_util.flatten_dict(config_flags.get_override_values(f["config"]), sep=".")
  taken = sorted(set(overrides) & {k for _, _, grid in GRID for k in grid} | set(overrides) & {"seed"})
  if taken:
    raise SystemExit(f"error: --config.{taken[0]} is set by the grid for each run; leave it out.")
  args = types.SimpleNamespace(output=f.output, quick=f.quick, seeds=f.seeds,
                               config=os.path.relpath(config_flags.get_config_filename(f["config"]), REPO))
  if args.quick:
    args.config = "configs/digits.py"
    args.seeds = args.seeds or 1
    args.extra = {"total_steps": 6, "eval_every_steps": 3, "log_every_steps": 3, **overrides}
  else:
    args.seeds = args.seeds or 3
    args.extra = {"num_epochs": f.epochs, **overrides}
  start = time.perf_counter()
  total_seconds = run_grid(args)
  path = write_results(args, total_seconds)
  print(f"{path} written ({_format_duration(time.perf_counter() - start)} this invocation)")


if __name__ == "__main__":
  try:
    _define_flags()  # config_flags reads --config.<key> overrides already here
  except Exception as err:  # pylint: disable=broad-except
    exit_with_error(err)
  run(main, "finished runs are kept, an interrupted one resumes from its last checkpoint: rerun the "
      "same command")
