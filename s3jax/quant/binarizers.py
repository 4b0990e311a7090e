"""Straight-through binarizers of DESIGN §2: exact forward, identity backward."""
import jax
import jax.numpy as jnp


@jax.custom_vjp
def ste_sign(x):
  """sgn(x) = +1 if x >= 0 else -1 (so sgn(0) = +1); gradient passes straight through."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def _sign_fwd(x):
  return ste_sign(x), None


def _identity_bwd(_, g):
  return (g,)


ste_sign.defvjp(_sign_fwd, _identity_bwd)


@jax.custom_vjp
def ste_step(x):
  """step(x) = 1 if x > 0 else 0 (so step(0) = 0); gradient passes straight through."""
  return (x > 0).astype(x.dtype)


def _step_fwd(x):
  return ste_step(x), None


ste_step.defvjp(_step_fwd, _identity_bwd)


@jax.custom_jvp
def exact_exp2(e):
  """2**e for integer-valued e, exact in any float dtype; derivative 2**e * ln 2 as plain exp2."""
  # An integer shift, then a cast: powers of two are exact in every float dtype up to 2**14.
  return jnp.left_shift(1, e.astype(jnp.int32)).astype(e.dtype)


@exact_exp2.defjvp
def _exact_exp2_jvp(primals, tangents):
  (e,), (de,) = primals, tangents
  y = exact_exp2(e)
  return y, y * jnp.log(jnp.asarray(2.0, y.dtype)) * de
