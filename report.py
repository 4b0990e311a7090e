r"""Puts training runs side by side: curves, weight dynamics, level shares and a summary table.

  python report.py --workdirs=/tmp/s3_mnist,/tmp/fp_mnist --output=/tmp/report
  python report.py --workdirs='runs/*' --output=runs/report

Writes curves.png, dynamics.png, levels.png, summary.md and summary.csv into --output. Works on runs still
in progress and on any mix of methods; each run is labelled from its config.json.
"""
from absl import flags

_WORKDIRS = flags.DEFINE_string("workdirs", None, "Comma-separated workdirs or globs, e.g. 'runs/*'.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the figures and the summary.")
flags.mark_flags_as_required(["workdirs", "output"])


def main(argv):
  del argv
  from s3jax.report import write_report
  paths = write_report(_WORKDIRS.value, _OUTPUT.value)
  for path in paths.values():
    print(path)


if __name__ == "__main__":
  from s3jax.cli import run
  run(main, "the report files in --output were left as they were")
