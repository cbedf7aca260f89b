"""Method B's variants (spec ``method_b_conditioned_blur_ddpm.md`` §3.5): ``default`` and the guidance points,
inference only.

A point is (w, s, blur_sigma, t_start); ``skip`` follows ``t_start`` so that every point takes the same number of
steps as the default (DDAD: 250 / 25 = 10 steps). Axes, each around the class's default point:

* ``w`` with s at its default; ``s`` with w at the class's own default (w is per class);
* the joint ``joint_w`` x ``joint_s`` grid (the headline ablation);
* ``blur_sigma``; ``t_start``.

Points are named by their absolute settings (``w4_s0.5_blur3_t250``), so one name means the same inference on
every class; a class's default point is not run twice: its ``default`` run records its point name
(``extra.ablation_point``) and the ablation table counts it under that name too. No point retrains anything.
"""

from __future__ import annotations

from dataclasses import replace

from texad.methods.base import Variant

from .settings import Ablation, Inference, MethodBSettings

__all__ = ["point_name", "inference_point", "variants", "official"]


def point_name(w: float, s: float, blur_sigma: float, t_start: int) -> str:
    return f"w{float(w):g}_s{float(s):g}_blur{float(blur_sigma):g}_t{int(t_start)}"


def inference_point(inf: Inference) -> str:
    """The name of the guidance point an inference runs (its ablation point)."""
    return point_name(inf.w, inf.s, inf.blur_sigma, inf.t_start)


_NO_ABLATION = Ablation(w=(), s=(), joint_w=(), joint_s=(), blur_sigma=(), t_start=())


def official(settings: MethodBSettings) -> Variant:
    """DDAD's evaluation on the default's models (spec §1.3, §3.3): ``protocol: ddad`` (maps and masks
    centre-cropped to 224 of 256, masks > 0 after the bilinear resize, score = max of the cropped map), the fusion
    scale per test batch of 16 (``fusion_norm: batch16``) and no ``train_stats`` (DDAD has none). Its guidance
    point is the default's; nothing retrains."""
    inf = replace(settings.inference, protocol="ddad", fusion_norm="batch16", normalise="none")
    return Variant("official", replace(settings, inference=inf), _NO_ABLATION)


def variants(settings: MethodBSettings) -> list[Variant]:
    """``default``, then every guidance point of ``settings.ablation`` for the settings' class, in axis order,
    without the default point and without repeats."""
    base, abl = settings.inference, settings.ablation
    steps = max(1, round(base.t_start / base.skip))  # the default's step count, kept at every t_start
    none = _NO_ABLATION

    def point(axis: dict, w=None, s=None, blur=None, t=None) -> Variant:
        inf = replace(
            base,
            w=base.w if w is None else w,
            s=base.s if s is None else s,
            blur_sigma=base.blur_sigma if blur is None else blur,
            t_start=base.t_start if t is None else t,
            skip=base.skip if t is None else max(1, round(t / steps)),
        )
        return Variant(inference_point(inf), replace(settings, inference=inf), replace(none, **axis))

    candidates = [point({"w": (w,)}, w=w) for w in abl.w]
    candidates += [point({"s": (s,)}, s=s) for s in abl.s]
    candidates += [
        point({"joint_w": (w,), "joint_s": (s,)}, w=w, s=s) for w in abl.joint_w for s in abl.joint_s
    ]
    candidates += [point({"blur_sigma": (b,)}, blur=b) for b in abl.blur_sigma]
    candidates += [point({"t_start": (t,)}, t=t) for t in abl.t_start]
    out = {"default": Variant("default", settings, none)}
    for v in candidates:
        if v.name != inference_point(base):
            out.setdefault(v.name, v)
    return list(out.values())
