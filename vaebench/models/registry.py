"""build(): names + hyperparameters -> VAEModel, with errors that list what is valid.

Hyperparameters are routed by signature: a key goes to the architecture builder if it
is one of its keyword arguments, to the objective if it is one of the objective's. So a
new architecture or objective declares its hyperparameters just by its signature.
"""
from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Sequence
from typing import Any

from .architectures import ACTIVATIONS, ARCHITECTURES
from .likelihoods import LIKELIHOODS
from .model import VAEModel
from .objectives import OBJECTIVE_SETUP, OBJECTIVES

# Arguments the framework passes itself; everything else in a signature is a hyperparameter.
ARCH_RESERVED = frozenset({"input_shape", "latent_dim"})
OBJECTIVE_RESERVED = frozenset({"model", "x", "kl_weight", "generator"})


def lookup(registry: dict[str, Any], kind: str, name: str) -> Any:
    """registry[name], or a ValueError that lists the known names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


def keyword_defaults(fn: Callable[..., Any], reserved: frozenset[str]) -> dict[str, Any]:
    """{name: default} of fn's keyword-capable parameters outside `reserved`.

    A parameter without a default maps to inspect.Parameter.empty (required).
    """
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind in kinds and p.name not in reserved
    }


def arch_hparams(arch: str) -> dict[str, Any]:
    """The architecture's hyperparameters and their defaults, e.g. {"hidden": (512, 256)}."""
    return keyword_defaults(lookup(ARCHITECTURES, "arch", arch), ARCH_RESERVED)


def objective_hparams(objective: str) -> dict[str, Any]:
    """The objective's hyperparameters and their defaults, e.g. {"beta": 1.0}."""
    return keyword_defaults(lookup(OBJECTIVES, "objective", objective), OBJECTIVE_RESERVED)


def describe() -> dict[str, list[str]]:
    """The registered names, sorted (for the CLI's `list`)."""
    return {
        "architectures": sorted(ARCHITECTURES),
        "activations": sorted(ACTIVATIONS),
        "objectives": sorted(OBJECTIVES),
        "likelihoods": sorted(LIKELIHOODS),
    }


def checked_latent_dim(latent_dim: Any) -> int:
    try:
        value = operator.index(latent_dim)
    except TypeError:
        raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}") from None
    if isinstance(latent_dim, bool) or value < 1:
        raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
    return value


def checked_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)!r}")
    return shape  # type: ignore[return-value]


def split_hparams(arch: str, objective: str, hparams: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Route each hyperparameter to the architecture or the objective; reject the rest."""
    arch_keys, objective_keys = arch_hparams(arch), objective_hparams(objective)
    for key in hparams:
        if key in arch_keys and key in objective_keys:
            raise ValueError(f"hyperparameter {key!r} is ambiguous: both arch {arch!r} and objective {objective!r} take it")
        if key not in arch_keys and key not in objective_keys:
            valid = sorted({*arch_keys, *objective_keys})
            raise ValueError(
                f"unknown hyperparameter {key!r} for arch {arch!r} and objective {objective!r}; "
                f"valid: {', '.join(valid) if valid else '(none)'}"
            )
    return (
        {k: v for k, v in hparams.items() if k in arch_keys},
        {k: v for k, v in hparams.items() if k in objective_keys},
    )


def build(
    arch: str,
    objective: str,
    latent_dim: int,
    likelihood: str,
    input_shape: Sequence[int],
    **hparams: Any,
) -> VAEModel:
    """A fresh VAEModel, e.g. build(arch="conv", objective="beta_vae", latent_dim=10,
    likelihood="bernoulli", input_shape=(1, 28, 28), beta=4.0).

    The model keeps the full hyperparameters (defaults filled in), so `build(**m.config)`
    rebuilds it and trackers can log every value that was in effect.
    """
    builder = lookup(ARCHITECTURES, "arch", arch)
    lookup(OBJECTIVES, "objective", objective)
    likelihood_cls = lookup(LIKELIHOODS, "likelihood", likelihood)
    latent_dim = checked_latent_dim(latent_dim)
    shape = checked_input_shape(input_shape)
    arch_given, objective_given = split_hparams(arch, objective, hparams)
    encoder, decoder = builder(shape, latent_dim, **arch_given)
    model = VAEModel(
        encoder,
        decoder,
        likelihood_cls(),
        arch=arch,
        objective=objective,
        likelihood_name=likelihood,
        latent_dim=latent_dim,
        input_shape=shape,
        arch_hparams={**arch_hparams(arch), **arch_given},
        objective_hparams={**objective_hparams(objective), **objective_given},
    )
    OBJECTIVE_SETUP.get(objective, no_setup)(model)
    return model


def no_setup(model: VAEModel) -> None:
    """Most objectives keep no state on the model."""
