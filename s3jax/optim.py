"""The optimizer: dense penalty -> coupled weight decay -> SGD momentum (or RAdam), with lr schedules.

One recipe for every method by default, so that comparisons are fair; DeepShift's own recipe (RAdam, no
weight decay on its latents) is `optim.optimizer='radam'` with `optim.latent_weight_decay=False`.
"""
import math

import jax
import jax.numpy as jnp
import optax

from s3jax.errors import ConfigError
from s3jax.quant.penalty import dense_weight_penalty
from s3jax.quant.tree import role_mask, sparse_mask

SCHEDULES = ("cosine_epoch", "cosine", "constant")
OPTIMIZERS = ("sgd", "radam")
LATENT_ROLES = ("sign", "sparse", "shift", "weight")


def total_train_steps(config, steps_per_epoch: int) -> int:
  """`config.total_steps` when > 0, else `config.num_epochs` epochs."""
  if config.total_steps > 0:
    return int(config.total_steps)
  return int(config.num_epochs * steps_per_epoch)


def scaled_base_lr(config) -> float:
  """`optim.lr` is quoted at batch 256 and scaled linearly to the global batch."""
  return config.optim.lr * config.batch_size / 256


def cosine_epoch_schedule(base_lr: float, steps_per_epoch: int, num_epochs: int):
  """The reference's per-epoch cosine, stepped before each epoch: base/2 * (1 + cos(pi * (e+1) / E)).

  The last epoch therefore runs at lr 0, as in the released script.
  """
  def schedule(step):
    epoch = jnp.floor_divide(step, steps_per_epoch)
    return base_lr * 0.5 * (1 + jnp.cos(jnp.pi * (epoch + 1) / num_epochs))
  return schedule


def make_schedule(config, steps_per_epoch: int):
  """The learning-rate schedule (a function of the step) named by `config.optim.schedule`."""
  name = config.optim.schedule
  if name not in SCHEDULES:
    raise ConfigError(f"optim.schedule={name!r} is unknown; use one of {SCHEDULES}.")
  base = scaled_base_lr(config)
  total = total_train_steps(config, steps_per_epoch)
  warmup = int(round(config.optim.warmup_epochs * steps_per_epoch))
  main_steps = max(total - warmup, 1)
  if name == "cosine_epoch":
    main = cosine_epoch_schedule(base, steps_per_epoch, max(math.ceil(main_steps / steps_per_epoch), 1))
  elif name == "cosine":
    main = optax.cosine_decay_schedule(base, main_steps)
  else:
    main = optax.constant_schedule(base)
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])


def make_optimizer(config, params, steps_per_epoch: int):
  """Returns `(tx, schedule)`: the optax chain and its learning-rate schedule.

  Chain order matters: the dense penalty's gradient goes in first, so weight decay and momentum treat it
  exactly as if `alpha * dense_penalty` had been added to the loss. Weight decay is coupled (added to the
  gradient) and covers every parameter, latents included, as in the paper, except scales (fixed ones
  never change; learned ones are log-scales, which decay would pull towards a scale of 1) and, with
  `optim.latent_weight_decay=False`, the latents. Every mask comes from the tree's structure.
  After `apply_updates`, call `s3jax.quant.project_tree` (DeepShift's clamps).
  """
  schedule = make_schedule(config, steps_per_epoch)
  name = config.optim.get("optimizer", "sgd")
  if name not in OPTIMIZERS:
    raise ConfigError(f"optim.optimizer={name!r} is unknown; use one of {OPTIMIZERS}.")
  parts = []
  if config.quant.dense_penalty > 0 and any(jax.tree.leaves(sparse_mask(params))):
    parts.append(dense_weight_penalty(config.quant.dense_penalty))
  if config.optim.weight_decay > 0:
    decayed = ("float",) + (LATENT_ROLES if config.optim.get("latent_weight_decay", True) else ())
    parts.append(optax.add_decayed_weights(config.optim.weight_decay, role_mask(params, decayed)))
  if name == "radam":
    parts.append(optax.radam(schedule))
  else:
    parts.append(optax.sgd(schedule, momentum=config.optim.momentum or None, nesterov=False))
  return optax.chain(*parts), schedule
