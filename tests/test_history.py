"""A run's history is never lost: changed configs, failed saves, Ctrl-C, resumes and stuck starts, on the
real trainer (subprocesses, real files, real Orbax)."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from helpers import REPO, cli_command, cli_env, run_cli

pytestmark = pytest.mark.slow  # runs the trainer, a CLI or several processes


RUN = ("total_steps=20", "batch_size=32", "log_every_steps=5", "checkpoint_every_steps=10",
       "eval_every_steps=10")


def run(workdir, *overrides, **kwargs):
  return run_cli("digits", workdir, *RUN, *overrides, devices=1, **kwargs)


def last_line(result) -> str:
  return result.stderr.strip().splitlines()[-1]


def snapshot(workdir) -> dict:
  """Every file under `workdir` with its size and modification time."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, workdir)] = (os.path.getsize(path), os.path.getmtime(path))
  return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("finished"))
  done = run(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  return workdir


@pytest.mark.parametrize("override,key,path", [
    ("quant.dense_penalty=0", "quant.dense_penalty 1e-05 -> 0", "opt_state/"),
    ("optim.weight_decay=0", "optim.weight_decay 0.0005 -> 0", "opt_state/"),
    ("optim.momentum=0", "optim.momentum 0.9 -> 0", "opt_state/"),
])
def test_a_config_that_changes_the_state_is_refused_and_nothing_moves(finished, tmp_path, override, key,
                                                                     path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished, workdir)
  before = snapshot(workdir)
  result = run(workdir, override)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  line = last_line(result)
  assert line.startswith("error: the checkpoint at step 20") and f"({path}" in line and key in line, line
  after = snapshot(workdir)
  # Nothing was moved, truncated or rewritten (train.log is the only file that grows).
  assert {k: v for k, v in after.items() if k != "train.log"} == \
      {k: v for k, v in before.items() if k != "train.log"}
  assert not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))


def test_a_compatible_change_resumes_and_keeps_the_earlier_config(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished, workdir)
  result = run(workdir, "optim.lr=0.01", "total_steps=30")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Config changed at step 20: optim.lr 0.4 -> 0.01, total_steps 20 -> 30" in result.stderr
  old = json.load(open(os.path.join(workdir, "config.20.json")))
  new = json.load(open(os.path.join(workdir, "config.json")))
  assert old["optim"]["lr"] == 0.4 and new["optim"]["lr"] == 0.01
  assert "Config changed at step 20" in open(os.path.join(workdir, "train.log")).read()


def test_a_corrupt_metrics_line_stops_a_resume_with_one_line_and_nothing_moves(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished, workdir)
  path = os.path.join(workdir, "metrics.jsonl")
  lines = open(path).read().splitlines()
  lines[1] = lines[1][:len(lines[1]) // 2]  # a line broken in the middle of the history
  open(path, "w").write("\n".join(lines) + "\n")
  shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))  # so that the rerun resumes (from step 10)
  before = snapshot(workdir)
  result = run(workdir)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  assert last_line(result).startswith(f"error: {path}, line 2, is not a metrics record"), last_line(result)
  after = snapshot(workdir)
  assert {k: v for k, v in after.items() if k != "train.log"} == \
      {k: v for k, v in before.items() if k != "train.log"}


def test_a_resume_sets_later_history_aside_instead_of_deleting_it(finished, tmp_path):
  import tensorflow as tf
  workdir = str(tmp_path / "run")
  shutil.copytree(finished, workdir)
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  shutil.rmtree(os.path.join(workdir, "checkpoints", "20"))  # as if the run had died after step 10
  result = run(workdir)
  assert result.returncode == 0, result.stderr[-2000:]
  superseded = open(os.path.join(workdir, "metrics.superseded.jsonl")).read().splitlines()
  assert superseded == [l for l in lines if json.loads(l)["step"] > 10]
  steps = [json.loads(l)["step"] for l in open(os.path.join(workdir, "metrics.jsonl"))
           if "train/loss" in l]
  assert steps == [5, 10, 15, 20]
  # TensorBoard: one history per step; the earlier event files are kept aside.
  logged = []
  for name in sorted(os.listdir(os.path.join(workdir, "tensorboard"))):
    for record in tf.data.TFRecordDataset(os.path.join(workdir, "tensorboard", name)):
      event = tf.compat.v1.Event.FromString(record.numpy())
      logged += [event.step for v in event.summary.value if v.tag == "train/loss"]
  assert logged == [5, 10, 15, 20]
  assert os.listdir(os.path.join(workdir, "tensorboard.superseded", "before_resume_at_10"))


def test_a_failed_save_stops_with_one_line_and_keeps_the_last_good_checkpoint(finished, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(finished, workdir)
  # A 256 KiB file-size limit (bash's ulimit, so pytest itself never forks): checkpoints cannot be written
  # (their largest files hold 0.4-1.2 MB here).
  limited = ["bash", "-c", 'ulimit -f 256 && exec "$@"', "bash",
             *cli_command("digits", workdir, *RUN, "total_steps=40")]
  result = subprocess.run(limited, cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr  # Orbax's cut-short writers are quiet (one line in the log)
  line = last_line(result)
  assert line.startswith("error: saving the checkpoint of step 30 failed: file too large writing "), line
  assert "The last good checkpoint (step 20) is kept" in line
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20", "30.orbax-checkpoint-tmp"]
  # The next start removes the unfinished save and resumes from step 20.
  again = run(workdir, "total_steps=40")
  assert again.returncode == 0, again.stderr[-2000:]
  assert "left by a save that did not complete" in again.stderr and "from step 20:" in again.stderr
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "30", "40"]


def test_ctrl_c_saves_and_exits_like_sigterm(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen(cli_command("digits", workdir, *RUN, "total_steps=2000", "log_every_steps=1"),
                          cwd=REPO, env=cli_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 240
  metrics = os.path.join(workdir, "metrics.jsonl")
  while (not os.path.exists(metrics) or os.path.getsize(metrics) < 500) and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  assert "KeyboardInterrupt" not in err and "Ctrl-C: saving a checkpoint" in err
  stopped = int(out.split("preempted at step ")[1].split(";")[0])
  assert os.listdir(os.path.join(workdir, "checkpoints")) == [str(stopped)]


def test_a_process_whose_peers_never_come_fails_with_one_line(tmp_path):
  start = time.time()
  result = run(tmp_path, coordinator_address="127.0.0.1:1", num_processes=2, process_id=1,
               distributed_timeout=3)
  assert result.returncode == 1 and time.time() - start < 60
  assert last_line(result).startswith("error: the multi-process start did not complete within "
                                      "--distributed_timeout=3s")
