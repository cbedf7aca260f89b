"""DRAEM inference (spec §2.4): the pixel map is the softmax anomaly channel of the discriminative output
at the input size; the image score is the maximum of that map mean-filtered with a ``pool`` x ``pool``
box (stride 1, zero padding ``pool // 2`` counted in the mean, quirk 5: kept, it is the method).
Networks in eval mode (BatchNorm running statistics); the reconstruction is detached, as at test time
in the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["image_scores", "predict"]


@torch.no_grad()
def predict(
    recon: torch.nn.Module, disc: torch.nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) images in [0, 1] -> anomaly maps (N, S, S) in [0, 1] and reconstructions (N, 3, S, S)."""
    reconstruction = recon(images)
    logits = disc(torch.cat((reconstruction, images), dim=1))
    return torch.softmax(logits, dim=1)[:, 1], reconstruction


def image_scores(maps: torch.Tensor, pool: int = 21) -> torch.Tensor:
    """Max of the ``pool`` x ``pool`` mean-filtered map (zero padding counted), one score per image."""
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    pooled = F.avg_pool2d(maps[:, None], pool, stride=1, padding=pool // 2, count_include_pad=True)
    return pooled.flatten(1).amax(dim=1)
