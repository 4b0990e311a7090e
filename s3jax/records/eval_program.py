"""The one program that evaluates a checkpoint: the trainer's eval, `evaluate.py` and the plain path of an
export all run it, so they agree bit for bit on any CPU."""
import jax

from s3jax.quant import materialize_tree


def eval_logits(model, params, batch_stats, images):
  """The model in eval mode on materialized weights: what every evaluation of a checkpoint computes."""
  return model.apply({"params": materialize_tree(params), "batch_stats": batch_stats}, images, train=False)


def jit_eval_logits(model):
  """`eval_logits` jitted over ({'params', 'batch_stats'}, images)."""
  return jax.jit(lambda variables, images: eval_logits(model, variables["params"], variables["batch_stats"],
                                                       images))
