"""Generation scores: their cost beside a flagship trial, and their spread over sample seeds.

    python benchmarks/bench_generation.py            # 3 repeats, sample seeds 0 1 2

The trial is the flagship's (beta_sweep at β = 1, seed 0: MLP 784-512-256, 10-d latent,
Bernoulli, 15 epochs on mnist5k), trained as the study trains it (`trial.fit_settings`) and
evaluated as it evaluates (`trial.evaluate_settings`); its cost here is fit + evaluate, with
no tracking, so the share is an upper bound of the share of a tracked trial.

- generation scores (`metrics.sampling.generation_scores`, 1,000 images per sampler: the test
  split's size): cold (the first call of a process: the feature network is loaded and the
  test split's features and the reference rows computed) and warm (the median over repeats,
  what every later trial of a worker pays);
- the features of 10,000 images plus a Fréchet distance (the issue's sizing case);
- the scores of the same trained model at 3 sample seeds: mean, SD, min and max per metric,
  and the reference rows at each seed.

Prints two tables, writes results/benchmarks/generation.json.
"""
from __future__ import annotations

import argparse
import math
import time

from common import ROOT, median, print_table, timed, write_report

import numpy as np
import torch

from vaebench import config, metrics, trial
from vaebench.metrics import feature_net, generation, sampling

SPREAD_METRICS = ["test_fd_prior", "test_fd_gmm", "test_fd_recon", "test_precision_prior", "test_recall_prior",
                  "test_precision_gmm", "test_recall_gmm", "test_coverage_prior", "test_coverage_gmm",
                  "test_classes_covered_prior", "test_class_kl_prior"]


def flagship() -> tuple:
    spec, _ = config.load_study(str(ROOT / "studies" / "beta_sweep.yaml"))
    cfg = spec.with_params({"model.beta": 1.0, "seed": 0})
    return cfg, trial.load_data(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg, ds = flagship()
    model = trial.build_model(cfg, ds)
    fit_s = timed(lambda: trial.train.fit(model, ds, **trial.fit_settings(cfg)))
    eval_s = timed(lambda: metrics.evaluate(model, ds, **trial.evaluate_settings(cfg)))
    print(f"flagship trial: fit {fit_s:.1f} s, evaluate {eval_s:.1f} s", flush=True)
    settings = trial.generation_settings(cfg)
    start = time.perf_counter()
    first = sampling.generation_scores(model, ds, **settings)
    cold_s = time.perf_counter() - start
    warm = [timed(lambda: sampling.generation_scores(model, ds, **settings)) for _ in range(args.repeats)]
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x, ds.train.x, ds.val.x, ds.test.x])[:10_000]
    feats_s = timed(lambda: generation.frechet_distance(feature_net.features(x), feature_net.features(x.flip(0))))
    trial_s = fit_s + eval_s
    cost = [
        {"case": "flagship trial (fit + evaluate)", "seconds": trial_s, "share": None},
        {"case": "generation scores, cold (first call of a process)", "seconds": cold_s, "share": cold_s / trial_s},
        {"case": f"generation scores, warm (median of {args.repeats})", "seconds": median(warm),
         "share": median(warm) / trial_s},
        {"case": "features of 10,000 images x 2 + Frechet distance", "seconds": feats_s, "share": None},
    ]
    for row in cost:
        row["ok"] = None if row["share"] is None else ("yes" if row["share"] <= 0.10 else "NO")

    by_seed, refs = {}, {}
    for seed in args.seeds:
        out = first if seed == settings["seed"] else sampling.generation_scores(model, ds, **settings | {"seed": seed})
        by_seed[seed] = out.scores
        refs[seed] = sampling.reference(ds, settings["n"], seed).rows
    spread = []
    for m in SPREAD_METRICS:
        v = np.array([by_seed[s][m] for s in args.seeds])
        spread.append({"metric": m, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                       "min": float(v.min()), "max": float(v.max())})
    for name in ("real_data", "mean_image"):
        for key in ("fd", "precision", "recall"):
            v = np.array([refs[s][name][key] for s in args.seeds])
            spread.append({"metric": f"reference {name} {key}", "mean": float(v.mean()),
                           "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
                           "min": float(v.min()), "max": float(v.max())})

    n = first.tags[sampling.TAG_SAMPLES]
    print(f"\nCost: {n} images per sampler, {torch.get_num_threads()} torch thread(s); target: <= 10% of a trial")
    print_table(cost, [("case", "case", ""), ("seconds", "seconds", ".2f"), ("share", "share of trial", ".1%"),
                       ("ok", "<= 10%", "")])
    print(f"\nSpread over sample seeds {' '.join(map(str, args.seeds))} (one trained model; SD with ddof=1)")
    print_table(spread, [("metric", "metric", ""), ("mean", "mean", ".4g"), ("sd", "SD", ".3g"),
                         ("min", "min", ".4g"), ("max", "max", ".4g")])
    write_report("generation", {
        "trial": {"study": "beta_sweep", "beta": 1.0, "seed": 0, "fit_s": fit_s, "evaluate_s": eval_s},
        "samples": int(n), "feature_net_sha256": feature_net.SHA256, "repeats": args.repeats,
        "warm_seconds_all": warm, "cost": cost, "seeds": args.seeds, "spread": spread,
        "scores_by_seed": {str(s): v for s, v in by_seed.items()},
        "references_by_seed": {str(s): v for s, v in refs.items()},
    })


if __name__ == "__main__":
    main()
