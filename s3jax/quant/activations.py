"""Activation quantizers, each with its straight-through gradient (docs/METHODS.md, "Quantized activations").

- `round_to_fixed`: DeepShift's fixed point (its default 16 integer and 16 fraction bits): round down to a
  multiple of 2^-fraction_bits, clip to [-2^(integer_bits-1), 2^(integer_bits-1) - 1]; the gradient passes
  straight through everywhere, clipped values included, as in the released code.
- `lsq`: n-bit uniform quantization with a per-tensor step size learned by LSQ (Esser et al., ICLR 2020):
  `round(clip(v / s, -Q_N, Q_P)) * s`, the gradient to `v` passed inside the clip range and zero outside,
  the step's gradient `round(v/s) - v/s` inside, `-Q_N` below, `Q_P` above, times `grad_scale`.
- `calibrated`: the same grid with the step from a running statistic (`running_abs_max`), no step gradient.

Pure JAX: no Flax or trainer imports. `integer_bits`, `fraction_bits` and `bits` are static; `signed` is a
bool or a 0/1 array.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from s3jax.errors import ConfigError

ACTIVATION_KINDS = ("none", "lsq", "calibrated", "fixed_point")
SIGNEDNESS = ("auto", "signed", "unsigned")


@dataclasses.dataclass(frozen=True)
class ActivationQuantizer:
  """How a layer's input is quantized: `kind` (one of ACTIVATION_KINDS), `bits` for lsq and calibrated,
  DeepShift's `integer_bits` and `fraction_bits` for fixed_point. `signed='auto'` decides per layer where
  its step is initialized: unsigned if that batch has no negative value (a post-ReLU input)."""
  kind: str = "none"
  bits: int = 8
  integer_bits: int = 16
  fraction_bits: int = 16
  signed: str = "auto"
  momentum: float = 0.9        # calibrated: the running max's decay

  def __post_init__(self):
    if self.kind not in ACTIVATION_KINDS:
      raise ConfigError(f"quant.activations={self.kind!r} is unknown; use one of {ACTIVATION_KINDS}.")
    if self.signed not in SIGNEDNESS:
      raise ConfigError(f"quant.activation_signed={self.signed!r} is unknown; use one of {SIGNEDNESS}.")
    if self.kind == "fixed_point":
      check_fixed_point(self.integer_bits, self.fraction_bits)
    elif self.kind != "none":
      check_bits(self.bits)
    if not 0.0 <= self.momentum < 1.0:
      raise ConfigError(f"activation momentum {self.momentum} is outside [0, 1).")

  @property
  def enabled(self) -> bool:
    return self.kind != "none"

  @property
  def has_step(self) -> bool:
    """Whether each layer keeps a step size and a signedness flag (lsq, calibrated)."""
    return self.kind in ("lsq", "calibrated")

  def describe(self) -> dict:
    """What a manifest or a checkpoint's identity records."""
    if self.kind == "fixed_point":
      return {"kind": self.kind, "integer_bits": self.integer_bits, "fraction_bits": self.fraction_bits}
    if self.kind == "none":
      return {"kind": "none"}
    out = {"kind": self.kind, "bits": self.bits, "signed": self.signed}
    return out | ({"momentum": self.momentum} if self.kind == "calibrated" else {})


def activation_quantizer_from_config(quant_config) -> ActivationQuantizer:
  """A config's `quant.activations` and its options (s3jax.config)."""
  return ActivationQuantizer(kind=quant_config.activations, bits=quant_config.activation_bits,
                             integer_bits=quant_config.activation_integer_bits,
                             fraction_bits=quant_config.activation_fraction_bits,
                             signed=quant_config.activation_signed)


def initial_signed(v, signedness: str) -> jax.Array:
  """A layer's 0/1 flag: fixed by `signedness`, or (auto) 1 where the batch `v` has a negative value."""
  if signedness == "auto":
    return (jnp.min(v) < 0).astype(jnp.float32)
  return jnp.float32(signedness == "signed")


def check_fixed_point(integer_bits: int, fraction_bits: int) -> None:
  """A ConfigError unless DeepShift's fixed point can hold the format (its code's integer_bits=1 case is
  sign(x) - 1, not a fixed-point format, so it is refused here)."""
  if integer_bits < 2 or fraction_bits < 0 or integer_bits + fraction_bits > 32:
    raise ConfigError(f"fixed point with {integer_bits} integer and {fraction_bits} fraction bits is not "
                      "supported; use integer_bits >= 2, fraction_bits >= 0 and at most 32 bits in all "
                      "(DeepShift's default: 16 and 16).")


def _fixed_point_forward(x, integer_bits, fraction_bits):
  unit = 2.0 ** -fraction_bits
  bound = 2.0 ** (integer_bits - 1)
  return jnp.clip(jnp.floor(x / unit) * unit, -bound, bound - 1).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def round_to_fixed(x, integer_bits: int = 16, fraction_bits: int = 16):
  """DeepShift's `round_to_fixed`; identity gradient."""
  return _fixed_point_forward(x, integer_bits, fraction_bits)


round_to_fixed.defvjp(lambda x, i, f: (_fixed_point_forward(x, i, f), None), lambda i, f, _, g: (g,))


def check_bits(bits: int) -> None:
  if not 2 <= bits <= 16:
    raise ConfigError(f"activation_bits={bits} is not supported; use 2 to 16 (8 and 4 are the usual).")


def lsq_bounds(bits: int, signed):
  """(Q_N, Q_P): the grid is the integers in [-Q_N, Q_P]; unsigned inputs (after a ReLU) use all 2^bits for
  [0, 2^bits - 1]. `signed` is a bool, or a 0/1 array (a layer's flag, set where its step is initialized)."""
  check_bits(bits)
  if isinstance(signed, bool):
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
  signed = jnp.asarray(signed) > 0
  return (jnp.where(signed, 2 ** (bits - 1), 0).astype(jnp.float32),
          jnp.where(signed, 2 ** (bits - 1) - 1, 2 ** bits - 1).astype(jnp.float32))


def per_example_size(v) -> int:
  """N in LSQ's gradient scale: how many elements one step size serves in one example (axis 0 is the batch)."""
  return math.prod(v.shape[1:]) if v.ndim > 1 else 1


def lsq_grad_scale(v, bits: int, signed):
  """LSQ's `g = 1 / sqrt(N * Q_P)`."""
  return 1.0 / jnp.sqrt(per_example_size(v) * jnp.asarray(lsq_bounds(bits, signed)[1], jnp.float32))


def lsq_initial_step(v, bits: int, signed) -> jax.Array:
  """LSQ's init over a first batch: `2 * mean(|v|) / sqrt(Q_P)`; 1 for an all-zero batch (a model initialized
  on shapes alone, to be calibrated on data), where the formula's 0 would divide by zero."""
  mean = jnp.mean(jnp.abs(v)).astype(jnp.float32)
  return jnp.where(mean > 0, 2.0 * mean / jnp.sqrt(jnp.asarray(lsq_bounds(bits, signed)[1], jnp.float32)), 1.0)


def _flag(signed):
  return jnp.asarray(signed, jnp.float32)


def _ratio_and_codes(v, step, bits: int, signed):
  q_n, q_p = lsq_bounds(bits, signed)
  ratio = v / step
  return ratio, jnp.round(jnp.clip(ratio, -q_n, q_p))


def quantize_codes(v, step, bits: int, signed) -> jax.Array:
  """The integers `round(clip(v / s, -Q_N, Q_P))` (as v's float dtype): what an integer kernel reads."""
  return _ratio_and_codes(v, step, bits, signed)[1]


def lsq(v, step, bits: int, signed):
  """LSQ fake quantization of `v` with the scalar step `step`."""
  return _lsq(v, step, _flag(signed), bits)


def calibrated(v, step, bits: int, signed):
  """The LSQ grid with a step that is not learned (gradient to `v` inside the clip range, none to the step)."""
  return _calibrated(v, step, _flag(signed), bits)


def _grid_forward(v, step, signed, bits):
  ratio, codes = _ratio_and_codes(v, step, bits, signed)
  return codes * step, (ratio, codes, step, signed)


def _inside_and_zero_cotangents(bits, residuals, g):
  ratio, _, step, signed = residuals
  q_n, q_p = lsq_bounds(bits, signed)
  inside = (ratio >= -q_n) & (ratio <= q_p)
  return jnp.where(inside, g, 0).astype(g.dtype), jnp.zeros_like(step), jnp.zeros_like(signed)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lsq(v, step, signed, bits):
  return _grid_forward(v, step, signed, bits)[0]


def _lsq_backward(bits, residuals, g):
  ratio, codes, step, signed = residuals
  q_n, q_p = lsq_bounds(bits, signed)
  step_slope = jnp.where(ratio < -q_n, -q_n, jnp.where(ratio > q_p, q_p, codes - ratio))
  grad_step = (jnp.sum(g * step_slope) * lsq_grad_scale(ratio, bits, signed)).astype(step.dtype)
  grad_v, _, grad_signed = _inside_and_zero_cotangents(bits, residuals, g)
  return grad_v, jnp.reshape(grad_step, jnp.shape(step)), grad_signed


_lsq.defvjp(_grid_forward, _lsq_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _calibrated(v, step, signed, bits):
  return _grid_forward(v, step, signed, bits)[0]


_calibrated.defvjp(_grid_forward, _inside_and_zero_cotangents)


def running_abs_max(previous, v, momentum: float = 0.9) -> jax.Array:
  """The calibrated statistic: an exponential moving average of the batch's max |v|."""
  return momentum * previous + (1.0 - momentum) * jnp.max(jnp.abs(v))


def calibrated_step(abs_max, bits: int, signed) -> jax.Array:
  """The step that puts the running max |v| on the grid's largest positive code."""
  return abs_max / lsq_bounds(bits, signed)[1]
