"""Reading the variables of an Orbax checkpoint, shapes checked first, every failure one ConfigError line:
what `checkpoints.CheckpointStore` and `init_from` (a bare Orbax checkpoint) restore through."""
import jax
import orbax.checkpoint as ocp
from etils import epath

from s3jax.errors import ConfigError
from s3jax.quant.tree import path_name


def _shapes(tree) -> dict:
  return {path_name(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def describe_error(err: Exception) -> str:
  return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"


def check_same_structure(saved_tree, abstract_tree, where: str, fix: str):
  """A ConfigError naming the first leaf whose shape (or presence) differs; `fix` ends the message."""
  saved, expected = _shapes(saved_tree), _shapes(abstract_tree)
  if saved == expected:
    return
  path = sorted(set(saved.items()) ^ set(expected.items()))[0][0]
  here, there = expected.get(path, "absent"), saved.get(path, "absent")
  model = path.startswith(("params", "batch_stats"))
  what = "was written for a different model" if model else "does not fit this config"
  raise ConfigError(f"{where} {what} ({path}: checkpoint {there}, config {here}){fix}")


def read_variables(item: epath.Path, abstract_variables: dict, where: str, fix: str,
                   mismatch_fix: str = "use the config it was trained with") -> dict:
  """The entries of `abstract_variables` (e.g. params and batch_stats) from the Orbax PyTree checkpoint
  directory `item`, in their shardings, after checking their shapes; nothing else is read. ConfigError
  ('<where> ...; <fix>.') when it cannot be read, ('...; <mismatch_fix>.') when it does not fit."""
  try:
    with ocp.PyTreeCheckpointer() as reader:
      metadata = reader.metadata(item).item_metadata.tree
      metadata = {key: metadata[key] for key in abstract_variables}
  except Exception as err:  # pylint: disable=broad-except
    raise ConfigError(f"{where} is unreadable ({describe_error(err)}); {fix}.") from None
  check_same_structure(metadata, abstract_variables, where, f"; {mismatch_fix}.")
  try:  # partial: an Orbax train state holds more (the optimizer state) than is asked for
    with ocp.PyTreeCheckpointer() as reader:
      return reader.restore(item, args=ocp.args.PyTreeRestore(
          item=abstract_variables, partial_restore=True,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_variables)))
  except Exception as err:  # pylint: disable=broad-except
    raise ConfigError(f"{where} could not be read ({describe_error(err)}); {fix}.") from None
