"""Method A's variants: ``default`` and the ablation, one factor at a time around the configured inference.

Points (spec §3.4): T scales (``K{n_scales}_n{steps}_s{sigma_hi}``), the full-length reference chain from
``sigma_hi`` (``full_chain``; not for the chain-free ``score_clean`` measure), the other anomaly measures (``metric_<name>``) and, for an own score model, the same
inference on Method B's DDPM (``shared_ddpm``: no extra training). No point retrains the score model. The
``default`` and ``full_chain`` runs are also timed at ``ablation.speed_batches`` (the speed-up of T scales).
"""

from __future__ import annotations

from dataclasses import replace

from texad.methods.base import Variant

from .settings import Ablation, Inference, MethodASettings, Select

__all__ = ["point_name", "variants", "candidates"]

_TIMED = ("default", "full_chain")
_NO_ABLATION = Ablation(n_scales=(), steps_per_scale=(), sigma_hi=(), full_chain=False, metric=(), shared_ddpm=False,
                        speed_batches=())  # fmt: skip


def point_name(inf: Inference) -> str:
    """A label for a T-scales setting, e.g. ``K4_n5_s0.4``."""
    return f"K{inf.n_scales}_n{inf.steps_per_scale}_s{inf.sigma_hi:g}"


def variants(settings: MethodASettings) -> list[Variant]:
    """``default``, then every ablation point of ``settings.ablation`` (a point equal to the default is left out)."""
    base, abl = settings.inference, settings.ablation
    none = _NO_ABLATION

    def grid(name: str, **axis) -> Ablation:
        return replace(none, speed_batches=abl.speed_batches if name in _TIMED else (), **axis)

    def point(name: str, axis: dict, **changes) -> Variant:
        inf = replace(base, **changes)
        return Variant(name, replace(settings, inference=inf), grid(name, **axis))

    out = {"default": Variant("default", settings, grid("default"))}
    t_scales = [({"n_scales": (k,)}, {"n_scales": k}) for k in abl.n_scales]
    t_scales += [({"steps_per_scale": (n,)}, {"steps_per_scale": n}) for n in abl.steps_per_scale]
    t_scales += [
        ({"sigma_hi": (s,)}, {"sigma_hi": s, "sigma_lo": min(base.sigma_lo, s)}) for s in abl.sigma_hi
    ]
    for axis, changes in t_scales:
        inf = replace(base, mode="t_scales", **changes)
        if inf != base:
            out.setdefault(point_name(inf), point(point_name(inf), axis, mode="t_scales", **changes))
    if (
        abl.full_chain and base.mode != "full_chain" and base.metric != "score_clean"
    ):  # score_clean runs no chain
        out["full_chain"] = point("full_chain", {"full_chain": True}, mode="full_chain")
    for metric in abl.metric:
        if metric != base.metric:
            out[f"metric_{metric}"] = point(f"metric_{metric}", {"metric": (metric,)}, metric=metric)
    if abl.shared_ddpm and settings.model == "own":
        out["shared_ddpm"] = Variant(
            "shared_ddpm", replace(settings, model="shared_ddpm"), grid("shared_ddpm", shared_ddpm=True)
        )
    return list(out.values())


def _candidate_name(base: Inference, inf: Inference) -> str:
    """A candidate's name, the ablation's where it is one of its points: ``default``, ``K2_n5_s0.4`` (T scales),
    ``metric_recon`` (the measure), or both joined (``K2_n5_s0.4_metric_recon``)."""
    scales = replace(inf, metric=base.metric)
    if inf == base:
        return "default"
    if scales == base:
        return f"metric_{inf.metric}"
    return point_name(inf) if inf.metric == base.metric else f"{point_name(inf)}_metric_{inf.metric}"


def candidates(settings: MethodASettings) -> list[Variant]:
    """The candidates of the ``selected`` variant: ``default``, then every point of the ``select`` grid sigma_hi x
    n_scales x metric (an empty list keeps the default's value; sigma_lo follows sigma_hi down as in the ablation).
    None retrains the score model."""
    base, sel = settings.inference, settings.select
    if not (sel.sigma_hi or sel.n_scales or sel.metric):
        return []
    out = {}
    for hi in (base.sigma_hi, *sel.sigma_hi):
        for k in (base.n_scales, *sel.n_scales):
            for metric in (base.metric, *sel.metric):
                inf = replace(base, sigma_hi=hi, sigma_lo=min(base.sigma_lo, hi), n_scales=k, metric=metric)
                name = _candidate_name(base, inf)
                one = Select(sigma_hi=(float(hi),), n_scales=(int(k),), metric=(metric,))
                out.setdefault(name, Variant(name, replace(settings, inference=inf), _NO_ABLATION, one))
    return list(out.values())
