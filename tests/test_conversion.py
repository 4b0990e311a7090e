"""Conversion from a float model (s3jax.quant.conversion), against references written from its definition:
the nearest level by numpy's argmin, the least-squares scale by a brute-force search, and a float network
whose kernels are replaced by s * Q(W / s)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax import quant
from s3jax.errors import ConfigError
from s3jax.models import create_model
from s3jax.quant import conversion
from s3jax.quant.tree import latents_with_paths, path_name
from s3jax.records.variables import run_init_program

from test_methods import METHOD_BITS, expected_levels


def nearest(x, levels):
  """The nearest of `levels` to each value (the lower on a tie)."""
  levels = np.asarray(levels)
  return levels[np.argmin(np.abs(np.asarray(x, np.float64)[..., None] - levels), axis=-1)]


def conversion_levels(method, bits):
  levels = expected_levels(method, bits)
  return [v for v in levels if v != 0] if method == "deepshift_q" else levels  # DeepShift-Q: 0 by accident


def kernel(shape=(3, 3, 8, 6), seed=0):
  w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.05
  w[..., 0] *= 20  # channels of very different ranges
  return w


@pytest.mark.parametrize("method,bits", METHOD_BITS)
def test_converted_weights_are_the_nearest_levels_under_a_least_squares_scale(method, bits):
  w = kernel()
  q = quant.quantizer(method, bits)
  result = conversion.convert_kernel(w, q)
  s = np.asarray(result.scale)
  assert s.shape == (6,) and (s > 0).all()
  levels = conversion_levels(method, bits)
  np.testing.assert_array_equal(quant.materialize(result.latent), nearest(w / s, levels))
  np.testing.assert_array_equal(quant.to_codes(result.latent), result.codes)
  # The scale: no worse, per channel, than the best of 2,000 scales tried by brute force.
  def error(scale):
    return ((w - scale * nearest(w / scale, levels)) ** 2).sum(axis=(0, 1, 2))
  tries = np.abs(w).max(axis=(0, 1, 2)) / max(levels) * np.geomspace(0.02, 2.0, 2000)[:, None]
  brute = np.min([error(t) for t in tries], axis=0)
  assert (error(s) <= brute * (1 + 1e-4) + 1e-12).all(), (error(s), brute)


def test_latents_start_at_the_init_scale_on_the_right_side_of_zero():
  w = kernel()
  q = quant.quantizer("s3", 3)
  result = conversion.convert_kernel(w, q)
  latent, m = result.latent, np.sqrt(2.0 / (9 * 6))  # He fan-out std of a 3x3 conv with 6 outputs
  for x in (latent.sign, latent.sparse, *latent.shift):
    np.testing.assert_allclose(np.abs(x), m, rtol=1e-6)
  # Where the weight is 0, the free sign and shift latents hold the float weight's nearest non-zero level.
  zero = np.asarray(result.codes) == 0
  assert zero.any() and (~zero).any()
  turned_on = quant.S3Latent(latent.sign, jnp.abs(latent.sparse), latent.shift)
  x = w / np.asarray(result.scale)
  np.testing.assert_array_equal(np.asarray(quant.materialize(turned_on))[zero],
                                nearest(x, [-4, -2, -1, 1, 2, 4])[zero])
  # DeepShift-Q keeps the float weight itself as its latent where its log2 rounding agrees.
  dq = conversion.convert_kernel(w, quant.quantizer("deepshift_q", 5))
  x = np.clip(np.abs(w / np.asarray(dq.scale)), 2.0 ** -15, 1) * np.sign(w)
  assert np.mean(np.isclose(dq.latent.weight, x, rtol=1e-6, atol=0)) > 0.85  # 1.41-1.5 of an octave: the level


# Three conv shapes, a projection shortcut among them: enough for every case, and few kernels to convert.
RULES = (r"stage[12]_block0/.*conv.*/kernel",)


def tiny_resnet(seed=0):
  """resnet8's float variables at 8x8 with BatchNorm statistics and affine parameters far from 1 and 0."""
  model = create_model("resnet8", 10)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 8, 8, 3)), train=False))
  variables = run_init_program(init, jax.random.key(seed))
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    name = path_name(path)
    if name.endswith(("mean", "bias")):
      return jnp.asarray(rng.normal(0, 0.3, x.shape), x.dtype)
    if name.endswith(("var", "scale")):
      return jnp.asarray(rng.uniform(0.5, 2.0, x.shape), x.dtype)
    return x

  variables = jax.tree_util.tree_map_with_path(perturb, variables)
  return model, variables["params"], variables["batch_stats"]


@pytest.mark.parametrize("method,bits", [("s3", 3), ("denseshift", 2), ("deepshift_q", 4), ("deepshift_ps", 3)])
def test_batchnorm_folded_network_equals_the_float_one_with_scaled_levels(method, bits):
  model, params, batch_stats = tiny_resnet()
  q = quant.quantizer(method, bits)
  converted, folded = conversion.convert_to_latents(params, batch_stats, quant.rules_for(RULES, q))
  assert jax.tree.structure(folded) == jax.tree.structure(batch_stats)
  # The reference: float kernels replaced by s * Q(W / s), with the scale each conversion fits.
  paths = dict(latents_with_paths(converted))
  assert len(paths) == 5

  def reference_kernel(path, w):
    name = path_name(path)
    if name not in paths:
      return w
    s = np.asarray(conversion.convert_kernel(w, q).scale)
    return jnp.asarray(s * nearest(np.asarray(w) / s, conversion_levels(method, bits)), jnp.float32)

  reference = jax.tree_util.tree_map_with_path(reference_kernel, params)
  images = jax.random.normal(jax.random.key(1), (16, 8, 8, 3))
  apply = jax.jit(lambda params, stats: model.apply(
      {"params": quant.materialize_tree(params), "batch_stats": stats}, images, train=False))
  expected, got = apply(reference, batch_stats), apply(converted, folded)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))
  assert float(jnp.abs(got - expected).max()) < 1e-2 * float(jnp.std(expected))
  # The stem's BatchNorm follows a float conv: untouched. A folded one: mean / s.
  np.testing.assert_array_equal(folded["stem_bn"]["mean"], batch_stats["stem_bn"]["mean"])
  s = np.asarray(conversion.convert_kernel(params["stage1_block0"]["conv1"]["kernel"], q).scale)
  np.testing.assert_allclose(folded["stage1_block0"]["bn1"]["mean"], batch_stats["stage1_block0"]["bn1"]["mean"] / s,
                             rtol=1e-6)


@pytest.mark.parametrize("method,scale", [("s3", "none"), ("denseshift", "fixed"), ("deepshift_q", "learned"),
                                          ("deepshift_ps", "none")])
def test_converted_tree_has_the_structure_of_a_fresh_one(method, scale):
  _, params, batch_stats = tiny_resnet()
  q = quant.quantizer(method, 3, scale=scale)
  fresh = quant.to_latents(params, quant.rules_for(RULES, q), key=jax.random.key(0))
  converted, _ = conversion.convert_to_latents(params, batch_stats, quant.rules_for(RULES, q))
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert jax.tree.structure(converted) == jax.tree.structure(fresh)
  assert shapes(converted) == shapes(fresh)


def test_a_scale_node_takes_the_fitted_scale_per_layer_or_per_channel():
  _, params, batch_stats = tiny_resnet()
  w = params["stage2_block0"]["conv2"]["kernel"]
  for scale, reduce in (("fixed", False), ("learned", True)):
    q = quant.quantizer("s3", 3, scale=scale)
    converted, folded = conversion.convert_to_latents(params, batch_stats, quant.rules_for(RULES, q))
    node = converted["stage2_block0"]["conv2"]["kernel"]
    s = np.asarray(conversion.convert_kernel(w, q, per_channel=reduce).scale)
    np.testing.assert_allclose(np.asarray(quant.materialize(node)), s * nearest(np.asarray(w) / s, expected_levels("s3", 3)),
                               rtol=1e-6)
    np.testing.assert_array_equal(folded["stage2_block0"]["bn2"]["var"], batch_stats["stage2_block0"]["bn2"]["var"])


def test_a_kernel_without_batchnorm_after_it_needs_a_scale_node():
  _, params, batch_stats = tiny_resnet()
  with pytest.raises(ConfigError, match="^head/kernel has no BatchNorm after it.*quant.scale=fixed or learned"):
    conversion.convert_to_latents(params, batch_stats, quant.rules_for(r"head/kernel", quant.quantizer("s3", 3)))
  converted, _ = conversion.convert_to_latents(
      params, batch_stats, quant.rules_for(r"head/kernel", quant.quantizer("s3", 3, scale="fixed")))
  assert isinstance(converted["head"]["kernel"], quant.Scaled)
