"""The pinned feature network for 28×28 grey digits: a LeNet-style classifier trained on the
full MNIST training split, shipped as safetensors beside this file and pinned by its sha256.

Generation scores read its penultimate layer (`features`, 128-d) and its class decisions
(`classify`). They compare with other vaebench numbers only, never with Inception FIDs.
It covers MNIST digits (`mnist`, `mnist5k`); other data (8×8 digits, Fashion-MNIST, KMNIST,
dSprites, CIFAR-10) is not scored: `check_dataset` and `check_images` raise
`UnscorableError`, whose message is the reason a caller records beside a NaN.

Retrain (deterministic: the same CPU and library versions give the same file, same sha256):

    python -m vaebench.metrics.feature_net --data-dir ../shared/data

then set `SHA256` below to the printed hash, deliberately: that constant is the pin.
"""
from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

NAME = "lenet_mnist"
WEIGHTS = Path(__file__).with_name("weights") / f"{NAME}.safetensors"
RECORD = WEIGHTS.with_suffix(".json")
SHA256 = "8d276e47a94da7b7bdcc7e631d4b045eb6b2e666cc09dc73e367297389f33aa9"  # the pin: sha256 of WEIGHTS
COVERED = ("mnist", "mnist5k")  # datasets whose images are MNIST digits
INPUT_SHAPE = (1, 28, 28)
FEATURE_DIM = 128
N_CLASSES = 10
MEAN, STD = 0.1307, 0.3081  # the MNIST training split on [0, 1]
BATCH = 128  # images per forward pass when scoring: small enough for a batch's activations to stay in cache
TRAINING = {"seed": 0, "epochs": 8, "batch_size": 128, "lr": 2e-3, "threads": 1, "binarized_fraction": 0.5}


class UnscorableError(ValueError):
    """These images (or this dataset) cannot be scored by the pinned network; the message says why."""


class LeNet(nn.Module):
    """conv 5×5 (16) → max-pool → conv 5×5 (32) → max-pool → fc 128 (the features) → fc 10.
    Takes images (N, 1, 28, 28) in [0, 1] and normalises them itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.fc1 = nn.Linear(32 * 4 * 4, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, N_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        x = (x - MEAN) / STD
        x = _relu_pool(self.conv1(x))
        x = _relu_pool(self.conv2(x))
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.features(x))


def _relu_pool(x: Tensor) -> Tensor:
    """ReLU, then 2×2 max-pooling. Without autograd (scoring) the pool runs first and
    channels-last: ReLU and max commute, so the numbers are the same from a quarter of the
    values, and PyTorch's CPU max-pool is vectorised over channels only in that layout. With
    autograd (training) the graph stays the one the pinned weights were trained with."""
    if torch.is_grad_enabled():
        return F.max_pool2d(F.relu(x), 2)
    return F.relu(F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2)).contiguous()


# -- the shipped weights, scoring ------------------------------------------------------------

def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def load() -> LeNet:
    """The shipped network in eval mode, after checking the file against the pinned `SHA256`."""
    from safetensors.torch import load_file

    if not WEIGHTS.is_file():
        raise UnscorableError(f"the feature network's weights are missing: {WEIGHTS}")
    digest = file_sha256(WEIGHTS)
    if digest != SHA256:
        raise UnscorableError(f"{WEIGHTS.name} has sha256 {digest}, not the pinned {SHA256}: "
                              "the feature network changed; scores would not compare")
    net = LeNet()
    net.load_state_dict(load_file(WEIGHTS))
    return net.eval().requires_grad_(False)


def check_dataset(name: str) -> None:
    """Raise UnscorableError unless the pinned network covers dataset `name`."""
    if name not in COVERED:
        raise UnscorableError(f"no pinned feature network for {name!r} (the MNIST network covers "
                              f"{', '.join(COVERED)})")


def check_images(images: Tensor | np.ndarray) -> Tensor:
    """The images as a float32 CPU tensor, or UnscorableError when they are not what the
    network was trained on: shape (N, 1, 28, 28), floating point, finite, in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or len(x) == 0:
        raise UnscorableError(f"the feature network takes images (N, 1, 28, 28), not {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UnscorableError(f"the feature network takes float images in [0, 1], not {x.dtype}")
    x = x.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise UnscorableError("images with NaN or Inf pixels")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise UnscorableError(f"the feature network takes pixels in [0, 1], not [{low:.3g}, {high:.3g}]")
    return x


def _run(images: Tensor | np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    x, net = check_images(images), load()
    feats, classes = [], []
    with torch.inference_mode():
        for batch in x.split(batch_size):
            h = net.features(batch)
            feats.append(h.double().numpy())
            classes.append(net.fc2(h).argmax(1).numpy())
    return np.concatenate(feats), np.concatenate(classes)


def embed(images: Tensor | np.ndarray, batch_size: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """One pass: the features (N, 128) float64 and the predicted classes (N,) int64."""
    return _run(images, batch_size)


def features(images: Tensor | np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """The penultimate layer (after its ReLU), (N, 128) float64."""
    return _run(images, batch_size)[0]


def classify(images: Tensor | np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """The predicted digit of each image, (N,) int64."""
    return _run(images, batch_size)[1]


# -- training (deterministic) ------------------------------------------------------------------

def read_mnist(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and labels (N,) of MNIST's `train` or `t10k` files in
    torchvision's layout (DATA_DIR/MNIST/raw/*-idx?-ubyte.gz), read in place."""
    raw = Path(data_dir) / "MNIST" / "raw"
    out = []
    for kind, magic in (("images-idx3", 2051), ("labels-idx1", 2049)):
        path = raw / f"{split}-{kind}-ubyte.gz"
        with gzip.open(path, "rb") if path.exists() else path.with_suffix("").open("rb") as f:
            ndim = magic & 0xFF
            header = np.frombuffer(f.read(4 + 4 * ndim), ">u4")
            if header[0] != magic:
                raise ValueError(f"{path}: not an MNIST idx file")
            out.append(np.frombuffer(bytearray(f.read()), np.uint8).reshape(header[1:]))
    return out[0], out[1]


def _to_float(images: np.ndarray) -> Tensor:
    return torch.from_numpy(np.divide(images, np.float32(255), dtype=np.float32)).unsqueeze(1)


def train(images: np.ndarray, labels: np.ndarray, *, seed: int, epochs: int, batch_size: int, lr: float,
          threads: int, binarized_fraction: float, log: Any = None) -> dict[str, Tensor]:
    """The network's state dict after training on uint8 `images` (N, 28, 28) with Adam and a
    cosine learning rate; a share of each batch is binarized (pixel ~ Bernoulli(value)) so that
    binarized test sets read as well as grey ones. Deterministic: seeded initialisation, data
    order and binarization, deterministic algorithms, a fixed number of threads."""
    x, y = _to_float(images), torch.from_numpy(labels.astype(np.int64))
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = LeNet()
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            steps = epochs * math.ceil(len(x) / batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
            net.train()
            for epoch in range(epochs):
                order, total = torch.randperm(len(x), generator=gen), 0.0
                for rows in order.split(batch_size):
                    xb, yb = x[rows], y[rows]
                    flip = torch.rand(len(rows), generator=gen) < binarized_fraction
                    noise = torch.rand(xb.shape, generator=gen)
                    xb = torch.where(flip[:, None, None, None], (noise < xb).float(), xb)
                    loss = F.cross_entropy(net(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(rows)
                if log:
                    log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(x):.4f}")
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def accuracy(net: LeNet, images: np.ndarray, labels: np.ndarray, *, binarize_seed: int | None = None) -> float:
    """Test accuracy on uint8 images; with `binarize_seed`, on one seeded Bernoulli binarization."""
    x = _to_float(images)
    if binarize_seed is not None:
        x = (torch.rand(x.shape, generator=torch.Generator().manual_seed(binarize_seed)) < x).float()
    with torch.inference_mode():
        pred = torch.cat([net.eval()(b).argmax(1) for b in x.split(1000)])
    return float((pred.numpy() == labels).mean())


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from vaebench.manifest import cpu_model, package_versions

    parser = argparse.ArgumentParser(prog="python -m vaebench.metrics.feature_net", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with MNIST/raw/ (torchvision layout)")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help=f"the safetensors to write (default {WEIGHTS})")
    parser.add_argument("--epochs", type=int, default=TRAINING["epochs"])
    args = parser.parse_args(argv)
    config = {**TRAINING, "epochs": args.epochs}

    train_x, train_y = read_mnist(args.data_dir, "train")
    test_x, test_y = read_mnist(args.data_dir, "t10k")
    data_sha = hashlib.sha256(train_x.tobytes() + train_y.tobytes()).hexdigest()
    start = time.perf_counter()
    state = train(train_x, train_y, **config, log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out, metadata={"name": NAME})
    digest = file_sha256(args.out)

    net = LeNet()
    net.load_state_dict(state)
    record = {
        "name": NAME, "file": args.out.name, "sha256": digest,
        "architecture": "conv5x5(16)-relu-maxpool2, conv5x5(32)-relu-maxpool2, fc(512->128)-relu [features], fc(128->10)",
        "parameters": sum(v.numel() for v in state.values()), "input": "(N, 1, 28, 28) float in [0, 1]",
        "test_accuracy": accuracy(net, test_x, test_y),
        "test_accuracy_binarized": accuracy(net, test_x, test_y, binarize_seed=0),
        "training_data": {"dataset": "MNIST training split, all 60,000 digits, official order",
                          "sha256_images_labels": data_sha, "n": len(train_y)},
        "training": {**config, "optimizer": "Adam, one-cycle learning rate", "seconds": round(seconds, 1)},
        "versions": {"python": platform.python_version(), **package_versions(("torch", "numpy", "safetensors"))},
        "cpu": f"{platform.machine()} {cpu_model()}",
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if digest != SHA256:
        print(f"note: {args.out.name} differs from the pinned SHA256; to ship it, set SHA256 = {digest!r}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
