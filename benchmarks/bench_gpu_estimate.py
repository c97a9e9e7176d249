"""What the IWAE paper's full schedule (`burda_mnist`, 3,280 passes) would cost on one GPU:
an estimate, not a measurement (no GPU is lent to this project's machines).

    python benchmarks/bench_gpu_estimate.py

For each objective of `burda_mnist` (VAE; IWAE k = 5 and 50), one training step at batch 20 is
run on the CPU with PyTorch's FlopCounterMode (forward and backward; Adam's elementwise update
is counted separately as 4 x parameters x a few flops, negligible) and under the profiler, to
count the ATen kernels an eager step launches. Two lower bounds of a GPU's time per step follow:

- compute-bound: flops / the GPU's sustained FP32 rate (`--tflops`, 30 by default: about
  half an H100's non-tensor-core FP32 peak, as small matmuls reach);
- launch-bound: kernels x the host's cost per kernel launch (`--launch-us`, 5 us: PyTorch's
  dispatch plus a CUDA launch). `step: compiled` fuses the elementwise kernels, so the
  compiled count is about the matmuls (forward and backward) plus one fused kernel per group
  of elementwise ops, approximated as the eager step's matmul kernels x 1.5, plus the batch's
  gather, its binarisation and the fused Adam kernel.

At batch 20 the launch bound dominates by orders of magnitude, so the estimate per seed is
steps x launch-bound time. Writes results/benchmarks/gpu_estimate.json.
"""
from __future__ import annotations

import argparse
from typing import Any

from common import print_table, write_report

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from vaebench import models

PASSES = 3280  # 3^0 + ... + 3^7
TRAIN = 60_000
BATCH = 20
NET = {"arch": "mlp", "likelihood": "bernoulli", "input_shape": (1, 28, 28), "hidden": (200, 200),
       "activation": "tanh", "latent_dim": 50}
OBJECTIVES = {"VAE": {"objective": "vae"}, "IWAE k=5": {"objective": "iwae", "k": 5},
              "IWAE k=50": {"objective": "iwae", "k": 50}}
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
NO_KERNEL = {f"aten::{op}" for op in ("t", "transpose", "as_strided", "view", "expand", "slice", "select", "unsqueeze",
                                      "squeeze", "reshape", "_unsafe_view", "permute", "empty", "empty_strided",
                                      "detach", "alias", "item", "_local_scalar_dense", "lift_fresh", "resolve_conj",
                                      "resolve_neg", "result_type", "is_nonzero")}


def one_step(model: models.VAEModel, x: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    model.zero_grad(set_to_none=True)
    model.loss(x, generator=gen).loss.backward()


def measure(name: str, spec: dict[str, Any], tflops: float, launch_us: float) -> dict[str, Any]:
    torch.manual_seed(0)
    model = models.build(**NET, **spec)
    x = torch.bernoulli(torch.full((BATCH, 1, 28, 28), 0.5), generator=torch.Generator().manual_seed(0))
    one_step(model, x)  # warm-up: lazy initialisations are not part of a step
    with FlopCounterMode(display=False) as counter:
        one_step(model, x)
    flops = counter.get_total_flops() + 10 * models.n_params(model)  # + Adam's elementwise update
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_step(model, x)
    kernels = [e.name for e in prof.events() if e.name.startswith("aten::") and e.name not in NO_KERNEL
               and not any(c.name.startswith("aten::") and c.name not in NO_KERNEL for c in e.cpu_children)]
    eager = len(kernels) + 1  # + the fused Adam kernel
    matmul = sum(name in MATMULS for name in kernels)
    compiled = int(1.5 * matmul) + 3  # + the batch's gather, its binarisation, fused Adam
    steps = PASSES * TRAIN // BATCH
    compute_us = flops / (tflops * 1e12) * 1e6
    step_us = max(compute_us, compiled * launch_us)
    return {"objective": name, "gflops_per_step": flops / 1e9, "kernels_eager": eager, "kernels_compiled_est": compiled,
            "compute_bound_us": compute_us, "launch_bound_us": compiled * launch_us, "steps_per_seed": steps,
            "hours_per_seed_est": steps * step_us / 1e6 / 3600}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflops", type=float, default=30.0, help="sustained FP32 TFLOP/s of the GPU")
    parser.add_argument("--launch-us", type=float, default=5.0, help="host microseconds per kernel launch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [measure(name, spec, args.tflops, args.launch_us) for name, spec in OBJECTIVES.items()]
    print_table(rows, [("objective", "objective", ""), ("gflops_per_step", "GFLOP/step", ".3f"),
                       ("kernels_eager", "kernels eager", "d"), ("kernels_compiled_est", "compiled (est.)", "d"),
                       ("compute_bound_us", "compute us", ".1f"), ("launch_bound_us", "launch us", ".0f"),
                       ("hours_per_seed_est", "h/seed (est.)", ".1f")])
    write_report("gpu_estimate", {"assumptions": {"tflops": args.tflops, "launch_us": args.launch_us,
                                                  "passes": PASSES, "train": TRAIN, "batch": BATCH},
                                  "estimate_not_measurement": True, "rows": rows})


if __name__ == "__main__":
    main()
