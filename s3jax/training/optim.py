"""The optimizer: dense penalty -> coupled weight decay -> SGD momentum (or RAdam), with lr schedules.

One recipe for every method by default, so that comparisons are fair; DeepShift's own recipe (RAdam, no
weight decay on its latents) is `optim.optimizer='radam'` with `optim.latent_weight_decay=False`.
"""
import jax
import jax.numpy as jnp
import optax

from s3jax.errors import ConfigError
from s3jax.quant import dense_weight_penalty
from s3jax.quant.interface import LATENT_ROLES
from s3jax.quant.tree import FLOAT_ROLE, role_mask, sparse_mask
from s3jax.records.resolved import Durations, ResolvedRun

SCHEDULES = ("cosine_epoch", "cosine", "constant")
OPTIMIZERS = ("sgd", "radam")
# Weight decay covers every latent but the scales (fixed ones never change; learned ones are log-scales).
DECAYED_LATENT_ROLES = tuple(role for role in LATENT_ROLES if "scale" not in role)


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


def make_schedule(config, durations: Durations):
  """The learning-rate schedule (a function of the step) named by `config.optim.schedule`."""
  name = config.optim.schedule
  if name not in SCHEDULES:
    raise ConfigError(f"optim.schedule={name!r} is unknown; use one of {SCHEDULES}.")
  base = scaled_base_lr(config)
  if name == "cosine_epoch":
    main = cosine_epoch_schedule(base, durations.steps_per_epoch, durations.schedule_epochs)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(base, durations.after_warmup)
  else:
    main = optax.constant_schedule(base)
  if durations.warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, base, durations.warmup), main], [durations.warmup])


def make_optimizer(run: ResolvedRun, params):
  """Returns `(tx, schedule)`: the optax chain and its learning-rate schedule, for `run` (resolved with
  its durations: `s3jax.records.resolved.resolve_run(config, steps_per_epoch=...)`).

  Chain order matters: the dense penalty's gradient goes in first, so weight decay and momentum treat it
  exactly as if `alpha * dense_penalty` had been added to the loss. Weight decay is coupled (added to the
  gradient) and covers every parameter, latents included, as in the paper, except scales (fixed ones
  never change; learned ones are log-scales, which decay would pull towards a scale of 1) and, with
  `optim.latent_weight_decay=False`, the latents. Every mask comes from the tree's structure.
  After `apply_updates`, call `s3jax.quant.project_tree` (DeepShift's clamps).
  """
  config = run.config
  if run.durations is None:
    raise ConfigError("make_optimizer needs the run's durations; resolve it with steps_per_epoch "
                      "(s3jax.records.resolved.resolve_run(config, steps_per_epoch=...)).")
  schedule = make_schedule(config, run.durations)
  name = config.optim.optimizer
  if name not in OPTIMIZERS:
    raise ConfigError(f"optim.optimizer={name!r} is unknown; use one of {OPTIMIZERS}.")
  parts = []
  if config.quant.dense_penalty > 0 and any(jax.tree.leaves(sparse_mask(params))):
    parts.append(dense_weight_penalty(config.quant.dense_penalty))
  if config.optim.weight_decay > 0:
    decayed = (FLOAT_ROLE,) + (DECAYED_LATENT_ROLES if config.optim.latent_weight_decay else ())
    # A function of the tree it is given, so that one chain serves per-layer and banked latents.
    parts.append(optax.add_decayed_weights(config.optim.weight_decay, lambda tree: role_mask(tree, decayed)))
  if name == "radam":
    parts.append(optax.radam(schedule))
  else:
    parts.append(optax.sgd(schedule, momentum=config.optim.momentum or None, nesterov=False))
  return optax.chain(*parts), schedule
