"""Preemption, kill -9, corrupted checkpoints, non-finite losses and determinism, on real processes."""
import json
import os
import shutil
import signal
import subprocess
import time

import chex
import jax
import numpy as np
import pytest

from helpers import REPO, cli_command, cli_env, load_config, logged_step, restore_checkpoint, run_cli
from s3jax.training.loop import train_and_evaluate

# 100 steps of batch 32 on the 8x8 digits, a checkpoint every 10 steps, on one CPU device (the
# multi-device paths have their own tests; one device keeps these runs short).
pytestmark = pytest.mark.slow  # runs the trainer, a CLI or several processes


RUN = ("total_steps=100", "batch_size=32", "log_every_steps=5", "checkpoint_every_steps=10",
       "eval_every_steps=50", "keep_checkpoints=30")
TOTAL = 100


def run(workdir, *overrides):
  return run_cli("digits", workdir, *RUN, *overrides, devices=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  done = run(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  return workdir


def start(workdir, *overrides):
  return subprocess.Popen(cli_command("digits", workdir, *RUN, *overrides), cwd=REPO, env=cli_env(1),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_until(workdir, step: int, sig) -> subprocess.Popen:
  """Starts a run and sends `sig` once its log reaches `step`."""
  proc = start(workdir)
  deadline = time.time() + 240
  while logged_step(workdir) < step and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read()[-2000:]}"
  proc.send_signal(sig)
  proc.wait(timeout=120)
  return proc


def assert_same_final_state(a, b):
  (state_a, step_a), (state_b, step_b) = restore_checkpoint(a), restore_checkpoint(b)
  assert step_a == step_b == TOTAL
  chex.assert_trees_all_equal(state_a, state_b)  # bit-identical
  with open(os.path.join(a, "metrics.jsonl")) as fa, open(os.path.join(b, "metrics.jsonl")) as fb:
    assert fa.read() == fb.read()


def test_kill_9_at_several_points_then_resume_is_bit_identical(reference, tmp_path):
  crashed = str(tmp_path / "crashed")
  for kill_at in (25, 55, 80):  # mid-interval, so saves may be in flight when the kill lands
    proc = run_until(crashed, kill_at, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
  resumed = run(crashed)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert_same_final_state(reference, crashed)


def test_sigterm_saves_the_current_step_and_a_rerun_resumes(tmp_path):
  workdir = str(tmp_path)
  proc = run_until(workdir, 37, signal.SIGTERM)
  out = proc.stdout.read()
  assert proc.returncode == 0, proc.stderr.read()[-2000:]
  preempted_at = int(out.split("preempted at step ")[1].split(";")[0])
  assert preempted_at >= 37
  _, latest = restore_checkpoint(workdir)
  assert latest == preempted_at  # saved at the step it stopped, not at the last multiple of 10
  resumed = run(workdir)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"from step {preempted_at}:" in resumed.stderr
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))
           if "train/loss" in l]
  assert steps == list(range(5, TOTAL + 1, 5))


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
  damaged = str(tmp_path / "damaged")
  shutil.copytree(reference, damaged)
  data_dir = os.path.join(damaged, "checkpoints", str(TOTAL), "default", "ocdbt.process_0", "d")
  for name in os.listdir(data_dir):
    path = os.path.join(data_dir, name)
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  rerun = run(damaged)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert f"Checkpoint step {TOTAL}" in rerun.stderr and "is unreadable" in rerun.stderr
  assert f"from step {TOTAL - 10}:" in rerun.stderr
  assert os.listdir(os.path.join(damaged, "checkpoints_unreadable"))  # set aside, not deleted
  assert_same_final_state(reference, damaged)


def _all_finite(tree) -> bool:
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.floating))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  result = run(tmp_path, "optim.lr=1e12", "quant.method=float", "checkpoint_every_steps=1")
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: loss or gradients became non-finite at step "), last
  bad_step = int(last.split("at step ")[1].split(";")[0])
  state, latest = restore_checkpoint(tmp_path)
  assert latest < bad_step and _all_finite(state)


def test_non_finite_steps_can_be_skipped(tmp_path):
  result = run(tmp_path, "optim.lr=1e12", "quant.method=float", "nonfinite=skip")
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert records[-1]["step"] == TOTAL
  assert max(r.get("train/skipped_steps", 0) for r in records) > 0
  state, _ = restore_checkpoint(tmp_path)
  assert _all_finite(state)


def test_same_config_and_seed_give_identical_metrics(tmp_path):
  config = load_config("digits", total_steps=30, batch_size=32, log_every_steps=3, eval_every_steps=15)
  for name in ("a", "b"):
    train_and_evaluate(config, str(tmp_path / name))
  a, b = (open(tmp_path / n / "metrics.jsonl").read() for n in ("a", "b"))
  assert a == b and a.count("\n") == 12


def test_a_read_only_store_opens_while_a_run_deletes_old_steps(tmp_path):
  """export/evaluate open a workdir's checkpoints while its trainer may be deleting old steps
  (keep_checkpoints): Orbax then met a listed step gone (FileNotFoundError, in about 1 open of 4 under
  this churn) and the tool died with a traceback. A read-only store lists again."""
  import threading
  import jax.numpy as jnp
  from s3jax.records.checkpoints import CheckpointStore
  directory = tmp_path / "checkpoints"
  store = CheckpointStore(str(directory), max_to_keep=100)
  store.save(1, {"w": jnp.ones((8, 8))})
  store.close()
  stop = threading.Event()

  def churn():  # what a trainer with max_to_keep=2 does: a step appears (renamed in whole), an old one goes
    k = 2
    while not stop.is_set():
      shutil.copytree(directory / "1", directory / f"{k}.orbax-checkpoint-tmp-0")
      os.rename(directory / f"{k}.orbax-checkpoint-tmp-0", directory / str(k))
      if k > 3:
        shutil.rmtree(directory / str(k - 2))
      k += 1

  thread = threading.Thread(target=churn)
  thread.start()
  try:
    for _ in range(40):
      reader = CheckpointStore(str(directory), read_only=True)
      assert 1 in reader.all_steps()
      reader.close()
  finally:
    stop.set()
    thread.join()
