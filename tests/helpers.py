"""Shared test helpers: loading config files and tiny overrides."""
import importlib.util
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "configs")


def load_config(name: str, **overrides):
  """configs/<name>.py's get_config(), with dotted-key overrides."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(CONFIG_DIR, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(), overrides)


def apply_overrides(config, overrides: dict):
  """Sets dotted keys, e.g. {"optim.lr": 0.1}, in a ConfigDict; returns it."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def config_names():
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_"))


def cli_command(config: str, workdir, *overrides, **flags) -> list[str]:
  """`python train.py --config=configs/<config>.py --workdir=... --config.k=v ... --flag=v`."""
  cmd = [sys.executable, os.path.join(REPO, "train.py"), f"--config={os.path.join(CONFIG_DIR, config)}.py",
         f"--workdir={workdir}"]
  cmd += [f"--config.{o}" for o in overrides]
  cmd += [f"--{k}={v}" for k, v in flags.items()]
  return cmd


def cli_env(devices: int = 2, compiled_as_here: bool = False) -> dict:
  """The environment of a CLI subprocess on `devices` fake CPU devices (2 shard the batch as 8 do, for less
  compile time; tests of a device count ask for it). It compiles at XLA's default level, as a user's
  does, or with `compiled_as_here` at the test process's (conftest.py): for results compared bit for bit."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  if compiled_as_here:
    env["XLA_FLAGS"] += " " + " ".join(f for f in os.environ["XLA_FLAGS"].split() if "optimization_level" in f)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def run_cli(config: str, workdir, *overrides, devices: int = 2, timeout: int = 300, **flags):
  return subprocess.run(cli_command(config, workdir, *overrides, **flags), cwd=REPO, env=cli_env(devices),
                        capture_output=True, text=True, timeout=timeout)


def logged_step(workdir) -> int:
  """The step of the last complete line of <workdir>/metrics.jsonl (0 before the first)."""
  import json
  path = os.path.join(str(workdir), "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = [l for l in f.read().splitlines() if l.strip().endswith("}")]
  return json.loads(lines[-1])["step"] if lines else 0


def restore_checkpoint(workdir, step=None):
  """The raw saved state tree of `step` (default: latest) in <workdir>/checkpoints, and the step."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(os.path.join(str(workdir), "checkpoints")) as manager:
    step = manager.latest_step() if step is None else step
    return manager.restore(step), step


DOC_PAGES = ("README.md",) + tuple(sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
                                          if f.endswith(".md")))


def doc_examples() -> dict[str, tuple[str, str]]:
  """Every marked Python example of the README and docs/*.md: {name: (page, code)}."""
  import re
  examples = {}
  for page in DOC_PAGES:
    text = open(os.path.join(REPO, page)).read()
    for name, code in re.findall(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", text, re.S):
      assert name not in examples, f"example {name} is marked twice ({examples[name][0]}, {page})"
      examples[name] = (page, code)
  return examples


def run_doc_example(name: str, replace: dict | None = None) -> tuple[list[str], dict]:
  """Runs the example `name` (with `replace`'s substitutions in its text); its printed lines and globals."""
  import contextlib
  import io
  page, code = doc_examples()[name]
  for old, new in (replace or {}).items():
    assert old in code, f"{name} no longer mentions {old}"
    code = code.replace(old, new)
  out, scope = io.StringIO(), {}
  with contextlib.redirect_stdout(out):
    exec(compile(code, page, "exec"), scope)
  return out.getvalue().splitlines(), scope


def printed_as_commented(code: str) -> list[str]:
  """What each `print(...)  # comment` line of an example says it prints."""
  return [line.split("# ", 1)[1] for line in code.splitlines() if line.startswith("print(")]


def random_variables(name: str, shape, q, num_classes: int = 10, rules=None):
  """(params, batch_stats) of `create_model(name)` with fresh `q` latents on its default kernels (or on
  `rules`): Flax's init and the latents' draws in one program, compiled as the trainer's init program is
  (`run_init_program`). Run eagerly, each op of them compiles on its own: a ResNet-8's 3-bit S3 latents
  took 7.6 s that way, 2.9 s as one program (2-core AVX2 EPYC, both at LLVM O1)."""
  import jax
  import jax.numpy as jnp

  from s3jax import quant
  from s3jax.models import create_model, default_quant_patterns
  from s3jax.records.variables import run_init_program
  model = create_model(name, num_classes)
  rules = quant.rules_for(default_quant_patterns(name), q) if rules is None else rules

  def init(key):
    model_key, latent_key = jax.random.split(key)
    variables = model.init(model_key, jnp.zeros((1, *shape)), train=False)
    return quant.to_latents(variables["params"], rules, latent_key), variables.get("batch_stats", {})

  return run_init_program(jax.jit(init), jax.random.key(0))


def run_tool(script: str, *args, devices: int = 1) -> list[str]:
  """`python <script> <args>` from the repository, which must succeed; its stdout lines."""
  result = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, env=cli_env(devices),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip().splitlines()


def assert_runtime_agrees_with_plain(config, export_dir: str, path: str):
  """`evaluate.py --export --path=<litert|onnx>` with int8 activations: its final line within 2 points of
  the plain path's top-1 and its agreement line at least 97% (12 training steps leave small margins);
  float activations, through the function evaluate.py calls: the plain path's top-1 class on every example."""
  import numpy as np

  from s3jax import data
  from s3jax.deploy.from_workdir import evaluate_export
  final, agreement = run_tool("evaluate.py", f"--export={export_dir}", f"--path={path}",
                              f"--{path}_mode=dynamic_int8")[-2:]
  dataset = data.create_dataset(config)
  plain, plain_predictions, _ = evaluate_export(config, export_dir, "plain", dataset=dataset)
  assert agreement.startswith("agreement with plain: ") and float(agreement.split()[3]) >= 0.97, agreement
  assert final.startswith("final eval/top1 = ") and abs(float(final.split()[3]) - plain["eval/top1"]) <= 0.02
  floats, float_predictions, _ = evaluate_export(config, export_dir, path, "float", dataset=dataset)
  assert floats["eval/top1"] == plain["eval/top1"]
  np.testing.assert_array_equal(float_predictions, plain_predictions)
  return dataset
