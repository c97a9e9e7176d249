"""fit(): reproducible, measures only training steps, stops on divergence, runs callbacks."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from vaebench import data, models, train
from vaebench.errors import DivergenceError


def make(seed: int = 0, objective: str = "vae") -> models.VAEModel:
    torch.manual_seed(seed)
    return models.build(arch="mlp", objective=objective, latent_dim=3, likelihood="bernoulli",
                        input_shape=(1, 8, 8), hidden=(32,))


@pytest.fixture(scope="module")
def digits() -> data.Dataset:
    return data.load("digits", seed=0)


def fit(model: models.VAEModel, ds: data.Dataset, **kw) -> train.History:
    args = {"epochs": 2, "batch_size": 64, "lr": 3e-3, "seed": 0} | kw
    return train.fit(model, ds, **args)


def test_same_seed_same_numbers_different_seed_different(digits: data.Dataset) -> None:
    a = fit(make(0), digits).epochs
    b = fit(make(0), digits).epochs
    c = fit(make(1), digits, seed=1).epochs
    assert a == b
    assert a[-1]["val_elbo"] != c[-1]["val_elbo"]


@pytest.mark.parametrize(("arch", "step"), [("mlp", "eager"), ("conv", "eager"), ("mlp", "fused"), ("conv", "fused")])
def test_fit_is_the_textbook_loop_bit_for_bit(digits: data.Dataset, arch: str, step: str) -> None:
    """fit's lean step loop (no per-step sync, preallocated batches, losses summed per epoch)
    must do exactly what a hand-written VAE loop does with the same generator: randperm
    batches, one reparameterised z per example, Bernoulli NLL + analytic KL summed per example,
    batch mean, then Adam: the default Adam for `eager` (fit runs foreach), `Adam(fused=True)`
    for `fused` (fit calls its kernel directly). Equal parameters after two epochs prove it,
    and make the throughput benchmark against such a loop a comparison of the same work."""
    hparams = {"channels": (8, 16), "hidden": 32} if arch == "conv" else {"hidden": (32,)}
    torch.manual_seed(0)
    model = models.build(arch=arch, objective="vae", latent_dim=3, likelihood="bernoulli",
                         input_shape=digits.input_shape, **hparams)
    by_hand = copy.deepcopy(model)

    history = fit(model, digits, epochs=2, batch_size=64, lr=3e-3, seed=0, step=step)
    assert history.step == step

    x, n, batch = digits.train.x, len(digits.train), 64
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(by_hand.parameters(), lr=3e-3, fused=step == "fused" or None)
    for _ in range(2):
        total = 0.0
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            xb = x[order[i : i + batch]]
            mu, logvar = by_hand.encoder(xb)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
            recon = F.binary_cross_entropy_with_logits(by_hand.decoder(z), xb, reduction="none").sum(dim=(1, 2, 3))
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
            loss = (recon + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)  # the last epoch's summed loss

    for (name, ours), theirs in zip(model.named_parameters(), by_hand.parameters()):
        assert torch.equal(ours, theirs), name
    assert history.last["train_loss"] == pytest.approx(total / n, rel=1e-6)


def test_history_and_throughput(digits: data.Dataset) -> None:
    history = fit(make(), digits, epochs=3)
    assert [e["epoch"] for e in history.epochs] == [1.0, 2.0, 3.0]
    assert set(history.last) == {"epoch", "train_loss", "val_elbo", "val_recon", "val_kl"}
    assert history.samples_seen == 3 * digits.train.x.shape[0]
    assert 0 < history.train_seconds and history.train_samples_per_s == history.samples_seen / history.train_seconds
    assert history.last["val_elbo"] == pytest.approx(-(history.last["val_recon"] + history.last["val_kl"]))
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]


def test_autoencoder_has_no_elbo(digits: data.Dataset) -> None:
    history = fit(make(objective="ae"), digits, epochs=1)
    assert "val_elbo" not in history.last and "val_kl" not in history.last and "val_recon" in history.last


def test_non_finite_loss_stops_with_the_epoch_named(digits: data.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make()
    real_loss = model.loss
    calls = {"n": 0}

    def exploding(x, **kw):
        calls["n"] += 1
        record = real_loss(x, **kw)
        if calls["n"] > 25:  # second epoch (20 steps per epoch at batch 64)
            record.loss = record.loss * math.nan
        return record

    monkeypatch.setattr(model, "loss", exploding)
    with pytest.raises(DivergenceError, match="epoch 2"):
        fit(model, digits, epochs=3)


def test_callbacks_see_each_epoch_and_can_stop(digits: data.Dataset) -> None:
    seen = []

    class Stop(Exception):
        pass

    def callback(epoch: int, metrics: dict) -> None:
        seen.append((epoch, metrics["val_elbo"]))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(make(), digits, epochs=5, callbacks=[callback])
    assert [e for e, _ in seen] == [1, 2]


def test_kl_warmup_weights_rise_linearly(digits: data.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make()
    weights = []
    real_loss = model.loss

    def recording(x, kl_weight=1.0, **kw):
        if model.training:  # validation passes run in eval mode at full weight
            weights.append(kl_weight)
        return real_loss(x, kl_weight=kl_weight, **kw)

    monkeypatch.setattr(model, "loss", recording)
    fit(model, digits, epochs=3, kl_warmup_epochs=2)
    steps = math.ceil(digits.train.x.shape[0] / 64)
    assert weights[0] == 0.0
    assert weights[steps] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(weights, weights[1:]))
    assert weights[2 * steps :] == [1.0] * steps


def test_dynamic_binarisation_trains_on_fresh_binary_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = data.load("digits", seed=0, binarize="dynamic")
    model = make()
    batches = []
    real_loss = model.loss

    def recording(x, **kw):
        if model.training:
            batches.append(x.clone())
        return real_loss(x, **kw)

    monkeypatch.setattr(model, "loss", recording)
    fit(model, ds, epochs=2, batch_size=len(ds.train.x))  # one full batch per epoch
    first, second = batches
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)  # resampled every epoch (order differs too, so compare sums)
    assert not torch.equal(first.sum(0), second.sum(0))


def test_cpu_device_resolves() -> None:
    assert train.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_refused() -> None:
    assert train.resolve_device("auto").type in ("cpu", "mps")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train.resolve_device("cuda")


def test_auto_compiles_only_long_fits_on_cpu_and_cuda_without_warmup() -> None:
    cpu, many = torch.device("cpu"), train.COMPILE_MIN_STEPS
    assert train.choose_step("auto", cpu, many) == "compiled"
    assert train.choose_step("auto", cpu, many - 1) == "fused"
    assert train.choose_step("auto", cpu, many, kl_warmup=True) == "fused"
    assert train.choose_step("auto", cpu, many, bf16=True) == "fused"
    assert train.choose_step("auto", torch.device("cuda"), many) == "compiled"  # the device need not exist
    assert train.choose_step("auto", torch.device("cuda"), many - 1) == "fused"
    assert train.choose_step("auto", torch.device("mps"), many) == "eager"
    assert train.choose_step("eager", cpu, many) == "eager"
    with pytest.raises(ValueError, match="constant KL weight"):
        train.choose_step("compiled", cpu, 1, kl_warmup=True)
    with pytest.raises(ValueError, match="not one of"):
        train.choose_step("fast", cpu, 1)


def test_the_compiled_loss_draws_the_eager_noise_and_leaves_the_default_generator_alone() -> None:
    model = make()
    x = torch.rand(10, 1, 8, 8).bernoulli()
    eager_gen, compiled_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    outside = torch.default_generator.get_state()
    eager = model.loss(x, generator=eager_gen)
    compiled = train.compiled_loss(model, torch.device("cpu"))(x, generator=compiled_gen)
    assert torch.equal(compiled_gen.get_state(), eager_gen.get_state())  # the same draws were consumed
    assert torch.equal(torch.default_generator.get_state(), outside)
    for name in ("loss", "recon", "kl"):  # the same z: equal up to the compiled kernels' rounding
        torch.testing.assert_close(getattr(compiled, name), getattr(eager, name), rtol=1e-5, atol=1e-5)


def test_compiled_steps_are_reproducible_and_resume_exactly(tmp_path, digits: data.Dataset) -> None:
    """The compiled step (a partial last batch included: 1,258 digits at batch 64) gives the
    same numbers for the same seed, and a fit killed mid-epoch and resumed from its checkpoint
    in a fresh model ends exactly like the uninterrupted one, on the kind the checkpoint names."""
    from vaebench import checkpoint

    class Stop(Exception):
        pass

    kw = {"epochs": 2, "seed": 5, "step": "compiled"}
    first, again = make(), make()
    a, b = fit(first, digits, **kw), fit(again, digits, **kw)
    assert a.step == b.step == "compiled" and a.epochs == b.epochs
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters()))
    assert a.last["val_elbo"] == pytest.approx(fit(make(), digits, epochs=2, seed=5, step="fused").last["val_elbo"], rel=1e-3)

    ckpt, saves = checkpoint.TrialCheckpoint(tmp_path, "abc"), []

    def save_then_die(state: dict) -> None:
        ckpt.save(state)
        saves.append(state["step"])
        if len(saves) == 25:  # mid-epoch 2
            raise Stop

    with pytest.raises(Stop):
        fit(make(), digits, **kw, checkpointing=train.Checkpointing(save_then_die, every_seconds=0.0))
    resumed = make()
    state = ckpt.load()
    assert state["step_kind"] == "compiled" and state["epoch"] == 2
    history = fit(resumed, digits, **(kw | {"step": "fused"}), checkpointing=train.Checkpointing(ckpt.save, resume=state))
    assert history.step == "compiled" and history.epochs == a.epochs
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), resumed.parameters()))


def test_a_checkpoint_from_before_step_kinds_goes_on_eager(digits: data.Dataset) -> None:
    expected = make()
    reference = fit(expected, digits, epochs=2, step="eager")
    saved: list[dict] = []
    fit(make(), digits, epochs=1, step="eager", checkpointing=train.Checkpointing(lambda s: saved.append(copy.deepcopy(s))))
    old = {k: v for k, v in saved[-1].items() if k != "step_kind"}
    resumed = make()
    history = fit(resumed, digits, epochs=2, checkpointing=train.Checkpointing(lambda s: None, resume=old))
    assert history.step == "eager" and history.epochs == reference.epochs
    assert all(torch.equal(p, q) for p, q in zip(expected.parameters(), resumed.parameters()))


def test_the_cpp_wrapper_changes_no_bit(digits: data.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the compiled loss is called through inductor's C++ wrapper: only the caller of
    the kernels changes, so the parameters after an epoch equal the Python wrapper's bit for bit."""
    with_cpp = make()
    fit(with_cpp, digits, epochs=1, step="compiled")
    real = torch.compile

    def python_wrapper(fn, **kw):
        assert kw["options"].pop("cpp_wrapper") is True
        return real(fn, **kw)

    monkeypatch.setattr(torch, "compile", python_wrapper)
    without = make()
    fit(without, digits, epochs=1, step="compiled")
    assert all(torch.equal(p, q) for p, q in zip(with_cpp.parameters(), without.parameters()))
