"""Bad input stops the CLI before anything compiles: one line on stderr, non-zero exit, no traceback."""
import os
import subprocess
import sys

import pytest

from helpers import REPO, cli_env, load_config, run_cli
from s3jax.errors import ConfigError
from s3jax.training.loop import train_and_evaluate


pytestmark = pytest.mark.slow  # runs the trainer, a CLI or several processes


def assert_one_line_error(result, expected: str):
  assert result.returncode != 0, result.stdout[-500:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and expected in last, last


@pytest.mark.parametrize("override,expected", [
    ("quant.bits=7", "bits=7 is not supported by s3"),
    ("quant.bits=1", "bits=1 is not supported by s3"),
    ("quant.method=shiftadd", "quant.method='shiftadd' is unknown"),
    ("quant.bits=32", "use --config.quant.method=float"),
    ("quant.scale=huge", "scale='huge' is unknown"),
    ("quant.scale_gradient=through", "quant.scale_gradient='through' applies to a scale"),
    ("model=resnet7", "model='resnet7' is unknown"),
    ("data.name=imagenet3", "data.name='imagenet3' is unknown"),
    ("quant.init=uniform", "init='uniform' is unknown"),
    ("optim.schedule=step", "optim.schedule='step' is unknown"),
    ("batch_size=63", "batch_size=63 is not divisible by the 2 devices"),
    ("optim.lr=0", "optim.lr=0"),
    ("optim.lr=-0.1", "optim.lr=-0.1 must be > 0"),
    ("num_epochs=0", "num_epochs=0 must be > 0"),
    ("nonfinite=ignore", "nonfinite='ignore' is unknown"),
    ("bank_latents=yes", "bank_latents='yes' is unknown; use one of ('auto', 'on', 'small', 'off')"),
])
def test_bad_config_value(tmp_path, override, expected):
  assert_one_line_error(run_cli("digits", tmp_path, override), expected)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  assert_one_line_error(run_cli("digits", blocker / "run"), "is not writable")


def test_missing_imagenet_manual_dir(tmp_path):
  result = run_cli("imagenet_r18", tmp_path / "run", f"data.data_dir={tmp_path / 'tfds'}",
                   f"data.manual_dir={tmp_path / 'no_tars_here'}")
  assert_one_line_error(result, "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar are missing")


def test_missing_image_folder_data_dir(tmp_path):
  result = run_cli("digits", tmp_path / "run", "data.name=image_folder", "num_classes=0",
                   f"data.data_dir={tmp_path / 'no_such_folder'}")
  assert_one_line_error(result, "has no train/ folder")
  # Found before TensorFlow loads: the trainer's first thing to import it is the tfds input pipeline.
  check = ("import sys\nfrom helpers import load_config\nfrom s3jax.data import create_dataset\n"
           f"config = load_config('digits', **{{'data.name': 'image_folder', 'data.data_dir': {str(tmp_path)!r}}})\n"
           "try:\n  create_dataset(config)\nexcept Exception as err:\n  print(type(err).__name__, 'tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", check], cwd=os.path.join(REPO, "tests"), env=cli_env(1),
                          capture_output=True, text=True, timeout=120)
  assert result.stdout.split() == ["DataError", "False"], result.stderr[-2000:]


def test_resuming_a_checkpoint_of_another_model_method_or_bit_width(tmp_path):
  first = run_cli("digits", tmp_path, "total_steps=2", "batch_size=16", "quant.method=deepshift_q",
                  devices=1)
  assert first.returncode == 0, first.stderr[-2000:]
  result = run_cli("digits", tmp_path, "total_steps=4", "batch_size=16", "quant.method=deepshift_q",
                   "model=resnet32", devices=1)
  assert_one_line_error(result, "was written for a different model")
  # DeepShift-Q latents have the same structure at every bit width: the recorded identity tells them apart.
  result = run_cli("digits", tmp_path, "total_steps=4", "batch_size=16", "quant.method=deepshift_q",
                   "quant.bits=4", devices=1)
  assert_one_line_error(result, "was written with quant method=deepshift_q bits=3 scale=none, not "
                                "method=deepshift_q bits=4")
  for method in ("float", "s3", "denseshift"):  # the same refusal, in this process: no CLI start each
    config = load_config("digits", total_steps=4, batch_size=16, **{"quant.method": method})
    with pytest.raises(ConfigError, match=f"not method={method}"):
      train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("override,expected", [
    ("nosuch=1", "the config has no key nosuch"),
    ("quant.nosuch=1", "the config has no key nosuch"),
    ("batch_size=abc", "flag --config.batch_size=abc"),
    ("batch_size=5000", "batch_size=5000 exceeds the 1437 training examples of digits"),
    ("quant.rules=('nomatch/kernel',)", "rule(s) ['nomatch/kernel'] matched no parameter path"),
])
def test_bad_flags_and_rules_are_one_line_errors(tmp_path, override, expected):
  assert_one_line_error(run_cli("digits", tmp_path, override, devices=1), expected)


def test_missing_config_file(tmp_path):
  assert_one_line_error(run_cli("no_such_config", tmp_path), "No such file or directory")
