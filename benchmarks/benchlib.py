"""What the benchmarks share: a synthetic-data train step, HLO counters and the process's memory. Not part
of the library: the scripts here (and tests/test_benchmarks.py) import it as `benchlib`.

The step is the trainer's own (`s3jax.training.loop.jit_train_step`) on random images, so what is measured
is what trains.
"""
import functools
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from s3jax.config import base_config
from s3jax.models import create_model
from s3jax.training import sharding
from s3jax.training.loop import jit_train_step
from s3jax.records.resolved import resolve_run
from s3jax.records.variables import init_variables, run_init_program
from s3jax.training.state import create_train_state, jitted_initializer, state_for_training

_DTYPE_BYTES = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2, "s64": 8, "s32": 4, "u32": 4, "s8": 1, "u8": 1,
                "pred": 1, "s16": 2, "u16": 2, "u64": 8}
COLLECTIVES = ("all-reduce", "reduce-scatter", "all-gather", "collective-permute", "all-to-all")


FULL_PRECISION_BITS = 32


def process_memory_bytes() -> dict:
  """This process's VmHWM (peak) and VmRSS (now) in bytes, from /proc/self/status; {} where there is
  none. VmHWM, not ru_maxrss, which Linux carries over from the forking parent."""
  out = {}
  try:
    with open("/proc/self/status") as f:
      for line in f:
        key = line.split(":")[0]
        if key in ("VmHWM", "VmRSS"):
          out[key] = int(line.split()[1]) * 1024
  except OSError:
    pass
  return out


def define_step_flags():
  """The absl flags that pick the synthetic step (`synthetic_config`): model, batch, size, bits, classes."""
  flags.DEFINE_string("model", "resnet18", "Model name (s3jax.models).")
  flags.DEFINE_integer("batch", 16, "Global batch size.")
  flags.DEFINE_integer("image_size", 112, "Image height and width in pixels.")
  flags.DEFINE_integer("bits", 3, "Bit width of the quantized method (32: full precision).")
  flags.DEFINE_integer("num_classes", 1000, "Classifier outputs.")


def child_command(script: str, variant: str) -> list[str]:
  """This process's command line, rerun as `script` for one variant alone (`--only=variant`)."""
  return [sys.executable, os.path.abspath(script), *sys.argv[1:], f"--only={variant}"]


def synthetic_config(model_name: str, batch: int, bits: int, num_classes: int = 1000,
                     half_precision: bool = False, method: str = "s3"):
  """The trainer's config for a synthetic-data step: one model, method and bit width (bits 32: float),
  at a constant learning rate, so that the parameters move as in training."""
  config = base_config()
  config.model, config.num_classes, config.batch_size = model_name, num_classes, batch
  config.half_precision, config.num_epochs = half_precision, 1
  config.optim.schedule = "constant"  # one epoch of the per-epoch cosine would run at lr 0
  if bits == FULL_PRECISION_BITS:
    config.quant.method = "float"
  else:
    config.quant.method, config.quant.bits = method, bits
  return config


def initial_variables(model_name: str, image_size: int, bits: int, method: str = "s3", num_classes: int = 1000,
                      channels: int = 3, shape=None):
  """(model, params, batch_stats) as the trainer initialises them (`init_variables`; bits 32: float), for
  images of image_size x image_size x channels (or inputs of `shape`)."""
  config = synthetic_config(model_name, 1, bits, num_classes, method=method)
  model = create_model(model_name, num_classes)
  shape = tuple(shape or (image_size, image_size, channels))
  run = resolve_run(config)
  init = jax.jit(lambda key: init_variables(run, model, shape, key))
  params, batch_stats = run_init_program(init, jax.random.key(config.seed))
  return model, params, batch_stats


def synthetic_batch(batch: int, image_shape, num_classes: int, mesh):
  """Random images and labels, as a global batch sharded over `mesh`."""
  rng = np.random.default_rng(0)
  local = {"image": rng.standard_normal((batch, *image_shape), dtype=np.float32),
           "label": rng.integers(0, num_classes, batch).astype(np.int32)}
  return sharding.global_batch(local, mesh)


@functools.lru_cache(maxsize=None)
def _initial_state(model_name, batch, bits, num_classes, half_precision, method, image_shape, mesh):
  """`create_train_state` once per model, method and bit width: the variants a script compares (fused or
  not, banked or not, another XLA schedule) start from the same state, and its init program compiles once."""
  config = synthetic_config(model_name, batch, bits, num_classes, half_precision, method)
  model = create_model(model_name, num_classes, half_precision)
  return create_train_state(resolve_run(config, steps_per_epoch=100), model, image_shape, mesh)


def synthetic_step(model_name: str, batch: int, image_size: int, bits: int, mesh=None,
                   num_classes: int = 1000, half_precision: bool = False, channels: int = 3,
                   method: str = "s3", fused_pullback: bool = True, bank_latents: str = "auto",
                   shapes_only: bool = False):
  """(state, jitted train step, global batch) for `synthetic_config`'s model, method and bit width: the
  trainer's step. `bank_latents`: the config's choice of latent banks ('auto': the trainer's for this
  backend, `s3jax.config.latent_banking`); `fused_pullback=False`: the step before the fused one, to compare;
  `shapes_only`: the state as `jax.ShapeDtypeStruct`s, enough to compile the step (nothing initialised).
  """
  mesh = mesh or sharding.make_data_mesh()
  config = synthetic_config(model_name, batch, bits, num_classes, half_precision, method)
  config.bank_latents = bank_latents
  model = create_model(model_name, num_classes, half_precision)
  image_shape = (image_size, image_size, channels)
  if shapes_only:
    init, tx, schedule = jitted_initializer(resolve_run(config, steps_per_epoch=100), model, image_shape, mesh)
    state = jax.eval_shape(lambda key: state_for_training(config, init(key), mesh)[0], jax.random.key(config.seed))
    step = jit_train_step(model, tx, schedule, mesh, fused_pullback)
    return state, step, synthetic_batch(batch, image_shape, num_classes, mesh)
  state, tx, schedule = _initial_state(model_name, batch, bits, num_classes, half_precision, method, image_shape,
                                       mesh)
  # A copy: the train step donates its state, and variants built from one initial state must not share buffers.
  state, _ = state_for_training(config, jax.tree.map(jnp.copy, state), mesh)
  step = jit_train_step(model, tx, schedule, mesh, fused_pullback)
  return state, step, synthetic_batch(batch, image_shape, num_classes, mesh)


def _shape_bytes(shape_text: str) -> int:
  total = 0
  for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape_text):
    if dtype in _DTYPE_BYTES:
      total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
  return total


def collective_bytes(hlo_text: str) -> dict:
  """Bytes produced by each kind of collective in compiled HLO text (async starts counted once)."""
  totals = {kind: 0 for kind in COLLECTIVES}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+([\w\-]+)\(", line)
    if not match:
      continue
    shape, op = match.groups()
    kind = op[:-len("-start")] if op.endswith("-start") else op
    if kind in totals:
      if op.endswith("-start"):  # async start returns (operands, results): count the results half
        shape = shape.strip("()")
        parts = re.findall(r"\w+\[[\d,]*\]", shape)
        shape = " ".join(parts[len(parts) // 2:])
      totals[kind] += _shape_bytes(shape)
  return totals


def _top_level_instructions(hlo_text: str) -> list[str]:
  """Instructions of the computations that run as such (entry, cond branches), not those inside fusions."""
  keep, lines = False, []
  for line in hlo_text.splitlines():
    if line and not line.startswith(" "):
      keep = not re.search(r"fused|fusion|wrapped", line.split("(")[0])
    elif keep:
      lines.append(line)
  return lines


def fusion_and_copy_counts(hlo_text: str) -> dict:
  """From compiled HLO text: fusions run (and how many have several outputs), and the copies between
  buffers (count and bytes) outside fusions."""
  lines = _top_level_instructions(hlo_text)
  fusions = [m.group(1) for l in lines if (m := re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (.+?) fusion\(", l))]
  copies = [m.group(1) for l in lines if (m := re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (\S+) copy\(", l))]
  return {"fusions": len(fusions), "multi_output_fusions": sum(f.startswith("(") for f in fusions),
          "copies": len(copies), "copy_bytes": sum(_shape_bytes(c) for c in copies)}


def compiled_step(state, step, batch, compiler_options: dict | None = None):
  """The compiled executable of `step` for these arguments, and its compile time in seconds."""
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile(compiler_options=compiler_options)
  return compiled, time.perf_counter() - start


def activation_export(export, directory: str, model_name: str) -> str:
  """A copy of the random-latent `export` with 8-bit LSQ grids at the model's integer activation points (a
  ViT: its quantized layers' inputs), their steps and signedness calibrated on random normal inputs as a
  run sets them from its first batch: what `--litert=full_int8` converts."""
  import jax.numpy as jnp
  from flax import traverse_util
  from s3jax.deploy.export_format import latent_tree, write_export
  from s3jax.errors import ConfigError
  from s3jax.models import QuantizedInputs, activation_layers, default_quant_patterns, integer_activation_patterns
  from s3jax.models.quantized_inputs import STEP, calibrated_variables
  from s3jax.quant import ActivationQuantizer
  aq = ActivationQuantizer("lsq", bits=8)
  try:
    rules = tuple(integer_activation_patterns(model_name))
  except ConfigError:  # a ViT
    rules = tuple(default_quant_patterns(model_name))
  model = QuantizedInputs(export.create_model(), rules, aq)
  shape = export.input_shape
  fresh = jax.jit(lambda key: model.init(key, jnp.zeros((1, *shape)), train=False))(jax.random.key(0))
  latents = traverse_util.flatten_dict(latent_tree(export.params))
  latents |= {k: v for k, v in traverse_util.flatten_dict(fresh["params"]).items() if k[-1] == STEP}
  images = jax.random.normal(jax.random.key(1), (16, *shape))
  variables = jax.jit(lambda v: calibrated_variables(model, v, images, train=True))(
      {"params": traverse_util.unflatten_dict(latents), "batch_stats": fresh.get("batch_stats", {})})
  write_export(variables["params"], variables["batch_stats"], directory, model=export.manifest["model"],
               num_classes=export.manifest["num_classes"], step=0, input_spec=export.manifest["input"],
               activations={**aq.describe(), "layers": list(activation_layers(model, variables, images[:1], train=False))})
  return directory


def cpu_name() -> str:
  try:
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
  except OSError:
    return "unknown CPU"
  name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Model name")), "?")
  return f"{name}; AVX-512 {'yes' if 'avx512f' in info else 'no'}, VNNI {'yes' if 'vnni' in info else 'no'}"
