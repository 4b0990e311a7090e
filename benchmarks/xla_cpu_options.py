r"""Does one of XLA:CPU's own compiler options bring the train step closer to oneDNN-backed frameworks?

  python benchmarks/xla_cpu_options.py --model=resnet18 --batch=16 --image_size=112
  python benchmarks/xla_cpu_options.py --options=default,ynn_eltwise --bit_widths=3,32

Compiles the trainer's step (`benchlib.synthetic_step`) once per option set and bit width, each as a
per-executable `compiler_options` dict (never a process-wide XLA flag), times them interleaved in one
process (median after warm-up) and prints one JSON line: per option set, the step time, its ratio to the
default compile of the same bit width, compile time and fusion count. An option this jaxlib does not know
is reported as rejected, with XLA's message.
"""
import json
import statistics
import time

import jax
from absl import app, flags

from benchlib import compiled_step, define_step_flags, fusion_and_copy_counts, synthetic_step
from s3jax.cli import parse_flags
from s3jax.training import sharding

OPTION_SETS = {
    "default": {},
    "onednn": {"xla_cpu_use_onednn": True},
    "onednn_custom_call": {"xla_cpu_experimental_onednn_custom_call": True},
    "onednn_convolution": {"xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "xnnpack": {"xla_cpu_use_xnnpack": True},
    "xnn_convolution": {"xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "xnn_graph_greedy": {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    "ynn_convolution": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
    "ynn_eltwise": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_ELTWISE"},
    "multi_output_fusion": {"xla_cpu_use_multi_output_fusion": True},
}

define_step_flags()
flags.DEFINE_list("options", list(OPTION_SETS), f"Option sets to compare, from {sorted(OPTION_SETS)}.")
flags.DEFINE_list("bit_widths", ["32"], "Bit widths to compile (32: full precision; 3: the trainer's S3 step).")
flags.DEFINE_integer("steps", 6, "Timed steps per variant.")


def main(argv):
  del argv
  args = flags.FLAGS
  unknown = sorted(set(args.options) - set(OPTION_SETS))
  if unknown:
    raise app.UsageError(f"unknown option set(s) {unknown}; use some of {sorted(OPTION_SETS)}.")
  mesh = sharding.make_data_mesh()
  variants, rejected = {}, {}
  with jax.set_mesh(mesh):
    for bits in map(int, args.bit_widths):
      for name in args.options:
        state, step, batch = synthetic_step(args.model, args.batch, args.image_size, bits, mesh, args.num_classes)
        try:
          compiled, compile_s = compiled_step(state, step, batch, OPTION_SETS[name] or None)
        except Exception as err:  # an option this jaxlib does not know: XLA says which
          rejected[name] = str(err).splitlines()[0][:200]
          continue
        variants[(bits, name)] = {"state": state, "step": compiled, "batch": batch, "times": [],
                                  "compile_s": round(compile_s, 2),
                                  "fusions": fusion_and_copy_counts(compiled.as_text())["fusions"]}
    order = list(variants)
    for i in range(args.steps + 2):  # interleaved, order alternating; the first two are warm-up
      for key in (order if i % 2 == 0 else order[::-1]):
        v = variants[key]
        start = time.perf_counter()
        v["state"], metrics = v["step"](v["state"], v["batch"])
        jax.block_until_ready((v["state"], metrics))
        if i >= 2:
          v["times"].append(time.perf_counter() - start)
  result = {"model": args.model, "batch": args.batch, "image_size": args.image_size, "rejected": rejected}
  for (bits, name), v in variants.items():
    median = statistics.median(v["times"])
    default = variants.get((bits, "default"))
    result[f"{name}_{bits}"] = {
        "step_s": round(median, 4), "compile_s": v["compile_s"], "fusions": v["fusions"],
        "vs_default": round(median / statistics.median(default["times"]), 3) if default else None}
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
