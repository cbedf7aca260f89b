"""The cost of a config's plan: every Snakemake rule's jobs (from :class:`texad.plan.Plan`, as the workflow plans
them) and each job's work (FLOPs of the real networks, :mod:`.flops`, times the network calls its settings imply).

Per job, following the code paths:

- ``train_diffusion``: epochs x (n_train // batch) full batches (``drop_last``) x batch x U-Net forward+backward.
- ``train_score_model``: iterations x batch x NCSN++ forward+backward.
- ``adapt_features``: epochs x (n_train // batch) steps, each reconstructing batch/2 images (DDAD's loop, no blur
  guidance) and running the trainable extractor forward+backward and the frozen one forward on batch images.
- ``train_simplenet``: the aggregator once per training image (its features are cached), then meta_epochs x
  gan_epochs x n_train x adaptor+discriminator forward+backward on the image's patches (``official``
  selection: every meta epoch also scores the test set).
- ``train_draem``: epochs x n_train x (reconstructive + discriminative) forward+backward.
- ``method_a``: images x NFE x score network, images = test + training images fitted (``train_stats``) + the
  speed probe's (``speed_batches``), NFE = draws x scales x steps, or the full chain's levels.
- ``method_b``: images x (NFE x U-Net + 2 feature-extractor passes), images = test + the first
  ``normalise_images`` training images (its fit: the fusion scale of ``fusion_norm: train``, ``train_stats``), NFE =
  draws x steps x (2 when s > 0).
- ``simplenet``, ``draem``: test images x one forward.
- ``select``: every candidate of a method's ``selected`` variant as a run of its own, on the validation split's
  images (:func:`validation_count`) instead of the test set; the candidates' test-set runs are runs of the method.
- Staging, checks, tables and figures: I/O (0 FLOPs).

Image counts: MVTec AD's published ones (:mod:`texad.data.catalog`), the synthetic set's from its config keys,
DTD-Synthetic's :data:`DTD_SYNTHETIC_ASSUMED` (no counts are published); the trainers and fits see the training
images without the share ``validation.holdout`` holds out (:func:`trained_counts`). The validation split, its view
and its contact sheet are I/O.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from texad.methods import get
from texad.plan import ABLATED_METHODS, Plan

from .devices import Device
from .flops import Profile, profile
from .memory import cpu_peak_mb, gpu_estimate_mb
from .networks import Net

__all__ = [
    "DTD_SYNTHETIC_ASSUMED",
    "SIGMA_MAX_AUTO_RMS",
    "JobWork",
    "RuleCost",
    "class_counts",
    "trained_counts",
    "validation_count",
    "plan_jobs",
    "rule_costs",
]

#: (train, test) images per DTD-Synthetic class: no counts are published (spec datasets_and_metrics §2); ASSUMED
#: the MVTec texture classes' mean, until texad's first-download manifest gives the real ones.
DTD_SYNTHETIC_ASSUMED = (253, 116)
#: sigma_max "auto" (the largest pairwise L2 distance of the training images, known only after reading them):
#: ASSUMED an RMS pixel difference of 0.2 in [0, 1], i.e. 0.2 * sqrt(3 * S * S); the demo measured 0.09-0.22.
SIGMA_MAX_AUTO_RMS = 0.2

_TRAIN_RULES = {
    "ddpm": "train_diffusion",
    "score": "train_score_model",
    "simplenet": "train_simplenet",
    "draem": "train_draem",
    "features": "adapt_features",
}
_RUN = re.compile(r"results/runs/([^/]+)/([^/]+)/([^/]+)/([^/]+)/seed(\d+)\.json$")


@dataclass
class JobWork:
    """One job's work: ``flops`` and the networks it runs as (Net, batch, training?)."""

    rule: str
    flops: float = 0.0
    nets: list[tuple[Net, int, bool]] = field(default_factory=list)

    def add(self, net: Net, calls: float, batch: int, train: bool, cache: Path | None) -> None:
        prof = profile(net, cache)
        self.flops += calls * (prof.train_flops if train else prof.infer_flops)
        self.nets.append((net, batch, train))


@dataclass
class RuleCost:
    rule: str
    jobs: int
    flops: float  # all jobs
    cpu_peak_mb: float | None
    gpu_mem_mb: float | None
    gpu_hours: float = 0.0
    share: float = 0.0

    @property
    def gflop_per_job(self) -> float:
        return self.flops / self.jobs / 1e9 if self.jobs else 0.0


# ------------------------------------------------------------------------------------------- images
def class_counts(plan: Plan, dataset: str, cls: str) -> tuple[int, int]:
    """(training images, test images) of one class."""
    if dataset == "mvtec_ad":
        from texad.data.catalog import DATASETS

        lay = DATASETS["mvtec_ad"].expected[cls]
        return lay.train_good, lay.test_good + lay.n_defective
    if dataset == "synthetic":
        from texad.data.synth import DEFECT_TYPES

        c = plan.dataset("synthetic")
        return c["n_train"], c["n_test_good"] + c["n_test_per_defect"] * len(DEFECT_TYPES)
    if dataset == "dtd_synthetic":
        return DTD_SYNTHETIC_ASSUMED
    if dataset in plan.folders:  # a user's folder: counted on the disk
        return plan.folder_counts(dataset, cls)
    raise ValueError(f"no image counts for dataset {dataset!r}")


def trained_counts(plan: Plan, dataset: str, cls: str) -> tuple[int, int]:
    """(training images the models train on and the runs fit on, test images) of one class: the class's training
    images without the share ``validation.holdout`` holds out for validation."""
    n_train, n_test = class_counts(plan, dataset, cls)
    held = 0 if plan.holdout is None else plan.holdout.count(n_train, f"{dataset}/{cls}")
    return n_train - held, n_test


# ----------------------------------------------------------------------------------------- networks
def _unet(settings) -> Net:
    return Net.of("ddpm_unet", preset=settings.diffusion.preset, image_size=settings.image_size)


def _ncsnpp(settings) -> Net:
    return Net.of(
        "ncsnpp", preset=settings.network.preset, image_size=settings.image_size, nf=settings.network.nf
    )


def _extractor(backbone: str, size: int, trainable_layers: bool = False) -> Net:
    layers = ("layer1", "layer2", "layer3") if trainable_layers else ("layer2", "layer3")
    return Net.of("features", backbone=backbone, image_size=size, layers=layers)


def _simplenet_nets(s) -> tuple[Net, Net]:
    from texad.backbones.features import _STRIDES, LAYER_NAMES

    stride = _STRIDES[LAYER_NAMES.index(sorted(s.layers, key=LAYER_NAMES.index)[0])]
    grid = math.ceil(s.image_size / stride)
    agg = Net.of("simplenet_features", backbone=s.backbone, image_size=s.image_size, layers=tuple(s.layers),
                 patchsize=s.patchsize, pre_dim=s.pretrain_embed_dim, target_dim=s.target_embed_dim)  # fmt: skip
    head = Net.of("simplenet_head", dim=s.target_embed_dim, dsc_layers=s.dsc_layers, dsc_hidden=s.dsc_hidden,
                  patches=grid * grid)  # fmt: skip
    return agg, head


# ---------------------------------------------------------------------------------------------- NFE
def method_b_nfe(settings) -> int:
    """Network evaluations per image of Method B's loop (:func:`texad.methods.method_b.infer.reconstruct`)."""
    from texad.diffusion.schedules import NoiseSchedule
    from texad.methods.method_b.infer import time_grid

    d, inf = settings.diffusion, settings.inference
    schedule = NoiseSchedule.linear(d.timesteps, d.beta_start, d.beta_end)
    per_step = 2 if inf.s > 0 else 1
    return inf.draws * len(time_grid(schedule, inf)) * per_step


def _method_a_model(settings, method_b):
    """A score model of the run's SDE (no network) for the full chain's grid: Method A's own (sigma_max "auto"
    assumed, :data:`SIGMA_MAX_AUTO_RMS`) or Method B's DDPM."""
    from texad.diffusion.schedules import NoiseSchedule
    from texad.diffusion.sde import VESDE, VPSDE, DiscreteVP
    from texad.methods.method_a.infer import ScoreModel

    if settings.model == "shared_ddpm":
        d = method_b.diffusion
        return ScoreModel(
            DiscreteVP(NoiseSchedule.linear(d.timesteps, d.beta_start, d.beta_end)), None, 2.0, -1.0
        )
    sde = settings.sde
    if sde.type == "vp":
        from texad.diffusion.training import VP_BETA_MAX, VP_BETA_MIN

        return ScoreModel(VPSDE(VP_BETA_MIN, VP_BETA_MAX, N=sde.n_steps), None, 2.0, -1.0)
    sigma_max = sde.sigma_max
    if sigma_max == "auto":
        sigma_max = SIGMA_MAX_AUTO_RMS * math.sqrt(3 * settings.image_size**2)
    return ScoreModel(VESDE(sde.sigma_min, float(sigma_max), N=sde.n_steps), None, 1.0, 0.0)


def method_a_nfe(settings, method_b) -> int:
    """Network evaluations per image of :func:`texad.methods.method_a.infer.raw_maps`."""
    from texad.methods.method_a.infer import chain_levels, full_chain_levels, scale_levels

    inf = settings.inference
    if inf.mode == "full_chain":
        chains = [
            full_chain_levels(_method_a_model(settings, method_b), inf.sigma_hi, settings.sde.sigma_min)
        ]
    else:
        chains = [chain_levels(s0, settings.sde.sigma_min, inf.steps_per_scale) for s0 in scale_levels(inf)]
    per_draw = len(chains) if inf.metric == "score_clean" else sum(len(c) for c in chains)
    return inf.draws * per_draw


def _speed_images(batches) -> int:
    """Images the speed probe scores (:func:`texad.methods.run.time_per_image`)."""
    return sum(5 + math.ceil(8 / bs) * bs for bs in batches)


# --------------------------------------------------------------------------------------------- jobs
def _variant_settings(plan: Plan, method: str, cls: str, variant: str):
    from texad.methods.base import run_variants

    for v in run_variants(get(method), plan.settings(method, cls)):
        if v.name == variant:
            settings = v.settings
            return replace(settings, ablation=v.grid) if v.grid is not None else settings
    raise ValueError(f"{method} defines no variant {variant!r} on class {cls!r}")


def validation_count(plan: Plan, dataset: str, cls: str) -> int:
    """Images of a class's validation split: the held-out normal images (with ``holdout: 0`` every training image),
    each once as it is and once per anomaly kind (``texad.data.validation``)."""
    n_train, _ = class_counts(plan, dataset, cls)
    held = n_train if plan.holdout is None else plan.holdout.count(n_train, f"{dataset}/{cls}")
    return held * (1 + len(plan.config["validation"]["anomalies"]))


def _run_work(
    plan: Plan, method: str, dataset: str, cls: str, variant: str, cache, job: JobWork | None = None,
    n_test: int | None = None,
) -> JobWork:  # fmt: skip
    """A run's work; ``job`` and ``n_test``: add it to that job instead, scoring ``n_test`` images (a candidate
    scored on the validation split by ``select``)."""
    s = _variant_settings(plan, method, cls, variant)
    n_train, n_class_test = trained_counts(plan, dataset, cls)
    n_test = n_class_test if n_test is None else n_test
    job = JobWork(method) if job is None else job
    if method == "method_a":
        inf = s.inference
        mb = plan.settings("method_b", cls)
        images = n_test + (n_train if inf.normalise == "train_stats" else 0)
        images += _speed_images(s.ablation.speed_batches if variant in ("default", "full_chain") else ())
        net = _ncsnpp(s) if s.model == "own" else _unet(mb)
        job.add(net, images * method_a_nfe(s, mb), inf.batch_size, False, cache)
    elif method == "method_b":
        from texad.methods.method_b.settings import needs_fit

        inf = s.inference
        fit = 0
        if needs_fit(inf):  # the training images of the fusion scale and the train_stats statistics
            fit = n_train if inf.normalise_images is None else min(n_train, inf.normalise_images)
        images = n_test + fit
        job.add(_unet(s), images * method_b_nfe(s), inf.batch_size, False, cache)
        job.add(_extractor(inf.feature_backbone, inf.feature_size or s.image_size), 2 * images, inf.batch_size,
                False, cache)  # fmt: skip
    elif method == "simplenet":
        agg, head = _simplenet_nets(s)
        job.add(agg, n_test, s.batch_size, False, cache)
        job.add(head, n_test, s.batch_size, False, cache)
    elif method == "draem":
        net = Net.of("draem", image_size=s.image_size, recon_base_width=s.recon_base_width,
                     disc_base_width=s.disc_base_width)  # fmt: skip
        job.add(net, n_test, s.batch_size, False, cache)
    else:
        raise ValueError(f"no cost model for method {method!r}")
    return job


def _train_work(plan: Plan, kind: str, dataset: str, cls: str, run: tuple[str, str], cache) -> JobWork:
    n_train, n_test = trained_counts(plan, dataset, cls)
    job = JobWork(_TRAIN_RULES[kind])
    if kind == "ddpm":
        s = plan.model_settings("ddpm", cls, run)
        bs = s.train.batch_size
        steps, batch = (1, n_train) if n_train < bs else (n_train // bs, bs)
        job.add(_unet(s), s.train.epochs * steps * batch, batch, True, cache)
    elif kind == "score":
        s = plan.model_settings("score", cls, run)
        batch = min(n_train, s.train.batch_size)
        job.add(_ncsnpp(s), s.train.iterations * batch, batch, True, cache)
    elif kind == "features":
        from texad.methods.method_b.domain_adaptation import adaptation_loop
        from texad.methods.method_b.settings import adaptation_settings

        s = plan.model_settings("features", cls, run)
        a = adaptation_settings(s, 0)
        loop = replace(s, inference=adaptation_loop(a, s.inference))
        steps, half = a.epochs * (n_train // a.batch_size), a.batch_size // 2
        job.add(_unet(s), steps * half * method_b_nfe(loop), half, False, cache)
        ext = _extractor(s.inference.feature_backbone, a.feature_size or s.image_size, trainable_layers=True)
        job.add(ext, steps * 2 * half, 2 * half, True, cache)
        job.add(ext, steps * 2 * half, 2 * half, False, cache)
    elif kind == "simplenet":
        s = plan.model_settings("simplenet", cls, run)
        agg, head = _simplenet_nets(s)
        job.add(agg, n_train, s.batch_size, False, cache)
        job.add(head, s.meta_epochs * s.gan_epochs * n_train, s.batch_size, True, cache)
        if s.selection == "official":  # the test set scored after every meta epoch
            job.add(agg, s.meta_epochs * n_test, s.batch_size, False, cache)
            job.add(head, s.meta_epochs * n_test, s.batch_size, False, cache)
    elif kind == "draem":
        s = plan.model_settings("draem", cls, run)
        net = Net.of("draem", image_size=s.image_size, recon_base_width=s.recon_base_width,
                     disc_base_width=s.disc_base_width)  # fmt: skip
        job.add(net, s.epochs * n_train, s.batch_size, True, cache)
    else:
        raise ValueError(f"no cost model for model kind {kind!r}")
    return job


def plan_jobs(plan: Plan, cache: Path | None = None) -> list[JobWork]:
    """Every job of the plan with its work (I/O rules with none)."""
    runs = set(plan.method_results()) | {p for m in ABLATED_METHODS for p in plan.ablation_results(m)}
    runs = sorted(runs | set(plan.official_results()) | set(plan.candidate_results()))
    jobs: list[JobWork] = []
    models: dict[str, tuple[str, str, str, tuple[str, str]]] = {}
    weights: set[str] = set()
    dtd_needed = plan.dataset("dtd")["enabled"]
    for path in runs:
        dataset, cls, method, variant, seed = _RUN.match(path).groups()
        jobs.append(_run_work(plan, method, dataset, cls, variant, cache))
        weights |= set(plan.weights(method, cls))
        loads = plan.run_models(method, dataset, cls, seed, variant)
        for model in loads.values():
            models.setdefault(model, (dataset, cls, Path(model).name.split("-", 1)[0], (method, variant)))
        if "features" in loads:  # the adaptation reads the class's DDPM
            ddpm = plan.model_path("ddpm", dataset, cls, seed, variant=(method, variant))
            models.setdefault(ddpm, (dataset, cls, "ddpm", (method, variant)))
    for _model, (dataset, cls, kind, run) in sorted(models.items()):
        jobs.append(_train_work(plan, kind, dataset, cls, run, cache))
        if kind == "simplenet":
            weights |= set(plan.weights("simplenet", cls, "simplenet"))
        if kind == "features":
            weights |= set(plan.weights("method_b", cls, "features"))
        if kind == "draem" and plan.settings("draem", cls).anomaly_source == "dtd":
            dtd_needed = True
    for (
        dataset,
        cls,
        method,
    ) in plan.selection_keys():  # every candidate fitted and scored on the validation split
        for _seed in plan.config["seeds"]:
            job = JobWork("select")
            for variant in plan.candidates(method, cls):
                _run_work(
                    plan, method, dataset, cls, variant, cache, job, validation_count(plan, dataset, cls)
                )
            jobs.append(job)
    keys = plan.class_keys()
    io = Counter()
    io["synth_class"] = sum(1 for d, _ in keys if d == "synthetic")
    io["index_folder_class"] = sum(1 for d, _ in keys if d in plan.folders)
    io["stage_dataset"] = len({d for d, _ in keys if d != "synthetic" and d not in plan.folders}) + int(
        dtd_needed
    )
    io["check_class"] = io["contact_sheet"] = len(keys)
    io["validation_split"] = io["validation_sheet"] = len(keys) if plan.enabled_methods() else 0
    io["training_view"] = len(keys) if plan.holdout is not None else 0
    io["stage_weights"] = len(weights)
    io["aggregate"] = int(bool(plan.method_results()))
    io["threshold"] = len(plan.threshold_outputs())
    io["bootstrap"] = len(plan.bootstrap_outputs())
    io["claims"] = int(bool(plan.method_results()))
    io["choose"] = len(plan.selection_results()) // 2  # one job writes selected and oracle
    io["selection_table"] = io["selection_figure"] = int(bool(plan.selection_results()))
    io["ablation_table"] = sum(1 for m in ABLATED_METHODS if plan.ablation_results(m))
    io["paper_table"] = len(plan.paper_tables()) if plan.method_results() else 0
    io["table_html"] = len(plan.report_tables())
    figures = plan.report_figures()
    io["figure_grid"] = sum(f.endswith("/figure1.png") for f in figures)
    io["roc_curves"] = sum(f.endswith("/roc.png") for f in figures)
    io["ablation_curves"] = sum("/ablation_" in f for f in figures)
    io["speed_accuracy"] = sum(f.endswith("speed_accuracy.png") for f in figures)
    io["all"] = 1
    for rule, n in io.items():
        jobs += [JobWork(rule) for _ in range(n)]
    return jobs


def rule_costs(
    plan: Plan, device: Device, cache: Path | None = None, measure_cpu: bool = True
) -> list[RuleCost]:
    """Per rule: jobs, FLOPs, peak memory (CPU measured, GPU estimated), GPU-hours on ``device`` and share of the
    total; sorted by GPU-hours, largest first."""
    by_rule: dict[str, list[JobWork]] = {}
    for job in plan_jobs(plan, cache):
        by_rule.setdefault(job.rule, []).append(job)
    out = []
    for rule, jobs in by_rule.items():
        nets = {(n, b, t) for j in jobs for n, b, t in j.nets}
        cpu = gpu = None
        if nets:
            profs: dict[Net, Profile] = {n: profile(n, cache) for n, _, _ in nets}
            gpu = max(gpu_estimate_mb(profs[n], b, t) for n, b, t in nets)
            if measure_cpu:
                peaks = [cpu_peak_mb(n, cache) for n in {n for n, _, _ in nets}]
                cpu = None if any(p is None for p in peaks) else max(peaks)
        flops = sum(j.flops for j in jobs)
        out.append(RuleCost(rule, len(jobs), flops, cpu, gpu, device.hours(flops)))
    total = sum(r.gpu_hours for r in out)
    for r in out:
        r.share = r.gpu_hours / total if total else 0.0
    return sorted(out, key=lambda r: (-r.gpu_hours, r.rule))
