"""Soft-label KL divergence over target bins, as in SFCN brain-age models.

Peng, Gong, Beckmann, Vedaldi, Smith (2021), "Accurate brain age prediction with lightweight deep neural
networks", Medical Image Analysis 68:101871. The head has one output per bin (e.g. 40 one-year age bins
over [42, 82)); each target becomes a Gaussian soft label over the bins (the mass of N(target, sigma^2)
falling in each bin, renormalised to sum to 1); the loss is KL(soft label || predicted distribution); the
prediction is the expected bin centre.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from tlkedro.tl.objectives.base import (
    OBJECTIVES,
    Objective,
    Prediction,
    PrimaryTerm,
    TaskInfo,
    check_positive,
)


class SoftLabelKL(PrimaryTerm):
    """KL divergence between Gaussian soft labels over target bins and the predicted bin distribution.

    Args:
        bin_range: ``[start, stop)`` covered by the bins, in target units. ``None``: from the training
            targets, ``[min - 2 sigma, max + 2 sigma]`` widened to whole bins, so the soft labels of the
            youngest and oldest subjects are not cut off (ages 44-80 with one-year bins give [42, 82)).
        bin_width: Width of a bin, in target units.
        sigma: Standard deviation of the soft label, in target units.
    """

    task = "regression"

    def __init__(
        self,
        bin_range: tuple[float, float] | None = None,
        bin_width: float = 1.0,
        sigma: float = 1.0,
    ) -> None:
        check_positive("bin_width", bin_width)
        check_positive("sigma", sigma)
        if bin_range is not None:
            start, stop = bin_range
            if not stop - start >= bin_width:
                raise ValueError(
                    f"bin_range must be [start, stop) with stop - start >= bin_width ({bin_width}); "
                    f"got {list(bin_range)}"
                )
        self.bin_range = bin_range
        self.bin_width = bin_width
        self.sigma = sigma

    def edges(self, info: TaskInfo) -> Tensor:
        """``num_bins + 1`` bin edges, in target units."""
        if self.bin_range is None:
            margin = 2 * self.sigma
            start = math.floor((info.target_min - margin) / self.bin_width) * self.bin_width
            stop = math.ceil((info.target_max + margin) / self.bin_width) * self.bin_width
        else:
            start, stop = self.bin_range
        num_bins = max(1, round((stop - start) / self.bin_width))
        return start + self.bin_width * torch.arange(num_bins + 1, dtype=torch.float64)

    def num_outputs(self, info: TaskInfo) -> int:
        return len(self.edges(info)) - 1

    def soft_labels(self, targets: Tensor, info: TaskInfo) -> Tensor:
        """``(B, num_bins)`` Gaussian soft labels; targets outside the bins are clamped to the range."""
        edges = self.edges(info)
        targets = targets.double().clamp(float(edges[0]), float(edges[-1]))
        cdf = torch.special.ndtr((edges[None, :] - targets[:, None]) / self.sigma)
        mass = cdf[:, 1:] - cdf[:, :-1]
        return (mass / mass.sum(dim=1, keepdim=True)).float()

    def loss(self, outputs: Tensor, targets: Tensor, info: TaskInfo) -> Tensor:
        # log_softmax is idempotent on log-probabilities, so SFCN's log-softmax output and a plain
        # linear head are both valid inputs.
        log_probabilities = F.log_softmax(outputs, dim=1)
        soft = self.soft_labels(targets, info).to(outputs.device, outputs.dtype)
        return F.kl_div(log_probabilities, soft, reduction="batchmean")

    def predict(self, outputs: Tensor, info: TaskInfo) -> Prediction:
        edges = self.edges(info).to(outputs.device, outputs.dtype)
        centres = (edges[1:] + edges[:-1]) / 2
        return Prediction(values=outputs.softmax(dim=1) @ centres, probabilities=None)


@OBJECTIVES.register()
def soft_label_kl(
    bin_range: tuple[float, float] | None = None, bin_width: float = 1.0, sigma: float = 1.0
) -> Objective:
    """SFCN's soft-label KL over target bins (see the module docstring)."""
    return Objective(SoftLabelKL(bin_range=bin_range, bin_width=bin_width, sigma=sigma))
