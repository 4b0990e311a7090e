"""What every method shares beyond its formulas: scales, kernel layouts, mixed rules and role masks,
statistics, and one-line errors."""
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax import quant
from s3jax.errors import ConfigError
from s3jax.quant import DeepShiftPSLatent, Rule, Scaled, materialize, quantizer, quantizer_of, to_codes
from s3jax.quant.interface import KernelFans, kernel_fans
from s3jax.quant.stats import value_name
from s3jax.quant.tree import sparse_mask


@pytest.mark.parametrize("method", quant.method_names())
def test_fixed_scale_gives_the_usual_init_variance_and_never_learns(method):
  shape = (3, 3, 16, 32)
  q = quantizer(method, 3, scale="fixed")
  lat = q.init(jax.random.key(0), shape)
  assert isinstance(lat, Scaled) and lat.scale.shape == () and quantizer_of(lat) == q
  w = materialize(lat)
  np.testing.assert_allclose(float(jnp.mean(w ** 2)), 1 / (3 * 3 * 16), rtol=1e-4)  # lecun normal
  np.testing.assert_array_equal(to_codes(lat), to_codes(lat.latent))  # the scale is not in the codes
  np.testing.assert_array_equal(w, materialize(lat.latent) * lat.scale)
  grads = jax.grad(lambda l: jnp.sum(materialize(l) ** 2))(lat)
  assert float(grads.scale) == 0.0


@pytest.mark.parametrize("method", quant.method_names())
def test_learned_scale_is_per_output_channel_in_log_space(method):
  q = quantizer(method, 3, scale="learned")
  lat = q.init(jax.random.key(0), (3, 3, 16, 32))
  assert lat.scale.shape == (32,)
  fixed = quantizer(method, 3, scale="fixed").init(jax.random.key(0), (3, 3, 16, 32))
  np.testing.assert_allclose(jnp.exp(lat.scale), jnp.full((32,), fixed.scale), rtol=1e-5)
  g = jax.random.normal(jax.random.key(1), (3, 3, 16, 32))
  grads = jax.grad(lambda l: jnp.sum(materialize(l) * g))(lat)
  unscaled = np.asarray(materialize(lat.latent), np.float64)
  expected = np.sum(np.asarray(g) * unscaled, axis=(0, 1, 2)) * np.exp(np.asarray(lat.scale))
  np.testing.assert_allclose(grads.scale, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", quant.method_names())
@pytest.mark.parametrize("scale", ["fixed", "learned"])
@pytest.mark.parametrize("scale_gradient", ["outside", "through"])
def test_scale_gradient_outside_or_through_the_straight_through_estimator(method, scale, scale_gradient):
  """'outside': the latents' gradient is that of the same kernel without a scale, whatever the scale;
  'through': that gradient times the scale (plain autodiff). Both against stop_gradient references."""
  q = quantizer(method, 3, scale=scale, layout="conv", scale_gradient=scale_gradient)
  lat = q.init(jax.random.key(0), (3, 16, 8))
  assert quantizer_of(lat).scale_gradient == scale_gradient
  lat = Scaled(lat.latent, lat.scale + 3.0 if scale == "learned" else lat.scale * 20.0, lat.learned,
               scale_gradient)
  g = jax.random.normal(jax.random.key(1), (3, 16, 8))
  grads = jax.grad(lambda l: jnp.sum(materialize(l) * g))(lat)
  unscaled = jax.grad(lambda l: jnp.sum(materialize(l) * g))(lat.latent)
  factor = lat.factor() if scale_gradient == "through" else 1.0
  chex.assert_trees_all_close(grads.latent, jax.tree.map(lambda u: u * factor, unscaled), rtol=1e-5)

  def reference(l):  # forward w * f; backward g (outside) or g * f (through) to w, sum(g * w) to f
    sg = jax.lax.stop_gradient
    w, f = materialize(l.latent), l.factor()
    w_grad = (w - sg(w)) * (sg(f) if scale_gradient == "through" else 1.0)
    return sg(w * f) + w_grad + sg(w) * (f - sg(f))

  chex.assert_trees_all_close(grads, jax.tree.map(jnp.asarray, jax.grad(lambda l: jnp.sum(reference(l) * g))(lat)),
                              rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(materialize(lat), materialize(lat.latent) * lat.factor())


def test_dense_general_kernels_take_their_fans_from_the_rule():
  shape = (768, 12, 64)  # attention's query kernel: 768 inputs, 12 x 64 outputs
  as_conv = quantizer("s3", 3, layout="conv").init(jax.random.key(0), shape)
  as_dense = quantizer("s3", 3, layout="dense").init(jax.random.key(0), shape)
  assert abs(float(jnp.std(as_dense.sign)) / math.sqrt(2 / 768) - 1) < 0.02
  assert abs(float(jnp.std(as_conv.sign)) / math.sqrt(2 / (768 * 64)) - 1) < 0.02
  out_proj = quantizer("s3", 3, layout="dense", dense_in_axes=2, scale="learned").init(
      jax.random.key(1), (12, 64, 768))
  assert out_proj.scale.shape == (768,)
  assert kernel_fans((12, 64, 768), "dense", 2) == KernelFans(768, 768, (768,))


def test_bfloat16_kernels_get_float32_latents_with_a_warning():
  params = {"dense": {"kernel": jnp.ones((8, 4), jnp.bfloat16)}}
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tree = quant.to_latents(params, [Rule(r"dense/kernel", quantizer("s3", 3))], key=jax.random.key(0))
    converted, _ = quant.convert_to_latents(params, None, [Rule(r"dense/kernel", quantizer("s3", 3, scale="fixed"))])
  # Each warning names the user's call (this file), not a line inside s3jax or jax.
  assert [w.filename for w in caught if "float32" in str(w.message)] == [__file__] * 2
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((tree, converted)))


def test_rules_mix_methods_and_masks_follow_roles():
  params = {"a": {"kernel": jnp.ones((3, 3, 4, 8))}, "b": {"kernel": jnp.ones((3, 3, 8, 8))},
            "c": {"kernel": jnp.ones((8, 10)), "bias": jnp.zeros(10)}}
  rules = [Rule(r"a/kernel", quantizer("denseshift", 2)), Rule(r"b/kernel", quantizer("deepshift_ps", 3)),
           Rule(r"c/kernel", quantizer("deepshift_q", 4, scale="learned"))]
  tree = quant.to_latents(params, rules, key=jax.random.key(0))
  assert quantizer_of(tree["a"]["kernel"]) == quantizer("denseshift", 2)
  assert quantizer_of(tree["b"]["kernel"]) == quantizer("deepshift_ps", 3)
  assert quantizer_of(tree["c"]["kernel"]) == quantizer("deepshift_q", 4, scale="learned")
  roles = quant.role_tree(tree)
  assert roles["c"]["bias"] == "float" and roles["c"]["kernel"].scale == "log_scale"
  assert roles["b"]["kernel"] == DeepShiftPSLatent("shift", "sign", 3)
  assert not any(jax.tree.leaves(sparse_mask(tree)))  # no S3 here: no dense penalty
  weights = quant.materialize_tree(tree)
  chex.assert_trees_all_equal_shapes_and_dtypes(weights, params)
  assert set(np.unique(weights["a"]["kernel"]).tolist()) <= {-2.0, -1.0, 1.0, 2.0}


def test_weight_statistics_name_each_methods_own_levels():
  params = {"a": {"kernel": jnp.ones((3, 3, 8, 16))}, "b": {"kernel": jnp.ones((3, 3, 16, 16))}}
  tree = quant.to_latents(params, [Rule(r"a/kernel", quantizer("denseshift", 3)),
                                   Rule(r"b/kernel", quantizer("deepshift_ps", 3))], key=jax.random.key(0))
  stats = jax.jit(quant.weight_statistics)(tree)
  names = sorted(stats, key=lambda n: float(n.split("_")[-1]))
  assert names == ["quant/share_0", "quant/share_0.25", "quant/share_0.5", "quant/share_1",
                   "quant/share_2", "quant/share_4", "quant/share_8"]
  codes = np.concatenate([np.abs(np.asarray(to_codes(tree[k]["kernel"]))).ravel() for k in "ab"])
  weights = np.concatenate([np.abs(np.asarray(materialize(tree[k]["kernel"]))).ravel() for k in "ab"])
  for name, share in stats.items():
    value = float(name.split("_")[-1])
    np.testing.assert_allclose(share, np.mean(weights == value), rtol=1e-6)
  assert len(codes) == weights.size
  assert value_name(2.0 ** -9) == "2^-9" and value_name(0.015625) == "0.015625"


def test_unknown_method_and_option_are_one_line_errors():
  with pytest.raises(ConfigError, match="quant.method='shift' is unknown"):
    quantizer("shift", 3)
  with pytest.raises(ValueError, match="denseshift has no option 'init_scheme'"):
    quantizer("denseshift", 3, init_scheme="dense")
  with pytest.raises(ValueError, match="bits=6 is not supported by denseshift"):
    quantizer("denseshift", 6)
  with pytest.raises(ValueError, match="scale='big' is unknown"):
    quantizer("s3", 3, scale="big")


def test_attention_and_1d_conv_kernels_get_their_layout_from_the_path():
  """Flax attention's (32, 4, 8) query kernel reads as dense (fan-in 32, scale per (head, dim)), its out
  kernel (4, 8, 32) as dense with two input axes, a rank-3 'Conv_0' kernel as a 1-D conv; another rank-3
  kernel is a one-line error naming its path, never a guess."""
  import flax.linen as nn

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.MultiHeadDotProductAttention(num_heads=4, qkv_features=32)(x)
      return nn.Conv(16, (3,))(x)

  x = jnp.ones((2, 5, 32))
  params = Block().init(jax.random.key(0), x)["params"]
  learned = quantizer("s3", 3, scale="learned")
  latents = quant.to_latents(params, [Rule(r".*/kernel", learned)], key=jax.random.key(1))
  attention = latents["MultiHeadDotProductAttention_0"]
  assert params["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape == (32, 4, 8)
  assert attention["query"]["kernel"].scale.shape == (4, 8)
  assert attention["out"]["kernel"].scale.shape == (32,)
  assert latents["Conv_0"]["kernel"].scale.shape == (16,)
  for name, fan_in in (("query", 32), ("out", 32)):  # the fixed scale makes the weights' rms 1/sqrt(fan_in)
    fixed = quant.to_latents({name: params["MultiHeadDotProductAttention_0"][name]},
                             [Rule(r".*/kernel", quantizer("s3", 3, scale="fixed"))], key=jax.random.key(2))
    weights = materialize(fixed[name]["kernel"])
    np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(weights ** 2))), 1 / math.sqrt(fan_in), rtol=1e-5)
  odd = {"mixer": {"kernel": jnp.ones((4, 8, 8))}}
  with pytest.raises(ConfigError, match=r"mixer/kernel: a kernel of shape \(4, 8, 8\) may be a 1-D conv"):
    quant.to_latents(odd, [Rule(r".*/kernel", learned)], key=jax.random.key(3))
  as_dense = quant.to_latents(odd, [Rule(r".*/kernel", quantizer("s3", 3, scale="learned", layout="dense"))],
                              key=jax.random.key(3))
  assert as_dense["mixer"]["kernel"].scale.shape == (8, 8)
