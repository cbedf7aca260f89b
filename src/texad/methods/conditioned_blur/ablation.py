"""Method B's ablation grid (spec ``method_b_conditioned_blur_ddpm.md`` §3.5): guidance points, inference only.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GuidancePoint", "point_name", "default_point", "ablation_points", "resolve_point"]


def point_name(w: float, s: float, blur_sigma: float, t_start: int) -> str:
    return f"w{float(w):g}_s{float(s):g}_blur{float(blur_sigma):g}_t{int(t_start)}"


@dataclass(frozen=True)
class GuidancePoint:
    w: float
    s: float
    blur_sigma: float
    t_start: int
    skip: int

    @property
    def name(self) -> str:
        return point_name(self.w, self.s, self.blur_sigma, self.t_start)


def _per_class(value: Any, class_name: str) -> float:
    return float(value.get(class_name, value["default"])) if isinstance(value, Mapping) else float(value)


def default_point(block: Mapping, class_name: str) -> GuidancePoint:
    """The class's configured inference point (``methods.method_b.inference``, per-class w resolved)."""
    inf = block["inference"]
    return GuidancePoint(
        w=_per_class(inf["w"], class_name),
        s=float(inf["s"]),
        blur_sigma=float(inf["blur_sigma"]),
        t_start=int(inf["t_start"]),
        skip=int(inf["skip"]),
    )


def ablation_points(block: Mapping, class_name: str) -> list[GuidancePoint]:
    """Every ablation point of ``methods.method_b.ablation`` for one class, in axis order, without the class's
    default point and without repeats."""
    base, abl = default_point(block, class_name), block["ablation"]
    steps = max(1, round(base.t_start / base.skip))  # the default's step count, kept at every t_start

    def point(w=None, s=None, blur=None, t=None) -> GuidancePoint:
        t_start = base.t_start if t is None else int(t)
        return GuidancePoint(
            w=base.w if w is None else float(w),
            s=base.s if s is None else float(s),
            blur_sigma=base.blur_sigma if blur is None else float(blur),
            t_start=t_start,
            skip=base.skip if t is None else max(1, round(t_start / steps)),
        )

    candidates = [point(w=w) for w in abl["w"]]
    candidates += [point(s=s) for s in abl["s"]]
    candidates += [point(w=w, s=s) for w in abl["joint_w"] for s in abl["joint_s"]]
    candidates += [point(blur=b) for b in abl["blur_sigma"]]
    candidates += [point(t=t) for t in abl["t_start"]]
    out: dict[str, GuidancePoint] = {}
    for p in candidates:
        if p.name != base.name:
            out.setdefault(p.name, p)
    return list(out.values())


def resolve_point(block: Mapping, class_name: str, variant: str) -> GuidancePoint:
    """``default`` or an ablation point of the class, by name."""
    if variant == "default":
        return default_point(block, class_name)
    points = {p.name: p for p in ablation_points(block, class_name)}
    if variant not in points:
        raise ValueError(
            f"unknown Method B variant {variant!r} for class {class_name!r}; this config defines: default, "
            + (", ".join(points) or "(no ablation point)")
        )
    return points[variant]
