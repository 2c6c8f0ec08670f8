"""``simclr``: contrastive self-supervised pretraining, needing no label.

SimCLR (Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020): two random views of every image (``tlkedro.tl.augmentation.contrastive_view``:
crops, small affine changes, left-right flips, intensity and noise suited to MRI) go through the encoder
and a projection head; the NT-Xent loss pulls the two views of an image together and pushes them away
from the other ``2B - 2`` views of the batch. The projection head and the loss are lightly's
(``SimCLRProjectionHead``, ``NTXentLoss``). Only the encoder is kept for fine-tuning (``init_from``), as in
the paper, where the features before the projection transfer better than those after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn

from tlkedro.tl.augmentation import LEFT_RIGHT_AXIS, contrastive_view
from tlkedro.tl.objectives.base import (
    OBJECTIVES,
    SelfSupervisedTerm,
    check_positive,
    self_supervised_objective,
)


class SimCLR(SelfSupervisedTerm):
    """NT-Xent between the projected features of two random views of each image.

    Args:
        temperature: NT-Xent's temperature (the paper's best for small batches: 0.1-0.5).
        projection_dim: Width of the projection head's output.
        hidden_dim: Width of its hidden layer.
        crop_scale, rotate_degrees, intensity, noise_std, flip_axis: The views
            (``tlkedro.tl.augmentation.contrastive_view``).
    """

    name = "simclr"

    def __init__(
        self,
        temperature: float = 0.2,
        projection_dim: int = 64,
        hidden_dim: int = 256,
        crop_scale: float = 0.6,
        rotate_degrees: float = 10.0,
        intensity: float = 0.2,
        noise_std: float = 0.1,
        flip_axis: int | None = LEFT_RIGHT_AXIS,
    ) -> None:
        super().__init__()
        for key, value in (
            ("temperature", temperature),
            ("projection_dim", projection_dim),
            ("hidden_dim", hidden_dim),
        ):
            check_positive(key, value)
        self.view_kwargs = {
            "crop_scale": crop_scale,
            "rotate_degrees": rotate_degrees,
            "intensity": intensity,
            "noise_std": noise_std,
            "flip_axis": flip_axis,
        }
        # A value out of range fails here, when the configuration is validated.
        contrastive_view((8, 8, 8), **self.view_kwargs)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim)
        # gather_distributed: with several processes (DDP) every view of every process is a negative.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        self.projection: nn.Module | None = None

    def view_transforms(self, spatial_shape: Sequence[int]) -> list[Callable[[Tensor], Tensor]]:
        """Two views drawn from the same random transform."""
        return [contrastive_view(spatial_shape, **self.view_kwargs) for _ in range(2)]

    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """The projection head on the model's pooled features."""
        self.projection = SimCLRProjectionHead(
            model.num_features, self.hidden_dim, self.projection_dim
        )

    def forward(self, model: nn.Module, views: Sequence[Tensor]) -> Tensor:
        """NT-Xent of the two views' projections."""
        first, second = (self.projection(model.forward_features(view)) for view in views)
        return self.criterion(first, second)


OBJECTIVES.register("simclr")(self_supervised_objective(SimCLR))
