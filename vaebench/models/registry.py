"""The registries (architectures, objectives, likelihoods, whole models) and build():
names + hyperparameters -> a model, with errors that list what is valid.

Hyperparameters are routed by signature: a key goes to the architecture builder if it
is one of its keyword arguments, to the objective if it is one of the objective's. So a
new architecture or objective declares its hyperparameters just by its signature. A whole
model (`register("model")`) is a class or function `(input_shape, latent_dim, **hparams)` that
returns a module fulfilling the contract of models/base.py; it brings its own loss, so it takes
no objective or likelihood. Each entry remembers where it came from (ORIGINS), for `list`.
"""
from __future__ import annotations

import contextlib
import inspect
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import nn

from .architectures import ACTIVATIONS, ARCHITECTURES
from .likelihoods import LIKELIHOODS
from .model import VAEModel
from .objectives import OBJECTIVE_SETUP, OBJECTIVES

# Whole models, brought by plugins: builders of modules that fulfil the contract themselves.
MODELS: dict[str, Callable[..., nn.Module]] = {}
REGISTRIES: dict[str, dict[str, Any]] = {
    "arch": ARCHITECTURES, "objective": OBJECTIVES, "likelihood": LIKELIHOODS, "model": MODELS,
}
ORIGINS: dict[tuple[str, str], str] = {}  # (kind, name) -> where it came from; absent: built-in
_ORIGIN = ["built-in"]


@contextlib.contextmanager
def origin(where: str) -> Iterator[None]:
    """Entries registered inside the block are marked as coming from `where`."""
    _ORIGIN.append(where)
    try:
        yield
    finally:
        _ORIGIN.pop()


def register(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Decorator: add an architecture, objective, likelihood or whole model to its registry,
    under `name` (default: its own __name__). A name taken already is refused."""
    if kind not in REGISTRIES:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(REGISTRIES)}")

    def add(entry: Any) -> Any:
        key = name or entry.__name__
        if any(key in registry for registry in (REGISTRIES[kind], *(() if kind not in ("arch", "model") else (ARCHITECTURES, MODELS)))):
            raise ValueError(f"{kind} {key!r} is registered already ({describe_origin(kind, key)})")
        REGISTRIES[kind][key] = entry
        ORIGINS[(kind, key)] = _ORIGIN[-1]
        return entry

    return add


def describe_origin(kind: str, name: str) -> str:
    return ORIGINS.get((kind, name), "built-in")


# Arguments the framework passes itself; everything else in a signature is a hyperparameter.
ARCH_RESERVED = frozenset({"input_shape", "latent_dim"})
OBJECTIVE_RESERVED = frozenset({"model", "x", "kl_weight", "generator"})


def lookup(registry: dict[str, Any], kind: str, name: str) -> Any:
    """registry[name] (an import path `package.module:attr` is imported on first use), or a
    ValueError that lists the known names."""
    from vaebench.models import plugins

    plugins.load_entry_points()
    if name not in registry and ":" in name:
        plugins.resolve("model" if registry is MODELS else kind, name)
    if name not in registry:
        known = ", ".join(sorted(registry))
        if registry is ARCHITECTURES:  # model.arch also takes a whole model: name those too
            known += f"; whole models: {', '.join(sorted(MODELS)) or '(none registered)'}"
        raise ValueError(f"unknown {kind} {name!r}; known: {known}")
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


def is_whole_model(arch: str) -> bool:
    """True when `arch` names a whole model (it brings its own loss) rather than an
    encoder/decoder architecture; an import path is a whole model when it names a class or
    function registered as one, or an nn.Module class with a `loss` method."""
    if arch in MODELS:
        return True
    if arch in ARCHITECTURES or ":" not in arch:
        return False
    from vaebench.models import plugins

    found = plugins.resolve("arch", arch)
    if isinstance(found, type) and issubclass(found, nn.Module) and hasattr(found, "loss"):
        ARCHITECTURES.pop(arch)
        MODELS[arch] = found
        ORIGINS[("model", arch)] = ORIGINS.pop(("arch", arch))
        return True
    return False


def arch_hparams(arch: str) -> dict[str, Any]:
    """The architecture's (or whole model's) hyperparameters and their defaults, e.g.
    {"hidden": (512, 256)}."""
    if is_whole_model(arch):
        return keyword_defaults(MODELS[arch], ARCH_RESERVED | {"self"})
    return keyword_defaults(lookup(ARCHITECTURES, "arch", arch), ARCH_RESERVED)


def objective_hparams(objective: str) -> dict[str, Any]:
    """The objective's hyperparameters and their defaults, e.g. {"beta": 1.0}."""
    return keyword_defaults(lookup(OBJECTIVES, "objective", objective), OBJECTIVE_RESERVED)


def describe() -> dict[str, list[str]]:
    """The registered names, sorted, each with where it comes from (for the CLI's `list`)."""
    from vaebench.models import plugins

    plugins.load_entry_points()

    def named(kind: str, registry: dict[str, Any]) -> list[str]:
        return [name if describe_origin(kind, name) == "built-in" else f"{name} ({describe_origin(kind, name)})"
                for name in sorted(registry)]

    return {
        "architectures": named("arch", ARCHITECTURES),
        "models": named("model", MODELS),
        "activations": sorted(ACTIVATIONS),
        "objectives": named("objective", OBJECTIVES),
        "likelihoods": named("likelihood", LIKELIHOODS),
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


def build_whole(arch: str, latent_dim: int, input_shape: Sequence[int], **hparams: Any) -> nn.Module:
    """A whole model from MODELS; it keeps `config` so that build(**model.config) rebuilds it."""
    latent_dim = checked_latent_dim(latent_dim)
    shape = checked_input_shape(input_shape)
    known = arch_hparams(arch)
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise ValueError(f"unknown hyperparameter {unknown[0]!r} for model {arch!r}; valid: {', '.join(sorted(known)) or '(none)'}")
    model = MODELS[arch](input_shape=shape, latent_dim=latent_dim, **hparams)
    if not isinstance(model, nn.Module) or not callable(getattr(model, "loss", None)):
        raise TypeError(f"model {arch!r} must build an nn.Module with a loss(x) method, got {type(model).__name__}")
    if not hasattr(model, "config"):
        model.config = {"arch": arch, "latent_dim": latent_dim, "input_shape": shape, **known, **hparams}
    return model


def build(
    arch: str,
    objective: str | None = None,
    latent_dim: int = 10,
    likelihood: str | None = None,
    input_shape: Sequence[int] = (1, 28, 28),
    **hparams: Any,
) -> nn.Module:
    """A fresh VAEModel, e.g. build(arch="conv", objective="beta_vae", latent_dim=10,
    likelihood="bernoulli", input_shape=(1, 28, 28), beta=4.0).

    The model keeps the full hyperparameters (defaults filled in), so `build(**m.config)`
    rebuilds it and trackers can log every value that was in effect. A whole model (a plugin's)
    takes no objective or likelihood: it brings its own loss.
    """
    if is_whole_model(arch):
        if objective is not None or likelihood is not None:
            raise ValueError(f"model {arch!r} brings its own loss: it takes no objective or likelihood")
        return build_whole(arch, latent_dim, input_shape, **hparams)
    objective, likelihood = objective or "vae", likelihood or "bernoulli"
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
