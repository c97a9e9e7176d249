"""vaebench's exceptions: bad input (the CLI prints one line, exit code 2) and divergence."""


class InputError(Exception):
    """Bad input from the user (study file, flag, data folder): message names file and field.

    Always one line: characters that are not printable (a newline in a key of the file) are
    written as escapes.
    """

    def __init__(self, message: object) -> None:
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message)))


class DivergenceError(RuntimeError):
    """A trial's loss or metrics became NaN/Inf; the trial fails with this reason."""


class StoreFailure(RuntimeError):
    """Optuna's storage or MLflow's store failed mid-study (a full disk, a lost server): the runs
    were closed as far as the stores allowed; the CLI prints this one line, exit code 1."""
