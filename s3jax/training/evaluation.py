"""The trainer's evaluation: top-1, top-5 and loss over the whole eval split, with the weight statistics
and dynamics since the previous eval; and its log line."""
import json

import jax
import jax.numpy as jnp
import numpy as np

from s3jax import quant
from s3jax.classification import eval_metrics
from s3jax.quant.dynamics import tracked_weights
from s3jax.training import sharding


def make_weight_statistics(rules, mesh):
  """One jitted function (params, previous signs) -> (statistics, per-layer dynamics, new signs).

  Statistics: level shares and S3's dense penalty, and the dynamics over the weights `rules` track.
  """

  def statistics(params, previous_signs):
    params = quant.unbank_tree(params)
    totals, per_layer, signs = quant.weight_dynamics(tracked_weights(params, rules), previous_signs)
    return {**quant.weight_statistics(params), **totals}, per_layer, signs

  return jax.jit(statistics, out_shardings=sharding.replicated(mesh))


def evaluate(eval_step, weight_statistics, state, dataset, mesh):
  """(metrics, per-layer metrics, state): top-1, top-5 and loss over the whole eval split, the weight
  statistics and dynamics since the previous eval; the state keeps this eval's signs for the next."""
  totals = None
  for batch in dataset.eval_batches():
    sums = eval_step(state, sharding.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  stats, per_layer, signs = weight_statistics(state.params, state.signs)
  totals, stats, per_layer = jax.device_get((totals, stats, per_layer))
  metrics = {**eval_metrics(totals, dataset.num_classes), **{k: float(v) for k, v in stats.items()}}
  step = int(state.step)
  interval = step - int(state.signs_step)
  if "dynamics/sign_flip_rate" in metrics and interval > 0:
    # Per 1,000 steps, so that runs with different eval intervals compare.
    metrics["dynamics/sign_flip_rate_per_1k_steps"] = metrics["dynamics/sign_flip_rate"] * 1000 / interval
  # A new buffer, not state.step itself: the donated train state must not hold one buffer twice.
  signs_step = jax.device_put(np.int32(step), sharding.replicated(mesh))
  state = state.replace(signs=signs, signs_step=signs_step)
  return metrics, {k: float(v) for k, v in per_layer.items()}, state


def format_eval(step: int, metrics: dict) -> str:
  """'eval at step N: top1 0.9800  loss 0.0554 | sign flips 1.20% (3.1%/1k steps)  low-value 45.1% | {...}'."""
  head = f"eval at step {step}: top1 {metrics['eval/top1']:.4f}  loss {metrics['eval/loss']:.4f}"
  if "dynamics/sign_flip_rate" in metrics:
    head += f" | sign flips {100 * metrics['dynamics/sign_flip_rate']:.2f}%"
    if "dynamics/sign_flip_rate_per_1k_steps" in metrics:
      head += f" ({100 * metrics['dynamics/sign_flip_rate_per_1k_steps']:.2f}%/1k steps)"
    head += f"  low-value {100 * metrics['dynamics/low_value_rate']:.1f}%"
  rest = {k: round(v, 4) for k, v in metrics.items() if k not in ("eval/top1", "eval/loss")
          and not k.startswith("dynamics/")}
  return f"{head} | {json.dumps(rest)}"
