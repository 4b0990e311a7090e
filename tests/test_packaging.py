"""Packaging: one version, `pip install .[all]` names every package requirements.txt pins, and a run
trains, logs and reports without TensorFlow (what `pip install .[demo,report]` installs)."""
import os
import re
import subprocess
import sys
import tomllib

import pytest

import s3jax
from helpers import REPO, cli_command, cli_env
from s3jax.training.metrics import read_events


def _name(requirement: str) -> str:
  return re.split(r"[<>=!\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_all_extra_installs_what_requirements_pins():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  extras = project["optional-dependencies"]
  everything = {_name(r) for r in project["dependencies"]}
  for extra in extras["all"][0].split("[")[1].rstrip("]").split(","):
    everything |= {_name(r) for r in extras[extra]}
  with open(os.path.join(REPO, "requirements.txt")) as f:
    pinned = {_name(l) for l in f if l.strip() and not l.startswith("#")}
  pinned -= {"jaxlib"}  # jax pulls in its own jaxlib
  assert everything == pinned | {"numpy"}


def test_one_version():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  assert "version" in project["dynamic"] and "version" not in project  # read from s3jax.__version__
  assert re.fullmatch(r"\d+\.\d+\.\d+", s3jax.__version__)


# Makes TensorFlow and tensorflow-datasets look uninstalled to a subprocess (find_spec answers None, as for
# a package that is not there): what `pip install .[demo,report]` gives.
WITHOUT_TENSORFLOW = '''
import importlib.machinery
_find_spec = importlib.machinery.PathFinder.find_spec.__func__
def _find_spec_without_tensorflow(cls, name, path=None, target=None):
  if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
    return None
  return _find_spec(cls, name, path, target)
importlib.machinery.PathFinder.find_spec = classmethod(_find_spec_without_tensorflow)
'''


@pytest.mark.slow
def test_a_run_trains_logs_and_reports_without_tensorflow(tmp_path):
  (tmp_path / "sitecustomize.py").write_text(WITHOUT_TENSORFLOW)
  env = {**cli_env(1), "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
  absent = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
  assert absent.returncode != 0 and "No module named 'tensorflow'" in absent.stderr
  workdir = tmp_path / "run"
  train = subprocess.run(cli_command("digits", workdir, "total_steps=6", "eval_every_steps=3", "log_every_steps=3"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert train.returncode == 0, train.stderr[-2000:]
  events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1
  logged = {v.tag for e in read_events(events[0]) for v in e.summary.value}
  assert {"train/loss", "eval/top1"} <= logged
  report = subprocess.run([sys.executable, "report.py", f"--workdirs={workdir}", f"--output={tmp_path / 'report'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert report.returncode == 0, report.stderr[-2000:]
  assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000
  assert "Unable to initialize backend" not in report.stderr  # jax's probe of absent backends, filtered
