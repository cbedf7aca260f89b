"""The named network sizes of the diffusion core (plain data: no torch, so settings can be checked without it).

``UNET_PRESETS``: Method B's epsilon-prediction U-Net (:mod:`texad.diffusion.unet`); ``NCSNPP_PRESETS``: Method A's
score network (:mod:`texad.diffusion.ncsnpp`). A network of ``L`` levels halves the image ``L - 1`` times, so its
image size must be a multiple of :func:`size_multiple`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["UNET_PRESETS", "NCSNPP_PRESETS", "size_multiple", "check_image_size"]

#: Named configurations. ``attention_resolutions`` are feature-map sizes at the preset's
#: ``image_size``; :func:`build_unet` rescales them (as down-sampling factors) to the requested size.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # DDAD's U-Net (spec §1.1): UNetModel(img_size=256, base_channels=64, n_heads=4, dropout=0.0).
    "paper": dict(
        image_size=256,
        base_channels=64,
        channel_mults=(1, 1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        num_heads=4,
        dropout=0.0,
        groups=32,
        resblock_updown=True,
    ),
    # DDAD-S (spec §1.1): base 32, 2 heads, dropout 0.3.
    "paper_small": dict(
        image_size=256,
        base_channels=32,
        channel_mults=(1, 1, 2, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(32, 16, 8),
        num_heads=2,
        dropout=0.3,
        groups=32,
        resblock_updown=True,
    ),
    # Small network for smoke tests and CPU runs (GroupNorm with 8 groups: 2-4 channels per group).
    "tiny": dict(
        image_size=64,
        base_channels=16,
        channel_mults=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(16,),
        num_heads=2,
        dropout=0.0,
        groups=8,
        resblock_updown=True,
    ),
}


#: Named layouts; ``attn_resolutions`` are feature-map sizes at the preset's ``image_size``.
NCSNPP_PRESETS: dict[str, dict[str, Any]] = {
    # score_sde ve/ffhq_256_ncsnpp_continuous (spec §2.4); nf comes from the config (texad default 64).
    "paper": dict(
        image_size=256, channel_mults=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)
    ),
    # CPU demo and tests: three levels, one block each, no attention.
    "tiny": dict(image_size=64, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=()),
}


def size_multiple(preset: dict[str, Any]) -> int:
    """The image sizes a preset can take are the multiples of 2 ** (levels - 1)."""
    return 2 ** (len(preset["channel_mults"]) - 1)


def check_image_size(image_size: int, presets: dict[str, dict[str, Any]], preset: str, key: str) -> None:
    """Refuse an ``image_size`` that the network of ``preset`` (the config key ``key``) cannot take."""
    multiple = size_multiple(presets[preset])
    if image_size % multiple:
        raise ValueError(
            f"image_size: {image_size} is not a multiple of {multiple}, which {key} {preset!r} needs "
            f"(its network halves the image {multiple.bit_length() - 1} times); choose another image_size or preset"
        )
