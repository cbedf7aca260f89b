"""The one anomaly generator below the methods: DRAEM's Perlin anomalies and the embedded set's defect kinds.

``perlin`` (DRAEM's simulated anomaly, spec §2.3): an anomaly source A (an image of another texture) is
augmented by ``n_augmenters`` distinct augmenters of the recipe (:mod:`texad.data.augment`), a Perlin mask M is
made (scales 2^a x 2^b, a, b uniform in ``perlin_exponents`` upper bound exclusive, noise rotated by U(-90, 90),
M = noise > threshold), an opacity o is drawn, and the image becomes ``I (1 - M) + o A M + (1 - o) I M``
(:func:`paste_perlin`). DRAEM's training draws its samples with it (``texad.methods.draem.anomaly_generator``:
its clean rotation and the share of normal samples around it); the validation split draws it onto held-out
images with exact masks (:func:`draw_perlin`). The defect kinds ``scratch``, ``hole``, ``stain`` and ``fold``
are :mod:`texad.data.defects`'; :func:`draw_anomaly` draws any kind onto any image.

Recipes (spec §2.4, quirk 1): ``code`` is the official repository (10 augmenters, clean rotation +-90 deg,
opacity 1 - beta with beta ~ U(0, 0.8), i.e. o ~ U(0.2, 1)); ``paper`` is the paper as anomalib reads it
(the 7 augmenters the paper names, clean rotation +-45 deg, o ~ U(0.1, 1)). The probability 0.3 of the
clean rotation is the code's; the paper gives none, so ``paper`` keeps it.

Everything random is drawn from the Generator passed in, so an anomaly is a pure function of (image, sources,
recipe, generator state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from texad.data.augment import AUGMENTERS, CODE_AUGMENTERS, PAPER_AUGMENTERS, rotate
from texad.data.defects import DEFECT_TYPES, draw_defect, exact_change
from texad.data.perlin import perlin_noise_2d

__all__ = [
    "ANOMALY_KINDS",
    "MIN_PERLIN_AREA",
    "AnomalyRecipe",
    "Pasted",
    "augment_source",
    "blend",
    "draw_anomaly",
    "draw_perlin",
    "paste_perlin",
    "perlin_mask",
    "recipe_for",
]

#: Every kind of synthetic anomaly: the Perlin anomaly and the embedded set's defect kinds.
ANOMALY_KINDS: tuple[str, ...] = ("perlin", *DEFECT_TYPES)
#: The smallest share of the image a drawn Perlin anomaly covers (a smaller mask is drawn again): a few pixels
#: of a large image are no anomaly that a validation split can score.
MIN_PERLIN_AREA = 0.005
_MAX_DRAWS = 1000
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, PIL's RGB -> L


# ----------------------------------------------------------------------------------------------------
# recipe
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnomalyRecipe:
    """Every number of the anomaly simulation; ``recipe_for`` gives the official ones."""

    name: str
    augmenters: tuple[str, ...] = CODE_AUGMENTERS
    n_augmenters: int = 3
    perlin_exponents: tuple[int, int] = (0, 6)  # scale 2^a per axis, a in [lo, hi) (quirk 2)
    threshold: float = 0.5
    noise_rotation: float = 90.0
    clean_rotation_p: float = 0.3
    clean_rotation: float = 90.0
    opacity: tuple[float, float] = (0.2, 1.0)  # weight of the anomaly source inside the mask
    p_anomaly: float = 0.5

    def __post_init__(self) -> None:
        unknown = [a for a in self.augmenters if a not in AUGMENTERS]
        if unknown:
            raise ValueError(f"unknown augmenters {unknown}; known: {sorted(AUGMENTERS)}")
        if not 0 <= self.n_augmenters <= len(self.augmenters):
            raise ValueError(f"n_augmenters must lie in [0, {len(self.augmenters)}], got {self.n_augmenters}")
        lo, hi = self.perlin_exponents
        if not 0 <= lo < hi:
            raise ValueError(f"perlin_exponents must satisfy 0 <= lo < hi, got {self.perlin_exponents}")
        if not 0.0 <= self.p_anomaly <= 1.0 or not 0.0 <= self.clean_rotation_p <= 1.0:
            raise ValueError("p_anomaly and clean_rotation_p must lie in [0, 1]")
        if not 0.0 <= self.opacity[0] <= self.opacity[1] <= 1.0:
            raise ValueError(f"opacity must be a range inside [0, 1], got {self.opacity}")

    def as_dict(self) -> dict:
        return asdict(self)


def recipe_for(name: str, p_anomaly: float = 0.5) -> AnomalyRecipe:
    """The ``code`` (official repository) or ``paper`` anomaly recipe (spec §2.4)."""
    if name == "code":
        return AnomalyRecipe(
            "code", CODE_AUGMENTERS, clean_rotation=90.0, opacity=(0.2, 1.0), p_anomaly=p_anomaly
        )
    if name == "paper":
        return AnomalyRecipe(
            "paper", PAPER_AUGMENTERS, clean_rotation=45.0, opacity=(0.1, 1.0), p_anomaly=p_anomaly
        )
    raise ValueError(f"recipe must be 'code' or 'paper', got {name!r}")


# ----------------------------------------------------------------------------------------------------
# the pieces of one Perlin anomaly
# ----------------------------------------------------------------------------------------------------
def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, recipe: AnomalyRecipe) -> np.ndarray:
    """Boolean (H, W) mask: thresholded, rotated Perlin noise at a random power-of-two scale per axis."""
    lo, hi = recipe.perlin_exponents
    h, w = int(shape[0]), int(shape[1])
    res = (min(2 ** int(rng.integers(lo, hi)), h), min(2 ** int(rng.integers(lo, hi)), w))
    noise = perlin_noise_2d((h, w), res, rng)
    angle = rng.uniform(-recipe.noise_rotation, recipe.noise_rotation)
    noise = rotate(torch.from_numpy(noise).float()[None], angle)[0].numpy()
    return noise > recipe.threshold


def augment_source(source: np.ndarray, rng: np.random.Generator, recipe: AnomalyRecipe) -> np.ndarray:
    """``n_augmenters`` distinct augmenters of the recipe, drawn uniformly, applied in the drawn order."""
    if source.dtype != np.uint8 or source.ndim != 3 or source.shape[-1] != 3:
        raise ValueError(f"an anomaly source must be uint8 H x W x 3, got {source.dtype} {source.shape}")
    picked = rng.choice(len(recipe.augmenters), size=recipe.n_augmenters, replace=False)
    out = source
    for i in picked:
        out = AUGMENTERS[recipe.augmenters[int(i)]](out, rng)
    return out


def blend(image: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, opacity: float) -> torch.Tensor:
    """``I (1 - M) + o A M + (1 - o) I M`` (spec §2.3 step 5, with o the anomaly's opacity)."""
    m = mask.to(image.dtype)
    return image * (1.0 - m) + opacity * source * m + (1.0 - opacity) * image * m


@dataclass
class Pasted:
    """One Perlin anomaly pasted onto an image: ``image`` (3, H, W) float, ``mask`` (1, H, W) float 0/1, the drawn
    ``opacity`` and the augmented ``source`` (3, H, W) float in [0, 1]."""

    image: torch.Tensor
    mask: torch.Tensor
    opacity: float
    source: torch.Tensor


def paste_perlin(
    image: torch.Tensor,
    raw_source: np.ndarray,
    rng: np.random.Generator,
    recipe: AnomalyRecipe,
    min_pixels: int = 0,
) -> Pasted:
    """Paste the anomaly source ``raw_source`` (uint8 H x W x 3, the image's size) onto ``image`` (3, H, W) float
    in [0, 1]: augment the source, draw the Perlin mask (again while it has fewer than ``min_pixels`` pixels; 0:
    as drawn, DRAEM's training), draw the opacity, blend. Draws from ``rng`` in that order."""
    h, w = int(image.shape[1]), int(image.shape[2])
    if raw_source.shape[:2] != (h, w):
        raise ValueError(f"anomaly source is {raw_source.shape[1]}x{raw_source.shape[0]}, the image {w}x{h}")
    augmented = augment_source(raw_source, rng, recipe)
    source = torch.from_numpy(np.array(augmented)).permute(2, 0, 1).float() / 255.0
    drawn = perlin_mask((h, w), rng, recipe)
    for _ in range(_MAX_DRAWS):
        if int(drawn.sum()) >= min_pixels:
            break
        drawn = perlin_mask((h, w), rng, recipe)
    else:
        raise RuntimeError(
            f"no Perlin mask of {min_pixels} pixels or more in {_MAX_DRAWS} draws ({w}x{h} image)"
        )
    mask = torch.from_numpy(drawn)[None].float()
    opacity = float(rng.uniform(*recipe.opacity))
    return Pasted(blend(image, source, mask, opacity), mask, opacity, source)


def draw_perlin(
    image: np.ndarray,
    sources: Sequence[np.ndarray],
    rng: np.random.Generator,
    recipe: AnomalyRecipe,
    min_area: float = MIN_PERLIN_AREA,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """A Perlin anomaly on a uint8 image, grayscale (H, W) or RGB (H, W, 3), with an exact mask: a source picked
    uniformly from ``sources`` (uint8 (H, W, 3) images of the image's size, read only when picked), pasted by
    :func:`paste_perlin` through a mask of at least ``min_area`` of the image (DRAEM's generator without its clean
    rotation). A grayscale image takes the blend's luminance. Returns (the anomalous image, its mask bool (H, W),
    exactly the pixels that differ; and what was drawn: the source's index and the opacity)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"image: expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    if len(sources) == 0:
        raise ValueError("no anomaly source images to draw from")
    h, w = image.shape[:2]
    index = int(rng.integers(len(sources)))
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    clean = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    pasted = paste_perlin(clean, sources[index], rng, recipe, max(1, math.ceil(min_area * h * w)))
    out = pasted.image.permute(1, 2, 0).numpy() * 255.0
    clean3 = image[..., None] if image.ndim == 2 else image
    if image.ndim == 2:
        out = (out @ _LUMA)[..., None]
    painted, mask = exact_change(clean3, out, pasted.mask[0].numpy() > 0.5)
    drawn = {"source": index, "opacity": pasted.opacity}
    return (painted[..., 0] if image.ndim == 2 else painted), mask, drawn


def draw_anomaly(
    kind: str,
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    sources: Sequence[np.ndarray] = (),
    recipe: AnomalyRecipe | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """An anomaly of ``kind`` (:data:`ANOMALY_KINDS`) on a uint8 image (H, W) or (H, W, 3): (the anomalous image,
    its exact mask, what was drawn). ``perlin`` needs ``sources`` and a ``recipe`` (default: DRAEM's ``code``)."""
    if kind == "perlin":
        return draw_perlin(image, sources, rng, recipe or recipe_for("code"))
    if kind not in DEFECT_TYPES:
        raise ValueError(f"unknown anomaly kind {kind!r}; choose from {', '.join(ANOMALY_KINDS)}")
    painted, mask = draw_defect(image, kind, rng)
    return painted, mask, {}
