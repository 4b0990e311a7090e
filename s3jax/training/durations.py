"""Every duration of a run in steps, resolved in one place from the config and the epoch length."""
import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Durations:
  """A run's lengths and intervals, in steps."""
  steps_per_epoch: int
  total: int             # config.total_steps when > 0, else config.num_epochs epochs
  warmup: int            # optim.warmup_epochs, rounded to steps
  log_every: int
  eval_every: int        # config.eval_every_steps when > 0, else once per epoch
  checkpoint_every: int

  @classmethod
  def from_config(cls, config, steps_per_epoch: int) -> "Durations":
    total = int(config.total_steps) if config.total_steps > 0 else int(config.num_epochs * steps_per_epoch)
    return cls(steps_per_epoch=steps_per_epoch, total=total,
               warmup=int(round(config.optim.warmup_epochs * steps_per_epoch)),
               log_every=int(config.log_every_steps),
               eval_every=int(config.eval_every_steps) if config.eval_every_steps > 0 else steps_per_epoch,
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
