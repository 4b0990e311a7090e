"""Each method's random init, against the released code's draws as docs/METHODS.md writes them."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s3jax.quant import quantizer
from s3jax.quant.layout import kernel_fans
from s3jax.records.variables import run_init_program


def test_inits_are_the_released_ones():
  shape = (3, 3, 64, 64)
  ds = quantizer("denseshift", 3).init(jax.random.key(0), shape)
  for leaf in jax.tree.leaves(ds):
    assert abs(float(jnp.std(leaf)) / 1e-3 - 1) < 0.02 and abs(float(jnp.mean(leaf))) < 2e-5
  bound = 1 / math.sqrt(3 * 3 * 64)  # U(-b, b), b = 1/24
  dq = np.asarray(quantizer("deepshift_q", 6).init(jax.random.key(1), shape).weight)
  assert np.abs(dq).max() <= bound and abs(np.mean(dq ** 2) / (bound ** 2 / 3) - 1) < 0.03
  # At 3 bits the clamp to [2**-3, 1] lifts every one of these to ±1/8.
  dq3 = np.asarray(quantizer("deepshift_q", 3).init(jax.random.key(1), shape).weight)
  np.testing.assert_array_equal(np.abs(dq3), 0.125)
  assert abs(np.mean(dq3 > 0) - 0.5) < 0.02
  ps = quantizer("deepshift_ps", 3).init(jax.random.key(2), shape)
  assert float(ps.shift.min()) == -2.0 and float(ps.shift.max()) <= -1.0  # U(-10, -1) clamped to [-2, 0]
  # 1/9 of U(-10, -1) lies above -2.
  assert abs(np.mean(np.asarray(ps.shift) > -2.0) - 1 / 9) < 0.01
  assert float(ps.sign.min()) >= -1 and float(ps.sign.max()) <= 1
  dense = quantizer("deepshift_ps", 4).init(jax.random.key(3), (256, 128))
  assert float(dense.shift.min()) >= -6 and float(dense.shift.max()) <= 0  # U(smin, 0)
  assert abs(float(dense.shift.mean()) + 3) < 0.05


def released_draws(method, key, shape):
  """A conv kernel's latents as the released code draws them, one PRNG call per latent."""
  kh, kw, _, c_out = shape
  if method == "s3":  # sign, sparse, shift_1, shift_2 ~ N(0, 2 / (kh kw C_out))
    return [math.sqrt(2 / (kh * kw * c_out)) * jax.random.normal(k, shape) for k in jax.random.split(key, 4)]
  if method == "denseshift":  # sign and the 3 chain links ~ N(0, 1e-6)
    return [1e-3 * jax.random.normal(k, shape) for k in jax.random.split(key, 4)]
  shift_key, sign_key = jax.random.split(key)  # deepshift_ps: P ~ U(-10, -1), S ~ U(-1, 1)
  return [jax.random.uniform(shift_key, shape, minval=-10.0, maxval=-1.0),
          jax.random.uniform(sign_key, shape, minval=-1.0, maxval=1.0)]


@pytest.mark.parametrize("method", ["s3", "denseshift", "deepshift_ps"])
def test_one_vmapped_draw_gives_each_latent_its_released_per_key_draw(method):
  """The methods draw a kernel's latents in one vmapped PRNG program, which compiles faster on CPU; here in
  an init program compiled as the trainer's (`run_init_program`: LLVM O1 on CPU). The PRNG bits are
  integers, equal exactly, and the same float ops map them, so only XLA's fusion could move a last bit:
  rtol 1e-6."""
  q, shape, key = quantizer(method, 3), (3, 3, 4, 8), jax.random.key(7)
  fields = {"s3": lambda l: [l.sign, l.sparse, *l.shift], "denseshift": lambda l: [l.sign, *l.shift],
            "deepshift_ps": lambda l: [l.shift, l.sign]}[method]
  ours = jax.jit(lambda k: fields(q.init_latent(k, shape, jnp.float32, kernel_fans(shape, "conv"))))
  got = run_init_program(ours, key)
  want = jax.jit(released_draws, static_argnums=(0, 2))(method, key, shape)
  assert len(got) == len(want)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=0)
