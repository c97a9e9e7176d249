"""Models from outside the package: plugin files, import paths, the entry-point group."""
from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vaebench import models
from vaebench.config import load_study
from vaebench.errors import InputError
from vaebench.models import plugins, registry

PLUGIN = '''
import torch
from torch import nn
from vaebench.models import LossRecord, register


@register("model", "{name}")
class TinyAE(nn.Module):
    """A deterministic autoencoder that brings its own loss: it declares codes only."""

    capabilities = frozenset({{"codes"}})

    def __init__(self, input_shape, latent_dim, width=8):
        super().__init__()
        d = input_shape[0] * input_shape[1] * input_shape[2]
        self.shape = input_shape
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, latent_dim))
        self.dec = nn.Linear(latent_dim, d)

    def codes(self, x):
        return self.enc(x)

    def reconstruct(self, x):
        return torch.sigmoid(self.dec(self.enc(x))).view(-1, *self.shape)

    forward = reconstruct  # what the logged MLflow model serves

    def loss(self, x, kl_weight=1.0, generator=None):
        logits = self.dec(self.enc(x))
        recon = nn.functional.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        return LossRecord(loss=recon.mean(), recon=recon)
'''


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch):
    """Registries and loaded plugins as they were, whatever the test registers."""
    for name, reg in registry.REGISTRIES.items():
        monkeypatch.setitem(registry.REGISTRIES, name, reg)
    monkeypatch.setattr(registry, "MODELS", dict(registry.MODELS))
    monkeypatch.setitem(registry.REGISTRIES, "model", registry.MODELS)
    monkeypatch.setattr(registry, "ORIGINS", dict(registry.ORIGINS))
    monkeypatch.setattr(plugins, "ORIGINS", registry.ORIGINS)
    monkeypatch.setattr(plugins, "REGISTRIES", registry.REGISTRIES)
    monkeypatch.setattr(plugins, "_LOADED", {})
    yield


def write_plugin(folder: Path, name: str, source: str | None = None) -> Path:
    path = folder / f"{name}.py"
    path.write_text(source if source is not None else PLUGIN.format(name=name))
    return path


def test_a_plugin_file_registers_a_whole_model_marked_with_its_origin(tmp_path: Path, clean_registry) -> None:
    path = write_plugin(tmp_path, "tiny_ae")
    digest = plugins.load_file("tiny_ae.py", tmp_path)
    assert digest == plugins.file_hash(path) and plugins.loaded_files() == {str(path.resolve()): digest}
    assert plugins.load_file(path) == digest  # once per process
    assert models.is_whole_model("tiny_ae")
    assert f"tiny_ae (plugin {path.resolve()})" in models.describe()["models"]
    model = models.build("tiny_ae", latent_dim=3, input_shape=(1, 8, 8), width=4)
    assert model.config == {"arch": "tiny_ae", "latent_dim": 3, "input_shape": (1, 8, 8), "width": 4}
    assert models.capabilities(model) == {"codes"}
    record = model.loss(torch.rand(5, 1, 8, 8))
    assert record.recon.shape == (5,) and record.elbo is None
    with pytest.raises(ValueError, match="takes no objective"):
        models.build("tiny_ae", objective="vae", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="unknown hyperparameter 'depth'"):
        models.build("tiny_ae", input_shape=(1, 8, 8), depth=2)


@pytest.mark.parametrize(("source", "line", "what"), [
    ("x = 1\nraise RuntimeError('no GPU here')\n", 2, "RuntimeError: no GPU here"),
    ("def f(:\n", 1, "SyntaxError"),
    ("import numpy\n\n\nimport not_a_module_anywhere\n", 4, "ModuleNotFoundError"),
])
def test_an_error_inside_a_plugin_is_one_line_with_its_file_and_line(tmp_path: Path, clean_registry, source: str,
                                                                     line: int, what: str) -> None:
    path = write_plugin(tmp_path, "broken", source)
    with pytest.raises(InputError) as err:
        plugins.load_file(path)
    message = str(err.value)
    assert message.startswith(f"{path.resolve()}:{line}: plugin failed: ") and what in message
    assert "\n" not in message and plugins.loaded_files() == {}


def test_a_missing_plugin_file_is_named(tmp_path: Path, clean_registry) -> None:
    with pytest.raises(InputError, match="nowhere.py: plugin file not found"):
        plugins.load_file("nowhere.py", tmp_path)


def test_a_name_taken_already_is_refused_with_where_it_came_from(tmp_path: Path, clean_registry) -> None:
    write_plugin(tmp_path, "mlp", PLUGIN.format(name="mlp"))
    with pytest.raises(InputError, match="arch 'mlp' is registered already|model 'mlp' is registered already"):
        plugins.load_file(tmp_path / "mlp.py")


def test_a_study_file_names_its_plugins_next_to_it(tmp_path: Path, clean_registry) -> None:
    write_plugin(tmp_path, "study_ae")
    study = {"name": "own", "plugins": ["study_ae.py"], "dataset": {"name": "digits"},
             "model": {"arch": "study_ae", "latent_dim": 2, "width": 6},
             "train": {"epochs": 1}, "search": {"sampler": "grid", "objective": "val_recon", "direction": "minimize",
                                                "space": {"seed": [0]}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    spec, _ = load_study(str(tmp_path / "study.yaml"))
    assert spec.plugins == ("study_ae.py",)
    assert spec.model.arch == "study_ae" and spec.model.objective is None and spec.model.hparams()["width"] == 6
    study["model"]["colour"] = "red"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(InputError, match="model.colour: unknown setting for model 'study_ae' "
                                         r"\(it takes: arch, latent_dim, width\)"):
        load_study(str(tmp_path / "study.yaml"))


def test_an_unknown_arch_lists_architectures_and_whole_models_plugins_included(tmp_path: Path, clean_registry) -> None:
    """A study file and check-model name every model.arch there is, a plugin's whole model too."""
    write_plugin(tmp_path, "listed_ae")
    study = {"name": "own", "plugins": ["listed_ae.py"], "dataset": {"name": "digits"}, "model": {"arch": "listed_aee"},
             "search": {"sampler": "grid", "objective": "val_recon", "direction": "minimize", "space": {"seed": [0]}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    with pytest.raises(InputError) as err:
        load_study(str(tmp_path / "study.yaml"))
    assert "unknown arch 'listed_aee'; known: conv, mlp, tutorial_mlp; whole models: " in str(err.value)
    assert "listed_ae" in str(err.value).split("whole models: ")[1]
    from vaebench.cli import check_model

    parser = argparse.ArgumentParser()
    check_model.add_arguments(parser)
    args = parser.parse_args(["listed_aee", "--plugin", str(tmp_path / "listed_ae.py")])
    assert check_model.run(args) == 2
    with pytest.raises(ValueError, match=r"whole models: .*listed_ae"):
        models.build("listed_aee", input_shape=(1, 8, 8))


def test_an_import_path_names_a_model_without_registering_it(tmp_path: Path, clean_registry,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user_pkg").mkdir()
    (tmp_path / "user_pkg" / "__init__.py").write_text("")
    (tmp_path / "user_pkg" / "nets.py").write_text(PLUGIN.replace('@register("model", "{name}")\n', "")
                                                   .replace("{{", "{").replace("}}", "}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    model = models.build("user_pkg.nets:TinyAE", latent_dim=2, input_shape=(1, 8, 8))
    assert type(model).__name__ == "TinyAE"
    assert registry.describe_origin("model", "user_pkg.nets:TinyAE") == "import path user_pkg.nets:TinyAE"
    with pytest.raises(ValueError, match="cannot import"):
        models.build("user_pkg.nets:Nothing", input_shape=(1, 8, 8))
    sys.modules.pop("user_pkg.nets", None)
    sys.modules.pop("user_pkg", None)


def test_installed_packages_register_through_the_entry_point_group(tmp_path: Path, clean_registry,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ep_models.py").write_text(PLUGIN.format(name="ep_ae"))
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(name="mine", value="ep_models", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [point] if group == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", False)
    assert "ep_ae (entry point ep_models)" in models.describe()["models"]
    sys.modules.pop("ep_models", None)


def test_a_plugin_trains_and_is_scored_with_nan_where_it_lacks_a_capability(tmp_path: Path, clean_registry) -> None:
    from vaebench import data, metrics, train

    plugins.load_file(write_plugin(tmp_path, "scored_ae"))
    ds = data.load("digits")
    model = models.build("scored_ae", latent_dim=3, input_shape=ds.input_shape)
    history = train.fit(model, ds, epochs=1, batch_size=64, lr=1e-3, seed=0)
    assert torch.isfinite(torch.tensor(history.last["val_recon"]))
    scores = metrics.evaluate(model, ds, iwae_k=3)
    assert scores["test_recon"] > 0 and scores["test_nmi"] > 0
    assert all(scores[f"test_{m}"] != scores[f"test_{m}"] for m in ("elbo", "kl", "iwae_ll", "active_units"))
    assert metrics.skipped(model, iwae_k=3)["test_active_units"] == "skipped: no posterior"


def test_kl_is_analytic_where_torch_knows_it_else_monte_carlo_with_the_count_stated() -> None:
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    from vaebench.models.base import diagonal_gaussian, gaussian_kl_per_dim, kl_divergence, standard_normal

    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3) * 0.3
    q = diagonal_gaussian(mu, logvar)
    kl, how = kl_divergence(q, standard_normal(3))
    assert how == "analytic"
    torch.testing.assert_close(kl, gaussian_kl_per_dim(mu, logvar).sum(1))
    # A mixture prior has no closed form: Monte Carlo, unbiased, the sample count named.
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(2)),
                                Independent(Normal(torch.tensor([[-1.0] * 3, [1.0] * 3]), torch.ones(2, 3)), 1))
    estimate, how = kl_divergence(q, mixture, samples=20_000)
    assert how == "monte carlo, 20000 samples"
    z = q.sample((200_000,))
    truth = (q.log_prob(z) - mixture.log_prob(z)).mean(0)
    torch.testing.assert_close(estimate, truth, rtol=0, atol=0.05)
    assert (estimate > 0).all()


def test_a_seeded_monte_carlo_kl_draws_each_examples_noise_apart_from_its_batch() -> None:
    """With a generator, an example's draws are the same alone and inside a bigger batch, so
    a Monte Carlo KL is per example (check-model's per_example); the given draws are used as is."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    from vaebench.models.base import diagonal_gaussian, draw, kl_divergence

    mu, logvar = torch.randn(32, 3), torch.randn(32, 3) * 0.3  # 16 of them: whole blocks of torch's randn
    mixture = MixtureSameFamily(Categorical(logits=torch.zeros(2)), Independent(Normal(torch.randn(2, 3), torch.ones(2, 3)), 1))
    big = draw(diagonal_gaussian(mu, logvar), 5, torch.Generator().manual_seed(1))
    small = draw(diagonal_gaussian(mu[:16], logvar[:16]), 5, torch.Generator().manual_seed(1))
    assert big.shape == (5, 32, 3) and torch.equal(small, big[:, :16])
    kl, how = kl_divergence(diagonal_gaussian(mu, logvar), mixture, z=big)
    assert how == "monte carlo, 5 samples"
    torch.testing.assert_close(kl, (diagonal_gaussian(mu, logvar).log_prob(big) - mixture.log_prob(big)).mean(0))


def test_capabilities_are_checked_names() -> None:
    vae = models.build("mlp", latent_dim=2, input_shape=(1, 8, 8), hidden=(8,))
    ae = models.build("mlp", objective="ae", latent_dim=2, input_shape=(1, 8, 8), hidden=(8,))
    assert models.capabilities(vae) == set(models.CAPABILITIES) and models.lacks(vae, "posterior") is None
    assert models.lacks(ae, "posterior", "codes", "sample") == "skipped: no posterior, sample"

    class Typo(torch.nn.Module):
        capabilities = frozenset({"posterier"})

    with pytest.raises(ValueError, match="unknown capabilities \\['posterier'\\]"):
        models.capabilities(Typo())


def test_the_manifest_records_plugin_hashes_and_replay_names_a_changed_file(tmp_path: Path, clean_registry) -> None:
    from vaebench import manifest
    from vaebench.cli import replay

    path = write_plugin(tmp_path, "recorded_ae")
    plugins.load_file(path)
    recorded = manifest.collect({}, {"digits": "abc"}, command=["vaebench"])
    assert recorded["plugins"] == {str(path.resolve()): plugins.file_hash(path)}
    assert not [c for c in replay.changes(recorded, recorded, "digits") if "plugin" in c.text]
    now = recorded | {"plugins": {str(path.resolve()): "f" * 64}}
    (change,) = [c for c in replay.changes(recorded, now, "digits") if "plugin" in c.text]
    assert change.text.startswith(f"plugin {path.resolve()} sha256 {plugins.file_hash(path)[:12]} -> ffffffffffff")
    path.unlink()
    with pytest.raises(InputError, match="plugins: .*recorded_ae.py: no such file"):
        replay.load_plugins(recorded, tmp_path / "manifest.json")


def test_list_names_a_plugin_model_and_its_file(tmp_path: Path, clean_registry, capsys: pytest.CaptureFixture) -> None:
    from vaebench import cli

    path = write_plugin(tmp_path, "listed_ae")
    assert cli.main(["list", "--plugin", str(path)]) == 0
    out = capsys.readouterr().out
    (line,) = [row for row in out.splitlines() if row.startswith("models:")]
    assert line.split(None, 1)[1] == f"listed_ae (plugin {path.resolve()})"
    assert "mlp" in out and "beta_vae" in out


@pytest.mark.slow
def test_run_with_a_broken_plugin_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    from helpers import vaebench

    write_plugin(tmp_path, "bad_plugin", "import torch\n\nraise ValueError('weights missing')\n")
    study = {"name": "own", "plugins": ["bad_plugin.py"], "dataset": {"name": "digits"}, "model": {"arch": "mlp"},
             "search": {"sampler": "grid", "space": {"seed": [0]}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    result = vaebench(tmp_path, "run", "--study", "study.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"vaebench: error: {(tmp_path / 'bad_plugin.py').resolve()}:3: plugin failed: "
                                     "ValueError: weights missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_plugin.py", "study.yaml"]


@pytest.mark.slow
def test_a_plugin_model_runs_as_a_study_with_nan_and_reasons_where_it_lacks_a_capability(tmp_path: Path) -> None:
    from helpers import mlflow_runs, vaebench

    write_plugin(tmp_path, "study_run_ae")
    study = {"name": "own", "plugins": ["study_run_ae.py"], "dataset": {"name": "mnist5k"},
             "model": {"arch": "study_run_ae", "latent_dim": 3},
             "train": {"epochs": 1}, "eval": {"generation_samples": 200},
             "search": {"sampler": "grid", "objective": "val_recon", "direction": "minimize", "space": {"seed": [0]}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    result = vaebench(tmp_path, "run", "--study", "study.yaml", "--no-progress")
    assert result.returncode == 0, result.stderr
    _, (run,) = mlflow_runs(tmp_path, "own")
    m, tags = run.data.metrics, run.data.tags
    assert m["test_recon"] > 0 and m["test_nmi"] > 0 and m["test_fd_recon"] > 0
    for name in ("test_elbo", "test_kl", "test_active_units", "test_fd_prior"):
        assert name not in m, name  # MLflow holds no value (vaebench logs finite numbers only), never a 0
    assert tags["vaebench.skipped.test_elbo"] == "skipped: no elbo"
    assert tags["vaebench.skipped.test_active_units"] == "skipped: no posterior"
    assert tags["vaebench.skipped.test_fd_prior"] == "skipped: no sample"
    report = (tmp_path / "results" / "own" / "leaderboard.csv").read_text()
    assert "test_recon" in report
