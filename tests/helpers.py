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


def cli_env(devices: int = 8) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  return env


def run_cli(config: str, workdir, *overrides, devices: int = 8, timeout: int = 300, **flags):
  return subprocess.run(cli_command(config, workdir, *overrides, **flags), cwd=REPO, env=cli_env(devices),
                        capture_output=True, text=True, timeout=timeout)


def restore_checkpoint(workdir, step=None):
  """The raw saved state tree of `step` (default: latest) in <workdir>/checkpoints, and the step."""
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(os.path.join(str(workdir), "checkpoints")) as manager:
    step = manager.latest_step() if step is None else step
    return manager.restore(step), step
