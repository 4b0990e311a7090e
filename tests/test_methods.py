"""DenseShift, DeepShift-Q and DeepShift-PS, and the interface every method shares, against references
written independently from docs/METHODS.md: numpy formulas and `stop_gradient` fake-quant forms."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax import quant
from s3jax.quant import (DeepShiftPSLatent, DeepShiftQLatent, DenseShiftLatent, S3Latent,
                         Scaled, materialize, quantizer, quantizer_of, to_codes)
from s3jax.quant.tree import gradient_proxies, proxy_floats, proxy_pullback

sg = jax.lax.stop_gradient
METHOD_BITS = [("s3", b) for b in (2, 3, 4, 5)] + [("denseshift", b) for b in (2, 3, 4, 5)] + \
              [("deepshift_q", b) for b in (2, 3, 4, 5, 6)] + [("deepshift_ps", b) for b in (2, 3, 4, 5, 6)]


def expected_levels(method, bits):
  """Each method's value set, written from its definition."""
  if method == "s3":
    mags = [2.0 ** k for k in range(2 ** (bits - 1) - 1)]
    return sorted([-m for m in mags] + [0.0] + mags)
  if method == "denseshift":
    mags = [2.0 ** k for k in range(2 ** (bits - 1))]
    return sorted([-m for m in mags] + mags)
  smin = -(2 ** (bits - 1) - 1) if method == "deepshift_q" else -(2 ** (bits - 1) - 2)
  mags = [2.0 ** p for p in range(smin, 1)]
  return sorted([-m for m in mags] + [0.0] + mags)


def random_latent(method, bits, key, shape=(20000,)):
  """Latents spread wide enough that every level occurs."""
  q = quantizer(method, bits)
  keys = jax.random.split(key, 17)
  # A per-weight offset shared by all links of a chain, so that long runs of positive links occur too.
  offset = jax.random.uniform(keys[16], shape, minval=-2.0, maxval=4.0)
  normal = lambda i: jax.random.normal(keys[i], shape) + (offset if i >= 1 else 0.0)
  if method == "s3":
    k = quant.num_shift_latents(bits)
    return S3Latent(normal(0), normal(1), tuple(normal(2 + i) for i in range(k)))
  if method == "denseshift":
    return DenseShiftLatent(normal(0), tuple(normal(1 + i) for i in range(2 ** (bits - 1) - 1)))
  if method == "deepshift_q":
    # log-uniform magnitudes over the whole range, some exact zeros; then the method's clamp
    w = jnp.sign(normal(0)) * jnp.exp2(jax.random.uniform(keys[1], shape, minval=q.smin - 1, maxval=0.6))
    w = w.at[:7].set(0.0)
    return q.project(DeepShiftQLatent(w, bits))
  return q.project(DeepShiftPSLatent(jax.random.uniform(keys[0], shape, minval=q.smin - 1, maxval=0.6),
                                     jax.random.uniform(keys[1], shape, minval=-1.6, maxval=1.6), bits))


# --- references, in numpy ----------------------------------------------------------------------------

def chain(steps):
  e = np.zeros_like(steps[0]) if steps else 0.0
  for t in steps:
    e = (e + 1) * t
  return e


def chain_derivatives(steps):
  """d e / d step_k, exact by multilinearity: e(step_k = 1) - e(step_k = 0)."""
  ones, zeros = np.ones_like(steps[0]), np.zeros_like(steps[0])
  return [chain(steps[:k] + [ones] + steps[k + 1:]) - chain(steps[:k] + [zeros] + steps[k + 1:])
          for k in range(len(steps))]


def reference(lat, g):
  """(weight, latent gradients) for upstream gradient g, from the formulas."""
  g = np.asarray(g, np.float64)
  if isinstance(lat, DenseShiftLatent):
    s = np.where(np.asarray(lat.sign) >= 0, 1.0, -1.0)
    t = [(np.asarray(x) > 0).astype(np.float64) for x in lat.shift]
    e = chain(t)
    d_e = g * s / (2 * np.sqrt(e + 1))
    return s * 2.0 ** e, DenseShiftLatent(g * np.sqrt(e + 1), tuple(d_e * d for d in chain_derivatives(t)))
  if isinstance(lat, DeepShiftQLatent):
    w = np.asarray(lat.weight, np.float64)
    smin = -(2 ** (lat.bits - 1) - 1)
    with np.errstate(divide="ignore"):
      p = np.clip(np.round(np.log2(np.abs(w))), smin, 0)
    return np.sign(w) * 2.0 ** p, DeepShiftQLatent(g, lat.bits)
  if isinstance(lat, DeepShiftPSLatent):
    w = 2.0 ** np.round(np.asarray(lat.shift, np.float64)) * np.sign(np.round(np.asarray(lat.sign)))
    return w, DeepShiftPSLatent(g * w * math.log(2), g, lat.bits)
  raise TypeError(lat)


def fake_quant(lat):
  """The same methods as x + stop_gradient(q(x) - x) forms with plain jnp ops (no custom_vjp)."""
  ste = lambda x, q: x + sg(q - x)
  if isinstance(lat, DenseShiftLatent):
    s = ste(lat.sign, jnp.where(lat.sign >= 0, 1.0, -1.0))
    e = 0.0
    for x in lat.shift:
      e = (e + 1) * ste(x, (x > 0).astype(x.dtype))
    bw = s * jnp.sqrt(e + 1)
    return bw + sg(s * jnp.exp2(e) - bw)
  if isinstance(lat, DeepShiftQLatent):
    w = lat.weight
    smin = -(2 ** (lat.bits - 1) - 1)
    return ste(w, jnp.sign(w) * jnp.exp2(jnp.clip(jnp.round(jnp.log2(jnp.abs(w))), smin, 0)))
  raise TypeError(lat)


@pytest.mark.parametrize("method,bits", METHOD_BITS)
def test_value_set_codes_and_decode(method, bits):
  q = quantizer(method, bits)
  np.testing.assert_array_equal(q.levels(), expected_levels(method, bits))
  lat = random_latent(method, bits, jax.random.key(bits))
  w = materialize(lat)
  # Every level occurs and nothing else does (DeepShift-Q's 0 only where the latent is exactly 0).
  np.testing.assert_array_equal(np.unique(w), q.levels())
  codes = to_codes(lat)
  assert codes.dtype == jnp.int8
  np.testing.assert_array_equal(q.decode(codes), w)
  assert quantizer_of(lat) == q
  assert int(jnp.max(jnp.abs(codes))) == len(q.magnitudes())


@pytest.mark.parametrize("method,bits", METHOD_BITS)
def test_latents_from_codes_materialize_the_level_and_look_like_the_trainers(method, bits):
  """Latents rebuilt from an export's codes: each code's level exactly, and the structure, shapes and dtype
  of the latents training made (so the trainer's jitted eval runs on them as it is)."""
  q = quantizer(method, bits, scale="learned")
  trained = random_latent(method, bits, jax.random.key(bits), shape=(3, 3, 2, 100))
  scaled = Scaled(trained, jnp.full((100,), 0.25), learned=True)
  codes = to_codes(scaled)
  rebuilt = q.from_codes(codes, scale=scaled.scale)
  assert jax.tree.structure(rebuilt) == jax.tree.structure(scaled)
  assert [(x.shape, x.dtype) for x in jax.tree.leaves(rebuilt)] == \
      [(x.shape, x.dtype) for x in jax.tree.leaves(scaled)]
  levels = np.asarray(expected_levels(method, bits))
  magnitude = levels[levels > 0][np.maximum(np.abs(codes).astype(int) - 1, 0)]  # code +-j: j-th magnitude
  np.testing.assert_array_equal(materialize(rebuilt.latent), np.where(codes == 0, 0.0, np.sign(codes) * magnitude))
  np.testing.assert_array_equal(materialize(rebuilt), materialize(scaled))


@pytest.mark.parametrize("method,bits", [mb for mb in METHOD_BITS if mb[0] != "s3"])
def test_values_and_gradients_match_the_numpy_reference(method, bits):
  lat = random_latent(method, bits, jax.random.key(100 + bits))
  g = jax.random.normal(jax.random.key(7), lat.sign.shape if hasattr(lat, "sign") else lat.weight.shape)
  w_ref, grads_ref = reference(lat, g)
  np.testing.assert_array_equal(materialize(lat), w_ref)
  loss = lambda l: jnp.sum(materialize(l) * g)
  grads = jax.grad(loss)(lat)
  chex.assert_trees_all_close(grads, grads_ref, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(jax.jit(jax.grad(loss))(lat), grads_ref, rtol=1e-5, atol=1e-6)
  if method in ("denseshift", "deepshift_q"):
    fq = jax.grad(lambda l: jnp.sum(fake_quant(l) * g))(lat)
    chex.assert_trees_all_close(grads, fq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fake_quant(lat), w_ref, rtol=1e-5)  # x + sg(q - x) itself rounds


@pytest.mark.parametrize("method,bits", METHOD_BITS)
def test_a_packed_gradient_proxy_gives_the_latents_weights_and_gradients(method, bits):
  """The train step reads one unsigned integer per weight, not the latents, to make the weights and pull
  dL/dW back: both must be the latents' exactly, at the conventions' edges (zeros, rounding ties) and
  through a scale too. S3 and DenseShift keep a bit per latent (2**(bits-1) bits); DeepShift-PS keeps
  round(P) - smin and sign(round(S)) + 1 (at most 7 bits); DeepShift-Q has no proxy."""
  lat = random_latent(method, bits, jax.random.key(200 + bits))
  edges = jnp.array([0.0, -0.0, 0.5, -0.5, 1.5, -2.5])
  lat = jax.tree.map(lambda x: x.at[:6].set(edges), lat)
  tree = {"plain": lat, "scaled": Scaled(lat, jnp.float32(0.3), learned=False), "bias": jnp.arange(3.0)}
  proxies = gradient_proxies(tree)
  if method == "deepshift_q":
    assert proxies["plain"] is lat
  else:
    expected = jnp.uint16 if method in ("s3", "denseshift") and bits == 5 else jnp.uint8
    assert proxies["plain"].dtype == expected and proxies["plain"].shape == jax.tree.leaves(lat)[0].shape
    assert proxies["scaled"].latent.dtype == expected
  weights = quant.materialize_tree(tree)
  chex.assert_trees_all_equal(quant.materialize_tree(proxy_floats(proxies, tree)), weights)
  g = jax.tree.map(lambda w: jax.random.normal(jax.random.key(9), w.shape), weights)
  chex.assert_trees_all_equal(proxy_pullback(proxies, tree, g), jax.vjp(quant.materialize_tree, tree)[1](g)[0])


def test_denseshift_three_bit_gradients_in_the_released_form():
  """At 3 bits the chain is e = ((step(t1) + 1) * step(t2) + 1) * step(t3), values {±1, ±2, ±4, ±8}."""
  lat = random_latent("denseshift", 3, jax.random.key(3))
  g = jax.random.normal(jax.random.key(8), lat.sign.shape)
  t1, t2, t3 = [(x > 0).astype(jnp.float32) for x in lat.shift]
  s = jnp.where(lat.sign >= 0, 1.0, -1.0)
  e = ((t1 + 1) * t2 + 1) * t3
  got = jax.grad(lambda l: jnp.sum(materialize(l) * g))(lat)
  d_e = g * s / (2 * jnp.sqrt(e + 1))
  np.testing.assert_allclose(got.sign, g * jnp.sqrt(e + 1), rtol=1e-6)
  np.testing.assert_allclose(got.shift[2], d_e * ((t1 + 1) * t2 + 1), rtol=1e-6)
  np.testing.assert_allclose(got.shift[1], d_e * (t1 + 1) * t3, rtol=1e-6)
  np.testing.assert_allclose(got.shift[0], d_e * t2 * t3, rtol=1e-6, atol=1e-7)


def test_forward_values_are_exact_despite_the_surrogate():
  """sg(fw) + (bw - sg(bw)) keeps the forward value exact, where bw + sg(fw - bw) rounds."""
  lat = random_latent("denseshift", 5, jax.random.key(5), shape=(20000,))
  w = materialize(lat)
  assert set(np.abs(np.asarray(w)).tolist()) <= {2.0 ** k for k in range(16)}


def test_deepshift_projection_is_the_released_clamp():
  q = quantizer("deepshift_q", 3)  # |W| in [1/8, 1]
  w = jnp.array([0.0, 1e-4, -1e-4, 0.3, -0.7, 2.5, -9.0])
  np.testing.assert_array_equal(q.project(DeepShiftQLatent(w, 3)).weight,
                                np.float32([0.0, 0.125, -0.125, 0.3, -0.7, 1.0, -1.0]))
  ps = quantizer("deepshift_ps", 3)  # P in [-2, 0]
  lat = DeepShiftPSLatent(jnp.array([-7.0, -1.3, 0.4]), jnp.array([0.2, -0.9, 3.0]), 3)
  projected = ps.project(lat)
  np.testing.assert_array_equal(projected.shift, np.float32([-2.0, -1.3, 0.0]))
  np.testing.assert_array_equal(projected.sign, lat.sign)  # S is not clamped
  # At the clamp bound the gradient is the full g * W * ln2, not halved by a clip's tie rule.
  at_bound = DeepShiftPSLatent(jnp.array([-2.0]), jnp.array([1.0]), 3)
  grad = jax.grad(lambda l: jnp.sum(materialize(l)))(at_bound)
  np.testing.assert_allclose(grad.shift, [0.25 * math.log(2)], rtol=1e-6)
