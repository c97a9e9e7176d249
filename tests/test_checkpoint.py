"""Checkpoints: fit resumed from a saved state ends bit for bit like an uninterrupted fit, and
files that are damaged, foreign or not checkpoints at all are refused in one line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from vaebench import checkpoint, data, models, schedules, train
from vaebench.errors import InputError


class Stop(Exception):
    """Stands in for a kill: raised right after the n-th checkpoint was written."""


def tiny(objective: str = "vae") -> tuple[models.VAEModel, data.Dataset]:
    ds = data.load("digits", seed=0, binarize="dynamic")
    torch.manual_seed(0)
    model = models.build(arch="mlp", objective=objective, latent_dim=3, likelihood="bernoulli",
                         input_shape=ds.input_shape, hidden=(16,), activation="tanh")
    return model, ds


FIT = dict(epochs=4, batch_size=64, lr=3e-3, seed=7, adam_eps=1e-4, schedule=schedules.staged(3e-3, stages=3, growth=2))


def uninterrupted(objective: str = "vae") -> tuple[dict[str, torch.Tensor], train.History]:
    model, ds = tiny(objective)
    history = train.fit(model, ds, **FIT)
    return model.state_dict(), history


def interrupted_then_resumed(tmp_path: Path, stop_after: int, every_seconds: float | None,
                             objective: str = "vae") -> tuple[dict[str, torch.Tensor], train.History, int]:
    """Fit that 'dies' right after its n-th save, then a fresh model resumed from the file."""
    ckpt = checkpoint.TrialCheckpoint(tmp_path, "abc")
    saves = 0

    def save_then_maybe_die(state: dict[str, Any]) -> None:
        nonlocal saves
        ckpt.save(state)
        saves += 1
        if saves == stop_after:
            raise Stop

    model, ds = tiny(objective)
    with pytest.raises(Stop):
        train.fit(model, ds, **FIT, checkpointing=train.Checkpointing(save_then_maybe_die, every_seconds=every_seconds))
    resumed_state = ckpt.load()
    model, ds = tiny(objective)  # a new process: fresh weights, fresh generators
    history = train.fit(model, ds, **FIT, checkpointing=train.Checkpointing(ckpt.save, resume=resumed_state,
                                                                            every_seconds=every_seconds))
    return model.state_dict(), history, resumed_state["epoch"]


def metric_history(history: train.History) -> list[dict[str, float]]:
    return history.epochs


@pytest.mark.parametrize("objective", ["vae", "iwae"])
def test_resuming_at_an_epoch_boundary_gives_the_same_numbers(tmp_path: Path, objective: str) -> None:
    expected_params, expected = uninterrupted(objective)
    params, history, resumed_at = interrupted_then_resumed(tmp_path, stop_after=2, every_seconds=None,
                                                           objective=objective)
    assert resumed_at == 3  # two epochs were done and saved
    assert metric_history(history) == metric_history(expected)
    assert history.samples_seen == expected.samples_seen
    for key, value in expected_params.items():
        assert torch.equal(params[key], value), key


def test_resuming_inside_an_epoch_gives_the_same_numbers(tmp_path: Path) -> None:
    expected_params, expected = uninterrupted()
    # every_seconds=0: a save after every step; die after the 5th, in the middle of epoch 1
    params, history, resumed_at = interrupted_then_resumed(tmp_path, stop_after=5, every_seconds=0.0)
    assert resumed_at == 1
    assert metric_history(history) == metric_history(expected)
    for key, value in expected_params.items():
        assert torch.equal(params[key], value), key


def test_the_schedule_sets_each_epochs_learning_rate() -> None:
    model, ds = tiny()
    seen: list[float] = []
    optimizer_lr = lambda epoch, m: seen.append(epoch)  # noqa: E731
    train.fit(model, ds, **FIT, callbacks=[optimizer_lr])
    sched = FIT["schedule"]
    assert [sched.lr(e) for e in seen] == [3e-3, 3e-3 * 10 ** (-1 / 7), 3e-3 * 10 ** (-1 / 7), 3e-3 * 10 ** (-2 / 7)]
    assert sched.stage_ends(4) == [1, 3, 4] and sched.total_epochs == 7


def test_a_saved_state_round_trips_every_value(tmp_path: Path) -> None:
    state = {"a": torch.arange(5), "opt": {0: {"step": torch.tensor(3.0)}, 1: {}}, "betas": (0.9, 0.999),
             "nested": [1, 2.5, None, "x", True], "rng": torch.Generator().manual_seed(3).get_state()}
    checkpoint.save(tmp_path / "c.safetensors", state, "id1")
    back = checkpoint.load(tmp_path / "c.safetensors", "id1")
    assert back["betas"] == (0.9, 0.999) and back["nested"] == [1, 2.5, None, "x", True]
    assert set(back["opt"]) == {0, 1} and torch.equal(back["opt"][0]["step"], torch.tensor(3.0))
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["rng"], state["rng"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x80\x04\x95 pickle"])
def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "trial-abc.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError) as excinfo:
        checkpoint.TrialCheckpoint(tmp_path, "abc").load()
    message = str(excinfo.value)
    assert message.startswith(f"{path}: not a vaebench checkpoint") and "\n" not in message


def test_a_checkpoint_of_another_trial_or_truncated_is_refused(tmp_path: Path) -> None:
    model, _ = tiny()
    checkpoint.TrialCheckpoint(tmp_path, "other").save({"model": model.state_dict()})
    (tmp_path / "trial-other.safetensors").rename(tmp_path / "trial-abc.safetensors")
    with pytest.raises(InputError, match="checkpoint of another trial"):
        checkpoint.TrialCheckpoint(tmp_path, "abc").load()
    path = tmp_path / "trial-abc.safetensors"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="checkpoint"):
        checkpoint.load(path, "other")


def test_a_plain_safetensors_file_without_our_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "trial-abc.safetensors"))
    with pytest.raises(InputError, match="no vaebench-checkpoint metadata"):
        checkpoint.TrialCheckpoint(tmp_path, "abc").load()


# -- a study killed mid-trial goes on from the trial's checkpoint -----------------------------

TIMING = {"train_samples_per_s", "eval_samples_per_s", "train_seconds"}


def final_metrics(folder: Path, study: str) -> tuple[Any, dict[str, float]]:
    from helpers import mlflow_runs

    (child,) = mlflow_runs(folder, study)[1]
    return child, {k: v for k, v in child.data.metrics.items() if k not in TIMING}


@pytest.mark.slow  # worker processes
def test_kill_9_mid_trial_resumes_from_its_checkpoint_with_the_same_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from mlflow import MlflowClient

    from helpers import run_cli, spawn, sql_rows, wait_until, write_study

    every_epoch = ("--checkpoint-min-seconds", "0")
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    for folder in (reference, killed):
        folder.mkdir()
        write_study(folder, "long", {"seed": [0]}, epochs=30, batch_size=16)
    monkeypatch.chdir(reference)
    code, _, err = run_cli(reference, "long.yaml", *every_epoch)
    assert code == 0, err

    def checkpointed_epoch() -> int:
        rows = sql_rows(killed / "optuna.db", "select value_json from trial_user_attributes "
                                              "where key = 'vaebench.checkpoint_epoch'")
        return max((int(r[0]) for r in rows), default=0)

    worker = spawn(killed, "run", "--study", "long.yaml", "--no-progress", "--threads", "1", *every_epoch)
    wait_until(worker, lambda: checkpointed_epoch() >= 4)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    at_kill = checkpointed_epoch()
    assert 4 <= at_kill < 31  # killed mid-trial, after some checkpoints
    (saved,) = (killed / "checkpoints" / "long").iterdir()

    monkeypatch.chdir(killed)
    code, out, err = run_cli(killed, "long.yaml", *every_epoch)
    assert code == 0, err
    assert "1/1 trials finished, 1 re-queued after their worker died" in out
    expected_run, expected = final_metrics(reference, "long")
    run, got = final_metrics(killed, "long")
    assert got == expected  # every final metric, bit for bit
    # the same child run went on where the last checkpoint was (a save may beat its record by one)
    assert run.info.status == "FINISHED" and int(run.data.tags["vaebench.resumed_at_epoch"]) in (at_kill, at_kill + 1)
    client = MlflowClient(f"sqlite:///{killed / 'mlflow.db'}")
    reference_client = MlflowClient(f"sqlite:///{reference / 'mlflow.db'}")
    for key in ("val_elbo", "train_loss"):  # the same run holds every epoch, with the same values
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert curve == {m.step: m.value for m in reference_client.get_metric_history(expected_run.info.run_id, key)}
    assert not saved.exists()  # a finished trial's checkpoint is removed
