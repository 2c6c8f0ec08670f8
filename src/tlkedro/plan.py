"""The experiment plan: every training variant of the project, resolved and validated once.

The parameters of ``pretrain``, ``finetune`` and ``dapt`` hold a base configuration plus ``variants``
and ``sweeps`` (:mod:`tlkedro.variants`). :func:`build_plan` expands them, merges each variant's
overrides into its base, validates the result into a :class:`VariantConfig` and returns an
:class:`ExperimentPlan`: ``{namespace: TrainingVariant}``. The pipeline registry builds the pipelines from
it, and the nodes receive the typed configuration bound in, so a value is validated once, before any node
runs, with an error naming its key; the reports and the deployment read the same typed fields.

Cross-validation (``cross_validation``) gives every variant that trains on the cross-validated split one
run per fold, inside the variant's namespace (``finetune.full.fold_0``). This module knows nothing of
Kedro.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tlkedro.errors import ConfigurationError
from tlkedro.imaging.splits import SPLITS, SplitConfig
from tlkedro.tl.analysis.energy import PowerModel
from tlkedro.tl.config import TrainConfig
from tlkedro.tl.downstream import DownstreamConfig
from tlkedro.tl.segmentation.training import SegmentConfig
from tlkedro.variants import (
    Sweep,
    base_config,
    deep_merge,
    expand_variants,
    optuna_sweeps,
    sweep_overrides,
)

TRAINING_PIPELINES = ("pretrain", "finetune")
DAPT_STAGES = ("adapt", "finetune")
DEFAULT_CHECKPOINT_DIR = "data/06_models/checkpoints"
# The split each training pipeline trains on unless its configuration says otherwise.
DEFAULT_TRAIN_SPLIT = {"pretrain": "pretrain", "finetune": "finetune"}


class PlanError(ConfigurationError, ValueError):
    """A parameter of the plan is invalid: the message names the key and what is allowed."""


class WeightsFile(BaseModel):
    """``init_from: {file: ..., format: ...}``: start from published weights in a file (docs/architectures.md).

    Attributes:
        file: The weights file (``.pth``, ``.pt``, ``.ckpt``, ``.safetensors``), read offline.
        format: Its layout: a ``tlkedro.tl.weights.SOURCE_FORMATS`` name (``timm``, ``torchvision``,
            ``medicalnet``, ``monai``, ``lightning``, ``tlkedro``).
        min_match: The least share of the encoder's parameters the file must fill; a poorer match stops
            the run with the load report instead of training from a silent partial load.
    """

    model_config = ConfigDict(extra="forbid")

    file: str
    format: str
    min_match: float = Field(0.9, gt=0, le=1)


class VariantConfig(TrainConfig):
    """A training configuration plus the keys that decide a variant's place in the pipeline.

    Attributes:
        train_on: The split the model is trained on (cross-validated when it is the
            ``cross_validation.split``).
        train_size: Data-size ablation: train on this count (int) or fraction (float) of the training
            subjects, drawn reproducibly and nested (a smaller set lies inside every larger one, within
            each fold); ``None`` for all of them.
        init_from: Namespace of the variant whose model this one starts from (``pretrain.default``),
            a weights file (:class:`WeightsFile`), or ``None`` for no source model.
        evaluate_on: Splits the trained model is evaluated on (besides the held-out fold).
        unlabelled_from: Split whose images auxiliary terms use without their labels.
        group: Variants sharing a group (e.g. seeds of one setting) are aggregated in reports.
    """

    train_on: str
    train_size: int | float | None = Field(None, gt=0)
    init_from: str | WeightsFile | None = None
    evaluate_on: list[str] = []
    unlabelled_from: str | None = None
    group: str | None = None

    @field_validator("evaluate_on")
    @classmethod
    def _self_supervised_has_nothing_to_evaluate(
        cls, evaluate_on: list[str], info: ValidationInfo
    ) -> list[str]:
        objective = info.data.get("objective")
        if evaluate_on and objective is not None and not objective.build().needs_labels:
            raise ValueError(
                f"the self-supervised objective {objective.name!r} learns no target, so there is nothing "
                f"to evaluate on {evaluate_on}: set evaluate_on: [] (its encoder is evaluated by the "
                "finetune variants that start from it)"
            )
        return evaluate_on

    @model_validator(mode="after")
    def _size_is_a_count_or_fraction(self) -> VariantConfig:
        if isinstance(self.train_size, float) and self.train_size > 1:
            raise ValueError(
                f"train_size must be a count (int) or a fraction in (0, 1]; got {self.train_size}"
            )
        return self


class CrossValidation(BaseModel):
    """``cross_validation``: subject-level k-fold cross-validation of one split.

    Attributes:
        split: The split whose subjects are divided into folds; every pretrain or finetune variant that
            trains on it runs once per fold and is tested on the held-out fold.
        folds: ``k``.
        repeats: Repetitions with different fold assignments.
        seed: Seed of the assignment.
        age_bins: Age quantile bins to stratify by, with sex.
    """

    model_config = ConfigDict(extra="forbid")

    split: str
    folds: int = Field(5, ge=2)
    repeats: int = Field(1, ge=1)
    seed: int = 0
    age_bins: int = Field(5, ge=1)


@dataclass(frozen=True)
class Fold:
    """One training run of a cross-validated variant: fold ``index`` of repetition ``repeat``."""

    repeat: int
    index: int
    name: str


@dataclass(frozen=True)
class TrainingVariant:
    """A variant of a training pipeline: its namespace, its validated configuration and its folds.

    Attributes:
        pipeline: ``pretrain``, ``finetune`` or ``dapt``.
        name: The variant's name within the pipeline (``full``; ``hybrid.adapt`` for a DAPT stage).
        config: The merged, validated configuration.
        overrides: The variant's overrides of its base, as given (what a generated sweep copies).
        folds: One entry per cross-validation run; empty when the variant is not cross-validated.
        tuning: The ``kind: optuna`` sweep whose best trial the variant is; ``None`` for others.
    """

    pipeline: str
    name: str
    config: VariantConfig
    overrides: Mapping[str, Any]
    folds: tuple[Fold, ...] = ()
    tuning: Sweep | None = None

    @property
    def namespace(self) -> str:
        return f"{self.pipeline}.{self.name}"

    @property
    def source(self) -> str | None:
        """The namespace of the variant whose model this one starts from (not a weights file)."""
        return self.config.init_from if isinstance(self.config.init_from, str) else None

    @property
    def cross_validated(self) -> bool:
        return bool(self.folds)


@dataclass(frozen=True)
class ExperimentPlan:
    """Every training variant of the project, by namespace, and the shared settings.

    Attributes:
        variants: ``{namespace: TrainingVariant}`` for the pretrain and finetune pipelines, in the order
            they are declared.
        cross_validation: The cross-validation settings; ``None`` for fixed splits.
        checkpoint_dir: Folder of the variants' resumable checkpoints (``runtime.checkpoint_dir``).
        dapt: The DAPT variants (their two training stages are in ``variants`` too), by name.
        dapt_energy: The power model of the DAPT phase reports.
        dapt_primary_metric: The metric the DAPT comparison is sorted by.
        preprocessing: The ``preprocessing`` parameters as given, which every run records with its
            configuration (``predict`` preprocesses new scans with a model's).
    """

    variants: dict[str, TrainingVariant]
    cross_validation: CrossValidation | None
    checkpoint_dir: str
    dapt: dict[str, DaptVariant]
    dapt_energy: PowerModel
    dapt_primary_metric: str
    preprocessing: Mapping[str, Any] = field(default_factory=dict)

    def of(self, pipeline: str) -> list[TrainingVariant]:
        """The variants of one pipeline, in declaration order."""
        return [v for v in self.variants.values() if v.pipeline == pipeline]

    def workdir(self, namespace: str) -> str:
        """The folder of a variant's (or fold's) resumable checkpoints."""
        return f"{self.checkpoint_dir}/{namespace}"

    def study_storage(self, variant: TrainingVariant) -> str:
        """A tuned variant's Optuna storage: ``study.storage``, by default a journal file beside the
        checkpoints (outside the variant's checkpoint folder, which a finished fit empties)."""
        assert variant.tuning is not None and variant.tuning.study is not None
        default = f"journal:{self.checkpoint_dir}/optuna/{variant.namespace}.journal"
        return variant.tuning.study.storage or default


@dataclass(frozen=True)
class DaptVariant:
    """A DAPT variant: the adaptation and the fine-tuning (two training variants) and the MLPs."""

    name: str
    adapt: TrainingVariant
    finetune: TrainingVariant
    downstream: DownstreamConfig
    group: str | None

    @property
    def namespace(self) -> str:
        return f"dapt.{self.name}"


class DaptOverrides(BaseModel):
    """What a ``dapt`` variant (or sweep point) may override.

    Attributes:
        adapt: Overrides of the ``dapt.adapt`` configuration (e.g. the DAPT strategy).
        finetune: Overrides of the ``dapt.finetune`` configuration.
        downstream: Overrides of ``dapt.downstream``.
        seed: One seed for the adaptation, the fine-tuning and the MLPs.
        group: The report's group (variants that differ only by seed).
    """

    model_config = ConfigDict(extra="forbid")

    adapt: dict[str, Any] = {}
    finetune: dict[str, Any] = {}
    downstream: dict[str, Any] = {}
    seed: int | None = None
    group: str | None = None


def folds_of(cross_validation: CrossValidation | None) -> tuple[Fold, ...]:
    """The folds of a cross-validation, named ``fold_<i>`` (``repeat_<r>_fold_<i>`` with repeats)."""
    if cross_validation is None:
        return ()
    return tuple(
        Fold(
            repeat,
            index,
            f"fold_{index}" if cross_validation.repeats == 1 else f"repeat_{repeat}_fold_{index}",
        )
        for repeat in range(cross_validation.repeats)
        for index in range(cross_validation.folds)
    )


def format_validation_error(error: ValidationError, prefix: str) -> str:
    """One line per invalid key of ``error``, named in full under ``prefix`` (``finetune.optimizer.lr``)."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        lines.append(
            f"  {prefix}.{key}: {problem['msg']}" if key else f"  {prefix}: {problem['msg']}"
        )
    return "\n".join(lines)


def validate_variant(
    pipeline: str,
    name: str,
    base: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    where: str,
    default_train_on: str | None = None,
) -> VariantConfig:
    """Merge a variant's overrides into its base and validate the result.

    Args:
        pipeline: The pipeline's name, for messages.
        name: The variant's name, for messages.
        base: The base configuration (without ``variants``/``sweeps``).
        overrides: The variant's overrides.
        where: The parameter key the overrides come from, for messages
            (``finetune.variants.linear_probe``).
        default_train_on: ``train_on`` where neither the base nor the variant sets it.

    Raises:
        PlanError: Naming every invalid key of the merged configuration.
    """
    merged = deep_merge(base, overrides)
    if default_train_on is not None:
        merged.setdefault("train_on", default_train_on)
    try:
        return VariantConfig.model_validate(merged)
    except ValidationError as error:
        raise PlanError(
            f"Invalid parameters for variant '{pipeline}.{name}' (base `{pipeline}`, overrides "
            f"`{where}`):\n{format_validation_error(error, pipeline)}"
        ) from None


# Keys a study may not search: they decide which data and labels a variant learns from, or its place in
# the pipeline, so trials on different values would not be comparable; `seed` would tune to the noise.
UNTUNABLE_KEYS = (
    *sorted(set(VariantConfig.model_fields) - set(TrainConfig.model_fields)),
    "seed",
    "target",
    "task",
)


def _check_tuning(
    pipeline: str,
    name: str,
    sweep: Sweep,
    base: Mapping[str, Any],
    config: VariantConfig,
    cross_validated: bool,
) -> None:
    """Refuse what a study cannot search, and validate the configuration at every extreme of its space."""
    where = f"{pipeline}.sweeps.{name}"
    if cross_validated:
        raise PlanError(
            f"{where}: an optuna sweep cannot train on the cross-validated split "
            f"({config.train_on!r}): give it another `train_on`"
        )
    for key, distribution in sweep.space.items():
        if key.split(".")[0] in UNTUNABLE_KEYS:
            raise PlanError(
                f"{where}.space.{key}: not a hyperparameter a study may search "
                f"({', '.join(UNTUNABLE_KEYS)} are fixed for every trial)"
            )
        for value in distribution.extremes():
            validate_variant(
                pipeline,
                name,
                base,
                sweep_overrides(sweep, {key: value}),
                where=f"{where}.space.{key} = {value!r}",
                default_train_on=DEFAULT_TRAIN_SPLIT[pipeline],
            )
    study = sweep.study
    for part, build in (
        ("sampler", lambda: study.create_sampler(config.seed)),
        ("pruner", study.create_pruner),
    ):
        try:
            build()
        except (TypeError, ValueError) as error:
            raise PlanError(f"{where}.study.{part}: {error}") from None


def _training_variants(
    pipeline: str, section: Mapping[str, Any], cross_validation: CrossValidation | None
) -> list[TrainingVariant]:
    base = base_config(section)
    declared = set(section.get("variants") or {})
    tuned = optuna_sweeps(section, pipeline)
    variants = []
    for name, overrides in expand_variants(section, pipeline).items():
        where = f"{pipeline}.variants.{name}" if name in declared else f"{pipeline}.sweeps"
        config = validate_variant(
            pipeline,
            name,
            base,
            overrides,
            where=where,
            default_train_on=DEFAULT_TRAIN_SPLIT[pipeline],
        )
        cv = cross_validation is not None and config.train_on == cross_validation.split
        if cv and not config.objective.build().needs_labels:
            raise PlanError(
                f"{pipeline}.{name}: the self-supervised objective {config.objective.name!r} has no "
                f"held-out fold to be evaluated on; set its train_on (now {config.train_on!r}, the "
                "cross_validation.split) to another split"
            )
        folds = folds_of(cross_validation) if cv else ()
        if (sweep := tuned.get(name)) is not None:
            _check_tuning(pipeline, name, sweep, base, config, cv)
        variants.append(TrainingVariant(pipeline, name, config, overrides, folds, sweep))
    return variants


def _check_sources(variants: dict[str, TrainingVariant]) -> None:
    for variant in variants.values():
        if variant.source is None:
            continue
        source = variants.get(variant.source)
        if source is None:
            known = ", ".join(n for n in variants if n.startswith("pretrain.")) or "none"
            raise PlanError(
                f"{variant.namespace}: init_from names {variant.source!r}, which is not a variant of "
                f"this project's plan; pretrain variants: {known}"
            )
        if variant.cross_validated and source.folds and source.folds != variant.folds:
            raise PlanError(
                f"{variant.namespace}: it and its source {source.namespace} are cross-validated "
                "with different folds"
            )
        if variant.cross_validated and not source.cross_validated:
            # A source trained on other subjects is fine (the leakage guard checks them at run time);
            # the fold's model then starts from the one source model.
            continue
        if source.cross_validated and not variant.cross_validated:
            raise PlanError(
                f"{variant.namespace}: its source {source.namespace} is cross-validated (one model per "
                f"fold) but it is not: train both on `cross_validation.split` "
                f"({source.config.train_on!r}), or neither"
            )


def cuts_automatically(config: VariantConfig) -> bool:
    """Whether a variant is ``truncated`` with ``cut_at: auto`` (its cut point is chosen by a probe)."""
    return config.strategy.name == "truncated" and config.strategy.kwargs.get("cut_at") == "auto"


def auto_cut_probe(
    variants: Mapping[str, TrainingVariant], variant: TrainingVariant
) -> TrainingVariant:
    """The probe whose SVCCA profile chooses the cut point of a ``truncated`` variant with ``cut_at: auto``.

    ``strategy.kwargs.probe`` names a finetune variant (``full`` or ``finetune.full``) or a group, of which
    the variant with the same seed is taken (so a sweep over seeds pairs each auto variant with its own
    seed's probe). The probe must start from the same source, with the same architecture, trained on the
    same split, and must not itself be an ``auto`` variant.

    Raises:
        PlanError: Naming ``strategy.kwargs.probe`` and what is wrong.
    """
    if variant.pipeline not in TRAINING_PIPELINES or variant.source is None:
        raise PlanError(
            f"{variant.namespace}: strategy.kwargs.cut_at: auto needs a pretrain or finetune variant "
            "with init_from naming its source variant"
        )
    probe = variant.config.strategy.kwargs.get("probe", "full")
    key = f"{variant.namespace}: strategy.kwargs.probe"
    name = probe if "." in probe else f"{variant.pipeline}.{probe}"
    if name in variants:
        chosen = variants[name]
    else:
        grouped = [
            v
            for v in variants.values()
            if v.pipeline == variant.pipeline and v.config.group == probe and v is not variant
        ]
        paired = [v for v in grouped if v.config.seed == variant.config.seed]
        if len(paired) != 1:
            known = sorted(
                {v.name for v in variants.values() if v.pipeline == variant.pipeline}
                | {v.config.group for v in variants.values() if v.config.group}
            )
            reason = (
                f"its group has {len(paired)} variants with seed {variant.config.seed}"
                if grouped
                else "no such variant or group"
            )
            raise PlanError(
                f"{key} is {probe!r} ({reason}); cut_at: auto takes its cut point from a probe "
                f"fine-tune, e.g. the `full` variant: add it, or name one of {', '.join(known)}"
            )
        chosen = paired[0]
    mismatched = [
        field
        for field in ("init_from", "architecture", "train_on")
        if getattr(chosen.config, field) != getattr(variant.config, field)
    ]
    if chosen is variant or cuts_automatically(chosen.config) or mismatched:
        why = (
            f"it differs in {', '.join(mismatched)}"
            if mismatched
            else "it chooses its own cut point too"
        )
        raise PlanError(
            f"{key}: {chosen.namespace} cannot be the probe: {why}; the probe is a fine-tune of the "
            "same source, architecture and training split (e.g. strategy `full`)"
        )
    return chosen


def _dapt_variants(section: Mapping[str, Any]) -> list[DaptVariant]:
    """Both training stages of every DAPT variant, and its downstream configuration."""
    section = dict(section)
    for stage in DAPT_STAGES:
        section[stage] = dict(section[stage])
        old = f"{stage}_on"  # the stage's training split used to be a top-level key
        if old in section:
            if "train_on" in section[stage]:
                raise PlanError(
                    f"dapt: give `dapt.{stage}.train_on` only (`dapt.{old}` is its old name)"
                )
            warn_renamed(f"dapt.{old}", f"dapt.{stage}.train_on")
            section[stage]["train_on"] = section.pop(old)
    declared = set(section.get("variants") or {})
    variants = []
    for name, raw in expand_variants(section, "dapt").items():
        where = f"dapt.variants.{name}" if name in declared else "dapt.sweeps"
        try:
            overrides = DaptOverrides.model_validate(raw)
        except ValidationError as error:
            raise PlanError(
                f"Invalid overrides for variant 'dapt.{name}':\n{format_validation_error(error, where)}"
            ) from None
        shared = {
            k: getattr(overrides, k) for k in ("seed", "group") if getattr(overrides, k) is not None
        }
        # init_from is the plan's to set: the adaptation starts from the generic model, the
        # fine-tuning from the adapted one.
        sources = {"adapt": section["init_from"], "finetune": f"dapt.{name}.adapt"}
        stages = {}
        for stage in DAPT_STAGES:
            stage_overrides = deep_merge(
                getattr(overrides, stage), {**shared, "init_from": sources[stage]}
            )
            config = validate_variant(
                "dapt",
                f"{name}.{stage}",
                section[stage],
                stage_overrides,
                where=f"{where} ({stage})",
            )
            stages[stage] = TrainingVariant("dapt", f"{name}.{stage}", config, stage_overrides)
        downstream_overrides = deep_merge(
            overrides.downstream, {"seed": overrides.seed} if overrides.seed is not None else {}
        )
        try:
            downstream = DownstreamConfig.model_validate(
                deep_merge(section.get("downstream") or {}, downstream_overrides)
            )
        except ValidationError as error:
            raise PlanError(
                f"Invalid downstream parameters for variant 'dapt.{name}':\n"
                f"{format_validation_error(error, 'dapt.downstream')}"
            ) from None
        variants.append(
            DaptVariant(name, stages["adapt"], stages["finetune"], downstream, overrides.group)
        )
    return variants


def build_plan(parameters: Mapping[str, Any]) -> ExperimentPlan:
    """Expand, merge and validate the ``pretrain``, ``finetune`` and ``dapt`` variants of the parameters.

    Raises:
        PlanError: For an invalid variant (naming its keys), an ``init_from`` that names no variant,
            or a cross-validated source of a variant that is not cross-validated.
    """
    cross_validation = None
    if (raw := parameters.get("cross_validation")) is not None:
        try:
            cross_validation = CrossValidation.model_validate(raw)
        except ValidationError as error:
            raise PlanError(
                f"Invalid parameters:\n{format_validation_error(error, 'cross_validation')}"
            ) from None
    variants: dict[str, TrainingVariant] = {}
    for pipeline in TRAINING_PIPELINES:
        if (section := parameters.get(pipeline)) is None:
            continue
        for variant in _training_variants(pipeline, section, cross_validation):
            variants[variant.namespace] = variant
    dapt = {}
    energy, primary = PowerModel(), "finetune/test/auroc"
    if (section := parameters.get("dapt")) is not None:
        for variant in _dapt_variants(section):
            dapt[variant.name] = variant
            variants[variant.adapt.namespace] = variant.adapt
            variants[variant.finetune.namespace] = variant.finetune
        try:
            energy = PowerModel.model_validate(section.get("energy") or {})
        except ValidationError as error:
            raise PlanError(
                f"Invalid parameters:\n{format_validation_error(error, 'dapt.energy')}"
            ) from None
        primary = section.get("primary_metric", primary)
    _check_sources(variants)
    _check_split_names(variants, dapt, available_splits(parameters))
    for variant in variants.values():
        if cuts_automatically(variant.config):
            auto_cut_probe(variants, variant)
    return ExperimentPlan(
        variants=variants,
        cross_validation=cross_validation,
        checkpoint_dir=(parameters.get("runtime") or {}).get(
            "checkpoint_dir", DEFAULT_CHECKPOINT_DIR
        ),
        dapt=dapt,
        dapt_energy=energy,
        dapt_primary_metric=primary,
        preprocessing=dict(parameters.get("preprocessing") or {}),
    )


def available_splits(parameters: Mapping[str, Any]) -> tuple[str, ...]:
    """The splits that have model input: ``pretrain``, ``finetune``, ``test``, and ``external`` where
    ``preprocessing.splits.external_sites`` holds out a site (every split without a ``preprocessing``
    section, as in a plan built for a notebook).

    Raises:
        PlanError: ``preprocessing.splits`` is invalid, naming the key.
    """
    if (preprocessing := parameters.get("preprocessing")) is None:
        return SPLITS
    try:
        with warnings.catch_warnings():  # the old key's warning is the preprocessing node's to give
            warnings.simplefilter("ignore", FutureWarning)
            splits = SplitConfig.model_validate(preprocessing.get("splits") or {})
    except ValidationError as error:
        raise PlanError(
            f"Invalid parameters:\n{format_validation_error(error, 'preprocessing.splits')}"
        ) from None
    return SPLITS if splits.external_sites else tuple(s for s in SPLITS if s != "external")


def _check_split_names(
    variants: dict[str, TrainingVariant], dapt: dict[str, DaptVariant], splits: tuple[str, ...]
) -> None:
    """Every split a variant trains on, is evaluated on or reads unlabelled images from exists."""
    named = [
        (variant.namespace, key, split)
        for variant in variants.values()
        for key, value in (
            ("train_on", [variant.config.train_on]),
            ("evaluate_on", variant.config.evaluate_on),
            ("unlabelled_from", [variant.config.unlabelled_from]),
        )
        for split in value
        if split is not None
    ]
    named += [
        (variant.namespace, f"downstream.{key}", split)
        for variant in dapt.values()
        for key, value in (
            ("train_on", [variant.downstream.train_on]),
            ("evaluate_on", variant.downstream.evaluate_on),
            ("dip", variant.downstream.dip or []),
        )
        for split in value
    ]
    for namespace, key, split in named:
        if split in splits:
            continue
        if split == "external":
            raise PlanError(
                f"{namespace}: {key} names split 'external', which is empty: "
                "preprocessing.splits.external_sites holds out no site. List a site there, or take "
                f"'external' out of {key}"
            )
        raise PlanError(
            f"{namespace}: {key} names split {split!r}, which does not exist; splits: "
            f"{', '.join(splits)}"
        )


def warn_renamed(old: str, new: str) -> None:
    """Warn that parameter ``old`` is deprecated (it keeps working for one release) in favour of ``new``."""
    # FutureWarning, not DeprecationWarning: the reader is a user editing YAML, whom Python shows
    # FutureWarnings by default.
    warnings.warn(f"parameter {old} is deprecated; use {new}", FutureWarning, stacklevel=3)


# --- Segmentation (the `segment` pipeline, docs/segmentation.md) ---------------------------------------


class SegmentVariantConfig(SegmentConfig):
    """A segmentation configuration plus the keys that place a variant in the pipeline.

    Attributes:
        train_on: The split whose images and masks (``<split>_masks``) it trains on.
        train_size: Train on this many (int) or this fraction (float) of the split's subjects, a nested
            seeded subset (as ``VariantConfig.train_size``); ``None`` for all.
        init_from: The pretrain variant (``pretrain.default``) or weights file whose encoder the strategy
            transfers; ``None`` for none (``scratch``).
        evaluate_on: Splits it is evaluated on (per-subject Dice and HD95).
    """

    train_on: str = "finetune"
    train_size: int | float | None = Field(None, gt=0)
    init_from: str | WeightsFile | None = None
    evaluate_on: list[str] = ["test"]

    @model_validator(mode="after")
    def _size_is_a_count_or_fraction(self) -> SegmentVariantConfig:
        if isinstance(self.train_size, float) and self.train_size > 1:
            raise ValueError(
                f"train_size must be a count or a fraction in (0, 1]; got {self.train_size}"
            )
        return self


@dataclass(frozen=True)
class SegmentVariant:
    """A variant of the ``segment`` pipeline: ``segment.<name>``, with its validated configuration."""

    name: str
    config: SegmentVariantConfig

    @property
    def namespace(self) -> str:
        return f"segment.{self.name}"

    @property
    def source(self) -> str | None:
        """The pretrain variant whose model it starts from (not a weights file)."""
        return self.config.init_from if isinstance(self.config.init_from, str) else None


def segment_variants(
    parameters: Mapping[str, Any], plan: ExperimentPlan
) -> dict[str, SegmentVariant]:
    """The ``segment`` section's variants, merged and validated; ``{}`` when there is no section.

    Raises:
        PlanError: An invalid key (named), an ``init_from`` that is not a variant of ``plan``, or a
            split that does not exist.
    """
    if (section := parameters.get("segment")) is None:
        return {}
    base = base_config(section)
    splits = available_splits(parameters)
    variants = {}
    for name, overrides in expand_variants(section, "segment").items():
        try:
            config = SegmentVariantConfig.model_validate(deep_merge(base, overrides))
        except ValidationError as error:
            raise PlanError(
                f"Invalid parameters for variant 'segment.{name}' (base `segment`, overrides "
                f"`segment.variants.{name}`):\n{format_validation_error(error, 'segment')}"
            ) from None
        variant = SegmentVariant(name, config)
        if variant.source is not None and variant.source not in plan.variants:
            known = ", ".join(n for n in plan.variants if n.startswith("pretrain.")) or "none"
            raise PlanError(
                f"{variant.namespace}: init_from names {variant.source!r}, which is not a variant of "
                f"this project's plan; pretrain variants: {known}"
            )
        if variant.source is not None and plan.variants[variant.source].cross_validated:
            raise PlanError(f"{variant.namespace}: a cross-validated source is not supported")
        for key, named in (("train_on", [config.train_on]), ("evaluate_on", config.evaluate_on)):
            for split in named:
                if split not in splits:
                    raise PlanError(
                        f"{variant.namespace}: {key} names split {split!r}, which does not exist; "
                        f"splits: {', '.join(splits)}"
                    )
        variants[name] = variant
    return variants
