"""train_and_evaluate: build, restore, train, evaluate, checkpoint. Reads top to bottom."""
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from s3jax import checkpointing, input_pipeline, quant, sharding
from s3jax.config import validate_config
from s3jax.errors import ConfigError
from s3jax.metrics import MetricWriter
from s3jax.models import create_model
from s3jax.optim import make_optimizer, total_train_steps
from s3jax.steps import TrainState, fuses_pullback, make_eval_step, make_train_step


class TrainingStopped(RuntimeError):
  """Training stopped early on purpose (non-finite loss); the message says why and what was kept."""


class Preempted(Exception):
  """A preemption notice arrived; a checkpoint of `step` was saved. Rerun the same command to resume."""

  def __init__(self, step: int):
    super().__init__(f"preempted at step {step}; saved a checkpoint there. Rerun the same command to "
                     "resume.")
    self.step = step


def quant_identity(config) -> dict:
  """What a checkpoint records of the method, so that another method or bit width cannot resume it."""
  if config.quant.method == "float":
    return {"method": "float"}
  return {"method": config.quant.method, "bits": int(config.quant.bits), "scale": config.quant.scale}


def _state_initializer(config, model, image_shape, steps_per_epoch: int):
  """(init_state: key -> TrainState, tx, schedule)."""
  quantizer = quant.quantizer_from_config(config.quant)

  def init(key):
    model_key, latent_key = jax.random.split(key)
    variables = model.init(model_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    if quantizer is not None:
      params = quant.to_latents(params, config.quant.rules, latent_key, quantizer=quantizer)
    return params, variables["batch_stats"]

  abstract_params, _ = jax.eval_shape(init, jax.random.key(config.seed))
  tx, schedule = make_optimizer(config, abstract_params, steps_per_epoch)

  def init_state(key):
    params, batch_stats = init(key)
    signs = quant.tracked_signs(quant.tracked_weights(params, config.quant.rules))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), signs=signs, signs_step=jnp.zeros((), jnp.int32))

  return init_state, tx, schedule


def jitted_initializer(config, model, image_shape, steps_per_epoch: int, mesh):
  """(init, tx, schedule): `init(key)` is the initial state, replicated over `mesh`. jit caches its trace,
  so `init.trace(key).out_info` (the state's shapes: a restore target) and `init(key)` trace it once."""
  init_state, tx, schedule = _state_initializer(config, model, image_shape, steps_per_epoch)
  return jax.jit(init_state, out_shardings=sharding.replicated(mesh)), tx, schedule


def create_train_state(config, model, image_shape, steps_per_epoch: int, mesh):
  """The initial state, replicated over `mesh`, and the optimizer's (tx, schedule)."""
  init, tx, schedule = jitted_initializer(config, model, image_shape, steps_per_epoch, mesh)
  return init(jax.random.key(config.seed)), tx, schedule


def abstract_train_state(config, model, image_shape, mesh):
  """The train state's shapes, replicated over `mesh`, without computing it: a restore target."""
  init, _, _ = jitted_initializer(config, model, image_shape, 1, mesh)
  return init.trace(jax.random.key(config.seed)).out_info


def restore_for_inference(config, workdir: str, image_shape, step: int | None = None):
  """(model, params, batch_stats, step) of a workdir's checkpoint (latest, or `step`); the optimizer state
  is not read. Raises ConfigError when the checkpoint does not fit `config`."""
  validate_config(config, jax.device_count())
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ConfigError(f"{workdir} holds no checkpoints/ directory: train there first, or fix --workdir.")
  model = create_model(config.model, config.num_classes, config.half_precision)
  mesh = sharding.make_data_mesh()
  abstract = abstract_train_state(config, model, image_shape, mesh)
  store = checkpointing.CheckpointStore(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                                        identity={"quant": quant_identity(config)}, read_only=True)
  try:
    params, batch_stats, step = store.restore_params(abstract, step)
  finally:
    store.close()
  return model, params, batch_stats, step


def jit_train_step(model, tx, schedule, mesh, fused_pullback: bool = False):
  """The train step, jitted over `mesh`: state replicated and donated, batch sharded on 'data'.
  `fused_pullback`: see `s3jax.steps.fuses_pullback`."""
  replicated, batched = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  return jax.jit(make_train_step(model, tx, schedule, fused_pullback), in_shardings=(replicated, batched),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def make_weight_statistics(rules, mesh):
  """One jitted function (params, previous signs) -> (statistics, per-layer dynamics, new signs).

  Statistics: level shares and S3's dense penalty, and the dynamics over the weights `rules` track.
  """

  def statistics(params, previous_signs):
    totals, per_layer, signs = quant.weight_dynamics(quant.tracked_weights(params, rules), previous_signs)
    return {**quant.weight_statistics(params), **totals}, per_layer, signs

  return jax.jit(statistics, out_shardings=sharding.replicated(mesh))


def evaluate(eval_step, weight_statistics, state, dataset, mesh):
  """(metrics, per-layer metrics, state): top-1, top-5 and loss over the whole eval split, the weight
  statistics and dynamics since the previous eval; the state keeps this eval's signs for the next. Top-5
  only with more than five classes, where it means something."""
  totals = None
  for batch in dataset.eval_batches():
    sums = eval_step(state, sharding.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  stats, per_layer, signs = weight_statistics(state.params, state.signs)
  totals, stats, per_layer = jax.device_get((totals, stats, per_layer))
  count = float(totals.pop("count"))
  metrics = {**{f"eval/{k}": float(v) / count for k, v in totals.items()
                if k != "top5" or dataset.num_classes > 5},
             **{k: float(v) for k, v in stats.items()}}
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


class PreemptionWatch:
  """Did a preemption notice (SIGTERM, as on a TPU maintenance event) or a Ctrl-C arrive by this step?

  One process: our own SIGTERM and SIGINT handlers; a second Ctrl-C exits at once, without saving. Many
  processes: Orbax's sync point for SIGTERM, so every host stops at the same step (Ctrl-C keeps Python's
  default there, since only the host it reached would see it).
  """

  def __init__(self, store: checkpointing.CheckpointStore):
    self._store, self._signalled, self._previous = store, False, {}
    signals = (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else ()
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._on_signal)
      except ValueError:  # not the main thread: leave signals alone
        pass

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self._signalled:
      os.write(2, b"\nSecond Ctrl-C: exiting now, without saving.\n")
      os._exit(130)
    if signum == signal.SIGINT:
      os.write(2, b"\nCtrl-C: saving a checkpoint at the end of this step (Ctrl-C again to exit now).\n")
    self._signalled = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self._store.reached_preemption(step)
    return self._signalled

  def close(self):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


class NonFiniteGuard:
  """Reads each step's `train/nonfinite` flag one step late, so the check never stalls the device queue."""

  def __init__(self, policy: str, store: checkpointing.CheckpointStore):
    self._policy, self._store, self._pending = policy, store, None
    self.skipped = 0

  def push(self, step: int, metrics):
    self.flush()
    self._pending = (step, metrics["train/nonfinite"])

  def flush(self):
    if self._pending is None:
      return
    step, flag = self._pending
    self._pending = None
    if not int(flag):
      return
    if self._policy == "skip":
      self.skipped += 1
      logging.warning("Non-finite loss or gradient at step %d: step skipped (%d so far).", step,
                      self.skipped)
      return
    raise TrainingStopped(
        f"loss or gradients became non-finite at step {step}; the last good checkpoint "
        f"(step {self._store.latest_step()}) is kept in {self._store.directory}. Lower optim.lr, or "
        "set --config.nonfinite=skip to skip such steps.")


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


CONFIG_FILE = "config.json"


def _prepare_workdir(workdir: str):
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".s3jax_write_test"
    probe.write_text("")
    probe.unlink()
  except OSError as err:
    raise ConfigError(f"workdir {workdir!r} is not writable ({err.strerror or err}); pass a --workdir "
                      "you can write to.") from None


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_changes(workdir: str, config) -> str:
  """'key old -> new, ...' between the workdir's config.json and `config` ('' if none or the same)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return ""
  try:
    before = _flat(json.loads(path.read_text()))
  except (OSError, ValueError):
    return ""
  now = _flat(json.loads(config.to_json_best_effort()))
  keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
  return ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in keys)


def record_config(workdir: str, config, start_step: int, changed: str):
  """Writes config.json once the checkpoint is known to fit. A changed config resumed from a checkpoint
  keeps the earlier file as config.<step>.json, so the record of what each step trained with stays."""
  path = epath.Path(workdir) / CONFIG_FILE
  if changed and path.exists():
    kept, n = epath.Path(workdir) / f"config.{start_step}.json", 1
    while kept.exists():  # changed twice at the same step (no checkpoint in between)
      kept, n = epath.Path(workdir) / f"config.{start_step}.{n}.json", n + 1
    path.rename(kept)
    logging.warning("Config changed at step %d: %s (the earlier config is kept in %s).", start_step,
                    changed, kept)
  path.write_text(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final eval metrics.

  Raises ConfigError (bad config or data), TrainingStopped (non-finite loss) or Preempted (SIGTERM;
  a checkpoint was saved).
  """
  validate_config(config, jax.device_count())
  quantizer = quant.quantizer_from_config(config.quant)
  mesh = sharding.make_data_mesh()
  is_writer = jax.process_index() == 0
  if is_writer:
    _prepare_workdir(workdir)

  dataset = input_pipeline.create_dataset(config)
  if config.num_classes and config.num_classes != dataset.num_classes:
    raise ConfigError(f"num_classes={config.num_classes} but {config.data.name} has "
                      f"{dataset.num_classes} classes; set --config.num_classes={dataset.num_classes}.")
  model = create_model(config.model, dataset.num_classes, config.half_precision)
  steps_per_epoch = dataset.steps_per_epoch
  total_steps = total_train_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  init, tx, schedule = jitted_initializer(config, model, dataset.image_shape, steps_per_epoch, mesh)
  key = jax.random.key(config.seed)

  store = checkpointing.CheckpointStore(os.path.join(workdir, "checkpoints"), config.keep_checkpoints,
                                        identity={"quant": quant_identity(config)})
  changed = config_changes(workdir, config)
  state = store.restore(init.trace(key).out_info, changed)
  if state is None:  # a fresh start; a resume never holds the initial state beside the restored one
    state = init(key)
  start_step = int(state.step)
  if is_writer:
    record_config(workdir, config, start_step, changed)
  writer = MetricWriter(workdir, enabled=is_writer)
  writer.truncate_after(start_step)

  train_step = jit_train_step(model, tx, schedule, mesh,
                              fuses_pullback(config.optim.optimizer, state.params))
  weight_statistics = make_weight_statistics(config.quant.rules, mesh)
  eval_step = jax.jit(make_eval_step(model), in_shardings=(sharding.replicated(mesh),
                                                           sharding.batch_sharding(mesh)),
                      out_shardings=sharding.replicated(mesh))

  logging.info("Training %s (%s) on %s from step %d: %d steps, %d per epoch, global batch %d on "
               "%d devices (%d processes).", config.model,
               quantizer.describe() if quantizer else "full precision", config.data.name,
               start_step, total_steps, steps_per_epoch, config.batch_size, jax.device_count(),
               jax.process_count())
  logging.info("Data: %s, %d classes, %d train and %d eval examples, image shape %s.", config.data.name,
               dataset.num_classes, dataset.num_train, dataset.num_test, tuple(dataset.image_shape))
  preemption = PreemptionWatch(store)
  nonfinite = NonFiniteGuard(config.nonfinite, store)
  eval_metrics = {}
  try:
    with jax.set_mesh(mesh):
      batches = dataset.train_iterator(start_step)
      timer_step, timer_start, rate = start_step, time.time(), 0.0
      for step in range(start_step + 1, total_steps + 1):
        state, train_metrics = train_step(state, sharding.global_batch(next(batches), mesh))
        nonfinite.push(step, train_metrics)
        store.raise_if_save_failed()
        if step == start_step + 1:  # the ETA leaves out compilation
          jax.block_until_ready(train_metrics)
          timer_step, timer_start = step, time.time()

        if step % config.log_every_steps == 0 or step == total_steps:
          train_metrics = jax.device_get(train_metrics)
          if step > timer_step:
            rate = (step - timer_step) / max(time.time() - timer_start, 1e-9)
            timer_step, timer_start = step, time.time()
          speed = f"{rate:.2f} steps/s, ETA {_format_duration((total_steps - step) / rate)}" if rate else ""
          writer.write(step, {**train_metrics, "train/skipped_steps": nonfinite.skipped})
          logging.info("step %d/%d  loss %.4f  top1 %.4f  lr %.4g  | %s", step, total_steps,
                       train_metrics["train/loss"], train_metrics["train/top1"], train_metrics["train/lr"],
                       speed)

        if step % eval_every == 0 or step == total_steps:
          eval_metrics, layer_metrics, state = evaluate(eval_step, weight_statistics, state, dataset, mesh)
          writer.write(step, eval_metrics)
          writer.write_tensorboard(step, layer_metrics)
          logging.info(format_eval(step, eval_metrics))
          timer_step, timer_start = step, time.time()  # the ETA leaves out evaluation

        preempted = preemption.reached(step)
        if preempted or step % config.checkpoint_every_steps == 0 or step == total_steps:
          nonfinite.flush()  # never save a state whose last step went non-finite in 'stop' mode
          store.save(step, state)
        if preempted:
          raise Preempted(step)
      nonfinite.flush()
      if not eval_metrics:  # the workdir already held a finished run: report its final metrics
        logging.info("Nothing to train: the checkpoint is at step %d of %d.", start_step, total_steps)
        eval_metrics = writer.last_record_with("eval/top1", start_step)
        if eval_metrics is None:  # not logged here (another host's disk): evaluate again
          eval_metrics = evaluate(eval_step, weight_statistics, state, dataset, mesh)[0]
  finally:
    preemption.close()
    store.close()
    writer.close()
  return eval_metrics
