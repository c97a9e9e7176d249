"""Generation scores: their cost beside a flagship trial, where it goes, the mixture's EM
tolerance, and the scores' spread over sample seeds.

    python benchmarks/bench_generation.py --threads 1     # 5 rounds, sample seeds 0 1 2

The trial is the flagship's (beta_sweep at β = 1, seed 0: MLP 784-512-256, 10-d latent,
Bernoulli, 15 epochs on mnist5k), trained as the study trains it (`trial.fit_settings`) and
evaluated as it evaluates (`trial.evaluate_settings`); its cost here is fit + evaluate, with
no tracking, so the share is an upper bound of the share of a tracked trial.

- cost: each round trains a fresh flagship model (the same seed: the same model), evaluates
  it, then scores its samples (`metrics.sampling.generation_scores`, 1,000 images per sampler:
  the test split's size), so every share is of the trial measured right before it, under the
  same load; the first round's scoring is cold (feature network loaded, the test split's
  features and the reference rows computed: once per process), the others warm (what every
  later trial of a worker pays). Each part is timed on the wall clock and on the process's
  CPU clock (all threads): with one torch thread and one BLAS/OpenMP thread that is the work
  done, which the neighbours' load inflates far less than the wall clock. The shares quoted
  are the medians of the warm rounds' shares; the load average is recorded each round;
- stages: cumulative seconds of the parts of one warm call, under cProfile;
- the mixture's EM tolerance: the GMM sampler's scores and fit time at `generation.GMM_TOL`
  against scikit-learn's default (1e-3), per sample seed;
- the features of 10,000 images plus a Fréchet distance (the full MNIST test split's size);
- the scores of the same trained model at 3 sample seeds: mean, SD, min and max per metric,
  and the reference rows at each seed.

Prints the tables, writes results/benchmarks/generation.json.
"""
from __future__ import annotations

import argparse
import cProfile
import functools
import math
import os
import pstats
import time
from collections.abc import Callable
from unittest import mock

from common import ROOT, median, print_table, timed, write_report

import numpy as np
import torch

from vaebench import config, metrics, trial
from vaebench.metrics import feature_net, generation, sampling

SPREAD_METRICS = ["test_fd_prior", "test_fd_gmm", "test_fd_recon", "test_precision_prior", "test_recall_prior",
                  "test_precision_gmm", "test_recall_gmm", "test_coverage_prior", "test_coverage_gmm",
                  "test_classes_covered_prior", "test_class_kl_prior"]
GMM_METRICS = [f"test_{m}_gmm" for m in sampling.PER_SAMPLER]
SKLEARN_TOL = 1e-3  # GaussianMixture's default tolerance
# (stage, the function whose cumulative time it is): the parts of one warm call
STAGES = [
    ("prior samples (decode 1,000 draws)", "sampling.py", "_prior_images"),
    ("training codes (posterior means)", "likelihood.py", "posterior_means"),
    ("mixture fit (EM)", "generation.py", "fit_latent_gmm"),
    ("decode mixture draws, reconstruct test split", "sampling.py", "_batched"),
    ("pixel domain (Bernoulli draws)", "sampling.py", "to_domain"),
    ("feature network (3 x 1,000 images)", "feature_net.py", "_run"),
    ("Frechet distances (3)", "generation.py", "frechet_distance_from_stats"),
    ("precision/recall/density/coverage (2)", "generation.py", "precision_recall"),
    ("class scores (2)", "generation.py", "class_scores"),
]


def flagship() -> tuple:
    spec, _ = config.load_study(str(ROOT / "studies" / "beta_sweep.yaml"))
    cfg = spec.with_params({"model.beta": 1.0, "seed": 0})
    return cfg, trial.load_data(cfg)


def load() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def clocked(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def cost_rounds(cfg, ds, rounds: int) -> tuple[list[dict], torch.nn.Module]:
    """Train + evaluate, then score, `rounds` times; the first scoring is the process's first."""
    settings, out = trial.generation_settings(cfg), []
    for r in range(rounds):
        model = trial.build_model(cfg, ds)
        fit = clocked(functools.partial(trial.train.fit, model, ds, **trial.fit_settings(cfg)))
        ev = clocked(functools.partial(metrics.evaluate, model, ds, **trial.evaluate_settings(cfg)))
        gen = clocked(functools.partial(sampling.generation_scores, model, ds, **settings))
        row = {"round": r, "kind": "cold" if r == 0 else "warm", "load_1m": load()}
        for i, clock in enumerate(("wall", "cpu")):
            row |= {f"fit_{clock}_s": fit[i], f"evaluate_{clock}_s": ev[i], f"trial_{clock}_s": fit[i] + ev[i],
                    f"generation_{clock}_s": gen[i], f"share_{clock}": gen[i] / (fit[i] + ev[i])}
        out.append(row)
        print(f"round {r}: fit {fit[0]:.2f} s ({fit[1]:.2f} CPU s), evaluate {ev[0]:.2f} s ({ev[1]:.2f}), "
              f"generation {gen[0]:.2f} s ({gen[1]:.2f}); share {row['share_wall']:.1%} wall, "
              f"{row['share_cpu']:.1%} CPU; load {row['load_1m']:.2f}", flush=True)
    return out, model


def stages(model, ds, settings: dict) -> list[dict]:
    """Cumulative seconds per stage of one warm call, and the whole call, under cProfile."""
    profile = cProfile.Profile()
    total = timed(lambda: profile.runcall(sampling.generation_scores, model, ds, **settings))
    stats = pstats.Stats(profile).stats  # {(file, line, name): (calls, ncalls, tottime, cumtime, callers)}
    rows = []
    for label, file, name in STAGES:
        cum = sum(v[3] for (f, _, n), v in stats.items() if f.endswith(file) and n == name)
        rows.append({"stage": label, "seconds": cum, "share_of_call": cum / total})
    rows.append({"stage": "whole call (under cProfile)", "seconds": total, "share_of_call": 1.0})
    return rows


def tolerance(model, ds, settings: dict, seeds: list[int]) -> list[dict]:
    """The GMM sampler's scores and fit seconds at GMM_TOL and at scikit-learn's default."""
    rows = []
    for seed in seeds:
        for tol in (generation.GMM_TOL, SKLEARN_TOL):
            fits = []

            def fit(*args, tol=tol, fits=fits, **kwargs):  # records the fit it stands in for
                start = time.perf_counter()
                gmm = generation.fit_latent_gmm(*args, **kwargs, tol=tol)
                fits.append((time.perf_counter() - start, gmm.n_iter_, bool(gmm.converged_)))
                return gmm

            with mock.patch.object(sampling, "fit_latent_gmm", fit):
                scores = sampling.generation_scores(model, ds, **settings | {"seed": seed}).scores
            rows.append({"seed": seed, "tol": tol, "fit_s": fits[0][0], "em_iterations": fits[0][1],
                         "converged": fits[0][2], **{m: scores[m] for m in GMM_METRICS}})
    return rows


def spread_rows(name: str, values: list[float]) -> dict:
    v = np.array(values)
    return {"metric": name, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
            "min": float(v.min()), "max": float(v.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of trial + scoring (the first is cold)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load_start = load()
    cfg, ds = flagship()
    settings = trial.generation_settings(cfg)
    rounds, model = cost_rounds(cfg, ds, max(args.repeats, 2))
    warm = [r for r in rounds if r["kind"] == "warm"]
    cold = rounds[0]
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x, ds.train.x, ds.val.x, ds.test.x])[:10_000]
    feats_s = timed(lambda: generation.frechet_distance(feature_net.features(x), feature_net.features(x.flip(0))))
    cost = [{"case": f"flagship trial (fit + evaluate), median of {len(rounds)}",
             **{c: median([r[f"trial_{c}_s"] for r in rounds]) for c in ("wall", "cpu")}},
            {"case": "generation scores, cold (first call of a process)",
             **{c: cold[f"generation_{c}_s"] for c in ("wall", "cpu")},
             **{f"share_{c}": cold[f"share_{c}"] for c in ("wall", "cpu")}},
            {"case": f"generation scores, warm (median of {len(warm)} rounds)",
             **{c: median([r[f"generation_{c}_s"] for r in warm]) for c in ("wall", "cpu")},
             **{f"share_{c}": median([r[f"share_{c}"] for r in warm]) for c in ("wall", "cpu")}},
            {"case": "features of 10,000 images x 2 + Frechet distance", "wall": feats_s}]
    for row in cost:
        row["ok"] = None if "share_cpu" not in row else ("yes" if row["share_cpu"] <= 0.10 else "NO")
    parts = stages(model, ds, settings)
    tol_rows = tolerance(model, ds, settings, args.seeds)

    by_seed = {s: sampling.generation_scores(model, ds, **settings | {"seed": s}).scores for s in args.seeds}
    refs = {s: sampling.reference(ds, settings["n"], s).rows for s in args.seeds}
    spread = [spread_rows(m, [by_seed[s][m] for s in args.seeds]) for m in SPREAD_METRICS]
    spread += [spread_rows(f"reference {name} {key}", [refs[s][name][key] for s in args.seeds])
               for name in ("real_data", "mean_image") for key in ("fd", "precision", "recall")]

    n = len(ds.test) if settings["n"] is None else settings["n"]
    print(f"\nCost: {n} images per sampler, {torch.get_num_threads()} torch thread(s), load average "
          f"{load_start:.2f} at the start; target: <= 10% of a trial")
    print_table(cost, [("case", "case", ""), ("wall", "wall s", ".2f"), ("share_wall", "share (wall)", ".1%"),
                       ("cpu", "CPU s", ".2f"), ("share_cpu", "share (CPU)", ".1%"), ("ok", "<= 10% (CPU)", "")])
    print("\nStages of one warm call (cProfile, cumulative)")
    print_table(parts, [("stage", "stage", ""), ("seconds", "seconds", ".3f"), ("share_of_call", "share", ".0%")])
    print(f"\nThe mixture's EM tolerance: {generation.GMM_TOL:g} (vaebench) against {SKLEARN_TOL:g} (scikit-learn)")
    print_table(tol_rows, [("seed", "seed", "d"), ("tol", "tol", "g"), ("fit_s", "fit s", ".3f"),
                           ("em_iterations", "EM iterations", "d"), ("test_fd_gmm", "FD gmm", ".2f"),
                           ("test_precision_gmm", "precision", ".3f"), ("test_recall_gmm", "recall", ".3f"),
                           ("test_coverage_gmm", "coverage", ".3f")])
    print(f"\nSpread over sample seeds {' '.join(map(str, args.seeds))} (one trained model; SD with ddof=1)")
    print_table(spread, [("metric", "metric", ""), ("mean", "mean", ".4g"), ("sd", "SD", ".3g"),
                         ("min", "min", ".4g"), ("max", "max", ".4g")])
    write_report("generation", {
        "trial": {"study": "beta_sweep", "beta": 1.0, "seed": 0},
        "load": {"load_average_1m_start": load_start, "load_average_1m_end": load(), "note": args.note},
        "samples": n, "feature_net_sha256": feature_net.SHA256, "gmm_tol": generation.GMM_TOL,
        "rounds": rounds, "cost": cost, "stages": parts, "gmm_tolerance": tol_rows,
        "seeds": args.seeds, "spread": spread,
        "scores_by_seed": {str(s): v for s, v in by_seed.items()},
        "references_by_seed": {str(s): v for s, v in refs.items()},
    })


if __name__ == "__main__":
    main()
