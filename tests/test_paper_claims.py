"""benchmarks/paper_claims.py: the verdict rules on made-up numbers, and --quick end to end (twice)."""
import json
import os
import subprocess
import sys

import matplotlib.image
import pytest

from helpers import REPO, cli_env

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from claims_analysis import judge_claims  # noqa: E402


def _group(top1, flips=None, low=None):
  steps = [100, 200, 300, 400]
  return {"top1": top1, "flips": [(steps, flips or [0.1, 0.05, 0.02, 0.01])] * len(top1),
          "low": [(steps, low or [0.5, 0.48, 0.47, 0.46])] * len(top1)}


def test_verdicts_follow_the_stated_thresholds():
  judge = judge_claims
  groups = {"float": _group([98.0, 98.2, 98.1]), "s3_3b": _group([97.6, 97.8, 97.7]),
            "s3_3b_dense": _group([97.7, 97.6, 97.8]), "s3_2b": _group([97.0, 97.1, 96.9]),
            "deepshift_ps_3b": _group([95.0, 95.2, 95.1], flips=[0.01, 1e-4, 0.0, 0.0], low=[0.5, 0.6, 0.7, 0.8]),
            "deepshift_q_3b": _group([96.0, 96.1, 95.9]), "deepshift_ps_2b": _group([94.0, 94.2, 94.1])}
  verdicts = [c["verdict"] for c in judge(groups)]
  assert verdicts == ["holds", "holds", "holds", "holds"]
  groups["s3_3b"] = _group([95.0, 95.2, 95.1])  # 3 points below full precision, tight seeds
  groups["s3_3b_dense"] = _group([92.0, 96.0, 99.0])  # a wide spread: nothing can be said
  verdicts = [c["verdict"] for c in judge(groups)]
  assert verdicts[0] == "does not hold" and verdicts[1] == "unclear at this scale"
  assert verdicts[2] == "does not hold"  # S3 3b now ties DeepShift-PS 3b but clearly loses to DeepShift-Q
  groups["deepshift_q_3b"] = _group([95.0, 95.3, 95.1])
  assert [c["verdict"] for c in judge(groups)][2] == "unclear at this scale"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  output = tmp_path_factory.mktemp("claims")
  runs = []
  for _ in range(2):  # the second invocation must skip every finished run
    result = subprocess.run([sys.executable, "benchmarks/paper_claims.py", f"--output={output}", "--quick"],
                            cwd=REPO, env=cli_env(1), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs.append(result.stdout)
  return output, runs


@pytest.mark.slow
def test_quick_grid_writes_tables_and_figures_from_its_runs(quick):
  output, (first, second) = quick
  assert "[4/4] DeepShift-PS 3 bits seed 0: top-1" in first and "ETA" in first
  assert second.count("done before") == 4
  text = open(os.path.join(output, "RESULTS.md")).read()
  claims = json.load(open(os.path.join(output, "results", "claims.json")))
  for name, label in (("float", "full precision"), ("s3_3b", "S3 3 bits"), ("s3_3b_dense", "S3 3 bits, dense init"),
                      ("deepshift_ps_3b", "DeepShift-PS 3 bits")):
    top1 = claims["groups"][name][0]
    assert f"| {label} | " in text and f"| {top1:.2f} |" in text, name
  with open(os.path.join(output, "runs", "s3_3b_seed0", "metrics.jsonl")) as f:
    last_eval = [json.loads(l) for l in f if "eval/top1" in l][-1]
  assert claims["groups"]["s3_3b"] == [100 * last_eval["eval/top1"]]
  assert len(claims["claims"]) == 4 and "Verdict" in text
  for figure in ("curves.png", "dynamics.png", "levels.png"):
    assert f"(results/{figure})" in text
    image = matplotlib.image.imread(os.path.join(output, "results", figure))
    assert image.shape[0] > 300 and image.std() > 0.01


@pytest.mark.slow
def test_publish_replaces_only_its_own_section_and_copies_its_figures(quick, tmp_path):
  import types
  from claims_page import publish
  from claims_suites import SUITES
  output, _ = quick
  target = tmp_path / "RESULTS.md"
  target.write_text("<!-- begin speech -->\nspeech table\n<!-- end speech -->\n")
  args = types.SimpleNamespace(output=str(output), suite=SUITES["image"])
  publish(args, str(target))
  first = target.read_text()
  page = open(os.path.join(output, "RESULTS.md")).read().rstrip()
  assert first.startswith("<!-- begin speech -->\nspeech table\n<!-- end speech -->")
  assert f"<!-- begin image -->\n{page}\n<!-- end image -->" in first
  publish(args, str(target))  # a second publication replaces its section in place
  assert target.read_text() == first
  assert (tmp_path / "results" / "curves.png").exists()
