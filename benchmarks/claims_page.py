"""The page a `paper_claims.py` suite writes (tables, verdicts, figures), and its publication into
docs/RESULTS.md, where each suite owns one marked section and the rest of the file is kept."""
import datetime
import json
import os
import platform
import shutil

from claims_analysis import accuracy_table, collect, judge_claims
from s3jax.report import load_runs, write_report


def format_duration(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(round(seconds))))


def write_page(args, total_seconds: float) -> str:
  """Writes <output>/RESULTS.md and the figures under <output>/<suite.figures>; returns the page's path."""
  import jax
  suite = args.suite
  results = os.path.join(args.output, suite.figures)
  runs_glob = os.path.join(args.output, "runs", "*")
  write_report(runs_glob, results, average_seeds=True)
  groups = collect(args.output)
  claims = judge_claims(groups)
  with open(os.path.join(results, "claims.json"), "w") as f:
    json.dump({"groups": {k: v["top1"] for k, v in groups.items()}, "claims": claims}, f, indent=1)
  runs = load_runs(runs_glob)
  steps = max((r["step"] for run in runs for r in run.records), default=0)
  model, data = runs[0].config["model"], runs[0].config["data"]["name"]
  command = "python benchmarks/paper_claims.py" + ("" if suite.name == "image" else f" --suite={suite.name}")
  command += " --output=DIR" + (" --quick" if args.quick else "")
  machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python "
             f"{platform.python_version()}, jax {jax.__version__}")
  h = "#" if suite.name == "image" else "##"  # the image study heads docs/RESULTS.md; others are sections
  seeds = f"seeds 0..{args.seeds - 1}" if args.seeds > 1 else "one seed (seed 0)"
  lines = [
      f"{h} {suite.title}", "", suite.intro, "",
      f"- Command: `{command}` (then `--publish=docs/RESULTS.md`: this section and its figures)",
      f"- Date: {datetime.date.today().isoformat()}; machine: {machine}",
      f"- Wall time of the {len(runs)} runs: {format_duration(total_seconds)}",
      f"- Setup: `{args.config}` ({model} on {data}), {steps} steps each, {seeds}; overrides "
      f"{', '.join(f'`{k}={v}`' for k, v in args.extra.items()) or 'none'}.",
      "", f"{h}# Top-1 accuracy", "", *accuracy_table(groups, suite), "",
  ]
  lines += [suite.paper_note, ""] if suite.paper_note else []
  if claims:
    lines += [
        f"{h}# The claims", "",
        "A verdict is *holds* or *does not hold* only when the measured difference clears the claim's bound "
        "by two standard errors (over seeds); otherwise it is *unclear at this scale*. The thresholds were "
        "fixed before the grid ran (`judge_claims` in `benchmarks/claims_analysis.py`).", "",
    ]
    for i, claim in enumerate(claims, 1):
      lines += [f"{i}. **{claim['claim']}** Verdict: **{claim['verdict']}**.  ", f"   {claim['evidence']}", ""]
  mean = " (means over seeds)" if args.seeds > 1 else ""
  lines += [
      f"{h}# Figures{mean}", "",
      f"![eval top-1 and training loss]({suite.figures}/curves.png)", "",
      f"![sign-flip and low-value rates]({suite.figures}/dynamics.png)", "",
      f"![share of weights at each level]({suite.figures}/levels.png)", "",
      f"Every run, one row each: [{suite.figures}/summary.md]({suite.figures}/summary.md).", "",
  ]
  path = os.path.join(args.output, "RESULTS.md")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def publish(args, target: str) -> str:
  """Copies the suite's figures next to `target` and puts its page into the suite's marked section of
  `target` (replaced in place, or appended), written atomically; other sections are kept."""
  suite = args.suite
  begin, end = f"<!-- begin {suite.name} -->", f"<!-- end {suite.name} -->"
  with open(os.path.join(args.output, "RESULTS.md")) as f:
    block = f"{begin}\n{f.read().rstrip()}\n{end}"
  old = open(target).read() if os.path.exists(target) else ""
  if begin in old and end in old:
    new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
  else:
    new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
  shutil.copytree(os.path.join(args.output, suite.figures),
                  os.path.join(os.path.dirname(os.path.abspath(target)), suite.figures), dirs_exist_ok=True)
  partial = target + ".partial"
  with open(partial, "w") as f:
    f.write(new)
  os.replace(partial, target)
  return target
