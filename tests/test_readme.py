"""The README's API example runs as printed and prints what its comments say."""
import contextlib
import io
import os
import re

import pytest

from helpers import REPO


def readme_example(marker: str = "readme-api-example") -> str:
  text = open(os.path.join(REPO, "README.md")).read()
  match = re.search(f"<!-- {marker} -->\n```python\n(.*?)```", text, re.S)
  assert match, f"README lost its example marker {marker}"
  return match.group(1)


def test_readme_api_example_runs_as_printed():
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(readme_example(), "README.md", "exec"), {})
  lines = out.getvalue().splitlines()
  assert lines[0] == "['layers_0/kernel']"
  values = {float(v) for v in lines[1].strip("[]").split()}
  assert values <= {-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0} and len(values) >= 3
  assert lines[2] == "int8"


def test_readme_denseshift_example_runs_as_printed():
  text = open(os.path.join(REPO, "README.md")).read()
  match = re.search(r"<!-- readme-denseshift-example -->\n```python\n(.*?)```", text, re.S)
  assert match, "README lost its DenseShift example marker"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(match.group(1), "README.md", "exec"), {})
  printed = out.getvalue().splitlines()
  # Each line prints what its comment in the README says.
  expected = [line.split("# ", 1)[1].split(":")[0] for line in match.group(1).splitlines()
              if line.startswith("print(")]
  assert printed == expected


def test_readme_nnx_example_trains_an_nnx_module_and_refuses_a_bias():
  text = open(os.path.join(REPO, "README.md")).read()
  match = re.search(r"<!-- readme-nnx-example -->\n```python\n(.*?)```", text, re.S)
  assert match, "README lost its NNX example marker"
  out, scope = io.StringIO(), {}
  with contextlib.redirect_stdout(out):
    exec(compile(match.group(1), "README.md", "exec"), scope)
  lines = out.getvalue().splitlines()
  assert lines[0] == "['conv/kernel']" and lines[1] == "True"
  values = {float(v) for v in lines[2].strip("[]").split()}
  assert values <= {-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0} and len(values) >= 3
  # The conv's latents learned (its gradient flows through replace_by_pure_dict), not only the head.
  start = scope["to_latents"](scope["nnx"].to_pure_dict(scope["params"]), [(r"conv/kernel", "s3")],
                              key=scope["jax"].random.key(1))
  assert not (start["conv"]["kernel"].sparse == scope["latents"]["conv"]["kernel"].sparse).all()
  from s3jax.errors import ConfigError
  with pytest.raises(ConfigError, match=r"chose conv/bias of shape \(8,\); only kernels"):
    scope["to_latents"](scope["nnx"].to_pure_dict(scope["params"]), [(r"conv/bias", "s3")],
                        key=scope["jax"].random.key(1))


def test_readme_conversion_example_prints_what_its_comments_say():
  example = readme_example("readme-conversion-example")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(example, "README.md", "exec"), {})
  expected = [line.split("# ", 1)[1] for line in example.splitlines() if line.startswith("print(")]
  assert out.getvalue().splitlines() == expected
