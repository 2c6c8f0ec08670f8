"""Segmentation on a transferred encoder: a U-Net decoder, Dice and HD95 per subject (docs/segmentation.md).

``SegmentationNet`` (``network``) puts a decoder on the encoder of any registered convolutional
architecture after a transfer-learning strategy prepared it; ``fit_segmentation`` and ``predict_masks``
(``training``) train and apply it with the ``dice_ce`` objective; ``subject_metrics`` and the interval
helpers (``metrics``) score predicted label maps per subject; ``plot_predicted_masks`` (``figures``) shows
them next to the truth.
"""

from tlkedro.tl.segmentation.figures import plot_predicted_masks
from tlkedro.tl.segmentation.metrics import (
    DICE_MEAN,
    HD95,
    HIGHER_IS_BETTER,
    MeanInterval,
    mean_interval,
    paired_mean_difference,
    subject_metrics,
    subject_scores,
    subject_volumes,
)
from tlkedro.tl.segmentation.network import (
    SegmentationNet,
    build_segmentation_model,
    segmentation_net,
    skip_levels,
)
from tlkedro.tl.segmentation.training import (
    DEFAULT_CLASSES,
    SegmentationFit,
    SegmentConfig,
    build_segmenter,
    fit_segmentation,
    predict_masks,
)

__all__ = [
    "DEFAULT_CLASSES",
    "DICE_MEAN",
    "HD95",
    "HIGHER_IS_BETTER",
    "MeanInterval",
    "SegmentConfig",
    "SegmentationFit",
    "SegmentationNet",
    "build_segmentation_model",
    "build_segmenter",
    "fit_segmentation",
    "mean_interval",
    "paired_mean_difference",
    "plot_predicted_masks",
    "predict_masks",
    "segmentation_net",
    "skip_levels",
    "subject_metrics",
    "subject_scores",
    "subject_volumes",
]
