"""The architecture, kept: each layer imports only the layers below it, the quantization core imports no
Flax and no trainer, deploy and report import nothing from training, and no library module grows past
300 lines (250 elsewhere) (docs/design.md, 'Layout')."""
import ast
import os

import pytest

from helpers import REPO

# Lowest first. A module may import from its own layer and those before it, never from a later one.
LAYERS = (
    ("s3jax.errors",),
    ("s3jax.config", "s3jax.classification", "s3jax.records.workdir_files"),
    ("s3jax.quant",),
    ("s3jax.models", "s3jax.data"),
    ("s3jax.records",),  # a run's files, checkpoints, variables and eval program: what every tool reads
    ("s3jax.training",),
    ("s3jax.deploy", "s3jax.report"),
    ("s3jax.cli", "s3jax"),  # the package's own __init__: the public surface, above everything
)
# Tools built on a run's records, never on the trainer: an edit in training/ cannot break them.
INDEPENDENT_OF_TRAINING = ("s3jax.deploy", "s3jax.report")
MAX_LINES = {"s3jax": 300}  # and 250 for tests, benchmarks and the shells


def _modules():
  for root, _, files in os.walk(os.path.join(REPO, "s3jax")):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(root, name)
        parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _layer(module: str) -> int:
  best = None
  for rank, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      if module == prefix or module.startswith(prefix + "."):
        if best is None or len(prefix) > best[1]:
          best = (rank, len(prefix))
  assert best is not None, f"{module} is in no layer of tests/test_layout.py"
  return best[0]


def _imports(path: str):
  """Every s3jax module a file imports, at any depth (function-level imports too)."""
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith("s3jax"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s3jax"):
      for alias in node.names:  # `from s3jax import data` names a package
        full = f"{node.module}.{alias.name}"
        yield full if node.module == "s3jax" and alias.name[0].islower() else node.module


def test_every_layer_imports_only_layers_below_it():
  wrong = []
  for module, path in _modules():
    for imported in _imports(path):
      if _layer(imported) > _layer(module):
        wrong.append(f"{module} imports {imported}")
  assert not wrong, wrong


def test_deploy_and_report_import_nothing_from_training():
  wrong = [f"{module} imports {imported}" for module, path in _modules() if module.startswith(INDEPENDENT_OF_TRAINING)
           for imported in _imports(path) if imported == "s3jax.training" or imported.startswith("s3jax.training.")]
  assert not wrong, wrong


def test_the_quantization_core_imports_no_flax_and_no_other_s3jax_package():
  for module, path in _modules():
    if not module.startswith("s3jax.quant"):
      continue
    source = open(path).read()
    assert "flax" not in source.replace("Flax", ""), module
    assert all(m.startswith(("s3jax.quant", "s3jax.errors")) for m in _imports(path)), module


@pytest.mark.parametrize("folder", ["s3jax", "benchmarks", "tests", "."])
def test_no_module_over_its_ceiling(folder):
  top = os.path.join(REPO, folder)
  paths = ([os.path.join(r, f) for r, _, fs in os.walk(top) for f in fs if f.endswith(".py")]
           if folder != "." else [os.path.join(top, f) for f in os.listdir(top) if f.endswith(".py")])
  ceiling = MAX_LINES.get(folder, 250)
  long = {os.path.relpath(p, REPO): n for p in paths if (n := len(open(p).readlines())) > ceiling}
  assert not long, long
