"""Errors whose message is one line that says what to change. The bottom layer: imports nothing."""


class ConfigError(ValueError):
  """A config value that cannot work; the message is one line saying what to change."""


class LayoutError(ConfigError):
  """A kernel whose layout its shape does not settle; whoever knows the kernel's path names it."""


class DataError(ConfigError):
  """Data that is missing or unprepared; the message says what to do."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written; the message names the cause and the last good checkpoint."""
