"""The README and docs/: every Python example runs and prints what its comments say, the API reference names
every public name, the site builds with warnings as errors, and the README's links resolve."""
import ast
import os
import re
import subprocess
import sys

import pytest

from helpers import DOC_PAGES, REPO, doc_examples, printed_as_commented, run_doc_example

S3_LEVELS = {-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0}
# Examples that need an export on disk run beside the export they read.
CHECKED_ELSEWHERE = {"export-load": "test_export.py", "export-stablehlo": "test_export.py",
                     "export-onnx": "test_onnx.py"}


def _levels(line: str) -> set[float]:
  return {float(v) for v in line.strip("[]").split()}


def _linen(name):
  lines, _ = run_doc_example(name)
  assert lines[0] == "['layers_0/kernel']"
  assert _levels(lines[1]) <= S3_LEVELS and len(_levels(lines[1])) >= 3
  assert lines[2] == "int8"


def _as_commented(name):
  lines, _ = run_doc_example(name)
  expected = printed_as_commented(doc_examples()[name][1])
  assert lines == [e.split(":")[0] if name == "own-model-denseshift" else e for e in expected]


def _nnx(name):
  lines, scope = run_doc_example(name)
  assert lines[0] == "['conv/kernel']" and lines[1] == "True"
  assert _levels(lines[2]) <= S3_LEVELS and len(_levels(lines[2])) >= 3
  # The conv's latents learned (its gradient flows through replace_by_pure_dict), not only the head.
  start = scope["to_latents"](scope["nnx"].to_pure_dict(scope["params"]), [scope["Rule"](r"conv/kernel", scope["quantizer"]("s3", 3))],
                              key=scope["jax"].random.key(1))
  assert not (start["conv"]["kernel"].sparse == scope["latents"]["conv"]["kernel"].sparse).all()
  from s3jax.errors import ConfigError
  with pytest.raises(ConfigError, match=r"chose conv/bias of shape \(8,\); only kernels"):
    scope["to_latents"](scope["nnx"].to_pure_dict(scope["params"]), [scope["Rule"](r"conv/bias", scope["quantizer"]("s3", 3))],
                        key=scope["jax"].random.key(1))


CHECKS = {"readme-linen": _linen, "own-model-linen": _linen, "own-model-denseshift": _as_commented,
          "own-model-nnx": _nnx, "conversion": _as_commented, "own-model-activations": _as_commented}


def test_every_python_block_is_a_marked_example_with_a_check():
  for page in DOC_PAGES:
    text = open(os.path.join(REPO, page)).read()
    blocks = len(re.findall(r"^```python$", text, re.M))
    marked = len(re.findall(r"<!-- example: [\w-]+ -->\n```python$", text, re.M))
    assert blocks == marked, f"{page}: {blocks - marked} python block(s) without an <!-- example: NAME --> marker"
  names = set(doc_examples())
  assert names == set(CHECKS) | set(CHECKED_ELSEWHERE), names ^ (set(CHECKS) | set(CHECKED_ELSEWHERE))
  for name, test_file in CHECKED_ELSEWHERE.items():
    assert f'"{name}"' in open(os.path.join(REPO, "tests", test_file)).read(), (name, test_file)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example_runs_and_prints_what_it_says(name):
  CHECKS[name](name)


def _all_of(module_path: str) -> list[str]:
  tree = ast.parse(open(os.path.join(REPO, module_path)).read())
  return next(ast.literal_eval(n.value) for n in tree.body
              if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__")


def test_api_reference_names_every_public_name_once():
  page = open(os.path.join(REPO, "docs", "api.md")).read()
  documented = re.findall(r"^::: s3jax\.((?:quant\.)?\w+)$", page, re.M)
  top, core = _all_of("s3jax/__init__.py"), _all_of("s3jax/quant/__init__.py")
  expected = top + [f"quant.{n}" for n in core if n not in top]
  assert sorted(documented) == sorted(expected)


def test_readme_is_short_and_its_links_resolve():
  text = open(os.path.join(REPO, "README.md")).read()
  assert len(text.splitlines()) <= 250
  for target in re.findall(r"\]\((?!https?://)([^)#]+)", text):
    assert os.path.exists(os.path.join(REPO, target)), f"README links to {target}, which does not exist"


def test_docs_site_builds_with_warnings_as_errors(tmp_path):
  """mkdocs --strict: a broken link or anchor between pages, or an API entry that no longer exists, fails."""
  result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  api = open(tmp_path / "api" / "index.html").read()
  for name in ("s3jax.quantizer", "s3jax.to_latents", "s3jax.quant.Banked", "s3jax.make_optimizer"):
    assert f'id="{name}"' in api, name
