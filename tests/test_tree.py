"""The tree transform on real Flax ResNets: which kernels the rules choose, and what the core imports."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import s3jax
from s3jax import FULL_PRECISION, Rule, materialize_tree, quantized_paths, quantizer, rules_for
from s3jax import to_latents
from s3jax.models import create_model
from s3jax.models.resnet import QUANT_PATTERNS as RESNET_QUANT_PATTERNS

S3 = quantizer("s3", 3)
RESNET_RULES = rules_for(RESNET_QUANT_PATTERNS, S3)


def _resnet_params(name="resnet20", size=28, channels=1):
  model = create_model(name, 10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)),
                                                train=False))
  return model, variables


def _all_paths(tree):
  return ["/".join(str(k.key) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


@pytest.mark.parametrize("name,expected_count,check_values", [("resnet20", 9 * 2 + 2, True),
                                                               ("resnet18", 8 * 2 + 3, False)])
def test_default_rules_quantize_exactly_the_stage_convs(name, expected_count, check_values):
  """ResNet-18's paths and shapes are checked abstractly: drawing its 11M weights' latents eagerly took 23-41 s
  of compiling, and the values come from the same per-kernel code as ResNet-20's, checked here."""
  _, variables = _resnet_params(name)
  params = variables["params"]
  quantize = lambda key: to_latents(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params), RESNET_RULES, key)
  latents = quantize(jax.random.key(0)) if check_values else jax.eval_shape(quantize, jax.random.key(0))
  got = quantized_paths(latents)
  expected = [p for p in _all_paths(params)
              if p.startswith("stage") and "conv" in p.split("/")[1] and p.endswith("kernel")]
  assert got == expected and len(got) == expected_count
  assert not any(p.startswith(("stem", "head")) or "bn" in p for p in got)
  weights = materialize_tree(latents) if check_values else jax.eval_shape(materialize_tree, latents)
  chex.assert_trees_all_equal_shapes_and_dtypes(weights, params)
  for path in got if check_values else ():
    leaf = weights
    for part in path.split("/"):
      leaf = leaf[part]
    assert set(np.unique(leaf).tolist()) <= {-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0}


def test_materialized_tree_runs_the_plain_flax_model():
  model = create_model("resnet20", 10)
  variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)), train=False)
  latents = to_latents(variables["params"], RESNET_RULES, jax.random.key(1))
  logits = model.apply({"params": materialize_tree(latents), "batch_stats": variables["batch_stats"]},
                       jnp.ones((2, 28, 28, 1)), train=False)
  chex.assert_shape(logits, (2, 10))
  chex.assert_tree_all_finite(logits)


def test_rules_first_match_wins_and_unused_rule_is_an_error():
  _, variables = _resnet_params()
  params = variables["params"]
  rules = (Rule(r"stage1_block0/conv1/kernel", FULL_PRECISION), Rule(r"stage1_.*conv\d/kernel", S3))
  got = quantized_paths(to_latents(params, rules, key=jax.random.key(0)))
  assert "stage1_block0/conv1/kernel" not in got
  assert got == [p for p in _all_paths(params) if p.startswith("stage1_") and "/conv" in p
                 and p != "stage1_block0/conv1/kernel"]
  with pytest.raises(ValueError, match="nonexistent_layer"):
    to_latents(params, (Rule(r"nonexistent_layer/kernel", S3),), key=jax.random.key(0))
  with pytest.raises(ValueError, match="give a quantizer"):
    Rule(r"stage.*", "int8")
  with pytest.raises(ValueError, match="not a Rule; write Rule"):
    to_latents(params, (r"stage.*",), key=jax.random.key(0))
  with pytest.raises(ValueError, match="rank"):
    to_latents(params, (Rule(r"stem_bn/scale", S3),), key=jax.random.key(0))


def test_latent_inits_depend_on_path_not_on_tree_order():
  _, variables = _resnet_params()
  params = variables["params"]
  full = to_latents(params, RESNET_RULES, key=jax.random.key(0))
  only_one = to_latents(params, (Rule(r"stage3_block2/conv2/kernel", S3),), key=jax.random.key(0))
  chex.assert_trees_all_equal(full["stage3_block2"]["conv2"]["kernel"],
                              only_one["stage3_block2"]["conv2"]["kernel"])


def test_core_imports_no_flax_models_or_trainer():
  import subprocess
  import sys
  code = ("import sys, s3jax.quant; bad = [m for m in sys.modules if m.split('.')[0] in ('flax', "
          "'tensorflow') or m.startswith(('s3jax.training.loop', 's3jax.training.state', 's3jax.training.steps', "
          "'s3jax.models', 's3jax.data', 's3jax.deploy'))]; print(bad)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_an_empty_rules_config_takes_the_model_s_own_patterns():
  """Each model owns its default rules; a config names other kernels only when it sets quant.rules."""
  from s3jax.config import base_config
  from s3jax.models import vit
  config = base_config()
  config.model = "vit_tiny"
  run = s3jax.resolve_run(config)
  assert [r.pattern for r in run.rules] == list(vit.QUANT_PATTERNS) and {r.quantizer for r in run.rules} == {S3}
  config.model, config.quant.method, config.quant.rules = "resnet20", "float", ("head/kernel",)
  assert s3jax.resolve_run(config).rules == (Rule("head/kernel", FULL_PRECISION),)
