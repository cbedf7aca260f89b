"""DRAEM's training samples (spec §2.3), drawn with the anomaly generator below the methods
(:mod:`texad.data.anomalies`, which the validation split draws from too).

One training sample, given a clean image I, a list of anomaly-source images and a numpy Generator:

1. with probability ``clean_rotation_p`` I is rotated by U(-r, r) degrees (bilinear, black corners); the
   rotated image is both the network input (before blending) and the reconstruction target;
2. with probability ``1 - p_anomaly`` the sample stays normal (input = target, empty mask, label 0);
3. otherwise a source image A is picked uniformly and pasted through a Perlin mask
   (:func:`texad.data.anomalies.paste_perlin`: ``n_augmenters`` augmenters, the mask, the opacity, the blend);
   label 1 unless the mask is empty.

The recipes (``code``, ``paper``: :func:`~texad.data.anomalies.recipe_for`) are the generator's. Everything random
is drawn from the Generator passed in, so a sample is a pure function of (image, sources, recipe, generator state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from texad.data.anomalies import AnomalyRecipe, paste_perlin, recipe_for
from texad.data.augment import rotate

__all__ = ["AnomalyRecipe", "SimulatedSample", "recipe_for", "simulate_anomaly"]


@dataclass
class SimulatedSample:
    input: torch.Tensor  # (3, H, W) float in [0, 1]: what the reconstructive network sees
    target: torch.Tensor  # (3, H, W): the clean (possibly rotated) image to reconstruct
    mask: torch.Tensor  # (1, H, W) float 0/1
    label: float  # 1.0 when the mask is not empty
    opacity: float | None = None  # None for a normal sample
    source: torch.Tensor | None = None  # (3, H, W) the augmented anomaly source (None when normal)


def simulate_anomaly(
    image: torch.Tensor,
    rng: np.random.Generator,
    recipe: AnomalyRecipe,
    sources: Sequence[np.ndarray],
) -> SimulatedSample:
    """One training sample from a clean (3, H, W) float image in [0, 1] (see the module docstring).

    ``sources`` is any sequence of uint8 (H, W, 3) images of the image's size (e.g. a
    :class:`~texad.data.anomaly_sources.SourceBank`); only the one picked is read.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    h, w = int(image.shape[1]), int(image.shape[2])
    target = image.float()
    if rng.random() < recipe.clean_rotation_p:
        target = rotate(target, rng.uniform(-recipe.clean_rotation, recipe.clean_rotation))
    empty = torch.zeros((1, h, w), dtype=torch.float32)
    if rng.random() >= recipe.p_anomaly:
        return SimulatedSample(target, target, empty, 0.0)
    if len(sources) == 0:
        raise ValueError("no anomaly source images to draw from")
    pasted = paste_perlin(target, sources[int(rng.integers(len(sources)))], rng, recipe)
    label = 1.0 if bool(pasted.mask.any()) else 0.0
    return SimulatedSample(pasted.image, target, pasted.mask, label, pasted.opacity, pasted.source)
