"""The trainer end to end on 8 fake CPU devices, on the real code paths (no mocks)."""
import logging
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from helpers import REPO, config_names, load_config, restore_checkpoint
from s3jax import data
from s3jax.training import sharding
from s3jax.records.resolved import resolve_run
from s3jax.records.workdir_files import read_metrics
from s3jax.models import create_model
from s3jax.training.optim import make_optimizer
from s3jax.training.loop import jit_train_step, train_and_evaluate
from s3jax.records.variables import run_init_program
from s3jax.training.state import create_train_state, jitted_initializer


def test_runs_on_eight_fake_devices():
  assert jax.device_count() == 8


def tiny_digits(**overrides):
  base = {"batch_size": 64, "log_every_steps": 5, "checkpoint_every_steps": 1000}
  return load_config("digits", **{**base, **overrides})


@pytest.mark.slow
def test_the_init_program_compiled_at_o1_gives_the_default_compiles_state():
  """On CPU the trainer compiles its init program at LLVM O1, for compile time (the latents' draws at O1:
  tests/test_inits.py). Flax's init and the optimizer state come out as XLA's default compile gives them:
  integer PRNG bits, then the same float ops, so at most a last bit moved by fusion: rtol 1e-6."""
  config = tiny_digits(**{"quant.method": "float"})
  init, _, _ = jitted_initializer(resolve_run(config, steps_per_epoch=10), create_model(config.model, 10), (8, 8, 1),
                                  sharding.make_data_mesh())
  key = jax.random.key(3)
  default = init.trace(key).lower().compile({"xla_backend_optimization_level": 3})(key)  # XLA's default level
  for got, want in zip(jax.tree.leaves(run_init_program(init, key)), jax.tree.leaves(default), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_digits_trains_end_to_end(tmp_path):
  config = tiny_digits(num_epochs=3)
  final = train_and_evaluate(config, str(tmp_path))
  records = read_metrics(str(tmp_path))
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert np.mean(losses[-3:]) < 0.5 * losses[0]
  assert final["eval/top1"] > 0.6  # chance is 0.1
  evals = [r for r in records if "eval/top1" in r]
  assert len(evals) == 3  # once per epoch (22 steps each)
  assert [r["step"] for r in evals] == [22, 44, 66]
  shares = [v for k, v in evals[-1].items() if k.startswith("quant/share_")]
  assert len(shares) == 4 and abs(sum(shares) - 1) < 1e-6
  assert os.path.exists(tmp_path / "config.json")
  assert os.listdir(tmp_path / "tensorboard")


@pytest.mark.slow
def test_the_train_step_compiles_once_over_steps_and_evals(tmp_path):
  """Six steps with an eval every two (which replaces the state's signs): one compilation of the step."""
  messages = []
  handler = logging.Handler()
  handler.emit = lambda record: messages.append(record.getMessage())
  logging.getLogger("jax").addHandler(handler)
  try:
    with jax.log_compiles(True):
      train_and_evaluate(tiny_digits(total_steps=6, eval_every_steps=2, log_every_steps=2), str(tmp_path))
  finally:
    logging.getLogger("jax").removeHandler(handler)
  compiles = [m for m in messages if m.startswith("Compiling") and "train_step" in m]
  assert len(compiles) == 1, compiles
  assert sum("eval_step" in m for m in messages if m.startswith("Compiling")) == 1


def _params_after_two_steps(devices, config, batch):
  mesh = sharding.make_data_mesh(devices)
  dataset_shape = batch["image"].shape[1:]
  model = create_model(config.model, config.num_classes)
  state, tx, schedule = create_train_state(resolve_run(config, steps_per_epoch=10), model, dataset_shape, mesh)
  step = jit_train_step(model, tx, schedule, mesh)
  with jax.set_mesh(mesh):
    for _ in range(2):
      state, metrics = step(state, sharding.global_batch(batch, mesh))
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow
def test_eight_device_step_equals_one_device_step():
  config = tiny_digits()
  dataset = data.create_dataset(config, data.ProcessShard(0, 1))
  batch = dataset.train_batch(0)
  state8, metrics8 = _params_after_two_steps(jax.devices(), config, batch)
  state1, metrics1 = _params_after_two_steps(jax.devices()[:1], config, batch)
  # Global BatchNorm and a global mean loss: the only difference is float summation order.
  chex.assert_trees_all_close(state8.params, state1.params, atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(state8.batch_stats, state1.batch_stats, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(metrics8["train/loss"], metrics1["train/loss"], rtol=1e-5)


@pytest.mark.slow
def test_resume_reaches_the_same_final_parameters(tmp_path):
  config = tiny_digits(total_steps=30, checkpoint_every_steps=10, eval_every_steps=15, bank_latents="off")
  full, interrupted = str(tmp_path / "full"), str(tmp_path / "interrupted")
  train_and_evaluate(config, full)
  # An interrupted run: same workdir state as if it had stopped right after saving step 10.
  shutil.copytree(full, interrupted)
  for step in ("20", "30"):
    shutil.rmtree(os.path.join(interrupted, "checkpoints", step))
  # The resume trains on latent banks (the default: on CPU every layer of this small model is banked), the
  # full run on per-layer latents: S3's pull-back is exact, so the steps, checkpoints and evals agree bit
  # for bit.
  resumed = train_and_evaluate(tiny_digits(total_steps=30, checkpoint_every_steps=10, eval_every_steps=15),
                               interrupted)
  (a, step_a), (b, step_b) = restore_checkpoint(full), restore_checkpoint(interrupted)
  assert step_a == step_b == 30
  chex.assert_trees_all_equal(a, b)
  # The metrics log is not duplicated by the resume.
  steps = [r["step"] for r in read_metrics(interrupted) if "train/loss" in r]
  assert steps == sorted(set(steps))
  assert resumed["eval/top1"] == [r for r in read_metrics(full) if "eval/top1" in r][-1]["eval/top1"]
  # Rerunning a finished run trains nothing, logs nothing new and reports the same final metrics.
  lines = open(os.path.join(full, "metrics.jsonl")).read()
  again = train_and_evaluate(config, full)
  assert open(os.path.join(full, "metrics.jsonl")).read() == lines
  # `again` is the full run's last eval (per layer), `resumed` the resumed run's (on banks): the same
  # weights, but the dense penalty's float32 sum over a slice of a bank may round its last bit otherwise.
  penalty = again.pop("quant/dense_penalty"), resumed.pop("quant/dense_penalty")
  assert again == resumed and penalty[0] == pytest.approx(penalty[1], rel=1e-6)


@pytest.mark.parametrize("name", config_names())
def test_every_config_loads_and_builds_model_and_optimizer(name):
  config = load_config(name)
  run = resolve_run(config, jax.device_count(), steps_per_epoch=100)
  model = create_model(config.model, config.num_classes, config.half_precision)
  mesh = sharding.make_data_mesh(jax.devices()[:1])
  abstract = jax.eval_shape(lambda: create_train_state(run, model, data.input_shape(config), mesh)[0])
  assert abstract.params
  _, schedule = make_optimizer(run, abstract.params)
  assert float(schedule(0)) >= 0


@pytest.mark.slow
def test_cli_trains_and_reports_final_accuracy(tmp_path):
  cmd = [sys.executable, "train.py", "--config=configs/digits.py", f"--workdir={tmp_path}",
         "--config.total_steps=4", "--config.batch_size=32", "--config.eval_every_steps=4"]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "final eval/top1 = " in out.stdout
  assert [r["step"] for r in read_metrics(str(tmp_path)) if "eval/top1" in r] == [4]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["denseshift", "deepshift_q", "deepshift_ps", "float"])
def test_each_method_trains_checkpoints_and_resumes(tmp_path, method):
  """S3 has its own test above; the other methods share the trainer, checkpoints and resume."""
  config = tiny_digits(total_steps=6, checkpoint_every_steps=3, eval_every_steps=6, log_every_steps=3,
                       **{"quant.method": method})
  full, interrupted = str(tmp_path / "full"), str(tmp_path / "interrupted")
  final = train_and_evaluate(config, full)
  shutil.copytree(full, interrupted)
  shutil.rmtree(os.path.join(interrupted, "checkpoints", "6"))
  train_and_evaluate(config, interrupted)
  (a, _), (b, _) = restore_checkpoint(full), restore_checkpoint(interrupted)
  chex.assert_trees_all_equal(a, b)
  shares = {k: v for k, v in final.items() if k.startswith("quant/share_")}
  expected = {"denseshift": ["1", "2", "4", "8"], "deepshift_q": ["0", "0.125", "0.25", "0.5", "1"],
              "deepshift_ps": ["0", "0.25", "0.5", "1"], "float": []}[method]
  assert sorted(k.split("_")[-1] for k in shares) == sorted(expected)
  if shares:
    assert abs(sum(shares.values()) - 1) < 1e-6
  # The latents kept their constraints through every update (DeepShift's clamps).
  leaves = jax.tree_util.tree_flatten_with_path(a["params"])[0]
  kinds = {jax.tree_util.keystr(p[-1:], simple=True) for p, _ in leaves
           if "stage" in str(p[0]) and "conv" in str(p[1])}
  if method == "deepshift_q":
    w = np.concatenate([np.abs(x).ravel() for p, x in leaves if "weight" in str(p)])
    assert w.size and (w == 0).sum() + ((w >= 0.125) & (w <= 1)).sum() == w.size
  if method == "deepshift_ps":
    shift = np.concatenate([x.ravel() for p, x in leaves
                            if jax.tree_util.keystr(p[-1:], simple=True) == "shift"])
    assert shift.size and shift.min() >= -2 and shift.max() <= 0
  assert kinds == {"float": {"kernel"}, "denseshift": {"sign", "0", "1", "2"},
                   "deepshift_q": {"weight"}, "deepshift_ps": {"shift", "sign"}}[method]
