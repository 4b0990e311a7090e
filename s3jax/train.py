"""train_and_evaluate: build, restore, train, evaluate, checkpoint. Reads top to bottom."""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from s3jax import checkpointing, input_pipeline, sharding
from s3jax.config import FULL_PRECISION_BITS, ConfigError, validate_config
from s3jax.metrics import MetricWriter
from s3jax.models import create_model
from s3jax.optim import make_optimizer, total_train_steps
from s3jax.quant import dense_penalty, level_counts, level_names, to_latents
from s3jax.steps import TrainState, make_eval_step, make_train_step


def create_train_state(config, model, image_shape, steps_per_epoch: int, mesh):
  """The initial state, replicated over `mesh`, and the optimizer's (tx, schedule)."""

  def init(key):
    model_key, latent_key = jax.random.split(key)
    variables = model.init(model_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    if config.quant.bits != FULL_PRECISION_BITS:
      params = to_latents(params, config.quant.rules, latent_key, config.quant.bits, config.quant.init)
    return params, variables["batch_stats"]

  key = jax.random.key(config.seed)
  abstract_params, _ = jax.eval_shape(init, key)
  tx, schedule = make_optimizer(config, abstract_params, steps_per_epoch)

  def init_state(key):
    params, batch_stats = init(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params))

  state = jax.jit(init_state, out_shardings=sharding.replicated(mesh))(key)
  return state, tx, schedule


def s3_statistics(params) -> dict:
  """Share of quantized weights at each magnitude level, and the dense penalty sum."""
  counts = np.asarray(jax.jit(level_counts)(params))
  if counts.size == 0:
    return {}
  shares = counts / counts.sum()
  stats = {f"s3/share_{name}": float(share) for name, share in zip(level_names(len(counts)), shares)}
  stats["s3/dense_penalty"] = float(jax.jit(dense_penalty)(params))
  return stats


def evaluate(eval_step, state, dataset, mesh) -> dict:
  totals = None
  for batch in dataset.eval_batches():
    sums = eval_step(state, sharding.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = float(totals.pop("count"))
  return {f"eval/{k}": float(v) / count for k, v in totals.items()}


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _prepare_workdir(workdir: str):
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as err:
    raise ConfigError(f"workdir {workdir!r} is not writable ({err.strerror}); pass a --workdir you can "
                      "write to.") from None


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final eval metrics."""
  mesh = sharding.make_data_mesh()
  validate_config(config, jax.device_count())
  is_writer = jax.process_index() == 0
  if is_writer:
    _prepare_workdir(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  dataset = input_pipeline.create_dataset(config)
  if config.num_classes and config.num_classes != dataset.num_classes:
    raise ConfigError(f"num_classes={config.num_classes} but {config.data.name} has "
                      f"{dataset.num_classes} classes; set --config.num_classes={dataset.num_classes}.")
  model = create_model(config.model, dataset.num_classes, config.half_precision)
  steps_per_epoch = dataset.steps_per_epoch
  total_steps = total_train_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  state, tx, schedule = create_train_state(config, model, dataset.image_shape, steps_per_epoch, mesh)

  store = checkpointing.CheckpointStore(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  restored = store.restore(checkpointing.abstract_like(state))
  if restored is not None:
    state = restored
  start_step = int(state.step)
  writer = MetricWriter(workdir, enabled=is_writer)
  writer.truncate_after(start_step)

  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  train_step = jax.jit(make_train_step(model, tx, schedule), in_shardings=(replicated, batched),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model), in_shardings=(replicated, batched),
                      out_shardings=replicated)

  logging.info("Training %s (%s bits) on %s: %d steps, %d per epoch, global batch %d on %d devices.",
               config.model, config.quant.bits, config.data.name, total_steps, steps_per_epoch,
               config.batch_size, jax.device_count())
  eval_metrics = {}
  with jax.set_mesh(mesh):
    batches = dataset.train_iterator(start_step)
    timer_step, timer_start = start_step, time.time()
    for step in range(start_step + 1, total_steps + 1):
      state, train_metrics = train_step(state, sharding.global_batch(next(batches), mesh))

      if step % config.log_every_steps == 0 or step == total_steps:
        train_metrics = jax.device_get(train_metrics)
        rate = (step - timer_step) / max(time.time() - timer_start, 1e-9)
        timer_step, timer_start = step, time.time()
        writer.write(step, {**train_metrics, "train/steps_per_s": rate})
        logging.info("step %d/%d  loss %.4f  top1 %.4f  lr %.4g  | %.2f steps/s, ETA %s", step,
                     total_steps, train_metrics["train/loss"], train_metrics["train/top1"],
                     train_metrics["train/lr"], rate, _format_duration((total_steps - step) / rate))

      if step % eval_every == 0 or step == total_steps:
        eval_metrics = {**evaluate(eval_step, state, dataset, mesh), **s3_statistics(state.params)}
        writer.write(step, eval_metrics)
        logging.info("eval at step %d: %s", step, json.dumps(
            {k: round(v, 4) for k, v in eval_metrics.items()}))

      if step % config.checkpoint_every_steps == 0 or step == total_steps:
        store.save(step, state, force=True)

  store.wait_until_finished()
  store.close()
  writer.close()
  return eval_metrics
