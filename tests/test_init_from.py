"""--config.init_from: a float run converted to a shift run at step 0, fine-tuned, exported and evaluated
like any other run; one-line errors for what cannot be converted."""
import jax
import numpy as np
import pytest

from helpers import load_config, run_cli
from s3jax import data
from s3jax.deploy.from_workdir import evaluate_export, export_checkpoint
from s3jax.errors import ConfigError
from s3jax.models import create_model
from s3jax.quant.conversion import convert_to_latents
from s3jax.training.init_from import converted_variables
from s3jax.training.loop import train_and_evaluate
from s3jax.training.steps import jit_eval_logits
from s3jax.workdir import read_metrics

from test_config_validation import assert_one_line_error

pytestmark = pytest.mark.slow  # trains


def digits(**overrides):
  base = {"batch_size": 64, "log_every_steps": 2, "checkpoint_every_steps": 1000}
  return load_config("digits", **{**base, **overrides})


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("float"))
  train_and_evaluate(digits(**{"quant.method": "float", "total_steps": 12}), workdir)
  return workdir


def test_a_converted_run_starts_at_the_float_models_levels_fine_tunes_and_exports(float_run, tmp_path):
  config = digits(init_from=float_run, total_steps=2, eval_every_steps=2)
  final = train_and_evaluate(config, str(tmp_path / "run"))
  step0 = [r for r in read_metrics(str(tmp_path / "run")) if r["step"] == 0]
  assert len(step0) == 1 and "eval/top1" in step0[0]
  # Step 0 is the float checkpoint converted, before any update: the same top-1, computed here from the
  # float run's own checkpoint by the library's conversion and a plain eval.
  model = create_model("resnet20", 10)
  params, batch_stats = converted_variables(config, model, (8, 8, 1))
  dataset = data.create_dataset(config)
  apply = jit_eval_logits(model)
  correct = sum(int(np.sum(np.argmax(apply({"params": params, "batch_stats": batch_stats}, b["image"]), -1)
                           == b["label"])) for b in dataset.eval_batches())
  assert step0[0]["eval/top1"] == pytest.approx(correct / dataset.num_test, abs=1 / dataset.num_test)
  # The fine-tuned checkpoint exports and its shift-add path evaluates to the trainer's own top-1.
  export_checkpoint(str(tmp_path / "run"), str(tmp_path / "export"), stablehlo=False)
  metrics, _, step = evaluate_export(config, str(tmp_path / "export"), path="shift_add")
  assert step == 2 and metrics["eval/top1"] == pytest.approx(final["eval/top1"], abs=1 / dataset.num_test)
  # Resuming that workdir reads its checkpoint, not init_from again.
  assert train_and_evaluate(digits(init_from=float_run, total_steps=2, eval_every_steps=2),
                            str(tmp_path / "run"))["eval/top1"] == final["eval/top1"]


def test_what_cannot_be_converted_is_a_one_line_error(float_run, tmp_path):
  model = create_model("resnet20", 10)
  with pytest.raises(ConfigError, match="is not a directory"):
    converted_variables(digits(init_from=str(tmp_path / "missing")), model, (8, 8, 1))
  with pytest.raises(ConfigError, match=r"different model \(\w+/stage1_block3/.*checkpoint absent.*--config.model"):
    converted_variables(digits(init_from=float_run, model="resnet32"), create_model("resnet32", 10), (8, 8, 1))
  s3_run = str(tmp_path / "s3")
  train_and_evaluate(digits(total_steps=1), s3_run)
  with pytest.raises(ConfigError, match="is a s3 run; it takes a float run's checkpoint"):
    converted_variables(digits(init_from=s3_run), model, (8, 8, 1))
  result = run_cli("digits", tmp_path / "cli", f"init_from={s3_run}", "total_steps=2", "batch_size=16")
  assert_one_line_error(result, "is a s3 run")
