"""The pinned feature network: the shipped file is the pinned one and reaches its recorded
accuracy on the real MNIST test set; what it refuses to score; training is deterministic."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaebench.metrics import feature_net as fn
from vaebench.metrics import generation

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                                 reason=f"the real MNIST files are not in {SHARED_DATA} (CI and the reference runs have them)")


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(fn.RECORD.read_text())


@pytest.fixture(scope="module")
def mnist_test() -> tuple[torch.Tensor, np.ndarray]:
    images, labels = fn.read_mnist(SHARED_DATA, "t10k")
    return torch.from_numpy(images).float().div(255).unsqueeze(1), labels.astype(np.int64)


def test_the_shipped_weights_are_the_pinned_ones(record: dict) -> None:
    assert fn.file_sha256(fn.WEIGHTS) == fn.SHA256 == record["sha256"]
    assert record["file"] == fn.WEIGHTS.name
    assert fn.WEIGHTS.stat().st_size < 400_000
    net = fn.load()
    assert sum(p.numel() for p in net.parameters()) == record["parameters"]
    assert record["training_data"]["n"] == 60_000 and record["test_accuracy"] >= 0.99


def test_a_changed_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    changed = tmp_path / fn.WEIGHTS.name
    changed.write_bytes(fn.WEIGHTS.read_bytes()[:-1] + b"\x00")
    monkeypatch.setattr(fn, "WEIGHTS", changed)
    fn.load.cache_clear()
    try:
        with pytest.raises(fn.UnscorableError, match="not the pinned"):
            fn.load()
    finally:
        monkeypatch.undo()
        fn.load.cache_clear()


@needs_mnist
def test_the_network_reaches_its_recorded_test_accuracy(record: dict, mnist_test: tuple) -> None:
    images, labels = mnist_test
    accuracy = float((fn.classify(images) == labels).mean())
    assert accuracy >= 0.99
    assert accuracy == pytest.approx(record["test_accuracy"], abs=3e-4)  # a few borderline digits at most
    binarized = (torch.rand(images.shape, generator=torch.Generator().manual_seed(0)) < images).float()
    assert float((fn.classify(binarized) == labels).mean()) == pytest.approx(record["test_accuracy_binarized"], abs=3e-4)


@needs_mnist
def test_features_tell_digits_from_noise_and_collapse(mnist_test: tuple) -> None:
    """Two halves of the test set are close in feature space; noise is far and unrecalled; one
    digit class alone (mode collapse) is far, precise and unrecalled."""
    images, labels = mnist_test
    first, second = fn.features(images[:5000]), fn.features(images[5000:])
    noise = fn.features(torch.rand((5000, 1, 28, 28), generator=torch.Generator().manual_seed(0)))
    ones = fn.features(images[torch.from_numpy(labels == 1)])
    same = generation.frechet_distance(first, second)
    assert generation.frechet_distance(first, noise) > 20 * same and generation.frechet_distance(first, ones) > 20 * same
    halves, noisy, collapsed = (generation.precision_recall(first, x) for x in (second, noise, ones))
    assert halves["precision"] > 0.6 and halves["recall"] > 0.6
    assert noisy["precision"] < 0.2 and noisy["recall"] == 0 and noisy["coverage"] < 0.01
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2


def test_features_and_classes_have_the_promised_form() -> None:
    x = torch.rand((37, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    feats, classes = fn.embed(x)
    assert feats.shape == (37, fn.FEATURE_DIM) and feats.dtype == np.float64 and (feats >= 0).all()
    assert classes.shape == (37,) and classes.dtype == np.int64 and set(classes) <= set(range(10))
    assert np.array_equal(fn.features(x.numpy()), feats) and np.array_equal(fn.classify(x), classes)
    assert np.allclose(fn.features(x, batch_size=5), feats, rtol=1e-5, atol=1e-5)
    assert x.grad is None and np.array_equal(fn.features(x.double()), feats)


def test_scoring_gives_the_numbers_of_the_trained_graph() -> None:
    """Without autograd the pools run first, channels-last: bit for bit the training graph's features."""
    gen = torch.Generator().manual_seed(2)
    grey = torch.rand((300, 1, 28, 28), generator=gen)
    net = fn.load()
    for x in (grey, (torch.rand(grey.shape, generator=gen) < grey).float()):
        with torch.enable_grad():
            trained = net.features(x.requires_grad_(True)).detach()
        with torch.inference_mode():
            assert torch.equal(net.features(x.detach()), trained)
        with torch.no_grad():
            assert torch.equal(net(x.detach()), net.fc2(trained))


@pytest.mark.parametrize("images, reason", [
    (torch.rand(4, 28, 28), r"\(N, 1, 28, 28\), not \(4, 28, 28\)"),
    (torch.rand(4, 1, 8, 8), "not"),  # the 8x8 digits
    (torch.rand(4, 3, 32, 32), "not"),  # CIFAR-10
    (torch.rand(4, 1, 64, 64), "not"),  # dSprites
    (torch.rand(0, 1, 28, 28), "not"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), "float images"),
    (torch.full((4, 1, 28, 28), 255.0), r"in \[0, 1\]"),
    (torch.full((4, 1, 28, 28), float("nan")), "NaN"),
])
def test_images_it_was_not_trained_on_are_refused(images: torch.Tensor, reason: str) -> None:
    with pytest.raises(fn.UnscorableError, match=reason):
        fn.features(images)


def test_only_mnist_digits_are_covered() -> None:
    for name in fn.COVERED:
        fn.check_dataset(name)
    for name in ("digits", "fashion_mnist", "kmnist", "cifar10", "dsprites"):
        with pytest.raises(fn.UnscorableError, match="no pinned feature network"):
            fn.check_dataset(name)


def test_training_is_deterministic_and_leaves_torch_as_it_was() -> None:
    """Two trainings on the same data and seed give bit-identical weights; another seed does not."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8), rng.integers(0, 10, 600).astype(np.uint8)
    config = {**fn.TRAINING, "epochs": 1, "threads": 1}
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    state = torch.get_rng_state()
    first, second = fn.train(images, labels, **config), fn.train(images, labels, **config)
    other = fn.train(images, labels, **{**config, "seed": 1})
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["fc1.weight"], other["fc1.weight"])
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
    assert torch.equal(torch.get_rng_state(), state)
