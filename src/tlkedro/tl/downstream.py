"""Downstream evaluation of an encoder as a fixed feature extractor: MLP classifiers on its features.

As in Mehmood, Bajwa and Sun ("Resource-efficient domain adaptive pre-training for medical images",
arXiv:2204.13280, 2022): the (domain-adaptively pre-trained) encoder is frozen, its pooled features
(``TLModel.forward_features``) feed multilayer perceptrons, "model 1" with hidden layers 64-32 and
"model 2" with 512-256-256-128, which are trained on the development training split and evaluated on
the development test split and on an external site; the drop of each metric from the one to the other
(the dip) measures robustness to the shift between sites.

Features are computed per image row and averaged per subject (the rows of a subject are its slices or
sessions), so every subject counts once, as in ``tlkedro.tl.training.evaluate``. The classifiers are
scikit-learn ``MLPClassifier``s (ReLU, Adam) behind a ``StandardScaler`` fitted on the training
subjects; the metrics are the project's classification metrics (``tlkedro.tl.metrics``), and each AUROC
comes with its bootstrap interval over the split's subjects (``tlkedro.tl.evaluation.metric_interval``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from tlkedro.tl.checkpoint import build_model
from tlkedro.tl.data import ArrayDataset, subject_labels
from tlkedro.tl.evaluation import metric_interval
from tlkedro.tl.labels import target_values
from tlkedro.tl.metrics import metric_collection
from tlkedro.tl.objectives import TaskInfo

# Mehmood et al.'s two downstream classifiers.
PAPER_CLASSIFIERS = {"mlp_64_32": (64, 32), "mlp_512_256_256_128": (512, 256, 256, 128)}


class DownstreamConfig(BaseModel):
    """MLP classifiers on an adapted encoder's features (Mehmood et al.; ``dapt.downstream``).

    Attributes:
        target: The class label the classifiers predict.
        train_on: Split the classifiers are trained on.
        evaluate_on: Splits they are evaluated on.
        dip: ``[reference, shifted]``: the drop of each metric from the one to the other is reported.
        classifiers: ``{name: hidden layer widths}``; default: the paper's 64-32 and 512-256-256-128.
        seed: Seed of the classifiers.
        max_iter: Upper bound on the classifiers' training epochs.
        batch_size: Images per forward pass of the encoder.
    """

    model_config = ConfigDict(extra="forbid")

    target: str = "sex"
    train_on: str = "finetune"
    evaluate_on: list[str] = ["test", "external"]
    dip: tuple[str, str] | None = ("test", "external")
    classifiers: dict[str, list[int]] = Field(
        default_factory=lambda: {name: list(sizes) for name, sizes in PAPER_CLASSIFIERS.items()}
    )
    seed: int = 42
    max_iter: int = Field(500, ge=1)
    batch_size: int = Field(64, ge=1)


def extract_features(
    checkpoint: Mapping, images: np.ndarray, labels: pd.DataFrame, target: str, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's pooled features and the class label of every subject.

    Args:
        checkpoint: A model checkpoint (``make_checkpoint``); its head is not used.
        images: ``(N, 1, ...)`` images.
        labels: One row per image row with ``subject_id`` and the ``target`` column (class indices).
        target: The label column.
        batch_size: Images per forward pass.

    Returns:
        ``(S, num_features)`` features averaged over each subject's rows and ``(S,)`` labels, subjects
        sorted by id.
    """
    targets = target_values(labels, target, "classification")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(checkpoint).to(device)
    rows = []
    with torch.inference_mode():
        for batch, _ in DataLoader(ArrayDataset(images, targets), batch_size=batch_size):
            rows.append(model.forward_features(batch.to(device)).float().cpu())
    subjects = labels["subject_id"].astype(str).to_numpy()
    features = pd.DataFrame(torch.cat(rows).numpy()).groupby(subjects).mean()
    per_subject = subject_labels(pd.Series(subjects), targets)
    return features.to_numpy(), per_subject.loc[features.index].to_numpy()


def fit_classifier(
    features: np.ndarray,
    targets: np.ndarray,
    hidden_layers: Sequence[int],
    seed: int,
    max_iter: int = 500,
) -> Pipeline:
    """A standardising MLP classifier trained on ``features``.

    Args:
        features: ``(S, F)`` training features.
        targets: ``(S,)`` class indices.
        hidden_layers: Widths of the hidden layers, input side first.
        seed: Seed of the initialisation and of the batches.
        max_iter: Upper bound on training epochs.
    """
    classifier = MLPClassifier(
        hidden_layer_sizes=tuple(hidden_layers), max_iter=max_iter, random_state=seed
    )
    return make_pipeline(StandardScaler(), classifier).fit(features, targets)


def classifier_probabilities(
    classifier: Pipeline, features: np.ndarray, num_classes: int
) -> np.ndarray:
    """``(n, num_classes)`` class probabilities; a class missing from the training subjects gets 0."""
    probabilities = np.zeros((len(features), num_classes), dtype=np.float32)
    probabilities[:, classifier.classes_.astype(int)] = classifier.predict_proba(features)
    return probabilities


def classifier_metrics(
    classifier: Pipeline, features: np.ndarray, targets: np.ndarray, num_classes: int
) -> dict[str, float]:
    """AUROC, AUPRC, accuracy, balanced accuracy and cross-entropy of ``classifier`` on ``features``."""
    probabilities = classifier_probabilities(classifier, features, num_classes)
    metrics = metric_collection(TaskInfo(task="classification", num_classes=num_classes), "eval")
    metrics.update(torch.from_numpy(probabilities), torch.from_numpy(targets.astype(np.int64)))
    return {name.removeprefix("eval/"): float(value) for name, value in metrics.compute().items()}


def auroc_interval(
    probabilities: np.ndarray, targets: np.ndarray, confidence: float, n_resamples: int, seed: int
) -> tuple[float, float]:
    """The AUROC's BCa interval over the subjects (one row each), resampled within each class."""
    table = pd.DataFrame(
        {
            "subject_id": np.arange(len(targets)).astype(str),
            "target": targets.astype(int),
            "prediction": probabilities.argmax(axis=1),
        }
    )
    if probabilities.shape[1] == 2:
        table["probability"] = probabilities[:, 1]
    else:
        for k in range(probabilities.shape[1]):
            table[f"probability_{k}"] = probabilities[:, k]
    interval = metric_interval(table, "auroc", "classification", confidence, n_resamples, seed)
    return interval.low, interval.high


def downstream_evaluation(
    checkpoint: Mapping,
    train: tuple[np.ndarray, pd.DataFrame],
    evaluations: Mapping[str, tuple[np.ndarray, pd.DataFrame]],
    target: str,
    classifiers: Mapping[str, Sequence[int]],
    seed: int,
    dip: tuple[str, str] | None = ("test", "external"),
    max_iter: int = 500,
    batch_size: int = 64,
    confidence: float = 0.95,
    n_resamples: int = 1000,
) -> pd.DataFrame:
    """Train each MLP on the encoder's features of ``train`` and evaluate it on every split.

    Args:
        checkpoint: The model whose encoder extracts the features.
        train: Images and labels of the classifiers' training split.
        evaluations: ``{split: (images, labels)}`` to evaluate on.
        target: The class label column (e.g. ``sex``).
        classifiers: ``{name: hidden layer widths}``, e.g. ``PAPER_CLASSIFIERS``.
        seed: Seed of the classifiers.
        dip: ``(reference, shifted)`` splits whose difference (reference minus shifted) is reported as
            split ``dip``; ``None`` for none.
        max_iter: Upper bound on the classifiers' training epochs.
        batch_size: Images per forward pass of the encoder.
        confidence: Confidence level of the AUROC intervals.
        n_resamples: Bootstrap resamples per interval.

    Returns:
        One row per classifier and split (and ``dip``): ``classifier``, ``hidden_layers`` (e.g.
        ``"64-32"``), ``split``, ``subjects``, the metrics ``auroc``, ``auprc``, ``accuracy``,
        ``balanced_accuracy``, ``cross_entropy``, and ``auroc_low``, ``auroc_high`` (NaN for ``dip``,
        a difference between two samples of subjects).

    Raises:
        ValueError: If a ``dip`` split is not among ``evaluations``.
    """
    if dip is not None and not set(dip) <= set(evaluations):
        raise ValueError(
            f"dip splits {list(dip)} must be evaluated; evaluations: {sorted(evaluations)}"
        )
    train_features, train_targets = extract_features(checkpoint, *train, target, batch_size)
    evaluated = {
        split: extract_features(checkpoint, images, labels, target, batch_size)
        for split, (images, labels) in evaluations.items()
    }
    num_classes = int(max(train_targets.max(), *(t.max() for _, t in evaluated.values()))) + 1
    rows = []
    for name, hidden_layers in classifiers.items():
        classifier = fit_classifier(train_features, train_targets, hidden_layers, seed, max_iter)
        described = {
            "classifier": name,
            "hidden_layers": "-".join(str(width) for width in hidden_layers),
        }
        scores = {}
        for split, (features, targets) in evaluated.items():
            scores[split] = classifier_metrics(classifier, features, targets, num_classes)
            low, high = auroc_interval(
                classifier_probabilities(classifier, features, num_classes),
                targets,
                confidence,
                n_resamples,
                seed,
            )
            rows.append(
                {
                    **described,
                    "split": split,
                    "subjects": len(targets),
                    **scores[split],
                    "auroc_low": low,
                    "auroc_high": high,
                }
            )
        if dip is not None:
            reference, shifted = (scores[split] for split in dip)
            gap = {metric: reference[metric] - shifted[metric] for metric in reference}
            rows.append(
                {**described, "split": "dip", "subjects": 0, **gap}
                | {"auroc_low": np.nan, "auroc_high": np.nan}
            )
    return pd.DataFrame(rows)
