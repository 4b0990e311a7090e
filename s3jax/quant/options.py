"""A trainer config's `quant` section as a Quantizer: the one place that maps config keys to a method's own
options (`Quantizer.config_options`, e.g. s3's `quant.init` -> `init_scheme`)."""
import dataclasses

from s3jax.errors import ConfigError
from s3jax.quant.interface import FullPrecision, Quantizer, method_class, method_names, quantizer


def method_options(method: str) -> dict[str, object]:
  """The `quant.<key>` config entries of `method`'s own options, with their defaults (s3: {'init': 'normal'})."""
  cls = method_class(method)
  defaults = {f.name: f.default for f in dataclasses.fields(cls)}
  return {key: defaults[field] for key, field in cls.config_options.items()}


def quantizer_from_config(quant_config) -> Quantizer | FullPrecision:
  """The quantizer a trainer config's `quant` section names (FULL_PRECISION for 'float'). A method's own
  option (`config_options`) set away from its default under another method would do nothing: a ConfigError."""
  method = quant_config.method
  own = method_class(method).config_options
  for other in method_names():
    for key, default in method_options(other).items():
      if key not in own and key in quant_config and quant_config[key] != default:
        raise ConfigError(f"quant.{key}={quant_config[key]!r} applies to quant.method={other} only; "
                          f"{method} has its own {key}.")
  options = {field: quant_config[key] for key, field in own.items() if key in quant_config}
  return quantizer(method, quant_config.bits, scale=quant_config.scale,
                   scale_gradient=quant_config.scale_gradient, **options)
