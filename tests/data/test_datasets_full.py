"""The full torchvision datasets (mnist, fashion_mnist, kmnist, cifar10), read from a data
folder through the real code path: tiny fake files in torchvision's on-disk format stand in
for the real ones (no network). Also the discretized logistic likelihood meant for cifar10.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pickle
import socket
import struct
import tarfile
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import torchvision.datasets
import yaml

from helpers import REPO, vaebench
from vaebench import data
from vaebench.errors import InputError
from vaebench.models.likelihoods import LIKELIHOODS

MNIST_LIKE = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
N_TRAIN, N_TEST = 100, 20  # every class 10x in train (val needs one per class), 2x in test
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake datasets must not linger in (or come from) the per-process cache, nor unpack
    into the user's cache folder."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path_factory.mktemp("unpack-cache")))
    data.clear_cache()
    yield
    data.clear_cache()


def idx_bytes(array: np.ndarray) -> bytes:
    """MNIST's idx format: magic 0x0000 08 NDIM (2051 for images, 2049 for labels), the
    dimensions as big-endian uint32, then the unsigned bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(N_TRAIN, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(N_TEST, dtype=np.uint8) * 3) % 10,
    }


def write_mnist(root: Path, folder: str = "MNIST", gz: bool = False) -> dict[str, np.ndarray]:
    """Tiny MNIST-format files where torchvision expects them: root/<Class>/raw/<name>[.gz]."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = fake_mnist_arrays()
    for name, array in arrays.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (raw / name).write_bytes(idx_bytes(array))
    return arrays


def rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
    flat = x.reshape(len(x), -1).numpy()
    return Counter(zip((r.tobytes() for r in flat), y.tolist()))


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


# -- mnist, fashion_mnist, kmnist ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MNIST_LIKE))
def test_mnist_like_loads_official_test_split_and_carves_val_from_train(tmp_path: Path, name: str) -> None:
    arrays = write_mnist(tmp_path, MNIST_LIKE[name])
    raw = tmp_path / MNIST_LIKE[name] / "raw"
    assert [int.from_bytes((raw / f).read_bytes()[:4], "big") for f in IDX_FILES] == [2051, 2049, 2051, 2049]
    ds = data.load(name, seed=0, binarize="none", val_fraction=0.1, data_dir=tmp_path)

    assert ds.input_shape == (1, 28, 28) and ds.n_classes == 10
    assert [len(ds.train), len(ds.val), len(ds.test)] == [N_TRAIN - 10, 10, N_TEST]
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == torch.float32 and split.x.is_contiguous()
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
    # the official test images, in their order, are exactly the test split (scaled by 1/255)
    test_images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    assert torch.equal(ds.test.x, test_images)
    assert torch.equal(ds.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    # train + val are exactly the official training images; val is stratified (one per class here)
    train_images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().div(255).unsqueeze(1)
    train_labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"]).long()
    assert rows(ds.train.x, ds.train.y) + rows(ds.val.x, ds.val.y) == rows(train_images, train_labels)
    assert sorted(ds.val.y.tolist()) == list(range(10))

    other = data.load(name, seed=1, val_fraction=0.1, data_dir=tmp_path)
    assert torch.equal(other.test.x, ds.test.x)  # the test split does not depend on the seed
    assert not torch.equal(other.val.x, ds.val.x) and other.fingerprint != ds.fingerprint
    assert data.load(name, seed=0, val_fraction=0.1, data_dir=str(tmp_path)) is ds  # cached


def test_gzipped_files_are_read_in_place_and_nothing_is_written(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path, gz=True)
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    ds = data.load("mnist", binarize="none", data_dir=tmp_path)
    assert torch.equal(ds.test.x, torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().div(255).unsqueeze(1))
    # a data folder may be a read-only shared mount: not a file added or touched
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])  # cut short, as a failed copy leaves it
    data.clear_cache()
    with pytest.raises(InputError, match="corrupt file .*train-images-idx3-ubyte.gz"):
        data.load("mnist", data_dir=tmp_path)


def test_data_folder_comes_from_the_environment_then_defaults_to_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "elsewhere")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert len(data.load("mnist").test) == N_TEST
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=f"missing files in {tmp_path / 'data' / 'MNIST' / 'raw'}:"):
        data.load("mnist", seed=5)
    write_mnist(tmp_path / "data")
    assert len(data.load("mnist", seed=5).test) == N_TEST


def test_missing_files_name_the_folder_and_the_files(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        data.load("kmnist", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert message.startswith(f"kmnist: missing files in {tmp_path / 'KMNIST' / 'raw'}: ")
    assert ", ".join(IDX_FILES) in message and "download: true" in message and "--download" in message
    assert not (tmp_path / "KMNIST").exists()  # looking wrote nothing


def test_a_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(InputError) as excinfo:
        data.check_available("mnist", tmp_path)
    assert one_line_error(excinfo).startswith(f"mnist: corrupt file {images} (")
    with pytest.raises(InputError, match="corrupt file"):
        data.load("mnist", data_dir=tmp_path)
    images.write_bytes(b"not an idx file")
    with pytest.raises(InputError, match="not an idx file"):
        data.load("mnist", data_dir=tmp_path)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A local HTTP server standing in for MNIST's mirrors: the fake .gz files, their md5s."""
    served = tmp_path / "served"
    served.mkdir()
    resources = []
    for name, array in fake_mnist_arrays().items():
        blob = gzip.compress(idx_bytes(array))
        (served / f"{name}.gz").write_bytes(blob)
        resources.append((f"{name}.gz", hashlib.md5(blob).hexdigest()))
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    yield served
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_download_fetches_through_torchvision(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "fresh"
    with pytest.raises(InputError, match="missing files"):
        data.load("mnist", data_dir=root)  # no download unless asked
    ds = data.load("mnist", data_dir=root, download=True)
    assert len(ds.test) == N_TEST
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]  # no temporary folder left behind
    data.check_available("mnist", root, download=True)  # present: nothing to fetch


def test_download_offline_says_where_to_put_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused, like a machine offline
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [dead])
    with pytest.raises(InputError) as excinfo:
        data.check_available("mnist", tmp_path, download=True)
    message = one_line_error(excinfo)
    assert message.startswith(f"mnist: download into {tmp_path} failed (")
    assert f"missing files in {tmp_path / 'MNIST' / 'raw'}: {', '.join(IDX_FILES)}" in message
    assert [p.name for p in tmp_path.iterdir()] == []  # the temporary download folder is gone


def test_an_offline_download_leaves_no_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [dead])
    with pytest.raises(InputError, match="download into"):
        data.check_available("mnist", tmp_path / "data" / "sub", download=True)
    assert list(tmp_path.iterdir()) == []  # data/ and data/sub were made for the download: gone again


def test_cli_refuses_a_study_whose_files_are_missing(tmp_path: Path) -> None:
    inputs, cwd, empty = tmp_path / "inputs", tmp_path / "cwd", tmp_path / "data"
    for folder in (inputs, cwd, empty):
        folder.mkdir()
    study = inputs / "full.yaml"
    study.write_text(yaml.safe_dump({
        "name": "full", "dataset": {"name": "mnist"}, "model": {"arch": "mlp", "latent_dim": 2, "hidden": [8]},
        "train": {"epochs": 1}, "search": {"sampler": "grid", "space": {"seed": [0]}},
    }))
    result = vaebench(cwd, "run", "--study", str(study), "--data-dir", str(empty), "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"missing files in {empty / 'MNIST' / 'raw'}: train-images-idx3-ubyte" in lines[0]
    assert list(cwd.iterdir()) == [] and list(empty.iterdir()) == []  # nothing written


# -- cifar10 --------------------------------------------------------------------------------


def fake_cifar(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10's python pickles (rows of 3,072 bytes: the red plane, green, blue), 10 train
    images per batch file and 10 test images; returns (images as N x 3 x 32 x 32, labels)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 3072), dtype=np.uint8)
    labels = np.arange(60) % 10
    for i, name in enumerate(CIFAR_FILES[:-1]):
        batch = {"data": images[10 * i: 10 * i + 10], "labels": labels[10 * i: 10 * i + 10].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{k}" for k in range(10)]}))
    return images.reshape(60, 3, 32, 32), labels


def accept_fake_cifar(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give torchvision the md5s of the fake files, as if they were the published ones."""
    folder = root / "cifar-10-batches-py"
    md5 = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in CIFAR_FILES}
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5[n]] for n in CIFAR_FILES[:5]])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5["batches.meta"]})


def test_cifar10_missing_files_name_the_folder_the_files_and_the_archive(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        data.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert message.startswith(f"cifar10: missing files in {tmp_path / 'cifar-10-batches-py'}: ")
    assert ", ".join(CIFAR_FILES) in message and str(tmp_path / "cifar-10-python.tar.gz") in message


def test_cifar10_files_that_fail_the_md5_are_corrupt(tmp_path: Path) -> None:
    fake_cifar(tmp_path)  # right format, but not the published bytes
    with pytest.raises(InputError) as excinfo:
        data.load("cifar10", data_dir=tmp_path)
    message = one_line_error(excinfo)
    assert message.startswith(f"cifar10: corrupt file {tmp_path / 'cifar-10-batches-py' / 'data_batch_1'} (md5")



class Planted:
    """A pickle that writes a file when it is loaded: what an unverified batch file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return Path.write_text, (self.marker, "unpickled")


def test_a_cifar10_batch_is_unpickled_only_after_its_md5_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cifar(tmp_path)
    accept_fake_cifar(tmp_path, monkeypatch)  # the published md5s are those of the genuine files
    batch, marker = tmp_path / "cifar-10-batches-py" / "data_batch_1", tmp_path / "marker"
    batch.write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(InputError, match=f"corrupt file {batch} \\(md5 differs"):
        data.load("cifar10", data_dir=tmp_path)
    assert not marker.exists()
    accept_fake_cifar(tmp_path, monkeypatch)  # the control: once its md5 is the published one, it is loaded
    with pytest.raises(InputError):
        data.load("cifar10", data_dir=tmp_path)
    assert marker.read_text() == "unpickled"


def test_cifar10_loads_channels_first_with_the_official_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = fake_cifar(tmp_path / "build")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:  # as downloaded: the archive only
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    accept_fake_cifar(tmp_path / "build", monkeypatch)
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))  # to look inside it
    ds = data.load("cifar10", val_fraction=0.2, data_dir=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.n_classes == 10
    assert [len(ds.train), len(ds.val), len(ds.test)] == [40, 10, 10]
    assert torch.equal(ds.test.x, torch.from_numpy(images[50:]).float().div(255))  # R, G, B planes in order
    assert torch.equal(ds.test.y, torch.from_numpy(labels[50:]))
    assert not (tmp_path / "cifar-10-batches-py").exists()  # unpacked into the cache, not the data folder
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()) == sorted(CIFAR_FILES)


def test_datasets_without_files_need_no_folder(tmp_path: Path) -> None:
    data.check_available("digits", tmp_path / "nowhere", download=True)
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(ValueError, match=r"digits, dsprites, mnist5k \(embedded\); cifar10, fashion_mnist"):
        data.check_available("mnist60k")


# -- the discretized logistic likelihood (8-bit images such as cifar10) ---------------------


@pytest.mark.parametrize("mean", [-0.3, 0.0, 0.2, 0.45, 0.999, 1.0, 1.4])
@pytest.mark.parametrize("log_scale", [-7.0, -4.0, -2.0, 0.0, 2.0])
def test_discretized_logistic_pmf_sums_to_one_over_256_levels(mean: float, log_scale: float) -> None:
    likelihood = LIKELIHOODS["discretized_logistic"]()
    with torch.no_grad():
        likelihood.log_scale.fill_(log_scale)
        levels = (torch.arange(256, dtype=torch.float32) / 255).view(256, 1, 1, 1)  # one pixel per "image"
        pmf = torch.exp(-likelihood.nll(torch.full_like(levels, mean), levels).double())
    assert pmf.min() >= 0
    assert pmf.sum().item() == pytest.approx(1.0, abs=1e-4)
    if log_scale <= -4.0:  # narrow: the mode is the bin of the (clamped) mean
        assert int(pmf.argmax()) == round(min(max(mean, 0.0), 1.0) * 255)


def test_discretized_logistic_scores_images_with_finite_gradients() -> None:
    likelihood = LIKELIHOODS["discretized_logistic"]()
    x = torch.randint(0, 256, (4, 3, 32, 32)).float() / 255
    params = (torch.randn(4, 3, 32, 32) * 3).requires_grad_()  # far outside [0, 1] too
    nll = likelihood.nll(params, x)
    assert nll.shape == (4,) and torch.isfinite(nll).all() and (nll > 0).all()
    nll.sum().backward()
    assert torch.isfinite(params.grad).all() and torch.isfinite(likelihood.log_scale.grad)
    assert torch.equal(likelihood.mean(params), params.clamp(0, 1))


def test_download_true_in_the_study_fetches_before_the_study_starts(tmp_path: Path, mirror: Path) -> None:
    """`dataset.download: true` (or `run --download`) reaches the check run before any store is
    opened; it is no trial parameter (workers with and without --download run the same trials)."""
    from vaebench import trial
    from vaebench.cli import commands as cli
    from vaebench.config import StudySpec

    raw = {"name": "full", "dataset": {"name": "mnist", "download": True}, "search": {"space": {"seed": [0]}}}
    spec = StudySpec.model_validate(raw | {"search": {"sampler": "grid", "space": {"seed": [0]}}})
    assert "dataset.download" not in spec.with_params({"seed": 0}).flat()
    trial.check_data(spec, tmp_path / "full.yaml", str(tmp_path / "fresh"))
    assert sorted(p.name for p in (tmp_path / "fresh" / "MNIST" / "raw").iterdir()) == sorted(IDX_FILES)
    assert cli.build_parser().parse_args(["run", "--study", "full", "--download"]).download is True


# -- the real MNIST files (../shared/data beside the checkout, as in CI) ----------------------

SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(),
                    reason=f"the real MNIST files are not in {SHARED_DATA} (CI and the reference runs have them)")
def test_real_mnist_from_a_read_only_folder_is_the_official_split() -> None:
    before = sorted((p, p.stat().st_mtime_ns) for p in SHARED_DATA.rglob("*"))
    ds = data.load("mnist", seed=0, binarize="dynamic", val_fraction=0, data_dir=SHARED_DATA)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (60_000, 0, 10_000)
    assert torch.bincount(ds.train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(ds.train.x.mean().item() - 0.1307) < 5e-4 and abs(ds.train.x.std().item() - 0.3081) < 5e-4
    assert set(ds.test.x.unique().tolist()) == {0.0, 1.0}  # the test digits binarized once, fixed
    assert sorted((p, p.stat().st_mtime_ns) for p in SHARED_DATA.rglob("*")) == before  # nothing written
