"""Method B's variants (spec ``method_b_conditioned_blur_ddpm.md`` §3.5): ``default`` and the guidance points,
inference only.

A point is (w, s, blur_sigma, t_start, map_terms); ``skip`` follows ``t_start`` so that every point takes the same
number of steps as the default (DDAD: 250 / 25 = 10 steps). Axes, each around the class's default point:

* ``w`` with s at its default; ``s`` with w at the class's own default (w is per class);
* the joint ``joint_w`` x ``joint_s`` grid (the headline ablation);
* ``blur_sigma``; ``t_start``;
* ``map_terms``: the map of the pixel distance alone or the feature distance alone (the fusion at v = 0) instead of
  both (:mod:`.anomaly_map`); the same reconstructions, so the same network evaluations as the default.

Points are named by their absolute settings (``w4_s0.5_blur3_t250``; a map of one term adds it:
``w4_s0.5_blur3_t250_pixel``, ``..._feature``), so one name means the same inference on every class; a class's
default point is not run twice: its ``default`` run records its point name (``extra.ablation_point``) and the
ablation table counts it under that name too. :func:`neighbour_point` names the point next to a recorded one (the
default's with w = 0, say). No point retrains anything.
"""

from __future__ import annotations

import re
from dataclasses import replace

from texad.methods.base import Variant

from .anomaly_map import MAP_TERMS
from .settings import Ablation, Inference, MethodBSettings, Select

__all__ = [
    "point_name",
    "inference_point",
    "parse_point",
    "neighbour_point",
    "variants",
    "candidates",
    "official",
]

_POINT = re.compile(
    r"^w(?P<w>[^_]+)_s(?P<s>[^_]+)_blur(?P<blur_sigma>[^_]+)_t(?P<t_start>\d+)"
    r"(?:_(?P<map_terms>" + "|".join(t for t in MAP_TERMS if t != "both") + r"))?$"
)
_POINT_KEYS = ("w", "s", "blur_sigma", "t_start", "map_terms")


def point_name(w: float, s: float, blur_sigma: float, t_start: int, map_terms: str = "both") -> str:
    """The name of a point: ``w4_s0.5_blur3_t250`` (both map terms, every name from before the axis), with a map of
    one term as a suffix: ``w4_s0.5_blur3_t250_pixel``, ``w4_s0.5_blur3_t250_feature``."""
    if map_terms not in MAP_TERMS:
        raise ValueError(f"map_terms must be one of {MAP_TERMS}, got {map_terms!r}")
    name = f"w{float(w):g}_s{float(s):g}_blur{float(blur_sigma):g}_t{int(t_start)}"
    return name if map_terms == "both" else f"{name}_{map_terms}"


def inference_point(inf: Inference) -> str:
    """The name of the guidance point an inference runs (its ablation point)."""
    return point_name(inf.w, inf.s, inf.blur_sigma, inf.t_start, inf.map_terms)


def parse_point(point: str) -> dict:
    """The settings a point name stands for (the inverse of :func:`point_name`): ``w``, ``s``, ``blur_sigma``
    (floats), ``t_start`` (int) and ``map_terms`` (``both`` where the name has no suffix)."""
    m = _POINT.match(point) if isinstance(point, str) else None
    try:
        fields = {k: float(m.group(k)) for k in ("w", "s", "blur_sigma")} if m else None
    except ValueError:
        fields = None
    if fields is None:
        raise ValueError(
            f"{point!r} is not a Method B point name (w<w>_s<s>_blur<sigma>_t<t_start>[_pixel|_feature], as "
            "extra.ablation_point records it)"
        )
    return {**fields, "t_start": int(m.group("t_start")), "map_terms": m.group("map_terms") or "both"}


def neighbour_point(point: str, **changes) -> str:
    """The name of the point ``point`` with some of ``w``, ``s``, ``blur_sigma``, ``t_start``, ``map_terms``
    changed: ``neighbour_point("w4_s0.5_blur3_t250", w=0) == "w0_s0.5_blur3_t250"`` (the default's point with no
    conditioning), ``neighbour_point(p, map_terms="pixel")`` its pixel-only map. The point need not be one that a
    config runs."""
    unknown = sorted(set(changes) - set(_POINT_KEYS))
    if unknown:
        raise TypeError(f"neighbour_point: unknown setting(s) {unknown}; a point has {list(_POINT_KEYS)}")
    return point_name(**{**parse_point(point), **changes})


_NO_ABLATION = Ablation(w=(), s=(), joint_w=(), joint_s=(), blur_sigma=(), t_start=(), map_terms=())


def official(settings: MethodBSettings) -> Variant:
    """DDAD's evaluation on the default's models (spec §1.3, §3.3): ``protocol: ddad`` (maps and masks
    centre-cropped to 224 of 256, masks > 0 after the bilinear resize, score = max of the cropped map), the fusion
    scale per test batch of 16 (``fusion_norm: batch16``) and no ``train_stats`` (DDAD has none). Its guidance
    point and map terms are the default's; nothing retrains."""
    inf = replace(settings.inference, protocol="ddad", fusion_norm="batch16", normalise="none")
    return Variant("official", replace(settings, inference=inf), _NO_ABLATION)


def _at_t_start(base: Inference, t_start: int) -> dict:
    """``t_start`` with ``skip`` following it, so that every start step takes the default's number of steps."""
    steps = max(1, round(base.t_start / base.skip))
    return {
        "t_start": t_start,
        "skip": base.skip if t_start == base.t_start else max(1, round(t_start / steps)),
    }


def candidates(settings: MethodBSettings) -> list[Variant]:
    """The candidates of the ``selected`` variant: ``default`` (the class's own point), then every point of the
    ``select`` grid w x s x t_start (an empty list keeps the default's value), named as the ablation names its
    points, so that a candidate that is an ablation point too runs once."""
    base, sel = settings.inference, settings.select
    out = {}
    for w in (base.w, *sel.w):
        for s in (base.s, *sel.s):
            for t in (base.t_start, *sel.t_start):
                inf = replace(base, w=w, s=s, **_at_t_start(base, t))
                name = "default" if inf == base else inference_point(inf)
                one = Select(w=(float(w),), s=(float(s),), t_start=(int(t),))
                out.setdefault(name, Variant(name, replace(settings, inference=inf), _NO_ABLATION, one))
    if not (sel.w or sel.s or sel.t_start):
        return []
    return list(out.values())


def variants(settings: MethodBSettings) -> list[Variant]:
    """``default``, then every guidance point of ``settings.ablation`` for the settings' class, in axis order,
    without the default point and without repeats."""
    base, abl = settings.inference, settings.ablation
    none = _NO_ABLATION

    def point(axis: dict, w=None, s=None, blur=None, t=None, terms=None) -> Variant:
        inf = replace(
            base,
            w=base.w if w is None else w,
            s=base.s if s is None else s,
            blur_sigma=base.blur_sigma if blur is None else blur,
            **_at_t_start(base, base.t_start if t is None else t),
            map_terms=base.map_terms if terms is None else terms,
        )
        return Variant(inference_point(inf), replace(settings, inference=inf), replace(none, **axis))

    candidates = [point({"w": (w,)}, w=w) for w in abl.w]
    candidates += [point({"s": (s,)}, s=s) for s in abl.s]
    candidates += [
        point({"joint_w": (w,), "joint_s": (s,)}, w=w, s=s) for w in abl.joint_w for s in abl.joint_s
    ]
    candidates += [point({"blur_sigma": (b,)}, blur=b) for b in abl.blur_sigma]
    candidates += [point({"t_start": (t,)}, t=t) for t in abl.t_start]
    candidates += [point({"map_terms": (m,)}, terms=m) for m in abl.map_terms]
    out = {"default": Variant("default", settings, none)}
    for v in candidates:
        if v.name != inference_point(base):
            out.setdefault(v.name, v)
    return list(out.values())
