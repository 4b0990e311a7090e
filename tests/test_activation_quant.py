"""Activation quantizers against numpy forms of their formulas (LSQ's paper; DeepShift's `round_to_fixed`)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax.errors import ConfigError
from s3jax.quant import activations as aq


def np_round_to_fixed(x, integer_bits, fraction_bits):
  """DeepShift's released `round_to_fixed`, in numpy: floor to the unit, then clamp."""
  delta = 2.0 ** -fraction_bits
  bound = 2.0 ** (integer_bits - 1)
  return np.clip(np.floor(x / delta) * delta, -bound, bound - 1)


def np_lsq(v, s, q_n, q_p, g_out):
  """LSQ's forward, its gradient to v and to s (before and after the gradient scale)."""
  r = v / s
  out = np.round(np.clip(r, -q_n, q_p)) * s
  inside = (r >= -q_n) & (r <= q_p)
  slope = np.where(r < -q_n, -q_n, np.where(r > q_p, q_p, np.round(r) - r))
  n = int(np.prod(v.shape[1:]))
  return out, g_out * inside, np.sum(g_out * slope) / math.sqrt(n * q_p)


def _activations(seed, shape=(4, 3, 5, 6), spread=3.0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal(shape) * spread).astype(np.float32)


@pytest.mark.parametrize("integer_bits,fraction_bits", [(16, 16), (4, 2), (3, 0), (2, 5)])
def test_fixed_point_equals_deepshift_rounding_and_passes_the_gradient_straight_through(integer_bits,
                                                                                         fraction_bits):
  x = _activations(0, spread=2.0 ** (integer_bits - 1))   # many values beyond the clamp
  got, vjp = jax.vjp(lambda t: aq.round_to_fixed(t, integer_bits, fraction_bits), jnp.asarray(x))
  want = np_round_to_fixed(x.astype(np.float64), integer_bits, fraction_bits)
  np.testing.assert_array_equal(np.asarray(got), want.astype(np.float32))
  assert np.any(want != x)
  g = _activations(1)
  np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(g))[0]), g)   # clipped values too


def test_fixed_point_formats_it_cannot_hold_are_one_error():
  for integer_bits, fraction_bits in [(1, 16), (16, -1), (20, 16)]:
    with pytest.raises(ConfigError, match="integer_bits >= 2"):
      aq.check_fixed_point(integer_bits, fraction_bits)
  aq.check_fixed_point(16, 16)


@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (4, True), (4, False), (2, True)])
def test_lsq_values_and_gradients_equal_the_papers_formulas(bits, signed):
  q_n, q_p = (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
  assert aq.lsq_bounds(bits, signed) == (q_n, q_p)
  v = _activations(bits + signed)
  if not signed:
    v = np.abs(v) - 0.3                                  # mostly post-ReLU, a few negatives to clip
  s = np.float32(2.5 / q_p)                              # about a tenth of the values beyond the range
  g = _activations(7, spread=1.0)
  out, vjp = jax.vjp(lambda a, b: aq.lsq(a, b, bits, signed), jnp.asarray(v), jnp.asarray(s))
  grad_v, grad_s = vjp(jnp.asarray(g))
  want, want_v, want_s = np_lsq(v.astype(np.float64), np.float64(s), q_n, q_p, g.astype(np.float64))
  codes = np.asarray(aq.quantize_codes(jnp.asarray(v), jnp.asarray(s), bits, signed))
  np.testing.assert_array_equal(codes, np.round(want / s))        # the integers exactly
  assert codes.min() >= -q_n and codes.max() <= q_p and 0 < np.mean(want_v == 0) < 0.5
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(grad_v), want_v.astype(np.float32))
  np.testing.assert_allclose(float(grad_s), want_s, rtol=1e-4)
  assert grad_s.shape == () and abs(want_s) > 1e-3
  flag = jnp.float32(signed)                             # a layer's stored 0/1 flag, under jit
  as_flag = jax.jit(jax.vjp, static_argnums=0)(lambda a, b: aq.lsq(a, b, bits, flag), jnp.asarray(v),
                                               jnp.asarray(s))
  np.testing.assert_array_equal(np.asarray(as_flag[0]), np.asarray(out))
  np.testing.assert_array_equal(np.asarray(as_flag[1](jnp.asarray(g))[0]), np.asarray(grad_v))


def test_lsq_step_gradient_matches_a_stop_gradient_fake_quant_form():
  """LSQ as its paper writes it in autodiff terms: a scaled step and a straight-through round."""
  bits, signed = 4, True
  v, s = jnp.asarray(_activations(3)), jnp.float32(0.4)
  scale = aq.lsq_grad_scale(v, bits, signed)

  def paper_form(v, s):
    q_n, q_p = aq.lsq_bounds(bits, signed)
    s_scaled = s * scale + jax.lax.stop_gradient(s - s * scale)
    x = jnp.clip(v / s_scaled, -q_n, q_p)
    return (x + jax.lax.stop_gradient(jnp.round(x) - x)) * s_scaled

  g = jnp.asarray(_activations(4, spread=1.0))
  ours = jax.vjp(lambda a, b: aq.lsq(a, b, bits, signed), v, s)[1](g)
  paper = jax.vjp(paper_form, v, s)[1](g)
  np.testing.assert_allclose(np.asarray(ours[0]), np.asarray(paper[0]), atol=1e-6)
  np.testing.assert_allclose(float(ours[1]), float(paper[1]), rtol=1e-4)


def test_lsq_initial_step_and_gradient_scale():
  v = _activations(5)
  np.testing.assert_allclose(float(aq.lsq_initial_step(jnp.asarray(v), 8, False)),
                             2 * np.mean(np.abs(v)) / math.sqrt(255), rtol=1e-6)
  assert float(aq.lsq_grad_scale(v, 4, True)) == pytest.approx(1 / math.sqrt(3 * 5 * 6 * 7))
  with pytest.raises(ConfigError, match="activation_bits=1"):
    aq.lsq_bounds(1, True)


def test_calibrated_uses_the_running_max_and_gives_the_step_no_gradient():
  v = _activations(6)
  running = aq.running_abs_max(jnp.float32(2.0), jnp.asarray(v), momentum=0.75)
  np.testing.assert_allclose(float(running), 0.75 * 2.0 + 0.25 * np.max(np.abs(v)), rtol=1e-6)
  step = aq.calibrated_step(jnp.float32(4.0), 8, True)
  assert float(step) == pytest.approx(4.0 / 127)
  g = _activations(8, spread=1.0)
  out, vjp = jax.vjp(lambda a, b: aq.calibrated(a, b, 8, True), jnp.asarray(v), step)
  grad_v, grad_s = vjp(jnp.asarray(g))
  want, want_v, _ = np_lsq(v.astype(np.float64), float(step), 128, 127, g.astype(np.float64))
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(grad_v), want_v.astype(np.float32))
  assert float(grad_s) == 0.0


def test_full_int8_litert_needs_8_bit_grids():
  from s3jax.deploy.litert import check_full_int8
  check_full_int8(aq.ActivationQuantizer("lsq", bits=8))
  check_full_int8(aq.ActivationQuantizer("calibrated", bits=8))
  for other in (aq.ActivationQuantizer("lsq", bits=4), aq.ActivationQuantizer("fixed_point"), aq.ActivationQuantizer()):
    with pytest.raises(ConfigError, match="--litert=full_int8 needs activations quantized to 8 bits"):
      check_full_int8(other)
