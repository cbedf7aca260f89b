"""Checks across keys that the JSON schema cannot express (run by ``validate_config`` after the defaults are
filled in). Each problem names the key, what is wrong and what to change. Pure Python: no torch import.
"""

from __future__ import annotations

import math

__all__ = ["cross_key_problems", "ddpm_level_of_sigma"]


def ddpm_level_of_sigma(sigma_pixel: float, timesteps: int, beta_start: float, beta_end: float) -> float:
    """The (fractional) DDPM index whose VE-equivalent noise level is ``sigma_pixel`` in [0, 1] pixel units
    (data in [-1, 1]: sigma = 2 sigma_pixel, -log alpha_bar = log(1 + sigma^2)); linear betas, interpolated in
    log alpha_bar as :meth:`texad.diffusion.sde.DiscreteVP.time_of_sigma` does. Above the schedule: ``timesteps``."""
    target = math.log1p((2.0 * sigma_pixel) ** 2)
    neg_log_ab, prev = 0.0, 0.0
    for i in range(timesteps):
        beta = beta_start + (beta_end - beta_start) * i / max(timesteps - 1, 1)
        prev, neg_log_ab = neg_log_ab, neg_log_ab - math.log1p(-beta)
        if neg_log_ab >= target:
            if i == 0:
                return 0.0
            return i - 1 + (target - prev) / (neg_log_ab - prev)
    return float(timesteps)


def _trained_level_problems(config: dict) -> list[str]:
    """methods.method_b.train.t_max must exceed every DDPM level a job starts at."""
    methods = config.get("methods", {})
    b = methods.get("method_b")
    t_max = b["train"]["t_max"] if b else None
    if t_max is None:
        return []
    key = "methods.method_b.train.t_max"
    diff = b["diffusion"]
    if t_max > diff["timesteps"]:
        return [f"{key}: {t_max} exceeds methods.method_b.diffusion.timesteps = {diff['timesteps']}"]
    starts: list[tuple[str, float]] = []
    if b.get("enabled", True):  # a part of a config (one job's settings) holds only the blocks it uses
        starts.append(("methods.method_b.inference.t_start", b["inference"]["t_start"]))
        starts += [
            (f"methods.method_b.ablation.t_start[{i}]", t) for i, t in enumerate(b["ablation"]["t_start"])
        ]
        starts.append(("methods.method_b.feature_adaptation.t_start", b["feature_adaptation"]["t_start"]))
    a = methods.get("method_a", {})
    if (
        a
        and a.get("enabled", True)
        and (a.get("model") == "shared_ddpm" or a.get("ablation", {}).get("shared_ddpm"))
    ):
        sigmas = [("methods.method_a.inference.sigma_hi", a["inference"]["sigma_hi"])]
        if a.get("model") == "shared_ddpm":
            sigmas += [
                (f"methods.method_a.ablation.sigma_hi[{i}]", s)
                for i, s in enumerate(a["ablation"]["sigma_hi"])
            ]
        for name, sigma in sigmas:
            level = ddpm_level_of_sigma(sigma, diff["timesteps"], diff["beta_start"], diff["beta_end"])
            starts.append((name, level))
    return [
        f"{name}: starts at DDPM level {t:.4g}, but {key} = {t_max} trains the DDPM on t < {t_max} only; "
        f"raise {key} above {math.floor(t)} or set it to null"
        for name, t in starts
        if t >= t_max
    ]


def _fusion_problems(config: dict) -> list[str]:
    """Method B's default protocol reads nothing from the test set: its fusion scale comes from training images
    (fusion_norm train), at which the train_stats normalisation fuses the training maps too. A transductive
    fusion_norm belongs to DDAD's protocol (protocol ddad), which only the labelled official variant runs."""
    inf = config.get("methods", {}).get("method_b", {}).get("inference")
    if not inf or inf["fusion_norm"] == "train":
        return []
    key, norm = "methods.method_b.inference.fusion_norm", inf["fusion_norm"]
    problems = []
    if inf["protocol"] != "ddad":
        where = "the whole test set" if norm == "test_set" else "each test batch of 16"
        problems.append(
            f"{key}: {norm!r} takes the fusion scale from {where}, so a test image's score depends on the other "
            "test images; use fusion_norm: train (the training images' scale). The labelled official variant "
            "(official.seeds) runs DDAD's batch16"
        )
    if inf["normalise"] == "train_stats":
        problems.append(
            f"{key}: {norm!r} cannot be combined with normalise: train_stats, which fuses the training maps at the "
            "training images' scale; use fusion_norm: train"
        )
    return problems


def _blur_kernel_problems(config: dict) -> list[str]:
    """Method B's Gaussian blur has a centre pixel: an odd kernel."""
    inf = config.get("methods", {}).get("method_b", {}).get("inference")
    if inf and inf["blur_kernel"] % 2 == 0:
        return [
            f"methods.method_b.inference.blur_kernel: {inf['blur_kernel']} is even; use an odd size (SAG: 31)"
        ]
    return []


def _method_a_problems(config: dict) -> list[str]:
    """Method A's T scales run from sigma_lo up to sigma_hi; the full-length chain needs a chain metric."""
    inf = config.get("methods", {}).get("method_a", {}).get("inference")
    if not inf:
        return []
    problems = []
    if inf["sigma_lo"] > inf["sigma_hi"]:
        problems.append(
            f"methods.method_a.inference.sigma_lo: {inf['sigma_lo']:g} exceeds sigma_hi = {inf['sigma_hi']:g}; "
            "the scales run from sigma_lo up to sigma_hi"
        )
    if (
        inf["metric"] == "score_clean" and inf["mode"] == "full_chain"
    ):  # one score evaluation: no chain to run
        problems.append(
            "methods.method_a.inference.mode: full_chain needs a chain metric, but inference.metric is score_clean; "
            "use score_residual, score or recon, or mode t_scales"
        )
    return problems


def _simplenet_problems(config: dict) -> list[str]:
    """SimpleNet's candidate meta epochs are epochs of its one training run, which test-set selection excludes."""
    sn = config.get("methods", {}).get("simplenet")
    if not sn or not sn["select"]["meta_epoch"]:
        return []
    key, epochs = "methods.simplenet.select.meta_epoch", sn["select"]["meta_epoch"]
    problems = []
    late = [e for e in epochs if e > sn["meta_epochs"]]
    if late:
        problems.append(
            f"{key}: {late} exceed methods.simplenet.meta_epochs = {sn['meta_epochs']}; training keeps the weights "
            "of listed epochs it reaches only: list epochs from 1 to meta_epochs"
        )
    if sn["selection"] == "official":
        problems.append(
            f"{key}: candidate epochs are chosen on the validation split, but methods.simplenet.selection is "
            "official (the best test-set epoch, which the labelled official variant runs: official.seeds); use "
            "selection: last with select.meta_epoch, or leave select.meta_epoch empty"
        )
    return problems


_FOLDER_LAYOUT_KEYS = ("normal_dir", "abnormal_dir", "mask_dir", "normal_test_dir")
_BUILT_IN_DATASETS = ("synthetic", "mvtec_ad", "dtd_synthetic", "dtd")


def _folder_problems(config: dict) -> list[str]:
    """datasets.folder: unique names that are not built-in ones; the layout's keys."""
    problems, seen = [], set()
    for i, entry in enumerate(config.get("datasets", {}).get("folder", [])):
        key = f"datasets.folder[{i}]"
        if entry["name"] in _BUILT_IN_DATASETS:
            problems.append(f"{key}.name: {entry['name']!r} is a built-in dataset's name; choose another")
        elif entry["name"] in seen:
            problems.append(f"{key}.name: {entry['name']!r} names two datasets; give each its own name")
        seen.add(entry["name"])
        given = [k for k in _FOLDER_LAYOUT_KEYS if entry[k] is not None]
        if entry["layout"] == "folder" and entry["normal_dir"] is None:
            problems.append(f"{key}.normal_dir: layout folder needs the folder (or glob) of normal images")
        if entry["layout"] == "mvtec" and given:
            problems.append(
                f"{key}.{given[0]}: only layout folder reads {', '.join(_FOLDER_LAYOUT_KEYS)}; set layout: folder, "
                "or remove the key (layout mvtec reads train/good, test/<defect> and ground_truth/<defect>)"
            )
    return problems


def cross_key_problems(config: dict) -> list[str]:
    """Every cross-key problem of a config whose defaults are filled in (empty: none)."""
    return (
        _folder_problems(config)
        + _trained_level_problems(config)
        + _fusion_problems(config)
        + _method_a_problems(config)
        + _blur_kernel_problems(config)
        + _simplenet_problems(config)
    )
