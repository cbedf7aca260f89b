"""DRAEM's losses (spec §2.2): L2 + (1 - SSIM) on the reconstruction, focal loss on the segmentation.

- SSIM: 11 x 11 Gaussian window (sigma 1.5), per channel, zero padding of 5 so the map has the image's
  size (the official ``ssim``), C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1 for [0, 1] images. The
  official code infers L from the reconstruction (quirk 8); texad fixes L = 1 (same value whenever the
  reconstruction stays within [-0.5, 128], i.e. always in practice).
- Focal loss on the softmax PROBABILITIES (not logits, quirk 9, kept): one-hot target clamped to
  [1e-5, 1 - 1e-5], pt = <target, p> + 1e-5, loss = -(1 - pt)^gamma log(pt), gamma 2, alpha 1, mean
  over pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["draem_loss", "focal_loss", "gaussian_window", "ssim_loss", "ssim_map"]


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    """Normalised 2-D Gaussian (size, size), the outer product of a normalised 1-D Gaussian."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of (N, C, H, W) images (Gaussian-weighted, zero-padded)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"need two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    c = x.shape[1]
    size = min(window_size, x.shape[-2], x.shape[-1])
    window = gaussian_window(size, sigma, x.dtype).to(x.device).expand(c, 1, size, size)
    pad = window_size // 2

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=pad, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_loss(
    x: torch.Tensor, y: torch.Tensor, window_size: int = 11, data_range: float = 1.0
) -> torch.Tensor:
    """1 - mean SSIM over batch, channels and pixels."""
    return 1.0 - ssim_map(x, y, window_size, data_range=data_range).mean()


def focal_loss(
    probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5
) -> torch.Tensor:
    """Focal loss of class probabilities ``probs`` (N, K, H, W) against integer labels ``target``
    (N, 1, H, W) or (N, H, W) with values in 0..K-1; mean over pixels, alpha = 1 for every class."""
    k = probs.shape[1]
    labels = target.reshape(target.shape[0], *probs.shape[2:]).long()
    one_hot = F.one_hot(labels, k).movedim(-1, 1).to(probs.dtype)
    one_hot = one_hot.clamp(smooth / (k - 1), 1.0 - smooth)
    pt = (one_hot * probs).sum(dim=1) + smooth
    return (-((1.0 - pt) ** gamma) * pt.log()).mean()


def draem_loss(
    reconstruction: torch.Tensor, clean: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total = MSE + (1 - SSIM) + focal(softmax(logits), mask); returns the total and its three terms."""
    l2 = F.mse_loss(reconstruction, clean)
    l_ssim = ssim_loss(reconstruction, clean)
    l_focal = focal_loss(torch.softmax(logits, dim=1), mask)
    total = l2 + l_ssim + l_focal
    return total, {"l2": float(l2.detach()), "ssim": float(l_ssim.detach()), "focal": float(l_focal.detach())}
