"""SimpleNet's scores and maps (spec §1.1 item 8).

- patch score: -D(adaptor(feature)) on the feature grid (higher = more anomalous);
- image score: the maximum of the raw patch scores (before upsampling and smoothing), as the official code;
- anomaly map: bilinear upsampling (align_corners=False) of the patch grid to the input size, then a
  Gaussian filter of std ``smoothing_sigma`` pixels (scipy, mode reflect, truncate 4), as the official code.
The official min-max normalisation over the test set is monotone per quantity and left out.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from texad.accel import FP32, Accel
from texad.evaluation.grid import gaussian_smooth

from .model import SimpleNet

__all__ = ["anomaly_maps", "image_scores", "predict"]


def image_scores(patch_scores: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B,): the maximal patch score of each image."""
    return patch_scores.flatten(1).amax(dim=1)


def anomaly_maps(patch_scores: torch.Tensor, size: int, sigma: float) -> np.ndarray:
    """(B, H, W) patch scores -> (B, size, size) float32 maps: bilinear upsampling, then Gaussian smoothing."""
    up = F.interpolate(patch_scores[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)
    return gaussian_smooth(up[:, 0].cpu().numpy(), sigma)


@torch.no_grad()
def predict(
    model: SimpleNet,
    images: torch.Tensor,
    *,
    sigma: float,
    batch_size: int,
    device: str | torch.device,
    accel: Accel = FP32,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Maps (N, S, S) at the input size, image scores (N,) and the seconds it took (incl. smoothing).

    ``accel``: autocast of the backbone, adaptor and discriminator on CUDA (scores and maps stay float32).

    Puts the model in eval mode (the discriminator's BatchNorm uses its running statistics) and leaves it
    there; a training loop calling this must switch back to train mode itself.
    """
    dev = torch.device(device)
    model.eval()
    size = int(images.shape[-1])
    maps, scores = [], []
    start = time.perf_counter()
    for i in range(0, images.shape[0], batch_size):
        with accel.on(dev).autocast(dev):
            patch = model.patch_scores(images[i : i + batch_size].to(dev)).float()
        scores.append(image_scores(patch).float().cpu().numpy())
        maps.append(anomaly_maps(patch, size, sigma))
    seconds = time.perf_counter() - start
    return np.concatenate(maps), np.concatenate(scores), seconds
