"""`vaebench check-model MODEL`: the model checks (models/checks.py) on 64 digits, one row each."""
from __future__ import annotations

import argparse
import sys

from vaebench.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="architecture, whole model or import path pkg.mod:Class")
    parser.add_argument("--objective", default=None)
    parser.add_argument("--likelihood", default=None)
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE")
    parser.add_argument("--latent-dim", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    """0: every check passed or not applicable; 1: a failure; 2: bad input."""
    import torch

    from vaebench import data, models
    from vaebench.models import checks, plugins

    try:
        for path in args.plugin:
            plugins.load_file(path)
        x = data.load("mnist5k", binarize="static").train.x[:64]
        kwargs = {"objective": args.objective, "likelihood": args.likelihood}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}

        def build(seed: int):
            torch.manual_seed(seed)
            return models.build(arch=args.model, latent_dim=args.latent_dim, input_shape=tuple(x.shape[1:]), **kwargs)

        build(0)
    except (InputError, ValueError, TypeError) as exc:
        print(f"vaebench: error: {exc}", file=sys.stderr)
        return 2
    rows = checks.run_checks(checks.Subject(build, x))
    for row in rows:
        print(f"{row.name:18} {row.status:15} {row.reason}")
    return 1 if any(r.status == checks.FAILED for r in rows) else 0
