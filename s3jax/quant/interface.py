"""One interface for every shift-network method (S3, DenseShift, DeepShift-Q, DeepShift-PS).

A method is a frozen, hashable `Quantizer` (static under `jit`) made by `quantizer(method, bits, **options)`.
It turns a kernel shape into a latent pytree (`init`), a latent into the discrete weight with the method's
straight-through gradients (`materialize`), and a latent into one int8 code per weight (`codes`, inverted
exactly by `decode`). Each method's latent type says which method it is, so a params tree that holds
latents describes itself: `quantizer_of(latent)` recovers the quantizer (bit width and scale mode included).

Codes: 0 is the weight 0; +-j is +-magnitudes()[j - 1] (ascending); formulas in docs/METHODS.md. Every
method can carry a float scale (`scale="fixed"` or `"learned"`) outside the codes: see `Scaled`.
"""
import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from s3jax.errors import ConfigError
from s3jax.quant.layout import LAYOUTS, KernelFans, kernel_fans
from s3jax.quant.scaled import SCALE_GRADIENTS, SCALES, Scaled


_METHODS: dict[str, type] = {}
_BY_LATENT_TYPE: dict[type, type] = {}


def register_method(cls):
  """Class decorator: makes a Quantizer subclass reachable by `quantizer(cls.method, ...)`."""
  _METHODS[cls.method] = cls
  _BY_LATENT_TYPE[cls.latent_type] = cls
  return cls


def method_names() -> tuple[str, ...]:
  return tuple(_METHODS)


def method_class(method: str) -> type:
  """The Quantizer subclass of `method` (`FullPrecision` for 'float'); a ConfigError naming the methods if
  there is none."""
  if method == FullPrecision.method:
    return FullPrecision
  if method not in _METHODS:
    raise ConfigError(f"quant.method={method!r} is unknown; use one of {method_names()} (or 'float').")
  return _METHODS[method]


LATENT_ROLES = ("sign", "sparse", "shift", "weight", "scale", "log_scale")


@dataclasses.dataclass(frozen=True)
class Quantizer(abc.ABC):
  """A shift-network method at one bit width. Subclasses set `method`, `latent_type`, `supported_bits`."""
  bits: int = 3
  scale: str = "none"          # none | fixed | learned
  layout: str = "auto"         # how to read fans and output channels from a kernel shape
  dense_in_axes: int = 1       # for layout='dense': how many leading axes are inputs
  scale_gradient: str = "outside"  # with a scale: outside | through the straight-through estimator (Scaled)

  method: ClassVar[str]
  latent_type: ClassVar[type]
  supported_bits: ClassVar[tuple[int, ...]]
  has_zero: ClassVar[bool] = True
  lowest_code: ClassVar[int] = 0  # |code| <= this is the lowest magnitude level (the low-value rate)
  # dL/d(latent) is dL/dW times powers of two, and at most one other constant (ln 2): the same bits in
  # whatever order XLA evaluates it, so with SGD the fused train step equals the plain optax chain bit for bit.
  exact_pullback: ClassVar[bool] = False
  # The trainer config's `quant.<key>` entries that set this method's own options: {key: field}.
  config_options: ClassVar[dict[str, str]] = {}

  def __post_init__(self):
    if self.bits not in self.supported_bits:
      raise ConfigError(f"bits={self.bits!r} is not supported by {self.method}; use one of "
                        f"{self.supported_bits}.")
    if self.scale not in SCALES:
      raise ConfigError(f"scale={self.scale!r} is unknown; use one of {SCALES}.")
    if self.layout not in LAYOUTS:
      raise ConfigError(f"layout={self.layout!r} is unknown; use one of {LAYOUTS}.")
    if self.scale_gradient not in SCALE_GRADIENTS:
      raise ConfigError(f"scale_gradient={self.scale_gradient!r} is unknown; use one of {SCALE_GRADIENTS}.")

  # --- what each method defines -------------------------------------------------------------------
  @abc.abstractmethod
  def init_latent(self, key, shape, dtype, fans: KernelFans):
    """Fresh latents for a kernel of `shape` (no scale)."""

  @abc.abstractmethod
  def materialize_latent(self, latent) -> jax.Array:
    """The discrete weight with the method's straight-through gradients (no scale)."""

  @abc.abstractmethod
  def latent_codes(self, latent) -> jax.Array:
    """int8 codes of the discrete weight (no scale)."""

  @abc.abstractmethod
  def latent_from_codes(self, codes, dtype) -> Any:
    """Latents (no scale) whose materialized weight is `decode(codes)`, exactly, with the structure,
    shapes and dtype of the latents `init` makes: the trainer's programs run on them unchanged."""

  @abc.abstractmethod
  def magnitudes(self) -> np.ndarray:
    """The non-zero weight magnitudes, ascending (float64)."""

  @abc.abstractmethod
  def latent_roles(self, latent):
    """The latent's structure with each leaf replaced by its role name (one of LATENT_ROLES)."""

  @classmethod
  @abc.abstractmethod
  def bits_of(cls, latent) -> int:
    """The bit width a latent of this method was made for."""

  def project_latent(self, latent):
    """The method's constraint on the latents after each update (identity unless the method clamps)."""
    return latent

  # --- the interface, the same for every method ------------------------------------------------------
  def init(self, key, shape, dtype=jnp.float32):
    """Latents (a pytree) for a kernel of `shape`, wrapped in `Scaled` unless scale='none'."""
    fans = kernel_fans(shape, self.layout, self.dense_in_axes)
    latent = self.project_latent(self.init_latent(key, tuple(shape), dtype, fans))
    if self.scale == "none":
      return latent
    weights = self.materialize_latent(latent)
    rms = jnp.sqrt(jnp.mean(jnp.square(weights.astype(jnp.float32))))
    fixed = (1.0 / math.sqrt(fans.fan_in)) / jnp.maximum(rms, 1e-12)
    if self.scale == "fixed":
      return Scaled(latent, fixed.astype(dtype), False, self.scale_gradient)
    return Scaled(latent, jnp.full(fans.channels, jnp.log(fixed), dtype), True, self.scale_gradient)

  def materialize(self, latent) -> jax.Array:
    if isinstance(latent, Scaled):
      return latent.weights(self.materialize_latent(latent.latent))
    return self.materialize_latent(latent)

  def codes(self, latent) -> jax.Array:
    """One int8 code per weight: 0 is 0, +-j is +-magnitudes()[j-1]. A scale is not part of the codes."""
    return self.latent_codes(latent.latent if isinstance(latent, Scaled) else latent)

  def from_codes(self, codes, scale=None, dtype=jnp.float32):
    """`latent_from_codes`, wrapped in `Scaled` with `scale` (the stored value: a log-scale when learned)."""
    latent = self.latent_from_codes(jnp.asarray(codes), dtype)
    if scale is None:
      return latent
    return Scaled(latent, jnp.asarray(scale, dtype), self.scale == "learned", self.scale_gradient)

  def decode(self, codes, dtype=jnp.float32) -> jax.Array:
    """The (unscaled) weights of `codes`, exactly."""
    codes = jnp.asarray(codes)
    table = jnp.asarray(np.concatenate([[0.0], self.magnitudes()]), dtype)
    return jnp.sign(codes).astype(dtype) * table[jnp.abs(codes.astype(jnp.int32))]

  def levels(self) -> np.ndarray:
    """The sorted set of (unscaled) weight values."""
    mags = self.magnitudes()
    zero = [0.0] if self.has_zero else []
    return np.concatenate([-mags[::-1], zero, mags])

  def project(self, latent):
    if isinstance(latent, Scaled):
      return dataclasses.replace(latent, latent=self.project_latent(latent.latent))
    return self.project_latent(latent)

  def roles(self, latent):
    if isinstance(latent, Scaled):
      return Scaled(self.latent_roles(latent.latent), "log_scale" if latent.learned else "scale", latent.learned,
                    latent.scale_gradient)
    return self.latent_roles(latent)

  def describe(self) -> str:
    """A short label such as 's3 3b' or 'denseshift 3b learned-scale'."""
    through = " (gradient through)" if self.scale != "none" and self.scale_gradient == "through" else ""
    return f"{self.method} {self.bits}b" + ("" if self.scale == "none" else f" {self.scale}-scale") + through


@dataclasses.dataclass(frozen=True)
class FullPrecision:
  """Full precision, where a rule or a run could name a method: the kernel stays as it is. It answers
  what a report, a manifest or a checkpoint's identity asks of a `Quantizer` (method, bits, scale, levels,
  describe) and nothing that would make latents; `quantizer('float')` is the one instance,
  `FULL_PRECISION`."""
  method: ClassVar[str] = "float"
  bits: ClassVar[int] = 32
  scale: ClassVar[str] = "none"
  config_options: ClassVar[dict[str, str]] = {}

  def levels(self) -> np.ndarray:
    return np.zeros((0,))

  def describe(self) -> str:
    return "full precision"


FULL_PRECISION = FullPrecision()


def quantizer(method: str, bits: int = 3, **options) -> "Quantizer | FullPrecision":
  """The quantizer of `method` ('s3', 'denseshift', 'deepshift_q', 'deepshift_ps') at `bits`;
  `FULL_PRECISION` for 'float' (which takes no bits or options).

  Options: scale ('none' | 'fixed' | 'learned'), scale_gradient ('outside' | 'through', see `Scaled`),
  layout ('auto' | 'conv' | 'dense'), dense_in_axes, and the method's own (s3: init='normal' | 'dense').
  """
  cls = method_class(method)
  if cls is FullPrecision:
    return FULL_PRECISION
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ConfigError(f"{method} has no option {unknown[0]!r}; its options are "
                      f"{sorted(fields - {'bits'})}.")
  return cls(bits=bits, **options)


def is_latent(x) -> bool:
  return isinstance(x, Scaled) or type(x) in _BY_LATENT_TYPE


def quantizer_of(latent) -> Quantizer:
  """The quantizer a latent was made by (bits and scale mode; init options are not recorded)."""
  if isinstance(latent, Scaled):
    return dataclasses.replace(quantizer_of(latent.latent), scale="learned" if latent.learned else "fixed",
                               scale_gradient=latent.scale_gradient)
  cls = _BY_LATENT_TYPE.get(type(latent))
  if cls is None:
    raise TypeError(f"{type(latent).__name__} is not a latent of any method in {method_names()}.")
  return cls(bits=cls.bits_of(latent))


def materialize(latent) -> jax.Array:
  """The discrete weight of any method's latent, with that method's straight-through gradients."""
  return quantizer_of(latent).materialize(latent)


def to_codes(latent) -> jax.Array:
  """int8 level codes of any method's latent (S3: 0 for 0, +-(k+1) for +-2**k)."""
  return quantizer_of(latent).codes(latent)


def project(latent):
  return quantizer_of(latent).project(latent)
