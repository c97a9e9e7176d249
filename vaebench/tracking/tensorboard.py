"""TensorBoard event files beside MLflow (`vaebench run --tensorboard DIR`): the same
per-epoch scalars and pictures. Needs the `tensorboard` package (the `tensorboard` extra)."""
from __future__ import annotations

from pathlib import Path

from vaebench.tracking.runs import finite


class TensorBoardRun:
    """The same per-epoch scalars and pictures as MLflow, as TensorBoard event files."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in finite(metrics).items():
            if name != "epoch":
                self.writer.add_scalar(name, value, epoch)

    def log_picture(self, path: Path, step: int) -> None:
        from torchvision.io import ImageReadMode, read_image

        self.writer.add_image(path.stem, read_image(str(path), ImageReadMode.RGB), step)

    def close(self) -> None:
        self.writer.close()


def tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
