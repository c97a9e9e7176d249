"""`check-model` as a command: a table of rows, exit 0 when nothing fails, 2 on bad input."""
from __future__ import annotations

import argparse

import pytest

from vaebench.cli import check_model
from vaebench.models import checks


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    check_model.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_builtin_vae_prints_every_check_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_model.run(parse("mlp", "--objective", "beta_vae", "--latent-dim", "4")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(checks.CHECKS)
    assert all(line.split()[1] == checks.PASSED for line in lines), lines
    assert check_model.run(parse("mlp", "--objective", "vae", "--latent-dim", "4")) == 0  # no beta to vary
    rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines()}
    assert rows.pop("beta_elbo").startswith(checks.NA) and all(v.startswith(checks.PASSED) for v in rows.values())


def test_unknown_model_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_model.run(parse("no_such_model")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no_such_model" in err
