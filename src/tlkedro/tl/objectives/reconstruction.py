"""``masked_autoencoder``: self-supervised pretraining by restoring masked, noisy images, needing no label.

A denoising autoencoder (Vincent, Larochelle, Bengio and Manzagol, ICML 2008) whose corruption hides
patches of the image (the in-painting of Pathak et al.'s context encoders, CVPR 2016, and of Models
Genesis, Zhou et al., MICCAI 2019, for 3D medical images): the encoder sees a corrupted view
(``tlkedro.tl.augmentation.masked_view``: patches set to the scan's mean, then Gaussian noise), and a
light decoder must rebuild a coarse copy of the clean image from the encoder's pooled features. The
decoder is the one of the ``reconstruction`` auxiliary term (two linear layers), so the objective fits
every architecture of the registry, CNNs and ViTs, 2D and 3D, whatever the encoder's output; being
small, it leaves the work of describing the image to the encoder, which fine-tuning keeps (``init_from``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from torch import Tensor, nn

from tlkedro.tl.augmentation import clean_view, masked_view
from tlkedro.tl.objectives.base import (
    OBJECTIVES,
    SelfSupervisedTerm,
    check_positive,
    self_supervised_objective,
)
from tlkedro.tl.objectives.semi_supervised import (
    coarse_decoder,
    coarse_reconstruction_loss,
    coarse_shape,
)


class MaskedAutoencoder(SelfSupervisedTerm):
    """Restore a coarse copy of each clean image from the features of its masked, noisy view.

    Args:
        size: Side of the coarse copy, in pixels or voxels (the clean image is average-pooled to it).
        hidden: Width of the decoder's hidden layer.
        holes, patch, noise_std: The corruption (``tlkedro.tl.augmentation.masked_view``).
    """

    name = "masked_autoencoder"

    def __init__(
        self,
        size: int = 16,
        hidden: int = 256,
        holes: int = 16,
        patch: float = 0.125,
        noise_std: float = 0.1,
    ) -> None:
        super().__init__()
        check_positive("size", size)
        check_positive("hidden", hidden)
        self.view_kwargs = {"holes": holes, "patch": patch, "noise_std": noise_std}
        # A value out of range fails here, when the configuration is validated.
        masked_view((8, 8), **self.view_kwargs)
        self.size = int(size)
        self.hidden = int(hidden)
        self.shape: tuple[int, ...] = ()
        self.decoder: nn.Module | None = None

    def view_transforms(self, spatial_shape: Sequence[int]) -> list[Callable[[Tensor], Tensor]]:
        """The clean image, then its corrupted view."""
        return [clean_view(), masked_view(spatial_shape, **self.view_kwargs)]

    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """The decoder from the model's pooled features to its input channels at ``size`` per side."""
        self.shape = coarse_shape(model, self.size)
        self.decoder = coarse_decoder(model, self.shape, self.hidden)

    def forward(self, model: nn.Module, views: Sequence[Tensor]) -> Tensor:
        """Mean squared error of the decoded corrupted view against the pooled clean one."""
        clean, corrupted = views
        features = model.forward_features(corrupted)
        return coarse_reconstruction_loss(self.decoder, self.shape, features, clean)


OBJECTIVES.register("masked_autoencoder")(self_supervised_objective(MaskedAutoencoder))
