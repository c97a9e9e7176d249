"""Study files: YAML -> validated StudySpec -> one TrialConfig per Optuna trial.

Everything a trial needs is in its TrialConfig, so the same config and seed always rebuild
the same run. Validation happens before anything is written: a bad file is reported as
`file: field: problem` and the CLI exits 2. Field types live here; checks they cannot
express (names, devices, every point of the search space) in validate.py; the strict YAML
loader and messages in the file's own keys in studyfile.py.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vaebench import schedules, validate
from vaebench.errors import InputError
from vaebench.report.literature import LiteratureSpec
from vaebench.studyfile import format_validation_error, read_study_file
from vaebench.validate import SettingError, shown

STUDY_DIRS = (Path("studies"), Path(__file__).resolve().parent / "studies")  # ./studies, then the shipped ones

Scalar = bool | int | float | str
# A list is one choice (hidden widths [512, 256]); a mapping sets several keys of a section
# together ({objective: beta_tcvae, beta: 6} under `model`), for settings that go in pairs.
Choice = Scalar | list[Scalar] | dict[str, Scalar]
Seed = Annotated[int, Field(ge=0, lt=validate.SEED_LIMIT)]
MAX_WIDTH = 1 << 20  # units in a layer or latent dims: past it a model cannot be built on any machine
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Device = Annotated[str, AfterValidator(validate.check_device_name)]


def choice_label(value: Choice) -> Scalar:
    """What Optuna stores for a categorical choice (it takes scalars only): a list choice is
    its str, `[512, 256]`; a mapping `objective=beta_tcvae beta=6`."""
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(list(value)) if isinstance(value, (list, tuple)) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetSpec(_Strict):
    name: str = "mnist5k"
    binarize: Literal["none", "static", "dynamic"] = "none"
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="0: no validation split (train on all of it)")
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: Seed = Field(0, description="split seed: fixed per study, so trial seeds vary only training")
    # How to get the files, not which data: kept out of dumps, so it is neither a trial's
    # param in MLflow nor a difference between the trials of workers started with --download.
    download: bool = Field(False, exclude=True, description="fetch a torchvision dataset missing from the data folder")

    @field_validator("val_fraction", "test_fraction")
    @classmethod
    def _holds_examples(cls, value: float, info: Any) -> float:
        """A split must hold examples of every class: a positive fraction below MIN_FRACTION
        would hold none on most datasets (a validation split can be left out with 0)."""
        if 0 < value < validate.MIN_FRACTION:
            hint = "use 0 for no validation split, or " if info.field_name == "val_fraction" else "use "
            raise ValueError(f"{value} would hold almost no examples: {hint}at least {validate.MIN_FRACTION}")
        return value

    @model_validator(mode="after")
    def _known(self) -> DatasetSpec:
        from vaebench import data

        if self.name not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.name!r}; known: {', '.join(sorted(data.DATASETS))}")
        return self


class ModelSpec(_Strict):
    """An architecture trained with an objective and a likelihood, or a whole model (a plugin's,
    bringing its own loss); it takes the hyperparameters the registry declares (by signature)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    arch: str = "mlp"
    objective: str | None = None  # vae for an architecture; none for a whole model
    latent_dim: Width = 10
    likelihood: str | None = None  # bernoulli for an architecture; none for a whole model
    beta: float | None = Field(None, ge=0)
    alpha: float | None = Field(None, ge=0, description="beta_tcvae: weight of the index-code MI")
    gamma: float | None = Field(None, ge=0, description="beta_tcvae: dim-wise KL weight; annealed_vae: |KL - C| weight")
    c_max: float | None = Field(None, ge=0, description="annealed_vae: final capacity C in nats")
    c_steps: int | None = Field(None, ge=1, description="annealed_vae: steps over which C rises from 0 to c_max")
    k: int | None = Field(None, ge=1, description="iwae: importance samples per example in training")
    hidden: Width | tuple[Width, ...] | None = Field(None, description="mlp: widths of the hidden stack; conv: one width")
    channels: Annotated[tuple[Width, ...], Field(min_length=1)] | None = None
    activation: str | None = Field(None, description="mlp, conv: hidden-unit nonlinearity (relu unless set)")

    def hparams(self) -> dict[str, Any]:
        """Architecture and objective hyper-parameters that were set (None = the default)."""
        fixed = {"arch", "objective", "latent_dim", "likelihood"}
        return {k: v for k, v in self.model_dump().items() if k not in fixed and v is not None}

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        """An architecture trains as a VAE with a Bernoulli likelihood unless told otherwise."""
        from vaebench import models

        if not isinstance(raw, dict) or not isinstance(raw.get("arch", "mlp"), str):
            return raw
        try:
            whole = models.is_whole_model(raw.get("arch", "mlp"))
        except ValueError as exc:
            raise ValueError(f"arch: {exc}") from None
        given = {k: v for k, v in raw.items() if v is not None or k not in ("objective", "likelihood")}
        return given if whole else {"objective": "vae", "likelihood": "bernoulli"} | given

    @model_validator(mode="after")
    def _known(self) -> ModelSpec:
        from vaebench import models

        if models.is_whole_model(self.arch):
            for key in ("objective", "likelihood"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: model {self.arch!r} brings its own loss; leave {key} out")
        else:
            models.arch_hparams(self.arch)  # an unknown arch: the error lists architectures and whole models
            for kind, name, known in (
                ("objective", self.objective, models.OBJECTIVES),
                ("likelihood", self.likelihood, models.LIKELIHOODS),
            ):
                if name not in known:
                    raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")
        if self.activation is not None and self.activation not in models.ACTIVATIONS:
            raise ValueError(f"activation: unknown {self.activation!r}; known: {', '.join(sorted(models.ACTIVATIONS))}")
        defaults = models.arch_hparams(self.arch)
        if self.objective is not None:
            defaults = defaults | models.objective_hparams(self.objective)
        for key, value in self.hparams().items():
            if key not in defaults:
                what = f"arch {self.arch!r} with objective {self.objective!r}" if self.objective else f"model {self.arch!r}"
                takes = ", ".join(sorted({"arch", "latent_dim", *(("objective", "likelihood") if self.objective else ()), *defaults}))
                raise SettingError(f"model.{key}", f"unknown setting for {what} (it takes: {takes})")
            if isinstance(defaults[key], tuple) != isinstance(value, (tuple, list)):  # a width vs a list of widths
                raise ValueError(f"{key}: arch {self.arch!r} takes {'a list' if isinstance(defaults[key], tuple) else 'one number'}"
                                 f", like {list(defaults[key]) if isinstance(defaults[key], tuple) else defaults[key]}")
        return self


class ScheduleSpec(_Strict):
    """A learning-rate schedule from vaebench.schedules and the parameters that were set."""

    name: str = "constant"
    stages: int | None = Field(None, ge=1, description="staged: number of stages i = 0, 1, ...")
    growth: int | None = Field(None, ge=1, description="staged: stage i lasts growth**i epochs")
    decay: float | None = Field(None, gt=0, le=1, description="staged: stage i runs at lr * decay**i")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"name"}).items() if v is not None}

    def build(self, lr: float) -> schedules.Schedule:
        return schedules.build(self.name, lr, **self.params())

    @model_validator(mode="after")
    def _known(self) -> ScheduleSpec:
        self.build(1.0)  # unknown names and parameters raise ValueError here
        return self


class TrainSpec(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    adam_eps: float = Field(1e-8, gt=0, description="Adam's epsilon (1e-4 in the IWAE paper)")
    schedule: ScheduleSpec = ScheduleSpec()
    grad_clip: float | None = Field(None, gt=0)
    kl_warmup_epochs: int = Field(0, ge=0)
    step: Literal["auto", "eager", "fused", "compiled"] = "auto"  # how a step runs (train.py); auto: the fastest exact

    @model_validator(mode="after")
    def _within_schedule(self) -> TrainSpec:
        total = self.schedule.build(self.lr).total_epochs
        if total is not None and self.epochs > total:
            raise ValueError(f"epochs: {self.epochs} is past the end of the {self.schedule.name} schedule ({total} epochs)")
        return self


class EvalSpec(_Strict):
    batch_size: int = Field(1024, ge=1)
    iwae_k: int = Field(0, ge=0, description="importance samples for test_iwae_ll; 0 = off")
    stage_points: int = Field(0, ge=0, description="test_iwae_ll_subset on N test examples at each stage end; 0 = off")
    generation: bool = Field(True, description="generation scores from the pinned feature network; false = off")
    generation_samples: int | None = Field(None, ge=2, description="images per sampler; null = the test split's size")
    generation_seed: int = Field(0, ge=0, description="the sample seed of every generation draw (not the training seed)")

    @model_validator(mode="after")
    def _stage_needs_k(self) -> EvalSpec:
        if self.stage_points and not self.iwae_k:
            raise ValueError("stage_points: needs iwae_k, the importance samples of test_iwae_ll_subset")
        return self


class Range(_Strict):
    """A numeric search range; lists in the space are categorical (grid) choices."""

    low: float
    high: float
    log: bool = False
    type: Literal["float", "int"] = "float"

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"an int range needs whole numbers, not low {self.low} and high {self.high}")
        return self


class SearchSpec(_Strict):
    sampler: Literal["grid", "tpe", "random"] = "tpe"
    pruner: Literal["none", "median", "percentile", "staged", "hyperband"] = "none"
    n_trials: int | None = Field(None, ge=1, description="grid: defaults to (and must equal) the grid size")
    objective: str = "val_elbo"
    direction: Literal["maximize", "minimize"] = "maximize"
    space: dict[str, list[Choice] | Range] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpec:
        if not self.space:
            raise ValueError("the search space is empty")
        for key, dom in self.space.items():
            if isinstance(dom, list) and not dom:
                raise SettingError(f"search.space.{key}", "no values to choose from")
        if self.sampler == "grid":
            ranges = [k for k, d in self.space.items() if isinstance(d, Range)]
            if ranges:
                raise SettingError(f"search.space.{ranges[0]}", "the grid sampler needs a list of values, not a range")
            if self.grid_size() > validate.MAX_GRID:
                raise SettingError("search.space", f"the grid has {self.grid_size()} points (at most {validate.MAX_GRID})")
            if self.n_trials is not None and self.n_trials != self.grid_size():
                raise SettingError("search.n_trials", f"{self.n_trials} but the grid has {self.grid_size()} points")
        elif self.n_trials is None:
            raise SettingError("search.n_trials", f"required with the {self.sampler} sampler")
        validate.check_objective_metric(self.objective)
        return self

    def choices(self, key: str) -> dict[Scalar, Choice]:
        """A categorical dimension's choices by their Optuna label."""
        return {choice_label(c): c for c in self.space[key]}

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Optuna's params (labels for list choices) as setting values."""
        return {k: self.choices(k)[v] if isinstance(self.space.get(k), list) else v for k, v in params.items()}

    def grid_size(self) -> int:
        return math.prod(len(d) for d in self.space.values() if isinstance(d, list))

    @property
    def total_trials(self) -> int:
        return self.n_trials if self.n_trials is not None else self.grid_size()


class StudySpec(_Strict):
    name: Annotated[str, AfterValidator(validate.check_name)]
    description: str = ""
    seed: Seed = 0
    device: Device = "cpu"
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    search: SearchSpec
    literature: LiteratureSpec | None = None  # published numbers the report compares with
    plugins: tuple[str, ...] = ()  # the user's model files, next to the study file; loaded (run) before validation

    @model_validator(mode="after")
    def _literature_measured(self) -> StudySpec:
        if self.literature and self.literature.metric == "test_iwae_ll" and not self.eval.iwae_k:
            raise ValueError("literature.metric: test_iwae_ll needs eval.iwae_k, its importance samples")
        return self

    @model_validator(mode="after")
    def _space_values_valid(self) -> StudySpec:
        """Every point the search can reach must make a valid trial that reports the metric it
        optimises: check them now (validate.check_space says which points)."""
        from vaebench.models.objectives import DETERMINISTIC_OBJECTIVES

        metric = self.search.objective

        def resolve(params: dict[str, Any]) -> dict[str, Any]:
            where = "search.space." + " with ".join(f"{k} = {shown(v)}" for k, v in params.items())
            tree = self.trial_tree(params)
            try:
                cfg = TrialConfig.model_validate(tree)
            except ValidationError as exc:
                raise SettingError(where, format_validation_error(exc, tree)) from None
            has_val = cfg.dataset.val_fraction > 0
            if metric not in validate.epoch_metrics(cfg.model.objective not in DETERMINISTIC_OBJECTIVES, has_val):
                why = (f"objective {cfg.model.objective!r}" if has_val else
                       "a study without a validation split (dataset.val_fraction 0): optimise a train_ metric such "
                       "as train_loss (direction minimize), or set a val_fraction")
                raise SettingError("search.objective", f"{metric!r} is not reported by {why} ({where})")
            return cfg.flat()

        validate.check_space(self.search.space, resolve)
        return self

    def with_params(self, params: dict[str, Any]) -> TrialConfig:
        """This study's settings with sampled values set at their dotted keys."""
        return TrialConfig.model_validate(self.trial_tree(params))

    def trial_tree(self, params: dict[str, Any]) -> dict[str, Any]:
        """This study's settings (without search) as a tree, `params` set at their dotted keys."""
        tree = self.model_dump(exclude={"search", "literature", "plugins"})
        for key, value in params.items():
            *parents, leaf = key.split(".")
            node = tree
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ValueError(f"search.space.{key}: no such setting")
                node = node[part]
            if leaf not in node and parents != ["model"]:  # the model takes what its registry declares
                raise ValueError(f"search.space.{key}: no such setting")
            if isinstance(value, dict):
                if not isinstance(node[leaf], dict):
                    raise ValueError(f"search.space.{key}: a mapping choice needs a section such as `model`")
                node[leaf] = node[leaf] | value
            else:
                node[leaf] = value
        return tree


class TrialConfig(_Strict):
    """One trial's full, resolved settings: the StudySpec without search, values filled in."""

    name: str
    description: str = ""
    seed: Seed
    device: Device
    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec
    eval: EvalSpec

    def flat(self) -> dict[str, Any]:
        """Flat dotted keys, as logged to MLflow params (None values dropped)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}{k}.", v)
            elif node is not None:
                out[prefix[:-1]] = list(node) if isinstance(node, tuple) else node

        walk("", copy.deepcopy(self.model_dump(exclude={"name", "description"})))
        return out


def find_study(study: str) -> Path:
    """A path, or a name looked up in ./studies and then in the studies shipped with vaebench."""
    path = Path(study)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"{study}: no such study file")
        return path
    for folder in STUDY_DIRS:
        candidate = folder / f"{study}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for folder in STUDY_DIRS if folder.is_dir() for p in folder.glob("*.yaml")})
    raise InputError(f"{study}: no such study (known: {', '.join(known) or 'none'})")


def load_study(study: str) -> tuple[StudySpec, Path]:
    """Read and validate a study file; any problem becomes one InputError line."""
    path = find_study(study)
    raw = read_study_file(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a study file must be a mapping of settings")
    if "name" not in raw:
        try:
            raw["name"] = validate.check_name(path.stem)
        except ValueError as exc:
            raise InputError(f"{path}: name: {exc} (it comes from the file name: set `name:` in the file)") from None
    from vaebench.models import plugins  # runs the user's files: only when a study names them
    plugins.load_listed(raw.get("plugins", ()), path)
    try:
        return StudySpec.model_validate(raw), path
    except ValidationError as exc:
        raise InputError(f"{path}: {format_validation_error(exc, raw)}") from None
