"""The S3 core against docs/METHODS.md: value sets, analytic and fake-quant gradients, init, codes, bf16."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import s3jax
from s3jax import S3Latent, from_codes, init_latent, materialize, ste_sign, ste_step, to_codes
from s3jax.quant import level_values, num_shift_latents

BITS = (2, 3, 4, 5)


def all_codes(bits):
  k = num_shift_latents(bits)
  return jnp.arange(-(k + 1), k + 2, dtype=jnp.int8)


def test_public_api_names():
  names = ["S3Latent", "init_latent", "materialize", "to_codes", "from_codes", "to_latents",
           "materialize_tree", "quantized_paths", "dense_penalty", "dense_weight_penalty",
           "make_optimizer", "ste_sign", "ste_step"]
  for name in names:
    assert callable(getattr(s3jax, name)), name


def test_binarizer_forward_and_zero_conventions():
  x = jnp.array([-2.0, -1e-30, 0.0, 1e-30, 3.0])
  np.testing.assert_array_equal(ste_sign(x), [-1, -1, 1, 1, 1])
  np.testing.assert_array_equal(ste_step(x), [0, 0, 0, 1, 1])


def test_binarizers_pass_gradient_straight_through():
  x = jnp.array([-5.0, -0.1, 0.0, 0.2, 7.0])
  g = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])
  for fn in (ste_sign, ste_step):
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(fn(v) * g))(x), g)


@pytest.mark.parametrize("bits", BITS)
def test_value_set_is_exact_and_every_level_reachable(bits):
  k = num_shift_latents(bits)
  expected = np.array([-(2.0 ** i) for i in range(k, -1, -1)] + [0.0] + [2.0 ** i for i in range(k + 1)])
  assert len(expected) == 2 ** bits - 1
  np.testing.assert_array_equal(level_values(bits), expected)
  # Every code is reachable through latents, and maps to the right value.
  w = materialize(from_codes(all_codes(bits), bits))
  np.testing.assert_array_equal(w, expected)
  # Random latents never leave the set.
  lat = init_latent(jax.random.key(bits), (3, 3, 32, 64), bits)
  assert set(np.unique(materialize(lat)).tolist()) <= set(expected.tolist())


def test_zero_latents_follow_the_conventions():
  zeros = jnp.zeros((4,))
  lat = S3Latent(sign=zeros, sparse=jnp.ones((4,)), shift=(zeros, zeros))
  np.testing.assert_array_equal(materialize(lat), jnp.ones(4))  # sgn(0)=+1, step(0)=0 -> e=0
  lat = S3Latent(sign=jnp.ones((4,)), sparse=zeros, shift=(jnp.ones(4), jnp.ones(4)))
  np.testing.assert_array_equal(materialize(lat), jnp.zeros(4))  # step(0)=0 zeroes the weight


def _random_latent(key, bits, shape=(64,)):
  """Latents with mixed signs so every branch of the chain occurs."""
  k = num_shift_latents(bits)
  keys = jax.random.split(key, 2 + k)
  draw = lambda kk: jax.random.normal(kk, shape)
  return S3Latent(sign=draw(keys[0]), sparse=draw(keys[1]), shift=tuple(draw(kk) for kk in keys[2:]))


def _chain_exponent_np(steps):
  e = np.zeros_like(steps[0]) if steps else 0.0
  for t in steps:
    e = (e + 1) * t
  return e


def analytic_latent_grads(lat: S3Latent, g):
  """docs/METHODS.md's S3 formulas, in numpy. de/dstep(S_k) is exact by multilinearity: e(t_k=1) - e(t_k=0)."""
  s = np.where(np.asarray(lat.sign) >= 0, 1.0, -1.0)
  m = (np.asarray(lat.sparse) > 0).astype(np.float64)
  t = [(np.asarray(x) > 0).astype(np.float64) for x in lat.shift]
  p = 2.0 ** _chain_exponent_np(t)
  g = np.asarray(g, np.float64)
  d_shift = []
  for k in range(len(t)):
    hi = _chain_exponent_np(t[:k] + [np.ones_like(t[k])] + t[k + 1:])
    lo = _chain_exponent_np(t[:k] + [np.zeros_like(t[k])] + t[k + 1:])
    d_shift.append(g * s * m * p * math.log(2) * (hi - lo))
  return S3Latent(sign=g * m * p, sparse=g * s * p, shift=tuple(d_shift))


def fake_quant_materialize(lat: S3Latent):
  """An independent STE formulation: x + stop_gradient(q(x) - x), and plain jnp.exp2."""
  sg = jax.lax.stop_gradient
  sign = lambda x: x + sg(jnp.where(x >= 0, 1.0, -1.0) - x)
  step = lambda x: x + sg(jnp.where(x > 0, 1.0, 0.0) - x)
  e = 0.0
  for x in lat.shift:
    e = (e + 1) * step(x)
  return sign(lat.sign) * step(lat.sparse) * jnp.exp2(e)


def _upstream(shape):
  return jax.random.normal(jax.random.key(99), shape)


@pytest.mark.parametrize("bits", BITS)
def test_gradients_match_analytic_formulas_and_fake_quant(bits):
  lat = _random_latent(jax.random.key(bits), bits)
  g = _upstream(lat.shape)
  loss = lambda l: jnp.sum(materialize(l) * g)
  got = jax.grad(loss)(lat)
  chex.assert_trees_all_close(got, analytic_latent_grads(lat, g), rtol=1e-5, atol=1e-6)
  ref = jax.grad(lambda l: jnp.sum(fake_quant_materialize(l) * g))(lat)
  chex.assert_trees_all_close(got, ref, rtol=1e-5, atol=1e-6)
  # Under jit, and under vmap over a batch of latents.
  chex.assert_trees_all_close(jax.jit(jax.grad(loss))(lat), got, rtol=1e-6)
  batch = jax.vmap(lambda kk: _random_latent(kk, bits))(jax.random.split(jax.random.key(7), 3))
  per_item = jax.vmap(jax.grad(loss))(batch)
  for i in range(3):
    item = jax.tree.map(lambda x: x[i], batch)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], per_item), analytic_latent_grads(item, g),
                                rtol=1e-5, atol=1e-6)


def test_three_bit_gradients_in_design_form():
  """The explicit 3-bit formulas: dS_2 = ...*(step(S_1)+1), dS_1 = ...*step(S_2)."""
  lat = _random_latent(jax.random.key(3), 3, shape=(256,))
  g = _upstream(lat.shape)
  got = jax.grad(lambda l: jnp.sum(materialize(l) * g))(lat)
  s = jnp.where(lat.sign >= 0, 1.0, -1.0)
  m = (lat.sparse > 0).astype(jnp.float32)
  t1, t2 = [(x > 0).astype(jnp.float32) for x in lat.shift]
  p = 2.0 ** ((t1 + 1) * t2)
  common = g * s * m * p * jnp.log(2.0)
  np.testing.assert_allclose(got.shift[1], common * (t1 + 1), rtol=1e-6)
  np.testing.assert_allclose(got.shift[0], common * t2, rtol=1e-6)
  # A zero weight gives its sign and shift latents no task gradient.
  zero = np.asarray(lat.sparse <= 0)
  assert zero.any()
  assert np.all(np.asarray(got.sign)[zero] == 0)
  assert all(np.all(np.asarray(x)[zero] == 0) for x in got.shift)
  assert np.any(np.asarray(got.sparse)[zero] != 0)


def test_dense_init_gives_only_unit_weights():
  lat = init_latent(jax.random.key(0), (3, 3, 64, 64), 3, scheme="dense")
  w = np.asarray(materialize(lat))
  assert set(np.unique(w).tolist()) == {-1.0, 1.0}
  assert np.all(np.asarray(lat.sparse) >= 0) and all(np.all(np.asarray(s) <= 0) for s in lat.shift)


def test_normal_init_level_shares_and_he_fan_out_std():
  shape = (3, 3, 64, 128)  # 73,728 weights
  lat = init_latent(jax.random.key(0), shape, 3, scheme="normal")
  mag = np.abs(np.asarray(materialize(lat)))
  n = mag.size
  tol = 4 * math.sqrt(0.25 / n)  # 4 standard errors of a share
  for level, share in ((0, 0.5), (1, 0.25), (2, 0.125), (4, 0.125)):
    assert abs(np.mean(mag == level) - share) < tol, (level, np.mean(mag == level))
  expected_std = math.sqrt(2.0 / (3 * 3 * 128))
  for leaf in jax.tree.leaves(lat):
    assert abs(float(jnp.std(leaf)) / expected_std - 1) < 0.02
  # Dense (in, out) kernels use fan_out = out.
  dense = init_latent(jax.random.key(1), (512, 256), 3)
  assert abs(float(jnp.std(dense.sign)) / math.sqrt(2.0 / 256) - 1) < 0.02


def test_init_rejects_bad_arguments():
  with pytest.raises(ValueError, match="bits"):
    init_latent(jax.random.key(0), (3, 3), 6)
  with pytest.raises(ValueError, match="scheme"):
    init_latent(jax.random.key(0), (3, 3), 3, scheme="uniform")


@pytest.mark.parametrize("bits", BITS)
def test_codes_round_trip_and_bfloat16_is_exact(bits):
  codes = all_codes(bits)
  lat = from_codes(codes, bits)
  np.testing.assert_array_equal(to_codes(lat), codes)
  assert to_codes(lat).dtype == jnp.int8
  # Random latents: codes describe exactly the materialized weight.
  rnd = init_latent(jax.random.key(5), (8, 8, 16), bits)
  c = np.asarray(to_codes(rnd)).astype(np.float64)
  np.testing.assert_array_equal(np.sign(c) * np.where(c != 0, 2.0 ** (np.abs(c) - 1), 0), materialize(rnd))
  np.testing.assert_array_equal(materialize(from_codes(to_codes(rnd), bits)), materialize(rnd))
  # bfloat16 latents give bfloat16 weights with exactly the same values.
  bf = jax.tree.map(lambda x: x.astype(jnp.bfloat16), from_codes(codes, bits))
  w_bf = materialize(bf)
  assert w_bf.dtype == jnp.bfloat16
  np.testing.assert_array_equal(w_bf.astype(jnp.float32), materialize(lat))
  grads = jax.grad(lambda l: jnp.sum(materialize(l).astype(jnp.float32)))(bf)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(grads))


def test_from_codes_rejects_out_of_range():
  with pytest.raises(ValueError, match="3 bits"):
    from_codes(jnp.array([5], jnp.int8), 3)


def test_exact_exp2_is_every_power_of_two_of_the_float32_normal_range_with_its_derivative():
  from s3jax.quant.binarizers import exact_exp2
  exponents = np.arange(-126, 128)
  np.testing.assert_array_equal(np.asarray(exact_exp2(jnp.asarray(exponents, jnp.float32))),
                                np.exp2(exponents.astype(np.float64)).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(exact_exp2(jnp.asarray([-3.0, 0.0, 5.0], jnp.bfloat16))),
                                np.asarray([0.125, 1.0, 32.0], np.float32))  # the ldexp path
  grads = jax.grad(lambda e: exact_exp2(e).sum())(jnp.asarray([-2.0, 0.0, 3.0]))
  np.testing.assert_allclose(np.asarray(grads), np.asarray([0.25, 1.0, 8.0]) * np.log(2.0), rtol=1e-6)
