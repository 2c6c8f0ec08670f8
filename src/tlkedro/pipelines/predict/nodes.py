"""Nodes of the predict pipeline: thin wrappers around ``tlkedro.imaging.ingest``, the preprocessing nodes
and ``tlkedro.tl.inference``.

New scans are ingested with labels optional, preprocessed with the parameters recorded in the model's run
record (``<namespace>.config``, written by ``record_run`` when it was trained), and scored by every head of
every selected model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from pydantic import BaseModel, ConfigDict

from tlkedro.imaging.extraction import LazyArrayStack, build_model_input
from tlkedro.imaging.ingest import ingest
from tlkedro.imaging.timeseries import build_timeseries_input
from tlkedro.pipelines.ingestion.nodes import IngestionParams
from tlkedro.pipelines.preprocessing.nodes import (
    PreprocessingParams,
    normalised_key,
    resolve_scans,
)
from tlkedro.tl.config import TrainerConfig
from tlkedro.tl.inference import score
from tlkedro.tl.reports.tables import markdown_table
from tlkedro.variants import deep_merge

logger = logging.getLogger(__name__)

# Preprocessing keys that do not change a scan's model input: the split of the training cohort, its seed,
# the worker count and the QC mosaic's size.
_NOT_MODEL_INPUT = ("splits", "seed", "workers", "spatial_normalisation.mosaic_scans")


class PredictParams(BaseModel):
    """The ``predict`` parameters (conf/base/parameters_predict.yml).

    Attributes:
        model: The trained variant(s) that score the scans: a namespace (``finetune.full``), a list of
            them, or ``None`` for every finetune variant. A cross-validated variant scores with each
            of its fold models and averages them.
        scans: The folder of the new scans. The catalog reads it (``predict_scans``) as a runtime
            parameter, so give it on the command line (``--params predict.scans=/data/new``); the
            node checks that the scans it was handed are inside it.
        glob: The scans' pattern in that folder (runtime parameter too; default: BIDS T1w images).
        metadata: The metadata table (runtime parameter; default ``<scans>/participants.tsv``). Only
            the subject id column is required.
        ingestion: Overrides of the ``ingestion`` parameters for the new scans (``layout``,
            ``columns``, ``sex_codes``, ...); labels are always optional here.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | list[str] | None = None
    scans: str | None = None
    glob: str | None = None
    metadata: str | None = None
    ingestion: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class ScoringModel:
    """A selected variant: its namespace, its runs (the fold models, or itself) and its trainer."""

    namespace: str
    runs: tuple[str, ...]
    trainer: TrainerConfig


class _HasPath(Protocol):
    path: Path


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _model_input_keys(preprocessing: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in _flat(preprocessing).items()
        if not any(key == skip or key.startswith(f"{skip}.") for skip in _NOT_MODEL_INPUT)
    }


def _differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in first.keys() | second.keys() if first.get(k) != second.get(k))


def model_preprocessing(
    current: Mapping[str, Any], *records: Mapping[str, Any], models: Sequence[str]
) -> PreprocessingParams:
    """The preprocessing parameters the selected models were trained with, from their run records.

    Args:
        current: The ``preprocessing`` parameters of this session: only their ``workers`` are used;
            keys where they differ from the models' are logged.
        records: Each model's run record (``<namespace>.config``), in the order of ``models``.
        models: The models' namespaces (their first fold's, for a cross-validated variant).

    Raises:
        ValueError: A record holds no preprocessing parameters, or two models were trained on
            differently preprocessed images; the message names the models and the keys.
    """
    recorded = {}
    for namespace, record in zip(models, records, strict=True):
        if "preprocessing" not in record:
            raise ValueError(
                f"the run record {namespace}.config holds no preprocessing parameters (written before "
                "tlkedro recorded them), so the scans cannot be preprocessed as its training images "
                f"were. If the current `preprocessing` parameters are those, record them with "
                f"`kedro run --nodes {namespace}.record_run`; else retrain it."
            )
        recorded[namespace] = _model_input_keys(record["preprocessing"])
    (first, settings), *others = recorded.items()
    for namespace, other in others:
        if differing := _differences(settings, other):
            listed = "; ".join(
                f"preprocessing.{k}: {settings.get(k)!r} ({first}), {other.get(k)!r} ({namespace})"
                for k in differing
            )
            raise ValueError(
                f"models {first} and {namespace} were trained on differently preprocessed images, so "
                f"one predict run cannot serve both ({listed}); run predict once per model"
            )
    model_input = _model_input_keys(
        PreprocessingParams.model_validate(current).model_dump(mode="json")
    )
    for key in _differences(settings, model_input):
        logger.warning(
            "predict preprocesses as %s was trained: preprocessing.%s is %r for it, %r in the current "
            "parameters",
            first,
            key,
            settings.get(key),
            model_input.get(key),
        )
    trained = dict(records[0]["preprocessing"])
    trained["workers"] = current.get("workers")  # this machine's, not the training machine's
    return PreprocessingParams.model_validate(trained)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is in ``folder``, as written (a scan may be a link to elsewhere) or resolved."""
    written = Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))
    return written or path.resolve().is_relative_to(folder.resolve())


def ingest_new_scans(
    images: Mapping[str, _HasPath],
    metadata: pd.DataFrame,
    ingestion: Mapping[str, Any],
    *,
    predict: PredictParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest and quarantine of the new scans: ``ingest`` with labels optional.

    Args:
        images: The ``predict_scans`` dataset.
        metadata: The ``predict_metadata`` table (at least the subject id column).
        ingestion: The ``ingestion`` parameters, updated with ``predict.ingestion``.
        predict: The ``predict`` parameters.

    Raises:
        ValueError: No scans were found, or they are not inside ``predict.scans``.
    """
    if not images:
        raise ValueError(
            "predict_scans holds no scan: give their folder with --params predict.scans=<folder> "
            "(and predict.glob if they are not BIDS T1w images), or set predict_scans in the catalog"
        )
    paths = {key: ref.path for key, ref in images.items()}
    if predict.scans is not None:
        outside = [str(p) for p in paths.values() if not _inside(p, Path(predict.scans))]
        if outside:
            raise ValueError(
                f"predict.scans is {predict.scans}, but predict_scans read {outside[0]} (and "
                f"{len(outside) - 1} more) outside it: the catalog reads predict.scans only as a "
                "runtime parameter (--params predict.scans=...), not from the parameter files"
            )
    params = IngestionParams.model_validate(
        deep_merge(ingestion, {**predict.ingestion, "labels": "optional"})
    )
    return ingest(paths, metadata, params, metadata_label="predict_metadata")


def ingest_new_series(
    series: Mapping[str, _HasPath],
    metadata: pd.DataFrame,
    ingestion: Mapping[str, Any],
    *checkpoints: dict,
    predict: PredictParams,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``ingest_new_scans`` for ROI time series (``ingestion.layout: timeseries``): the same checks and
    quarantine as the training series, with the ROI count the models take as input channels, so that
    a new series with other ROIs is quarantined (``wrong_rois``) instead of failing the scoring.

    Args:
        series: The ``predict_scans`` dataset (``<subject>_timeseries.tsv`` files).
        metadata: The ``predict_metadata`` table (at least the subject id column).
        ingestion: The ``ingestion`` parameters, updated with ``predict.ingestion``.
        checkpoints: Each selected model's checkpoint (its first run's).
        predict: The ``predict`` parameters.

    Raises:
        ValueError: The models take different ROI counts, or ``ingestion.timeseries.rois`` asks for
            another one than they take.
    """
    counts = {int(checkpoint["config"]["in_channels"]) for checkpoint in checkpoints}
    if len(counts) != 1:
        raise ValueError(
            f"the selected models take series of {sorted(counts)} ROIs: one predict run scores series "
            "of one ROI count; run predict once per model"
        )
    [rois] = counts
    asked = deep_merge(ingestion, predict.ingestion).get("timeseries", {}).get("rois")
    if asked is not None and asked != rois:
        raise ValueError(
            f"ingestion.timeseries.rois is {asked}, but the models were trained on series of {rois} "
            "ROIs (their input channels); set it to null or to that count"
        )
    ingestion = deep_merge(ingestion, {"timeseries": {"rois": rois}})
    return ingest_new_scans(series, metadata, ingestion, predict=predict)


def build_predict_series(
    manifest: pd.DataFrame, series: Mapping[str, _HasPath], params: PreprocessingParams
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """The model input of every new series that passed ingestion: z-scored per ROI and cropped or
    padded to the models' ``preprocessing.timeseries.length``, as their training series were.

    Raises:
        ValueError: Every new series was quarantined.
    """
    if manifest.empty:
        raise ValueError(
            "every new series was quarantined: see predict_quarantine (data/02_intermediate/predict/)"
        )
    manifest = manifest.sort_values(["subject_id", "session", "scan_id"], ignore_index=True)
    files = resolve_scans(manifest["scan_id"], series, "predict_scans")
    return build_timeseries_input(
        manifest,
        params.timeseries,
        files,
        dtype=params.dtype,
        workers=params.workers,
        desc="predict series",
    )


def build_predict_arrays(
    scans: pd.DataFrame,
    images: Mapping[str, _HasPath],
    normalised: Mapping[str, _HasPath],
    params: PreprocessingParams,
) -> tuple[LazyArrayStack, pd.DataFrame]:
    """The model input of every new scan that passed ingestion and registration QC.

    Raises:
        ValueError: None did; the message names the quarantine tables to read.
    """
    if scans.empty:
        raise ValueError(
            "every new scan was quarantined: see predict_quarantine and "
            "predict_registration_quarantine (data/02_intermediate/predict/)"
        )
    scans = scans.sort_values(["subject_id", "session", "scan_id"], ignore_index=True)
    if params.spatial_normalisation.method == "none":
        files = resolve_scans(scans["scan_id"], images, "predict_scans")
    else:
        keys = map(normalised_key, scans["scan_id"])
        files = resolve_scans(keys, normalised, "predict_normalised_scans")
    return build_model_input(
        scans, params, files=files, workers=params.workers, desc="predict images"
    )


def score_new_scans(
    images, labels: pd.DataFrame, *checkpoints: dict, models: Sequence[ScoringModel]
) -> pd.DataFrame:
    """Every selected model's predictions table (``tlkedro.tl.inference.score``), stacked.

    Args:
        images: The new scans' model input.
        labels: Its label rows (``subject_id``, and ``age``/``sex`` where the metadata gave them).
        checkpoints: Each model's runs' checkpoints, in the order of ``models`` and their ``runs``.
        models: The selected models.

    Returns:
        ``score``'s table with ``model``, the variant's namespace, after ``subject_id``.
    """
    tables, start = [], 0
    for model in models:
        runs = checkpoints[start : start + len(model.runs)]
        start += len(model.runs)
        table = score(
            runs, images, labels, batch_size=model.trainer.batch_size, trainer=model.trainer
        )
        table.insert(1, "model", model.namespace)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def report_predictions(
    predictions: pd.DataFrame,
    quarantine: pd.DataFrame,
    registration_quarantine: pd.DataFrame,
    preprocessing: PreprocessingParams,
) -> str:
    """The predict report: per model and head, the subjects scored, the correction applied and the gap."""
    normalisation = preprocessing.spatial_normalisation
    return _report(
        predictions,
        f"{len(quarantine)} files or records quarantined at ingestion, "
        f"{len(registration_quarantine)} at registration QC",
        f"spatial normalisation `{normalisation.method}`, `{preprocessing.mode}` input, "
        f"{list(preprocessing.spacing_mm)} mm, intensity `{preprocessing.normalisation.name}`",
    )


def report_series_predictions(
    predictions: pd.DataFrame, quarantine: pd.DataFrame, preprocessing: PreprocessingParams
) -> str:
    """``report_predictions`` for ROI time series, which have no registration to report."""
    return _report(
        predictions,
        f"{len(quarantine)} files or records quarantined at ingestion",
        "ROI time series, each ROI z-scored over its time points, cropped or zero padded to "
        f"{preprocessing.timeseries.length} time points",
    )


def _report(predictions: pd.DataFrame, quarantined: str, preprocessed: str) -> str:
    rows = []
    for (model, head), table in predictions.groupby(["model", "head"], sort=False):
        gaps = table["gap"].dropna()
        rows.append(
            {
                "model": model,
                "head": head,
                "subjects": len(table),
                "with known target": int(table["target"].notna().sum()),
                "mean gap": gaps.mean() if len(gaps) else None,
                "mean absolute gap": gaps.abs().mean() if len(gaps) else None,
                "bias correction": table["bias_correction"].iloc[0],
            }
        )
    return "\n".join(
        [
            "# Predictions on new scans",
            "",
            f"{predictions['subject_id'].nunique()} subjects scored; {quarantined} "
            "(data/02_intermediate/predict/). Table: `predictions` "
            "(data/07_model_output/predict/predictions.parquet).",
            "",
            f"Preprocessed as the models were trained: {preprocessed}.",
            "",
            "The gap is the corrected prediction minus the known target (for an age head, the "
            "brain-age gap); its mean rests on the subjects with a known target.",
            "",
            markdown_table(pd.DataFrame(rows)),
            "",
        ]
    )
