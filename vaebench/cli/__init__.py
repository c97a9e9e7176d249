"""The command line: `python -m vaebench` / `vaebench` (commands.py) and what only it uses: the
progress bar, the checks before anything is written, the closing summary, replay."""
from vaebench.cli.commands import main

__all__ = ["main"]
