"""Running statistics of BatchNorm recomputed for the current weights before each validation (precise BN).

In training mode a BatchNorm layer normalises with the batch's statistics; in evaluation mode with its
running averages, updated with momentum 0.1 at every training step. After a short run with few, small
batches those averages still weigh in their initial values (mean 0, variance 1) and the activations of
earlier, quite different weights: a 3D ResNet-18 trained for 2 epochs of batch 8 predicted ages of -132
years in evaluation mode while its training-mode error was 14-17 years (tests/tl/test_batchnorm.py
reproduces it). Recomputing the statistics with the current weights over the training rows, as
``torch.optim.swa_utils.update_bn`` does after weight averaging and "precise BN" does in detectron2
(Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021), makes evaluation mode compute what training
taught. ``update_bn`` itself is not used because it resets every BatchNorm layer and runs the model in
training mode: frozen layers (``tlkedro.tl.strategies.base.freeze``) must keep their statistics, and
dropout must not run.

Training itself is unchanged (training mode never reads the running statistics of the trained layers);
what changes is every evaluation-mode output: validation metrics, the choice of the best epoch, and the
checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader


def trained_batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that train (frozen ones have parameters without gradients)."""
    return [
        layer
        for layer in model.modules()
        if isinstance(layer, _BatchNorm)
        and layer.track_running_stats
        and all(p.requires_grad for p in layer.parameters(recurse=False))
    ]


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[Tensor], device: torch.device) -> None:
    """Replace the running statistics of ``trained_batchnorms(model)`` by their average over ``batches``.

    Only those layers run in training mode, so dropout and frozen layers stay as they are; ``model``
    is left in evaluation mode.
    """
    layers = trained_batchnorms(model)
    momenta = {}
    model.eval()
    for layer in layers:
        momenta[layer] = layer.momentum
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches
        layer.train()
    for images in batches:
        model(images.to(device))
    for layer in layers:
        layer.momentum = momenta[layer]
        layer.eval()


class RecalibrateBatchNorm(L.Callback):
    """``recalibrate`` the module's ``model`` over the training rows before every validation of ``fit``.

    Args:
        loader: The training rows without augmentation, in order; its items start with the image.
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        recalibrate(pl_module.model, (batch[0] for batch in self.loader), pl_module.device)
