"""Packaging: one version, and `pip install .[all]` names every package requirements.txt pins."""
import os
import re
import tomllib

import s3jax
from helpers import REPO


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
