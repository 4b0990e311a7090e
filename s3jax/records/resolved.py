"""A run's settings, resolved once from its config: the quantizer, the rules, the durations in steps and
the identity its checkpoints record. The trainer, init_from and every tool that reads a workdir take this
value instead of working a setting out again from the config."""
import dataclasses
import math

import ml_collections

from s3jax import quant
from s3jax.config import validate_config
from s3jax.errors import ConfigError
from s3jax.quant.activations import ActivationQuantizer, activation_quantizer_from_config


@dataclasses.dataclass(frozen=True)
class Durations:
  """A run's lengths and intervals, in steps."""
  steps_per_epoch: int
  total: int             # config.total_steps when set, else config.num_epochs epochs
  warmup: int            # optim.warmup_epochs, rounded to steps
  log_every: int
  eval_every: int        # config.eval_every_steps when set, else once per epoch
  checkpoint_every: int

  @classmethod
  def from_config(cls, config, steps_per_epoch: int) -> "Durations":
    total = config.total_steps if config.total_steps is not None else int(config.num_epochs * steps_per_epoch)
    every = config.eval_every_steps
    return cls(steps_per_epoch=steps_per_epoch, total=int(total),
               warmup=int(round(config.optim.warmup_epochs * steps_per_epoch)),
               log_every=int(config.log_every_steps), eval_every=int(every) if every is not None else steps_per_epoch,
               checkpoint_every=int(config.checkpoint_every_steps))

  @property
  def after_warmup(self) -> int:
    """Steps of the main schedule (at least one)."""
    return max(self.total - self.warmup, 1)

  @property
  def schedule_epochs(self) -> int:
    """Epochs the per-epoch cosine spans after warm-up (at least one)."""
    return max(math.ceil(self.after_warmup / self.steps_per_epoch), 1)

  def due(self, step: int, every: int) -> bool:
    """At every `every`-th step, and at the last one."""
    return step % every == 0 or step == self.total


@dataclasses.dataclass(frozen=True, eq=False)
class ResolvedRun:
  """What a config means, worked out once. `durations` is None until the data's epoch length is known
  (`with_durations`); the tools that read a checkpoint need none."""
  config: ml_collections.ConfigDict
  quantizer: quant.Quantizer | quant.FullPrecision
  rules: tuple[quant.Rule, ...]
  durations: Durations | None = None
  activations: ActivationQuantizer = ActivationQuantizer()
  activation_rules: tuple[quant.Rule | str, ...] = ()   # the layers whose inputs `activations` quantizes

  @property
  def identity(self) -> dict:
    """What each checkpoint records of the method (and of the activations' quantizer), so that another
    method, bit width or activation quantizer cannot resume it."""
    q = self.quantizer
    weights = {"method": q.method}
    if isinstance(q, quant.Quantizer):
      weights |= {"bits": int(q.bits), "scale": q.scale}
    activations = self.activations.describe()
    if self.activations.enabled and self.config.quant.activation_points != "layers":  # older checkpoints resume
      activations |= {"points": self.config.quant.activation_points}
    return {"quant": weights, "activations": activations}

  def create_model(self, num_classes: int):
    """The run's Flax model; where it quantizes activations, wrapped so that the chosen layers' inputs are
    (`s3jax.models.QuantizedInputs`), with the same variable paths."""
    from s3jax.models import QuantizedInputs, create_model  # Flax loads here, not on `import s3jax`
    model = create_model(self.config.model, num_classes, self.config.half_precision)
    return QuantizedInputs(model, self.activation_rules, self.activations) if self.activations.enabled else model

  def with_durations(self, steps_per_epoch: int) -> "ResolvedRun":
    return dataclasses.replace(self, durations=Durations.from_config(self.config, steps_per_epoch))

  def in_full_precision(self) -> "ResolvedRun":
    """The same run as a float model with float inputs: what `init_from` reads before converting it."""
    return dataclasses.replace(self, quantizer=quant.FULL_PRECISION, activations=ActivationQuantizer(),
                               rules=quant.rules_for([r.pattern for r in self.rules], quant.FULL_PRECISION))


def resolve_run(config, device_count: int | None = None, steps_per_epoch: int | None = None) -> ResolvedRun:
  """The run `config` describes, its plain values checked first (`validate_config`; the batch against
  `device_count` where given). `quant.rules` () takes the model's own patterns."""
  from s3jax.models import default_quant_patterns, integer_activation_patterns  # Flax loads here
  validate_config(config, device_count)
  quantizer = quant.quantizer_from_config(config.quant)
  patterns = config.quant.rules or default_quant_patterns(config.model)
  rules = quant.rules_for(patterns, quantizer)
  activations = activation_quantizer_from_config(config.quant)
  activation_rules = tuple(config.quant.activation_rules) or rules
  if activations.enabled and config.quant.activation_points == "integer":
    activation_rules = integer_activation_patterns(config.model)
  elif activations.enabled and not config.quant.activation_rules and not isinstance(quantizer, quant.Quantizer):
    raise ConfigError(f"quant.activations={activations.kind!r} with quant.method=float quantizes no layer's "
                      "input by default; name the layers with --config.quant.activation_rules (regexes on kernel "
                      "paths).")
  run = ResolvedRun(config, quantizer, rules, activations=activations, activation_rules=activation_rules)
  return run if steps_per_epoch is None else run.with_durations(steps_per_epoch)
