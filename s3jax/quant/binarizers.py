"""Straight-through rounding ops shared by every method (docs/METHODS.md): exact forward, identity backward."""
import jax
import jax.numpy as jnp


def _identity_bwd(_, g):
  return (g,)


def _no_residuals(fn):
  return lambda x: (fn(x), None)


@jax.custom_vjp
def ste_sign(x):
  """sgn(x) = +1 if x >= 0 else -1 (so sgn(0) = +1); gradient passes straight through."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


@jax.custom_vjp
def ste_step(x):
  """step(x) = 1 if x > 0 else 0 (so step(0) = 0); gradient passes straight through."""
  return (x > 0).astype(x.dtype)


@jax.custom_vjp
def ste_round(x):
  """round(x), halves to even (as torch.round); gradient passes straight through."""
  return jnp.round(x)


for _op in (ste_sign, ste_step, ste_round):
  _op.defvjp(_no_residuals(_op), _identity_bwd)


def plus_minus_one(condition) -> jax.Array:
  """int8 +1 where `condition`, else -1: a latent's side of zero, all a straight-through sign or step reads."""
  return jnp.where(condition, 1, -1).astype(jnp.int8)


def straight_through(forward, backward):
  """`forward`'s value with `backward`'s gradient: sg(forward) + (backward - sg(backward)).

  Written so that the value is exactly `forward` (x - x is exactly 0), unlike backward + sg(forward - backward).
  """
  sg = jax.lax.stop_gradient
  return sg(forward) + (backward - sg(backward))


# float dtype -> (integer of its width, mantissa bits, exponent bias)
_IEEE_LAYOUT = {"float32": (jnp.int32, 23, 127), "float64": (jnp.int64, 52, 1023)}


@jax.custom_jvp
def exact_exp2(e):
  """2**e for integer-valued e (negative too), exact; derivative 2**e * ln 2.

  In float32 and float64 the power is built from its bits, the biased exponent shifted into place, for e
  in the dtype's normal range (|e| <= 126 in float32; every method's exponents lie within +-15). XLA:CPU
  computes `jnp.ldexp` with a scalar `pow` per element, several times slower than the whole materialize
  otherwise. Other dtypes use `jnp.ldexp`.
  """
  layout = _IEEE_LAYOUT.get(jnp.dtype(e.dtype).name)
  if layout is None:
    return jnp.ldexp(jnp.ones_like(e), e.astype(jnp.int32))
  integer, mantissa_bits, bias = layout
  return jax.lax.bitcast_convert_type(jnp.left_shift(e.astype(integer) + bias, mantissa_bits), e.dtype)


@exact_exp2.defjvp
def _exact_exp2_jvp(primals, tangents):
  (e,), (de,) = primals, tangents
  y = exact_exp2(e)
  return y, y * jnp.log(jnp.asarray(2.0, y.dtype)) * de
