"""DRAEM's simulated anomalies (spec §2.3), re-expressed without imgaug.

One training sample, given a clean image I, a list of anomaly-source images and a numpy Generator:

1. with probability ``clean_rotation_p`` I is rotated by U(-r, r) degrees (bilinear, black corners); the
   rotated image is both the network input (before blending) and the reconstruction target;
2. with probability ``1 - p_anomaly`` the sample stays normal (input = target, empty mask, label 0);
3. otherwise a source image A is picked uniformly, ``n_augmenters`` distinct augmenters are drawn from the
   recipe's list and applied in sequence, a Perlin mask M is made (scales 2^a x 2^b, a, b uniform in
   ``perlin_exponents`` upper bound exclusive, noise rotated by U(-90, 90), M = noise > threshold), an
   opacity o is drawn, and the input becomes ``I (1 - M) + o A M + (1 - o) I M``; label 1 unless M is empty.

Recipes (spec §2.4, quirk 1): ``code`` is the official repository (10 augmenters, clean rotation +-90 deg,
opacity 1 - beta with beta ~ U(0, 0.8), i.e. o ~ U(0.2, 1)); ``paper`` is the paper as anomalib reads it
(the 7 augmenters the paper names, clean rotation +-45 deg, o ~ U(0.1, 1)). The probability 0.3 of the
clean rotation is the code's; the paper gives none, so ``paper`` keeps it.

Colour order (quirk 6): the official code feeds BGR arrays to RGB-assuming colour augmenters; texad works
in RGB throughout, so the colour augmenters act on true RGB. The networks are trained from scratch, so
channel order matters only for what these augmenters do.

Everything random is drawn from the Generator passed in, so a sample is a pure function of (image,
sources, recipe, generator state). Augmenters work on uint8 H x W x 3 arrays, like imgaug's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import color as skcolor
from torchvision.transforms.v2 import functional as TF

from .perlin import perlin_noise_2d

__all__ = [
    "AUGMENTERS",
    "CODE_AUGMENTERS",
    "PAPER_AUGMENTERS",
    "AnomalyRecipe",
    "SimulatedSample",
    "augment_source",
    "blend",
    "perlin_mask",
    "recipe_for",
    "rotate",
    "simulate_anomaly",
]

Augmenter = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# ----------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------
def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a (C, H, W) float tensor about its centre; bilinear, outside filled with 0 (imgaug Affine)."""
    return TF.rotate(x, float(degrees), interpolation=TF.InterpolationMode.BILINEAR, fill=0.0)


def _rotate_uint8(x: np.ndarray, degrees: float) -> np.ndarray:
    t = torch.from_numpy(np.array(x)).permute(2, 0, 1).float()
    out = rotate(t, degrees).round().clamp(0, 255).to(torch.uint8)
    return out.permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------------------------------
# the official augmenters (spec §2.3 table), uint8 H x W x 3 -> uint8 H x W x 3
# ----------------------------------------------------------------------------------------------------
def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def aug_gamma(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """GammaContrast((0.5, 2), per_channel=True): 255 (v / 255)^g, one g per channel."""
    g = rng.uniform(0.5, 2.0, size=3)
    return _to_uint8(255.0 * (x.astype(np.float64) / 255.0) ** g)


_BRIGHTNESS_SPACES = ("YCrCb", "HSV", "HLS", "Lab", "Luv", "YUV")


def _with_brightness(x: np.ndarray, space: str, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Change the brightness channel of ``space`` (in OpenCV's 8-bit units, 0..255) and go back to RGB.

    For YCrCb/YUV (luma Y), HSV (V = max) and HLS (L = (max + min) / 2) the inverse with the other
    channels fixed has a closed form; Lab and Luv go through scikit-image.
    """
    rgb = x.astype(np.float64)
    if space in ("YCrCb", "YUV"):  # both use BT.601 luma; fixed chroma -> add the luma change to R, G, B
        y = rgb @ np.array([0.299, 0.587, 0.114])
        return _to_uint8(rgb + (change(y) - y)[..., None])
    if space == "HSV":  # fixed H, S -> R, G, B scale with V
        v = rgb.max(axis=-1)
        v_new = change(v)
        ratio = np.divide(v_new, v, out=np.zeros_like(v), where=v > 0)
        out = np.where((v > 0)[..., None], rgb * ratio[..., None], v_new[..., None])
        return _to_uint8(out)
    if space == "HLS":  # fixed H, S -> the chroma offset from L scales with 255 - |2L - 255|
        lum = (rgb.max(axis=-1) + rgb.min(axis=-1)) / 2.0
        lum_new = change(lum)
        span, span_new = 255.0 - np.abs(2.0 * lum - 255.0), 255.0 - np.abs(2.0 * lum_new - 255.0)
        ratio = np.divide(span_new, span, out=np.zeros_like(span), where=span > 0)
        return _to_uint8(lum_new[..., None] + (rgb - lum[..., None]) * ratio[..., None])
    forward, backward = {
        "Lab": (skcolor.rgb2lab, skcolor.lab2rgb),
        "Luv": (skcolor.rgb2luv, skcolor.luv2rgb),
    }[space]
    with warnings.catch_warnings():  # out-of-gamut colours are clipped below; the warning adds nothing
        warnings.simplefilter("ignore")
        img = forward(rgb / 255.0)
        img[..., 0] = change(img[..., 0] * 2.55) / 2.55  # L in 0..100 <-> OpenCV's 8-bit 0..255
        return _to_uint8(np.clip(backward(img), 0.0, 1.0) * 255.0)


def aug_brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30)): in a random colour space of six,
    multiply and add (in random order) on the brightness channel, clipping to 0..255 after each."""
    space = _BRIGHTNESS_SPACES[int(rng.integers(len(_BRIGHTNESS_SPACES)))]
    mul = float(rng.uniform(0.8, 1.2))
    add = float(rng.integers(-30, 31))
    mul_first = bool(rng.random() < 0.5)

    def change(c: np.ndarray) -> np.ndarray:
        c = np.clip(c * mul, 0, 255) if mul_first else np.clip(c + add, 0, 255)
        return np.clip(c + add, 0, 255) if mul_first else np.clip(c * mul, 0, 255)

    return _with_brightness(x, space, change)


def aug_sharpness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """pillike.EnhanceSharpness(): PIL sharpness enhancement with factor ~ U(0, 2)."""
    factor = float(rng.uniform(0.0, 2.0))
    t = torch.from_numpy(np.array(x)).permute(2, 0, 1)
    return TF.adjust_sharpness(t, factor).permute(1, 2, 0).numpy()


def aug_hue_saturation(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AddToHueAndSaturation((-50, 50), per_channel=True): independent integer shifts of hue (in units of
    1/255 of the hue circle) and saturation (0..255 scale, clipped)."""
    dh, ds = int(rng.integers(-50, 51)), int(rng.integers(-50, 51))
    hsv = skcolor.rgb2hsv(x)
    hsv[..., 0] = np.mod(hsv[..., 0] + dh / 255.0, 1.0)
    hsv[..., 1] = np.clip(hsv[..., 1] + ds / 255.0, 0.0, 1.0)
    return _to_uint8(skcolor.hsv2rgb(hsv) * 255.0)


def aug_solarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Solarize(0.5, threshold=(32, 128)): with probability 0.5 invert every value >= t, t ~ U(32, 128)."""
    if rng.random() >= 0.5:
        return x.copy()
    t = rng.uniform(32.0, 128.0)
    return np.where(x >= t, 255 - x, x).astype(np.uint8)


def aug_posterize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Posterize(): keep the n highest bits of every value, n uniform in 1..8."""
    bits = int(rng.integers(1, 9))
    return (x & np.uint8((0xFF << (8 - bits)) & 0xFF)).astype(np.uint8)


def aug_invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Invert(): 255 - v."""
    return (255 - x).astype(np.uint8)


def aug_autocontrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """pillike.Autocontrast(): PIL autocontrast with an integer cutoff (percent) uniform in 0..20."""
    cutoff = int(rng.integers(0, 21))
    return np.asarray(ImageOps.autocontrast(Image.fromarray(x), cutoff=cutoff))


def aug_equalize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """pillike.Equalize(): PIL histogram equalisation."""
    return np.asarray(ImageOps.equalize(Image.fromarray(x)))


def aug_rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Affine(rotate=(-45, 45)): bilinear, black outside."""
    return _rotate_uint8(x, rng.uniform(-45.0, 45.0))


AUGMENTERS: dict[str, Augmenter] = {
    "gamma": aug_gamma,
    "brightness": aug_brightness,
    "sharpness": aug_sharpness,
    "hue_saturation": aug_hue_saturation,
    "solarize": aug_solarize,
    "posterize": aug_posterize,
    "invert": aug_invert,
    "autocontrast": aug_autocontrast,
    "equalize": aug_equalize,
    "rotate": aug_rotate,
}
#: The official list, in the official order (``DR data_loader.py:L80-90``).
CODE_AUGMENTERS = tuple(AUGMENTERS)
#: The seven the paper names: posterize, sharpness, solarize, equalize, brightness, colour, autocontrast.
PAPER_AUGMENTERS = (
    "posterize",
    "sharpness",
    "solarize",
    "equalize",
    "brightness",
    "hue_saturation",
    "autocontrast",
)


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
# the pieces of one sample
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
    :class:`~texad.methods.draem.sources.SourceBank`); only the one picked is read.
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
    raw = sources[int(rng.integers(len(sources)))]
    if raw.shape[:2] != (h, w):
        raise ValueError(f"anomaly source is {raw.shape[1]}x{raw.shape[0]}, the image {w}x{h}")
    augmented = augment_source(raw, rng, recipe)
    source = torch.from_numpy(np.array(augmented)).permute(2, 0, 1).float() / 255.0
    mask = torch.from_numpy(perlin_mask((h, w), rng, recipe))[None].float()
    opacity = float(rng.uniform(*recipe.opacity))
    blended = blend(target, source, mask, opacity)
    label = 1.0 if bool(mask.any()) else 0.0
    return SimulatedSample(blended, target, mask, label, opacity, source)
