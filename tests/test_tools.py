"""evaluate.py, export.py, report.py and paper_claims.py on bad input and interruption, run as a user runs
them: no silent wrong answer, one `error:` line, nothing partial left behind (docs/reliability.md)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO, cli_command, cli_env, run_cli

pytestmark = pytest.mark.slow  # runs the trainer, a CLI or several processes


def _tool(*args, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=REPO, env=cli_env(1), capture_output=True, text=True,
                        timeout=timeout)


def _one_error_line(result, *expected):
  assert result.returncode != 0, result.stdout[-500:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), last
  for text in expected:
    assert text in last, last
  return last


def _interrupt_when(cmd, ready, timeout=300):
  """Starts `cmd`, sends Ctrl-C (SIGINT to its process group, as a terminal does) once `ready()` holds."""
  process = subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=cli_env(1), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
  deadline = time.time() + timeout
  while not ready() and process.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert process.poll() is None, "the command ended before it could be interrupted"
  os.killpg(process.pid, signal.SIGINT)  # its own process group: nothing else receives it
  stdout, stderr = process.communicate(timeout=timeout)
  return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 12-step 3-bit S3 digits run by the real train.py, and its export without model.stablehlo."""
  root = tmp_path_factory.mktemp("tools")
  workdir, export = str(root / "run"), str(root / "export")
  result = run_cli("digits", workdir, "total_steps=12", "eval_every_steps=12", "log_every_steps=6",
                   devices=1)
  assert result.returncode == 0, result.stderr[-2000:]
  result = _tool("export.py", f"--workdir={workdir}", f"--output={export}", "--nostablehlo")
  assert result.returncode == 0, result.stderr[-2000:]
  return workdir, export, result.stdout


def test_evaluate_refuses_data_of_another_shape(run):
  workdir, export, _ = run
  for source in (f"--workdir={workdir}", f"--export={export}"):
    _one_error_line(_tool("evaluate.py", source, "--config=configs/mnist.py"), "[8, 8, 1]", "[28, 28, 1]")


def test_evaluate_refuses_flags_it_would_ignore(run):
  workdir, export, _ = run
  _one_error_line(_tool("evaluate.py", f"--workdir={workdir}", "--path=shift_add"), "--path=shift_add",
                  "applies to --export")
  _one_error_line(_tool("evaluate.py", f"--export={export}", "--step=6"), "--step=6", "applies to --workdir")
  _one_error_line(_tool("evaluate.py", f"--export={export}", "--path=stablehlo"),
                  "exported with --nostablehlo", "--path=plain")


def test_ctrl_c_during_export_leaves_nothing_and_the_same_command_then_succeeds(run, tmp_path):
  workdir, _, _ = run
  output = str(tmp_path / "export")
  partial = str(tmp_path / ".export.partial")
  cmd = ["export.py", f"--workdir={workdir}", f"--output={output}"]
  code, _, stderr = _interrupt_when(cmd, lambda: os.path.isdir(partial))
  assert code == 130 and "Traceback" not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith("error: interrupted (Ctrl-C); nothing was written to")
  assert not os.path.exists(output) and not os.path.exists(partial)
  result = _tool(*cmd)
  assert result.returncode == 0, result.stderr[-2000:]
  assert {"manifest.json", "model.stablehlo"} <= set(os.listdir(output))
  assert "note:" not in result.stdout  # a finished run: nothing to warn about


def test_ctrl_c_in_evaluate_and_report_is_one_line(run, tmp_path):
  """Ctrl-C while evaluate.py imports jax and Orbax (1 s in) and a little later (2.5 s in: the imports on a
  slow CPU, the restore or the eval on a fast one): each time one line, status 130."""
  workdir, _, _ = run
  for delay in (1.0, 2.5):
    started = time.time()
    code, _, stderr = _interrupt_when(["evaluate.py", f"--workdir={workdir}"],
                                      lambda: time.time() > started + delay)  # pylint: disable=cell-var-from-loop
    assert code == 130 and "Traceback" not in stderr, (delay, stderr[-3000:])
    assert stderr.strip().splitlines()[-1] == "error: interrupted (Ctrl-C); nothing was evaluated."
  output = tmp_path / "report"
  code, _, stderr = _interrupt_when(["report.py", f"--workdirs={workdir}", f"--output={output}"],
                                    lambda: (output / ".report.partial").is_dir())
  assert code == 130 and "Traceback" not in stderr, stderr[-3000:]
  assert not (output / ".report.partial").exists() and not (output / "curves.png").exists()


def test_report_refuses_a_misspelled_workdir(run, tmp_path):
  workdir, _, _ = run
  result = _tool("report.py", f"--workdirs={workdir},{workdir}_typo", f"--output={tmp_path}/out")
  _one_error_line(result, f"{workdir}_typo does not exist")
  _one_error_line(_tool("report.py", f"--workdirs={tmp_path}/nothing*", f"--output={tmp_path}/out"),
                  "matches no workdir")
  assert not (tmp_path / "out" / "summary.md").exists()


def test_export_and_evaluate_of_a_run_still_training_say_so(tmp_path):
  """A real trainer, still running: the export is of its newest checkpoint, and both tools say so; the
  trainer's preemption line and the end of its run reach train.log, and in_progress.json goes."""
  workdir = str(tmp_path / "run")
  trainer = subprocess.Popen(cli_command("digits", workdir, "total_steps=100000", "checkpoint_every_steps=5",
                                         "log_every_steps=5", "eval_every_steps=100000"),
                             cwd=REPO, env=cli_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while not os.path.isdir(os.path.join(workdir, "checkpoints", "5")) and time.time() < deadline:
      assert trainer.poll() is None, trainer.communicate()[1][-2000:]
      time.sleep(0.2)
    # Paused, not ended: the run is still in progress (its pid lives, a save may be in flight), but it no
    # longer takes a core from the two tools and the rest of the suite.
    trainer.send_signal(signal.SIGSTOP)
    exported = _tool("export.py", f"--workdir={workdir}", f"--output={tmp_path}/export", "--nostablehlo")
    evaluated = _tool("evaluate.py", f"--workdir={workdir}")
  finally:
    trainer.send_signal(signal.SIGCONT)
    trainer.send_signal(signal.SIGTERM)
    stdout, _ = trainer.communicate(timeout=300)
  assert exported.returncode == 0 and evaluated.returncode == 0, exported.stderr[-2000:] + evaluated.stderr[-2000:]
  step = json.load(open(f"{tmp_path}/export/manifest.json"))["step"]
  for out in (exported.stdout, evaluated.stdout):
    assert f"note: the run is still training (pid {trainer.pid} on " in out, out
    assert "not its final state" in out, out
  assert f"at step {step} to" in exported.stdout
  assert "preempted at step" in stdout
  log = open(os.path.join(workdir, "train.log")).read()
  assert "preempted at step" in log.splitlines()[-1]
  assert not os.path.exists(os.path.join(workdir, "in_progress.json"))


def test_train_log_holds_the_final_and_error_lines(run, tmp_path):
  workdir, _, _ = run
  log = open(os.path.join(workdir, "train.log")).read().splitlines()
  assert "final eval/top1 = " in log[-1]
  refused = str(tmp_path / "refused")
  result = run_cli("digits", refused, "quant.bits=9", devices=1)
  line = _one_error_line(result, "bits=9 is not supported")
  assert open(os.path.join(refused, "train.log")).read().strip().endswith(line)


def test_a_config_typo_is_one_clean_line_with_a_suggestion(tmp_path):
  result = run_cli("digits", str(tmp_path), "quant.metod=s3", devices=1)
  last = _one_error_line(result, 'the config has no key metod; did you mean "method"?')
  assert "\\" not in last


@pytest.mark.parametrize("tool", ["train.py", "evaluate.py", "export.py", "report.py",
                                  "benchmarks/paper_claims.py"])
def test_help_exits_zero(tool):
  for flag in ("--help", "-h"):
    result = _tool(tool, flag, timeout=120)
    assert result.returncode == 0, (flag, result.stderr[-2000:])
    assert "flags:" in result.stdout + result.stderr, (flag, result.stdout[-500:])


def test_paper_claims_takes_trainer_overrides_but_not_the_grids_own_keys(tmp_path):
  _one_error_line(_tool("benchmarks/paper_claims.py", f"--output={tmp_path}", "--config.quant.bits=2"),
                  "--config.quant.bits is set by the grid")
  _one_error_line(_tool("benchmarks/paper_claims.py", f"--output={tmp_path}", "--config.nosuch=1"),
                  "the config has no key nosuch")


CHECKPOINT_FILES = ("_CHECKPOINT_METADATA", "default/_METADATA", "default/_sharding", "default/manifest.ocdbt",
                    "default/array_metadatas/process_0", "default/ocdbt.process_0/d/<every>")


def _damage(path: str, how: str):
  data = open(path, "rb").read()
  if how == "truncated":
    data = data[:len(data) // 3]
  else:  # a JSON file garbled in the middle
    middle = len(data) // 2
    data = data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64]) + data[middle + 64:]
  open(path, "wb").write(data)


def _checkpoint_files(workdir: str, name: str) -> list[str]:
  step = os.path.join(workdir, "checkpoints", "12")
  if name.endswith("<every>"):  # the array data files (which of them holds the params is Orbax's choice)
    folder = os.path.join(step, os.path.dirname(name))
    return [os.path.join(folder, f) for f in os.listdir(folder)]
  return [os.path.join(step, name)]


@pytest.mark.parametrize("how", ["truncated", "garbled"])
@pytest.mark.parametrize("name", CHECKPOINT_FILES + ("config.json", "model_input.json"))
def test_a_damaged_file_of_a_workdir_is_one_error_naming_it_and_nothing_moves(run, tmp_path, name, how):
  """What export.py and evaluate.py read of a workdir, each file cut short or garbled."""
  from s3jax.deploy.from_workdir import restore_variables
  from s3jax.errors import ConfigError
  from s3jax.records.workdir_files import read_config
  if how == "garbled" and name.endswith("<every>"):
    pytest.skip("compressed array chunks carry no checksum: see docs/reliability.md")
  workdir = str(tmp_path / "run")
  shutil.copytree(run[0], workdir)
  paths = _checkpoint_files(workdir, name) if "/" in name or name.startswith("_") else [os.path.join(workdir, name)]
  for path in paths:
    _damage(path, how)
  before = sorted(os.walk(workdir))
  with pytest.raises(ConfigError) as error:
    restore_variables(read_config(workdir), workdir)
  message = str(error.value)
  assert "\n" not in message and workdir in message, message
  assert sorted(os.walk(workdir)) == before


def test_evaluate_and_export_of_a_checkpoint_with_a_damaged_file_print_one_line(run, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(run[0], workdir)
  _damage(_checkpoint_files(workdir, "default/_sharding")[0], "truncated")
  _one_error_line(_tool("evaluate.py", f"--workdir={workdir}"), "the checkpoint at step 12", "unreadable")
  shutil.rmtree(workdir)
  shutil.copytree(run[0], workdir)
  for path in _checkpoint_files(workdir, "default/ocdbt.process_0/d/<every>"):
    _damage(path, "truncated")
  result = _tool("export.py", f"--workdir={workdir}", f"--output={tmp_path}/export")
  _one_error_line(result, "the checkpoint at step 12", "could not be read")
  assert len(result.stderr.strip().splitlines()) <= 3, result.stderr[-3000:]  # Orbax's warnings, not hundreds
  assert not os.path.exists(tmp_path / "export")
