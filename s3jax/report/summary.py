"""The report's summary table (summary.md and summary.csv): one row per run, with its model's size stored
at its bit width."""
import csv

from s3jax.records import workdir_files
from s3jax.report.runs import method_option_values

SUMMARY_COLUMNS = ("run", "method", "bits", "init", "seed", "model", "data", "steps", "final_top1",
                   "best_top1", "params", "float32_MB", "stored_MB", "compression", "workdir")


def model_size(config: dict, workdir: str) -> dict:
  """Parameter count, and bytes as float32 and as stored at the method's bit width (BatchNorm statistics
  not included). Empty when neither the run's model_input.json nor its config fixes the classes."""
  import ml_collections

  from s3jax import data, quant
  from s3jax.records.resolved import resolve_run
  from s3jax.records.variables import abstract_variables

  cfg = ml_collections.ConfigDict(config)
  record = workdir_files.read_model_input(workdir)
  if record is None:  # a run trained before s3jax recorded its input
    if not cfg.num_classes:
      return {}
    record = {"num_classes": cfg.num_classes, "input": {"shape": data.input_shape(cfg)}}
  run = resolve_run(cfg)
  params, _ = abstract_variables(run, run.create_model(record["num_classes"]), record["input"]["shape"])
  bits = quant.storage_bits(params)
  count = bits["quantized_weights"] + bits["float_params"]
  stored = (bits["quantized_bits"] + bits["float_bits"]) / 8
  return {"params": count, "float32_MB": count * 4 / 1e6, "stored_MB": stored / 1e6,
          "compression": count * 4 / stored}


def summary_rows(runs) -> list[dict]:
  rows = []
  for run in runs:
    config = run.config
    _, top1 = run.series("eval/top1")
    steps = max((r["step"] for r in run.records), default=0)
    row = {"run": run.label, "method": run.method,
           "bits": "32" if run.method == "float" else config["quant"]["bits"],
           "init": " ".join(method_option_values(config)),
           "seed": config["seed"], "model": config["model"], "data": config["data"]["name"], "steps": steps,
           "final_top1": top1[-1] if top1 else "", "best_top1": max(top1) if top1 else "",
           "workdir": run.workdir}
    row.update(model_size(config, run.workdir))
    rows.append(row)
  return rows


def _fmt(key: str, value) -> str:
  if value == "" or value is None:
    return ""
  if key.endswith("top1"):
    return f"{100 * value:.2f}%"
  if key.endswith("_MB"):
    return f"{value:.3f}"
  if key == "compression":
    return f"{value:.1f}x"
  if key == "params":
    return f"{value:,}"
  return str(value)


def write_summary(rows, md_path: str, csv_path: str):
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  header = ("run", "method", "bits", "init", "seed", "model", "data", "steps", "final top-1",
            "best top-1", "params", "float32 MB", "stored MB", "compression")
  keys = SUMMARY_COLUMNS[:-1]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(k, row.get(k, "")) for k in keys) + " |")
  note = ("Stored size: each quantized weight at its method's bit width (plus float32 scales), every "
          "other parameter as float32; BatchNorm statistics not counted. Top-1 on the eval split.")
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n\n" + note + "\n")
