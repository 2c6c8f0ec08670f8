"""Self- and semi-supervised auxiliary terms: learning from images without labels.

Labelled target images train the primary head as usual; unlabelled images (another split or site, given
to ``fit`` as ``unlabelled``: in the pipelines ``unlabelled_from: external``) shape the encoder through
a loss that needs no label. Each labelled image of a batch is paired with an unlabelled one.

- ``reconstruction``: a light decoder (two linear layers) maps the encoder's pooled features back to a
  coarse copy of the input (average-pooled to ``size`` per side), trained with the mean squared error:
  the supervised autoencoder of Le, Patterson and White ("Supervised autoencoders: Improving
  generalization performance with unsupervised regularizers", NeurIPS 2018). The features must keep
  what the image looks like, not only what separates the training labels.
- ``consistency``: the Pi-model of Laine and Aila ("Temporal Ensembling for Semi-Supervised Learning",
  ICLR 2017): two stochastic views of each image (Gaussian noise, and the network's own dropout) should
  give the same prediction; the loss is the mean squared difference of the two class distributions
  (softmax over several outputs) or outputs (a single regression output).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tlkedro.tl.objectives.base import AUXILIARY_TERMS, UNLABELLED, check_positive


def _with_unlabelled(inputs: Tensor, extras: Mapping[str, Tensor]) -> Tensor:
    unlabelled = extras.get(UNLABELLED)
    return inputs if unlabelled is None else torch.cat([inputs, unlabelled.to(inputs)])


def coarse_shape(model: nn.Module, size: int) -> tuple[int, ...]:
    """``(channels, size, ...)``: the model's input channels at ``size`` per spatial side."""
    return (model.in_channels, *(size,) * model.spatial_dims)


def coarse_decoder(model: nn.Module, shape: tuple[int, ...], hidden: int) -> nn.Sequential:
    """A light decoder (two linear layers) from the model's pooled features to a ``shape`` image."""
    return nn.Sequential(
        nn.Linear(model.num_features, hidden), nn.ReLU(), nn.Linear(hidden, int(np.prod(shape)))
    )


def coarse_reconstruction_loss(
    decoder: nn.Module, shape: tuple[int, ...], features: Tensor, images: Tensor
) -> Tensor:
    """Mean squared error between the decoded ``features`` (``shape`` each) and ``images``
    average-pooled to that shape."""
    decoded = decoder(features).view(len(images), *shape)
    pool = F.adaptive_avg_pool2d if images.ndim == 4 else F.adaptive_avg_pool3d
    return F.mse_loss(decoded, pool(images, shape[1:]))


@AUXILIARY_TERMS.register("reconstruction")
class Reconstruction(nn.Module):
    """Reconstruct a coarse copy of each image from its features through a light decoder.

    Args:
        size: Side of the coarse copy, in pixels or voxels (the image is average-pooled to it).
        hidden: Width of the decoder's hidden layer.
        unlabelled: Reconstruct the unlabelled images as well as the labelled ones (needs them).
    """

    def __init__(self, size: int = 8, hidden: int = 256, unlabelled: bool = True) -> None:
        super().__init__()
        check_positive("size", size)
        check_positive("hidden", hidden)
        self.name = "reconstruction"
        self.needs = (UNLABELLED,) if unlabelled else ()
        self.size = int(size)
        self.hidden = int(hidden)
        self.decoder: nn.Sequential | None = None
        self.shape: tuple[int, ...] = ()

    def attach(self, model: nn.Module, labels: Mapping[str, np.ndarray]) -> None:
        """Build the decoder from the model's feature size to its input channels at ``size`` per side."""
        self.shape = coarse_shape(model, self.size)
        self.decoder = coarse_decoder(model, self.shape, self.hidden)

    def forward(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor, **extras: Tensor
    ) -> Tensor:
        """Mean squared error between the decoded features and the average-pooled images."""
        images = _with_unlabelled(inputs, extras)
        return coarse_reconstruction_loss(
            self.decoder, self.shape, model.forward_features(images), images
        )


@AUXILIARY_TERMS.register("consistency")
class Consistency:
    """Pi-model consistency between two noisy views of the labelled and unlabelled images.

    Args:
        noise_std: Standard deviation of the Gaussian noise added to each view (images are z-scored).
    """

    needs = (UNLABELLED,)
    name = "consistency"

    def __init__(self, noise_std: float = 0.1) -> None:
        check_positive("noise_std", noise_std)
        self.noise_std = noise_std

    def _predict(self, model: nn.Module, images: Tensor) -> Tensor:
        outputs = model(images + self.noise_std * torch.randn_like(images))
        return outputs.softmax(dim=1) if outputs.shape[1] > 1 else outputs

    def __call__(
        self, model: nn.Module, inputs: Tensor, outputs: Tensor, targets: Tensor, **extras: Tensor
    ) -> Tensor:
        """Mean squared difference between the predictions of two views of every image."""
        images = _with_unlabelled(inputs, extras)
        return F.mse_loss(self._predict(model, images), self._predict(model, images))
