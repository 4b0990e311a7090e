"""--config.init_from and the conversion study: a float run converted to a shift run at step 0, fine-tuned,
exported and evaluated like any other run; one-line errors for what cannot be converted. The runs are
those of `benchmarks/conversion_study.py --quick` (real train.py subprocesses)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, cli_env, load_config, run_cli
from s3jax import data
from s3jax.deploy.from_workdir import evaluate_export, export_checkpoint
from s3jax.errors import ConfigError
from s3jax.models import create_model
from s3jax.training.init_from import converted_variables, read_float_variables
from s3jax.training.loop import train_and_evaluate
from s3jax.records.eval_program import jit_eval_logits
from s3jax.records.resolved import resolve_run
from s3jax.records.workdir_files import read_metrics

from test_config_validation import assert_one_line_error

pytestmark = pytest.mark.slow  # trains


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  output = tmp_path_factory.mktemp("conversion")
  cmd = [sys.executable, "benchmarks/conversion_study.py", f"--output={output}", "--quick"]
  # One device, as paper_claims.py --quick runs: the two studies then share compiled programs.
  result = subprocess.run(cmd, cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return output


def test_quick_study_writes_its_table_and_figure(study):
  page = open(study / "RESULTS.md").read()
  rows = [line for line in page.splitlines() if line.startswith("| S3 | 3 |") or line.startswith("| DeepShift-PS | 3 |")]
  assert len(rows) == 2
  cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
  assert len(cells) == 8 and all(c.replace(".", "").isdigit() for c in cells[2:])  # DeepShift's rounding too
  saved = json.load(open(study / "results" / "conversion" / "conversion.json"))
  assert set(saved["runs"]) == {"s3 3b", "deepshift_ps 3b"}
  assert set(saved["deepshift_rounding"]) == {"deepshift_ps 3b"}
  assert os.path.getsize(study / "results" / "conversion" / "conversion.png") > 10_000


def test_a_converted_run_starts_at_the_float_models_levels_and_exports_like_any_other(study, tmp_path):
  float_run, run = str(study / "runs" / "float_seed0"), str(study / "runs" / "s3_3b_finetuned_seed0")
  step0 = [r for r in read_metrics(run) if r["step"] == 0]
  assert len(step0) == 1 and "eval/top1" in step0[0]
  # Step 0 is the float checkpoint converted, before any update: the same top-1, computed here from the
  # float run's own checkpoint by the library's conversion and a plain eval.
  config = load_config("digits", init_from=float_run)
  model = create_model(config.model, 10)
  params, batch_stats = converted_variables(resolve_run(config), model, data.input_shape(config))
  dataset = data.create_dataset(config)
  apply = jit_eval_logits(model)
  correct = sum(int(np.sum((np.argmax(apply({"params": params, "batch_stats": batch_stats}, b["image"]), -1)
                            == b["label"]) & b["mask"])) for b in dataset.eval_batches())  # padding masked out
  assert step0[0]["eval/top1"] == pytest.approx(correct / dataset.num_test, abs=1 / dataset.num_test)
  # The fine-tuned checkpoint exports, and its shift-add path evaluates to the trainer's own top-1.
  final = [r for r in read_metrics(run) if "eval/top1" in r][-1]
  export_checkpoint(run, str(tmp_path / "export"), stablehlo=False)
  metrics, _, step = evaluate_export(config, str(tmp_path / "export"), path="shift_add")
  assert step == final["step"] == 6
  assert metrics["eval/top1"] == pytest.approx(final["eval/top1"], abs=1 / dataset.num_test)
  # The same command again resumes that workdir's checkpoint (nothing left to train), not init_from.
  again = load_config("digits", init_from=float_run, seed=0, total_steps=6, eval_every_steps=3,
                      log_every_steps=3, **{"quant.method": "s3", "quant.bits": 3, "optim.warmup_epochs": 0.0})
  assert train_and_evaluate(again, run)["eval/top1"] == final["eval/top1"]
  assert [r["step"] for r in read_metrics(run) if "eval/top1" in r] == [0, 3, 6]


def test_what_cannot_be_converted_is_a_one_line_error(study, tmp_path):
  float_run, s3_run = str(study / "runs" / "float_seed0"), str(study / "runs" / "s3_3b_scratch_seed0")
  model = create_model(load_config("digits").model, 10)
  with pytest.raises(ConfigError, match="is not a directory"):
    converted_variables(resolve_run(load_config("digits", init_from=str(tmp_path / "missing"))), model, (8, 8, 1))
  with pytest.raises(ConfigError, match=r"different model \(\w+/stage1_block\d/.*checkpoint absent.*--config.model"):
    converted_variables(resolve_run(load_config("digits", init_from=float_run, model="resnet32")),
                        create_model("resnet32", 10), (8, 8, 1))
  with pytest.raises(ConfigError, match="is a s3 run; it takes a float run's checkpoint"):
    converted_variables(resolve_run(load_config("digits", init_from=s3_run)), model, (8, 8, 1))
  # The workdir, its checkpoints/ and one step of it name the same weights.
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False))
  reads = [read_float_variables(os.path.join(float_run, *sub), dict(abstract))[0]
           for sub in ((), ("checkpoints",), ("checkpoints", "6"))]
  jax.tree.map(np.testing.assert_array_equal, reads[0], reads[1], reads[2])
  result = run_cli("digits", tmp_path / "cli", f"init_from={s3_run}", "total_steps=2", "batch_size=16")
  assert_one_line_error(result, "is a s3 run")
  assert not os.path.exists(tmp_path / "cli" / "checkpoints" / "2")


def test_a_float_model_converts_into_a_run_that_quantizes_its_activations(study, tmp_path):
  """init_from with 8-bit LSQ grids at the integer points: the float checkpoint has no step sizes; the
  first batch sets them (LSQ's init), as in a run from scratch, and they train from there."""
  config = load_config("digits", init_from=str(study / "runs" / "float_seed0"), total_steps=2,
                       eval_every_steps=2, **{"quant.method": "s3", "quant.bits": 3, "optim.warmup_epochs": 0.0,
                                              "quant.activations": "lsq", "quant.activation_points": "integer"})
  final = train_and_evaluate(config, str(tmp_path))
  assert 0 <= final["eval/top1"] <= 1
  from helpers import restore_checkpoint
  state, step = restore_checkpoint(str(tmp_path))
  steps = [float(state["params"][f"stage{i}_block0"][point]["input_step"])
           for i in (1, 2, 3) for point in ("input", "conv2", "branch")]
  assert step == 2 and all(s > 0 for s in steps) and len(set(steps)) == len(steps), steps  # none left at 1
