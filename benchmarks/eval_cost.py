r"""What the weight dynamics add to an eval: the trainer's eval with and without them, side by side.

  python benchmarks/eval_cost.py                          # the MNIST demo (configs/mnist.py), 3-bit S3
  python benchmarks/eval_cost.py --method=float --repeats=5

Both variants run the whole eval split through the trainer's jitted eval step and compute the level shares;
"with" also computes the sign-flip and low-value rates against the previous signs (the trainer's own
`make_weight_statistics`). Interleaved, medians after one warm-up each. Ends with one JSON line.
"""
import importlib.util
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from s3jax import data, quant
from s3jax.cli import parse_flags
from s3jax.models import create_model
from s3jax.training import sharding
from s3jax.records.resolved import resolve_run
from s3jax.training.evaluation import make_weight_statistics
from s3jax.training.state import create_train_state
from s3jax.training.steps import make_eval_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main(argv):
  del argv
  args = flags.FLAGS
  config = load_config(args.config)
  config.quant.method = args.method
  mesh = sharding.make_data_mesh()
  dataset = data.create_dataset(config)
  model = create_model(config.model, dataset.num_classes)
  run = resolve_run(config, steps_per_epoch=dataset.steps_per_epoch)
  state, _, _ = create_train_state(run, model, dataset.image_shape, mesh)
  replicated = sharding.replicated(mesh)
  eval_step = jax.jit(make_eval_step(model), in_shardings=(replicated, sharding.batch_sharding(mesh)),
                      out_shardings=replicated)
  with_dynamics = make_weight_statistics(run.rules, mesh)
  levels_only = jax.jit(quant.weight_statistics, out_shardings=replicated)
  batches = [sharding.global_batch(b, mesh) for b in dataset.eval_batches()]

  def evaluate(dynamics: bool) -> float:
    start = time.perf_counter()
    totals = None
    for batch in batches:
      sums = eval_step(state, batch)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    stats = with_dynamics(state.params, state.signs) if dynamics else levels_only(state.params)
    jax.device_get((totals, stats))
    return time.perf_counter() - start

  times = {True: [], False: []}
  with jax.set_mesh(mesh):
    evaluate(True), evaluate(False)  # compile
    for _ in range(args.repeats):
      for dynamics in (False, True):
        times[dynamics].append(evaluate(dynamics))
  without, with_ = statistics.median(times[False]), statistics.median(times[True])
  print(f"eval of {dataset.num_test} images, {config.model} {args.method}, {jax.device_count()} "
        f"device(s): without dynamics {1e3 * without:.1f} ms, with {1e3 * with_:.1f} ms "
        f"(median of {args.repeats}), ratio {with_ / without:.3f}")
  print(json.dumps({"config": args.config, "method": args.method, "without_s": without, "with_s": with_,
                    "ratio": with_ / without, "repeats": args.repeats}))


def _define_flags():
  flags.DEFINE_string("config", "mnist", "Config name in configs/ (without .py).")
  flags.DEFINE_string("method", "s3", "Quantization method (s3jax.quant.method_names()).")
  flags.DEFINE_integer("repeats", 7, "Timed repetitions (the median is reported).")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
