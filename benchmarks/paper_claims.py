r"""The S3 paper's claims, tested at CPU scale: grids of trainings, figures and a results page.

  python benchmarks/paper_claims.py --output=/tmp/claims          # the image grid, about 70 min on 2 cores
  python benchmarks/paper_claims.py --output=/tmp/claims --quick  # the same code paths in about a minute
  python benchmarks/paper_claims.py --output=/tmp/claims --publish=docs/RESULTS.md  # its section in docs
  python benchmarks/paper_claims.py --suite=speech --output=/tmp/speech   # spoken digits, about 15 min
  python benchmarks/paper_claims.py --suite=vit --output=/tmp/vit         # a ViT on MNIST, one seed

Each run is `python train.py --config=<the suite's config>` with overrides, in <output>/runs/<name>, so a
run is an ordinary trainer run: checkpointed, resumable, and readable by report.py. A rerun skips the
runs that finished with the same command and resumes an interrupted one from its last checkpoint.

Suites (`claims_suites.py`), one recipe for every method in each:
- image (default): ResNet-20 on the 5,000 shipped MNIST digits (4,000 train / 1,000 test), 8 epochs of the
  demo's recipe (SGD, lr 0.4 at batch 128, cosine with 1 warm-up epoch, weight decay 5e-4), 3 seeds of:
  full precision; S3 2/3/4 bits (normal init), S3 3 bits (dense init); DenseShift 3 bits; DeepShift-Q 3
  bits; DeepShift-PS 3 and 2 bits. Eight epochs, not the demo's 20: at 20 every method reaches
  96.7-98.6% and the differences shrink into seed noise.
- speech: `resnet1d_8` on the spoken digits (configs/speech_digits.py, 30 epochs), 3 seeds of: full
  precision; S3 2 and 3 bits; DenseShift 2 and 3 bits; DeepShift-PS 3 bits.
- vit: `vit_tiny` on the MNIST digits (configs/vit_mnist.py, 40 epochs), one seed of full precision,
  S3 3 bits and DenseShift 3 bits.

Writes <output>/RESULTS.md (tables, claim verdicts, figures) and the figures (curves.png, dynamics.png,
levels.png as seed means, summary.md/csv per run, claims.json) under <output>/results (image) or
<output>/results/<suite>. --publish=docs/RESULTS.md puts that page into the suite's marked section of the
file and copies its figures next to it.
"""
import json
import os
import shlex
import subprocess
import sys
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402
from flax import traverse_util  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from claims_page import format_duration, publish, write_page  # noqa: E402
from claims_suites import SUITES  # noqa: E402
from s3jax.cli import config_value, exit_with_error, run  # noqa: E402


def run_command(overrides: dict, seed: int, args, workdir: str) -> list[str]:
  # Relative to the repository (the command runs there), so a marker stays valid in another checkout.
  cmd = [sys.executable, "train.py", f"--config={args.config}", f"--workdir={os.path.abspath(workdir)}",
         f"--config.seed={seed}"]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  cmd += [f"--config.{k}={v}" for k, v in args.extra.items()]
  return cmd


def run_grid(args) -> float:
  """Trains every (grid entry, seed) not yet done; returns the summed wall time of every run."""
  grid = args.suite.grid
  names = args.suite.quick if args.quick else [g[0] for g in grid]
  todo = [(g, seed) for g in grid if g[0] in names for seed in range(args.seeds)]
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
          f"{left} runs left, ETA {format_duration(eta)}", flush=True)
  return total_seconds


def _define_flags():
  flags.DEFINE_string("output", None, "Directory for the runs, figures and RESULTS.md.", required=True)
  flags.DEFINE_enum("suite", "image", list(SUITES), "Which study: claims_suites.py.")
  flags.DEFINE_integer("seeds", None, "Seeds per grid entry (default: the suite's; 1 with --quick).",
                       lower_bound=1)
  flags.DEFINE_float("epochs", None, "Epochs per run (default: the suite's; --quick runs 6 steps).")
  config_flags.DEFINE_config_file(
      "config", "configs/mnist.py", "The train.py config every run starts from (default: the suite's); "
      "--config.<key>=<value> overrides reach every run (the grid's own keys excepted).", lock_config=True)
  flags.DEFINE_bool("quick", False, "A subset of the grid, 6 steps each, 1 seed (the image suite: on "
                    "scikit-learn's 8x8 digits).")
  flags.DEFINE_string("publish", None, "Also put the page into this file's section for the suite (e.g. "
                      "docs/RESULTS.md) and copy its figures next to it.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  config_value(f["config"])  # a config file that does not load: one line
  suite = SUITES[f.suite]
  overrides = traverse_util.flatten_dict(config_flags.get_override_values(f["config"]), sep=".")
  taken = sorted(set(overrides) & {k for _, _, grid in suite.grid for k in grid} | set(overrides) & {"seed"})
  if taken:
    raise SystemExit(f"error: --config.{taken[0]} is set by the grid for each run; leave it out.")
  config = os.path.relpath(config_flags.get_config_filename(f["config"]), REPO)
  args = types.SimpleNamespace(output=f.output, quick=f.quick, seeds=f.seeds, suite=suite,
                               config=config if f["config"].present else suite.config)
  if args.quick:
    args.config = suite.quick_config
    args.seeds = args.seeds or 1
    args.extra = {"total_steps": 6, "eval_every_steps": 3, "log_every_steps": 3, **overrides}
  else:
    args.seeds = args.seeds or suite.seeds
    args.extra = {"num_epochs": f.epochs or suite.epochs, **overrides}
  start = time.perf_counter()
  total_seconds = run_grid(args)
  path = write_page(args, total_seconds)
  print(f"{path} written ({format_duration(time.perf_counter() - start)} this invocation)")
  if f.publish:
    print(f"{publish(args, f.publish)}: section '{suite.name}' and its figures published")


if __name__ == "__main__":
  try:
    _define_flags()  # config_flags reads --config.<key> overrides already here
  except Exception as err:  # pylint: disable=broad-except
    exit_with_error(err)
  run(main, "finished runs are kept, an interrupted one resumes from its last checkpoint: rerun the "
      "same command")
