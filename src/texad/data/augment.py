"""The source augmenters of the Perlin anomalies (DRAEM's, spec §2.3 table), re-expressed without imgaug, and the
rotation they and the Perlin masks use.

Augmenters work on uint8 H x W x 3 arrays, like imgaug's, and draw everything random from the Generator passed in.
Colour order (DRAEM quirk 6): the official code feeds BGR arrays to RGB-assuming colour augmenters; texad works in
RGB throughout, so the colour augmenters act on true RGB.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import color as skcolor
from torchvision.transforms.v2 import functional as TF

__all__ = ["AUGMENTERS", "CODE_AUGMENTERS", "PAPER_AUGMENTERS", "Augmenter", "rotate"]

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
