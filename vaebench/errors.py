"""vaebench's exceptions: bad input (the CLI prints one line, exit code 2) and divergence."""


class InputError(Exception):
    """Bad input from the user (study file, flag, data folder): message names file and field."""


class DivergenceError(RuntimeError):
    """A trial's loss or metrics became NaN/Inf; the trial fails with this reason."""
