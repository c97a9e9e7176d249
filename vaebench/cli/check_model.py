"""`vaebench check-model MODEL`: the model checks (models/checks.py) on 64 digits, one row each:
statically binarised mnist5k, or the first 64 training images of `--dataset NAME`."""
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
    parser.add_argument("--dataset", default=None, metavar="NAME",
                        help="a registered dataset: its first 64 training images (default: binarised mnist5k)")


def run(args: argparse.Namespace) -> int:
    """0: every check passed or not applicable; 1: a failure; 2: bad input."""
    from vaebench import data
    from vaebench.models import checks, plugins

    try:
        for path in args.plugin:
            plugins.load_file(path)
        ds = data.load(args.dataset, seed=0) if args.dataset else data.load("mnist5k", binarize="static")
        x = ds.train.x[:64]
        kwargs = {"objective": args.objective, "likelihood": args.likelihood}
        subject = checks.subject(args.model, x, args.latent_dim, **{k: v for k, v in kwargs.items() if v is not None})
        subject.build(0)
    except (InputError, ValueError, TypeError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # a KeyError's str() is quoted
        print(f"vaebench: error: {message}", file=sys.stderr)
        return 2
    rows = checks.run_checks(subject)
    for row in rows:
        print(f"{row.name:18} {row.status:15} {row.reason}")
    return 1 if any(r.status == checks.FAILED for r in rows) else 0
