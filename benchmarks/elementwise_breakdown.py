r"""Where S3's extra step time goes: materialize (+ its pull-back) and the optimizer update, timed alone.

  python benchmarks/elementwise_breakdown.py --model=resnet50

Both parts are elementwise over the params tree: S3 has 2+K latents (and as many momenta) per quantized
weight. The optimizer is timed as built by `make_optimizer`, and also wrapped in `optax.flatten` (one
concatenated vector instead of one kernel per leaf) to show how much is per-leaf overhead. JSON lines.
"""
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from s3jax.cli import parse_flags
from s3jax.config import base_config
from s3jax.models import create_model
from s3jax.quant import materialize_tree, to_latents
from s3jax.records.resolved import resolve_run
from s3jax.training.optim import make_optimizer


def median_time(fn, *args, n=20):
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main(argv):
  del argv
  args = flags.FLAGS
  model = create_model(args.model, 1000)
  params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 224, 224, 3)), train=False)["params"])(
      jax.random.key(0))
  for bits in (args.bits, 32):
    config = base_config()
    config.quant.bits, config.num_epochs = bits, 1
    config.quant.method = "float" if bits == 32 else config.quant.method
    run = resolve_run(config, steps_per_epoch=100)
    tree = params if bits == 32 else to_latents(params, run.rules, jax.random.key(1))
    grads = jax.tree.map(jnp.ones_like, tree)

    def pullback(tree):
      weights, vjp = jax.vjp(materialize_tree, tree)
      return vjp(jax.tree.map(jnp.ones_like, weights))

    row = {"model": args.model, "bits": bits, "backend": jax.default_backend(),
           "leaves": len(jax.tree.leaves(tree)),
           "materialize_s": median_time(materialize_tree, tree), "pullback_s": median_time(pullback, tree)}
    tx, _ = make_optimizer(run, tree)
    for name, opt in (("optimizer_s", tx), ("optimizer_flat_s", optax.flatten(tx))):
      state = opt.init(tree)

      def update(tree, grads, state, opt=opt):
        updates, state = opt.update(grads, state, tree)
        return optax.apply_updates(tree, updates), state

      row[name] = median_time(update, tree, grads, state)
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}))


def _define_flags():
  flags.DEFINE_string("model", "resnet50", "Model name (s3jax.models).")
  flags.DEFINE_integer("bits", 3, "Bit width of the quantized method.")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
