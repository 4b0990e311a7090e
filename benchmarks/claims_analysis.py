"""The paper-claims studies' analysis: seed means, the four claims' verdicts by rules fixed in advance
(each judged where its arms ran), and the accuracy table. `claims_suites.py` holds the grids;
`paper_claims.py` runs one and writes its page."""
import math
import os

from s3jax.report import load_runs


NAMES = {"deepshift_ps": "DeepShift-PS", "deepshift_q": "DeepShift-Q"}


def _mean_std(values):
  n = len(values)
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
  return mean, std, n


def group_of(run_workdir: str) -> str:
  return os.path.basename(os.path.normpath(run_workdir)).rsplit("_seed", 1)[0]


def collect(output: str) -> dict:
  """Per grid entry: final top-1 (%) of each seed, and the seed-mean dynamics series."""
  runs = load_runs(os.path.join(output, "runs", "*"))
  groups = {}
  for run in runs:
    _, top1 = run.series("eval/top1")
    if not top1:
      continue
    g = groups.setdefault(group_of(run.workdir), {"top1": [], "flips": [], "low": []})
    g["top1"].append(100 * top1[-1])
    g["flips"].append(run.series("dynamics/sign_flip_rate_per_1k_steps"))
    g["low"].append(run.series("dynamics/low_value_rate"))
  return groups


def _seed_mean_series(series_list):
  """Mean over seeds at the steps every seed has: (steps, values)."""
  common = set(series_list[0][0])
  for steps, _ in series_list[1:]:
    common &= set(steps)
  steps = sorted(common)
  values = [sum(dict(zip(*s))[t] for s in series_list) / len(series_list) for t in steps]
  return steps, values


def _difference(a, b):
  """a - b in points, and its standard error (nan with one seed)."""
  ma, sa, na = _mean_std(a)
  mb, sb, nb = _mean_std(b)
  return ma - mb, math.sqrt(sa ** 2 / na + sb ** 2 / nb)


def judge_claims(groups: dict) -> list[dict]:
  """Each claim: statement, evidence, verdict. The thresholds were fixed before the grid was run:
  a verdict is 'holds' or 'does not hold' only when the measured difference is clear of the claim's
  bound by two standard errors of that difference; otherwise 'unclear at this scale'."""
  claims = []

  def need(*names):
    return all(n in groups for n in names)

  if need("float", "s3_3b"):
    gap, se = _difference(groups["float"]["top1"], groups["s3_3b"]["top1"])
    verdict = "holds" if gap + 2 * se <= 1 else "does not hold" if gap - 2 * se > 1 else "unclear at this scale"
    claims.append({"claim": "S3 at 3 bits is within 1 point of full precision.",
                   "evidence": f"full precision - S3 3 bits = {gap:+.2f} points (standard error {se:.2f}).",
                   "verdict": verdict})
  if need("s3_3b", "s3_3b_dense"):
    diff, se = _difference(groups["s3_3b"]["top1"], groups["s3_3b_dense"]["top1"])
    verdict = ("holds" if abs(diff) + 2 * se <= 0.5 else
               "does not hold" if abs(diff) - 2 * se > 0.5 else "unclear at this scale")
    claims.append({"claim": "S3 is insensitive to initialisation: normal and dense init within 0.5 point.",
                   "evidence": f"normal - dense = {diff:+.2f} points (standard error {se:.2f}).",
                   "verdict": verdict})
  pairs = [(s, o) for s, o in (("s3_3b", "deepshift_ps_3b"), ("s3_3b", "deepshift_q_3b"),
                               ("s3_2b", "deepshift_ps_2b")) if need(s, o)]
  if pairs:
    parts, verdicts = [], []
    for s3, other in pairs:
      diff, se = _difference(groups[s3]["top1"], groups[other]["top1"])
      verdicts.append("holds" if diff - 2 * se > 0 else "does not hold" if diff + 2 * se < 0 else "unclear")
      parts.append(f"{s3} - {other} = {diff:+.2f} points (se {se:.2f}: {verdicts[-1]})")
    verdict = ("holds" if all(v == "holds" for v in verdicts) else
               "does not hold" if any(v == "does not hold" for v in verdicts) else "unclear at this scale")
    others = " and ".join(dict.fromkeys(NAMES[o.rsplit("_", 1)[0]] for _, o in pairs))
    claims.append({"claim": f"S3 beats {others} at equal bits.",
                   "evidence": "; ".join(parts) + ".", "verdict": verdict})
  if need("float", "s3_3b", "deepshift_ps_3b"):
    claims.append(_dynamics_claim(groups))
  return claims


def _dynamics_claim(groups: dict) -> dict:
  """Sign flips: S3 'follows' full precision when its seed-mean flip-rate curve correlates with full
  precision's (Pearson r >= 0.8 of the log rates over the evaluations); PS 'freezes' when its mean flip
  rate over the second half of training is under a tenth of S3's. Low values: S3's low-value rate 'stays
  low' when it ends no higher than it started (+5 points) and no higher than PS's."""
  flips = {k: _seed_mean_series(groups[k]["flips"]) for k in ("float", "s3_3b", "deepshift_ps_3b")}
  low = {k: _seed_mean_series(groups[k]["low"]) for k in ("s3_3b", "deepshift_ps_3b")}
  common = sorted(set(flips["float"][0]) & set(flips["s3_3b"][0]))
  fp = [math.log10(max(dict(zip(*flips["float"]))[t], 1e-6)) for t in common]
  s3 = [math.log10(max(dict(zip(*flips["s3_3b"]))[t], 1e-6)) for t in common]
  r = _pearson(fp, s3)

  def late_mean(series):
    steps, values = series
    late = [v for s, v in zip(steps, values) if s > steps[-1] / 2] or values[-1:]
    return sum(late) / len(late)

  s3_late, ps_late, fp_late = (late_mean(flips[k]) for k in ("s3_3b", "deepshift_ps_3b", "float"))
  s3_low, ps_low = low["s3_3b"][1], low["deepshift_ps_3b"][1]
  follows = r >= 0.8  # False when r is nan (fewer than 3 evaluations)
  freezes = ps_late < 0.1 * s3_late
  stays_low = s3_low[-1] <= s3_low[0] + 0.05 and s3_low[-1] <= ps_low[-1]
  evidence = (f"log flip-rate correlation S3 vs full precision r = {r:.2f} over {len(common)} evaluations; "
              f"second-half flip rate per 1k steps: full precision {100 * fp_late:.2f}%, S3 "
              f"{100 * s3_late:.2f}%, DeepShift-PS {100 * ps_late:.3f}%; low-value rate S3 "
              f"{100 * s3_low[0]:.1f}% -> {100 * s3_low[-1]:.1f}%, DeepShift-PS {100 * ps_low[0]:.1f}% -> "
              f"{100 * ps_low[-1]:.1f}%.")
  parts = {"S3 follows full precision": follows, "DeepShift-PS freezes": freezes,
           "S3's low-value rate stays low": stays_low}
  held = [k for k, v in parts.items() if v]
  verdict = ("holds" if len(held) == 3 else "does not hold" if not held else
             "partly: " + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in parts.items()))
  return {"claim": "S3's sign-flip rate follows full precision's while DeepShift-PS's freezes, and S3's "
                   "low-value rate stays low.", "evidence": evidence, "verdict": verdict}


def _pearson(x, y):
  if len(x) < 3:
    return float("nan")
  mx, my = sum(x) / len(x), sum(y) / len(y)
  sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
  sxx = sum((a - mx) ** 2 for a in x)
  syy = sum((b - my) ** 2 for b in y)
  return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def accuracy_table(groups: dict, suite) -> list[str]:
  """The suite's arms in grid order: bits, top-1 mean ± std over seeds, and its published figure."""
  paper = [suite.paper_column] if suite.paper else []
  head = ["configuration", "bits", "top-1 here (%, mean ± std over seeds)", "seeds", *paper]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, label, overrides in suite.grid:
    if name not in groups:
      continue
    mean, std, n = _mean_std(groups[name]["top1"])
    spread = f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"
    cells = [label, str(overrides.get("quant.bits", 32)), spread, str(n)]
    cells += [suite.paper.get(name, "-")] if suite.paper else []
    lines.append("| " + " | ".join(cells) + " |")
  return lines
