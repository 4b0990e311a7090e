"""Which kernels become latents, and of which method: one rule type.

A `Rule` is a regex on the '/'-joined param path ('stage1_block0/conv1/kernel') and what the kernels it
chooses become: a `Quantizer`, or `FULL_PRECISION` (kept as they are). The first rule whose pattern
`re.fullmatch`es a path wins (the qwix convention); paths no rule matches stay float. A rule that matches
no path is an error where rules are applied (`s3jax.quant.tree.map_kernels`). A model's default patterns
live with the model (`s3jax.models.default_quant_patterns`); `rules_for` pairs patterns with a quantizer.
"""
import dataclasses
import re
from typing import Sequence

from s3jax.errors import ConfigError
from s3jax.quant.interface import FullPrecision, Quantizer


@dataclasses.dataclass(frozen=True)
class Rule:
  """Kernels whose path `re.fullmatch`es `pattern` become latents of `quantizer` (none for FULL_PRECISION)."""
  pattern: str
  quantizer: Quantizer | FullPrecision

  def __post_init__(self):
    if not isinstance(self.pattern, str):
      raise ConfigError(f"Rule pattern {self.pattern!r} is not a string; give a regex on param paths.")
    if not isinstance(self.quantizer, (Quantizer, FullPrecision)):
      raise ConfigError(f"Rule {self.pattern!r} has {self.quantizer!r}; give a quantizer (s3jax.quant.quantizer"
                        "('s3', 3), say) or s3jax.quant.FULL_PRECISION.")
    try:
      re.compile(self.pattern)
    except re.error as err:
      raise ConfigError(f"Rule pattern {self.pattern!r} is not a valid regex: {err}.") from None

  @property
  def quantizes(self) -> bool:
    return isinstance(self.quantizer, Quantizer)


def rules_for(patterns: str | Sequence[str], quantizer: Quantizer | FullPrecision) -> tuple[Rule, ...]:
  """One rule per pattern, all with `quantizer`: a config's `quant.rules` under its method."""
  patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
  return tuple(Rule(pattern, quantizer) for pattern in patterns)


def checked_rules(rules) -> tuple[Rule, ...]:
  """`rules` as a tuple of `Rule`s; a ConfigError naming the first value that is not one."""
  rules = (rules,) if isinstance(rules, (str, Rule)) else tuple(rules)
  for rule in rules:
    if not isinstance(rule, Rule):
      raise ConfigError(f"{rule!r} is not a Rule; write Rule(pattern, quantizer) (s3jax.quant.Rule), or "
                        "rules_for(patterns, quantizer) for several patterns of one quantizer.")
  return rules


def first_match(rules: Sequence[Rule], name: str) -> int | None:
  """Index of the first rule whose pattern `re.fullmatch`es `name` (None if none does)."""
  return next((i for i, rule in enumerate(rules) if re.fullmatch(rule.pattern, name)), None)


class RuleMatches:
  """First-match lookups over `rules` (anything with a `.pattern`) that remember which rules matched, for the
  error a rule that chose nothing gets."""

  def __init__(self, rules):
    self.rules = tuple(rules)
    self._used = [False] * len(self.rules)

  def __call__(self, name: str):
    """The first rule whose pattern `re.fullmatch`es `name`, or None."""
    i = first_match(self.rules, name)
    if i is not None:
      self._used[i] = True
    return None if i is None else self.rules[i]

  def unused(self) -> list[str]:
    return [rule.pattern for rule, hit in zip(self.rules, self._used) if not hit]
