"""Training runs as the report reads them: each workdir's config.json and metrics.jsonl, labelled from its
config (e.g. 's3 3b normal seed0'). Reads only what training writes, so runs in progress work too."""
import dataclasses
import glob
import os

from absl import logging

from s3jax.records.workdir_files import CONFIG_FILE, read_config, read_metrics, training_status
from s3jax.errors import ConfigError
from s3jax.quant.interface import method_names
from s3jax.quant.options import method_options


@dataclasses.dataclass
class Run:
  workdir: str
  config: dict
  records: list
  label: str = ""
  color: str = ""
  linestyle: str = "-"

  @property
  def method(self) -> str:
    return self.config["quant"]["method"]

  def series(self, key: str) -> tuple[list, list]:
    """(steps, values) of every record holding `key`."""
    rows = [(r["step"], r[key]) for r in self.records if key in r]
    return [s for s, _ in rows], [v for _, v in rows]

  def level_keys(self) -> list[str]:
    keys = {k for r in self.records for k in r if k.startswith("quant/share_")}
    return sorted(keys, key=lambda k: _level_value(k))


def _level_value(key: str) -> float:
  name = key.rsplit("_", 1)[1]
  return 2.0 ** int(name[2:]) if name.startswith("2^") else float(name)


def find_workdirs(specs) -> list[str]:
  """Workdirs from comma-separated names or globs (e.g. 'runs/*'). A name must be a workdir (holding the
  config.json train.py writes) and a glob must match at least one; folders a glob matches that are not
  workdirs are left out with a warning. Anything else is a ConfigError: no input is dropped in silence."""
  if isinstance(specs, str):
    specs = [s.strip() for s in specs.split(",") if s.strip()]
  found = []
  for spec in specs:
    is_glob = glob.has_magic(spec)
    matches = sorted(glob.glob(os.path.expanduser(spec))) if is_glob else [os.path.expanduser(spec)]
    runs = [p for p in matches if os.path.isfile(os.path.join(p, CONFIG_FILE))]
    if not is_glob and not runs:
      what = "does not exist" if not os.path.exists(matches[0]) else f"holds no {CONFIG_FILE}"
      raise ConfigError(f"--workdirs: {spec} {what}; each workdir is a directory train.py wrote.")
    if is_glob and not runs:
      raise ConfigError(f"--workdirs: {spec} matches no workdir (none holds the {CONFIG_FILE} train.py "
                        "writes).")
    for path in sorted(set(matches) - set(runs)):
      logging.warning("--workdirs: %s (matched by %s) is not a workdir (no %s); left out.", path, spec,
                      CONFIG_FILE)
    found += [p for p in runs if p not in found]
  if not found:
    raise ConfigError("--workdirs names no run; pass workdirs written by train.py.")
  return found


def method_option_values(config: dict) -> list[str]:
  """The values of the run's method's own options (s3: its init), in their declared order."""
  quant = config["quant"]
  if quant["method"] not in method_names():
    return []
  return [str(quant[key]) for key in method_options(quant["method"])]


def run_label(config: dict) -> str:
  """'s3 3b normal seed0', 'denseshift 3b seed1', 'float seed0' (+ ' fixed-scale' etc. when not none,
  ' gradient-through' for a scale whose gradient goes through the straight-through estimator, and
  ' from-float' for a run started from a converted float model, `init_from`).
  `config`: a workdir's config with every key (`s3jax.records.workdir_files.read_config`), as a dict."""
  quant = config["quant"]
  seed = f"seed{config['seed']}"
  if quant["method"] == "float":
    return f"float {seed}"
  parts = [quant["method"], f"{quant['bits']}b", *method_option_values(config)]
  if quant["scale"] != "none":
    parts.append(f"{quant['scale']}-scale")
    if quant["scale_gradient"] != "outside":
      parts.append(f"gradient-{quant['scale_gradient']}")
  if config["init_from"]:
    parts.append("from-float")
  return " ".join(parts + [seed])


def load_runs(workdirs) -> list[Run]:
  runs = []
  for workdir in find_workdirs(workdirs):
    config = read_config(workdir).to_dict()  # keys added since the run take their defaults
    # A last line cut short passes only while a trainer is (or was, until killed) recorded as running.
    metrics = read_metrics(workdir, in_progress=bool(training_status(workdir)))
    runs.append(Run(workdir, config, metrics, run_label(config)))
  return runs


def average_over_seeds(runs) -> list[Run]:
  """One run per label without its seed: each metric averaged, at each step, over the seeds that logged
  it (labelled e.g. 's3 3b normal, mean of 3 seeds')."""
  groups = {}
  for run in runs:
    groups.setdefault(run.label.split(" seed")[0], []).append(run)
  averaged = []
  for label, members in groups.items():
    per_step = {}
    for run in members:
      for record in run.records:
        for key, value in record.items():
          if key != "step" and isinstance(value, (int, float)):
            per_step.setdefault(record["step"], {}).setdefault(key, []).append(value)
    records = [{"step": step, **{k: sum(v) / len(v) for k, v in values.items() if len(v) == len(members)}}
               for step, values in sorted(per_step.items())]
    seeds = f"mean of {len(members)} seeds" if len(members) > 1 else f"seed {members[0].config['seed']}"
    averaged.append(Run(members[0].workdir, members[0].config, records, f"{label}, {seeds}"))
  return averaged
