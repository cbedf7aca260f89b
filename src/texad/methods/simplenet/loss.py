"""SimpleNet's truncated L1 (hinge) loss on discriminator scores (spec §1.1 item 7).

L = mean(max(0, m - D(real))) + mean(max(0, m + D(fake))): a real feature stops contributing once it
scores at least ``m``, a fake one once it scores at most ``-m``.
"""

from __future__ import annotations

import torch

__all__ = ["separation", "truncated_l1_loss"]


def truncated_l1_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(relu(margin - real)) + mean(relu(margin + fake)); the two means run over their own sets."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return torch.clamp(margin - real_scores, min=0).mean() + torch.clamp(margin + fake_scores, min=0).mean()


@torch.no_grad()
def separation(real_scores: torch.Tensor, fake_scores: torch.Tensor, margin: float) -> tuple[float, float]:
    """Fractions of real scores >= margin and of fake scores < -margin (the official p_true / p_fake)."""
    return float((real_scores >= margin).float().mean()), float((fake_scores < -margin).float().mean())
