"""train_and_evaluate: build, restore, train, evaluate, checkpoint. Reads top to bottom."""
import datetime
import functools
import itertools
import os
import time

import jax
from absl import logging

from s3jax import data
from s3jax.errors import ConfigError
from s3jax.models.quantized_inputs import with_input_variables
from s3jax.records import checkpoints, workdir_files
from s3jax.records.resolved import ResolvedRun, resolve_run
from s3jax.records.variables import run_init_program
from s3jax.training import init_from, sharding
from s3jax.training.evaluation import evaluate, format_eval, make_weight_statistics
from s3jax.training.guards import NonFiniteGuard, Preempted, PreemptionWatch
from s3jax.training.metrics import MetricWriter
from s3jax.training.state import calibrated_state, jitted_initializer, state_for_training, state_from_variables
from s3jax.training.steps import make_eval_step, make_train_step


def jit_train_step(model, tx, schedule, mesh, fused_pullback: bool = True):
  """The train step, jitted over `mesh`: state replicated and donated, batch sharded on 'data'.
  `fused_pullback`: see `s3jax.training.steps.make_train_step`."""
  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(make_train_step(model, tx, schedule, fused_pullback), in_shardings=(replicated, batched),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def jit_eval_step(model, mesh):
  return jax.jit(make_eval_step(model), in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def jit_calibration(model, mesh):
  """`calibrated_state` jitted over `mesh`: the state replicated, the images sharded on 'data'."""
  return jax.jit(functools.partial(calibrated_state, model), out_shardings=sharding.replicated(mesh),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))


def start_from(run: ResolvedRun, model, input_shape, tx, abstract_state, mesh):
  """The step-0 state of `run.config.init_from` (a float model, converted), replicated over `mesh`."""
  params, batch_stats = init_from.converted_variables(run, model, input_shape)
  expected = (abstract_state.params, abstract_state.batch_stats)
  if run.activations.enabled:  # the float model has no activation variables: the first batch sets them
    params, batch_stats = with_input_variables((params, batch_stats), expected)
  if jax.tree.structure((params, batch_stats)) != jax.tree.structure(expected):
    raise ConfigError(f"the model converted from init_from={run.config.init_from!r} does not have the "
                      "structure of a fresh run of this config (quant.rules choose other kernels?).")
  start = jax.jit(functools.partial(state_from_variables, run, tx), out_shardings=sharding.replicated(mesh))
  return start(params, batch_stats)


def eta(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(seconds)))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final eval metrics.

  Raises ConfigError (bad config or data), TrainingStopped (non-finite loss) or Preempted (SIGTERM;
  a checkpoint was saved).
  """
  run = resolve_run(config, jax.device_count())
  mesh = sharding.make_data_mesh()
  is_writer = jax.process_index() == 0
  if is_writer:
    workdir_files.prepare(workdir)
    workdir_files.read_metrics(workdir, in_progress=True)  # a corrupt line stops the run before any write

  dataset = data.create_dataset(config)
  if config.num_classes and config.num_classes != dataset.num_classes:
    raise ConfigError(f"num_classes={config.num_classes} but {config.data.name} has "
                      f"{dataset.num_classes} classes; set --config.num_classes={dataset.num_classes}.")
  model = run.create_model(dataset.num_classes)
  run = run.with_durations(dataset.steps_per_epoch)
  durations = run.durations
  init, tx, schedule = jitted_initializer(run, model, dataset.image_shape, mesh)
  key = jax.random.key(config.seed)

  store = checkpoints.CheckpointStore(os.path.join(workdir, workdir_files.CHECKPOINTS), config.keep_checkpoints,
                                      identity=run.identity)
  changed = workdir_files.config_changes(workdir, config)
  abstract_state = init.trace(key).out_info
  state = store.restore(abstract_state, changed)
  converted = state is None and bool(config.init_from)
  if converted:
    state = start_from(run, model, dataset.image_shape, tx, abstract_state, mesh)
  elif state is None:  # a fresh start; a resume never holds the initial state beside the restored one
    state = run_init_program(init, key)
  elif config.init_from:
    logging.info("Resuming from %s; init_from applies to a fresh run only.", store.directory)
  start_step = int(state.step)
  if is_writer:
    workdir_files.record_config(workdir, config, start_step, changed)
    workdir_files.write_model_input(workdir, config.model, dataset.num_classes, dataset.input_spec())
  writer = MetricWriter(workdir, enabled=is_writer)
  writer.truncate_after(start_step)

  batches = dataset.train_iterator(start_step)
  if start_step == 0 and run.activations.has_step:  # LSQ's init: the step sizes from the first batch
    first = next(batches)
    state = jit_calibration(model, mesh)(state, sharding.global_batch(first, mesh)["image"])
    batches = itertools.chain([first], batches)
  state, per_layer = state_for_training(config, state, mesh)  # checkpoints always hold the per-layer state
  train_step = jit_train_step(model, tx, schedule, mesh)
  weight_statistics = make_weight_statistics(run.rules, mesh)
  eval_step = jit_eval_step(model, mesh)

  logging.info("Training %s (%s) on %s from step %d: %d steps, %d per epoch, global batch %d on "
               "%d devices (%d processes).", config.model,
               run.quantizer.describe() + (f", inputs {run.activations.describe()}" if run.activations.enabled else ""),
               config.data.name,
               start_step, durations.total, durations.steps_per_epoch, config.batch_size, jax.device_count(),
               jax.process_count())
  logging.info("Data: %s, %d classes, %d train and %d eval examples, image shape %s.", config.data.name,
               dataset.num_classes, dataset.num_train, dataset.num_test, tuple(dataset.image_shape))
  if converted:  # the post-training-conversion accuracy, before any fine-tuning
    eval_metrics, layer_metrics, state = evaluate(eval_step, weight_statistics, state, dataset, mesh)
    writer.write(0, eval_metrics)
    logging.info("%s (converted from the float model, before training)", format_eval(0, eval_metrics))
    eval_metrics = {}
  preemption = PreemptionWatch(store)
  nonfinite = NonFiniteGuard(config.nonfinite, store)
  eval_metrics = {}
  if is_writer:
    workdir_files.mark_in_progress(workdir)
  try:
    with jax.set_mesh(mesh):
      timer_step, timer_start, rate = start_step, time.time(), 0.0
      for step in range(start_step + 1, durations.total + 1):
        state, train_metrics = train_step(state, sharding.global_batch(next(batches), mesh))
        nonfinite.push(step, train_metrics)
        store.raise_if_save_failed()
        if step == start_step + 1:  # the ETA leaves out compilation
          jax.block_until_ready(train_metrics)
          timer_step, timer_start = step, time.time()

        if durations.due(step, durations.log_every):
          train_metrics = jax.device_get(train_metrics)
          if step > timer_step:
            rate = (step - timer_step) / max(time.time() - timer_start, 1e-9)
            timer_step, timer_start = step, time.time()
          speed = f"{rate:.2f} steps/s, ETA {eta((durations.total - step) / rate)}" if rate else ""
          writer.write(step, {**train_metrics, "train/skipped_steps": nonfinite.skipped})
          logging.info("step %d/%d  loss %.4f  top1 %.4f  lr %.4g  | %s", step, durations.total,
                       train_metrics["train/loss"], train_metrics["train/top1"], train_metrics["train/lr"],
                       speed)

        if durations.due(step, durations.eval_every):
          eval_metrics, layer_metrics, state = evaluate(eval_step, weight_statistics, state, dataset, mesh)
          writer.write(step, eval_metrics)
          writer.write_tensorboard(step, layer_metrics)
          logging.info(format_eval(step, eval_metrics))
          timer_step, timer_start = step, time.time()  # the ETA leaves out evaluation

        preempted = preemption.reached(step)
        if preempted or durations.due(step, durations.checkpoint_every):
          nonfinite.flush()  # never save a state whose last step went non-finite in 'stop' mode
          store.save(step, per_layer(state) if per_layer else state)
        if preempted:
          raise Preempted(step)
      nonfinite.flush()
      if not eval_metrics:  # the workdir already held a finished run: report its final metrics
        logging.info("Nothing to train: the checkpoint is at step %d of %d.", start_step, durations.total)
        eval_metrics = writer.last_record_with("eval/top1", start_step)
        if eval_metrics is None:  # not logged here (another host's disk): evaluate again
          eval_metrics = evaluate(eval_step, weight_statistics, state, dataset, mesh)[0]
  finally:
    preemption.close()
    try:
      store.close()
    finally:
      writer.close()
      if is_writer:
        workdir_files.clear_in_progress(workdir)
  return eval_metrics
