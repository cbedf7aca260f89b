"""Speed and memory of the four methods' inference on tiny models, measured side by side in one process.

    python benchmarks/bench_pipeline.py [--out-dir benchmarks] [--reps 3] [--threads N] [--no-cuda]

Trains tiny models of every method (seconds each, each method module's ``train``; the settings are config
blocks, ``texad.methods.make_settings``) on a small generated synthetic class, then repeats, with the
order of the measured things alternating between repetitions (forward, then reversed), so that load drifts on
a shared machine hit both sides of every ratio alike:

- each method's run as ``texad run`` does it (its ``Detector`` through ``texad.methods.run.run_class``), on
  the same test images: Method A with variant ``default`` (T scales) and ``full_chain`` (the full-length
  reverse SDE over the ``--sde-steps`` grid from sigma_hi), Method B, SimpleNet and DRAEM;
- the parts of the diffusion pipelines: one batched forward pass of each network at the pipeline's batch
  sizes, the test-set loader alone, the sampler with a zero-cost network (Method A's chains, Method B's
  reconstruction) and Method B's feature extractor (``feature_distance``).

Then peak memory: each method's run once more in a fresh process (RSS sampled every 2 ms; on CUDA
``torch.cuda.max_memory_allocated``). Writes ``tscales.json`` (a), ``overhead.json`` (b), ``throughput.json``
(c) and ``memory.json`` (d) into ``--out-dir``, atomically; ``bench_summary.py`` turns them into
``summary.md``. CUDA is measured too when ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_common import RSSSampler, machine_info, ratio, stats, write_json  # noqa: E402

__all__ = [
    "BenchSettings",
    "OVERHEAD_TARGET",
    "prepare",
    "measure",
    "tscales_record",
    "overhead_record",
    "throughput_record",
    "measure_memory",
    "memory_record",
    "run_all",
    "main",
]

DATASET, CLASS, SOURCE_CLASS = "synthetic", "wood", "carpet"
OVERHEAD_TARGET = 1.15  # pipeline seconds per image / bare network seconds per image


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of the benchmark (defaults: ``make bench``; the smoke test shrinks everything)."""

    image_size: int = 32  # model input side of all four methods (and the evaluation grid)
    class_image_size: int = 64  # side the synthetic class is rendered at
    n_train: int = 8
    n_test_good: int = 4
    n_test_per_defect: int = 3
    defects: tuple[str, ...] = ("scratch", "hole", "stain", "fold")
    batch_size: int = 8  # inference batch of every method
    reps: int = 5
    seed: int = 0
    # Method A: tiny NCSN++ (nf 16), VE SDE sigma 0.01..1
    score_iterations: int = 150
    sde_steps: int = 200  # the SDE grid of the full-chain reference (the paper config uses 2000)
    draws: int = 1
    # Method B: tiny DDPM U-Net, DDAD's inference (t_start 250, skip 25, w 4, blur guidance s 0.5: 20 NFE)
    ddpm_epochs: int = 60
    feature_size: int = 64  # EfficientNet-Lite0 input side of Method B's feature distance
    # SimpleNet (EfficientNet-Lite0, 64-d) and DRAEM (base widths 2)
    simplenet_meta_epochs: int = 3
    simplenet_gan_epochs: int = 1
    draem_epochs: int = 2
    fwd_calls: int = 5  # timed forward passes per batch size (median), after one warm-up call
    warmup: bool = True  # one untimed call of each cheap task before the repetitions
    # time guard for a busy machine: after min_reps repetitions, no new one starts once the repetitions of a
    # device have taken rep_budget_s (the records say how many were done)
    min_reps: int = 3
    rep_budget_s: float = 360.0

    @property
    def n_test(self) -> int:
        return self.n_test_good + self.n_test_per_defect * len(self.defects)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["defects"] = list(self.defects)
        d["n_test"] = self.n_test
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BenchSettings:
        keys = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in keys}
        if "defects" in kw:
            kw["defects"] = tuple(kw["defects"])
        return cls(**kw)


def _log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[bench_pipeline {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ method settings
# The inference batch of every method is ``BenchSettings.batch_size``. SimpleNet and DRAEM read their
# inference batch from their training batch (``batch_size``, part of the model identity); the bench trains
# them at batch 4 and sets the detectors' ``batch_size`` to the bench's (the scores do not depend on it).
_TRAIN_BATCH = 4
_FEATURES = "efficientnet_lite0"


def method_a_settings(s: BenchSettings):
    """Tiny NCSN++ (nf 16), VE SDE sigma 0.01..1; T scales (4 scales 0.05-0.4, 5 steps each) and, as the
    ablation's only point, the full-length reverse SDE over the ``sde_steps`` grid (``full_chain``)."""
    from texad.methods import make_settings

    return make_settings(
        "method_a",
        {
            "sde": {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0, "n_steps": s.sde_steps},
            "network": {"preset": "tiny", "nf": 16},
            "train": {"batch_size": 8, "iterations": s.score_iterations, "lr": 2e-3,
                      "warmup": min(20, s.score_iterations // 5)},
            "inference": {"metric": "score_residual", "mode": "t_scales", "predictor": "ancestral",
                          "n_scales": 4, "sigma_lo": 0.05, "sigma_hi": 0.4, "steps_per_scale": 5,
                          "draws": s.draws, "normalise": "train_stats", "smoothing_sigma": 2,
                          "batch_size": s.batch_size},
            "ablation": {"n_scales": [], "steps_per_scale": [], "sigma_hi": [], "full_chain": True,
                         "metric": [], "shared_ddpm": False, "speed_batches": []},
        },
        class_name=CLASS,
        image_size=s.image_size,
    )  # fmt: skip


def method_b_settings(s: BenchSettings):
    """Tiny DDPM U-Net; the paper's inference (DDAD grid 225..0, w 4, blur guidance s 0.5: 20 NFE) with
    EfficientNet-Lite0 features at ``feature_size``; the blur kernel must fit reflect padding."""
    from texad.methods import make_settings

    return make_settings(
        "method_b",
        {
            "diffusion": {"preset": "tiny"},
            "train": {"epochs": {"default": s.ddpm_epochs}, "batch_size": _TRAIN_BATCH, "lr": 1e-3},
            "inference": {"w": {"default": 4.0}, "s": 0.5,
                          "blur_kernel": min(31, 2 * (s.image_size // 2) - 1), "smoothing_sigma": 2.0,
                          "feature_backbone": _FEATURES, "feature_size": s.feature_size,
                          "batch_size": s.batch_size},
            "feature_adaptation": {"epochs": {"default": 0}},
            "ablation": {"w": [], "s": [], "joint_w": [], "joint_s": [], "blur_sigma": [], "t_start": []},
        },
        class_name=CLASS,
        image_size=s.image_size,
    )  # fmt: skip


def simplenet_settings(s: BenchSettings):
    from texad.methods import make_settings

    return make_settings(
        "simplenet",
        {"backbone": _FEATURES, "pretrain_embed_dim": 64, "target_embed_dim": 64, "dsc_hidden": 64,
         "meta_epochs": s.simplenet_meta_epochs, "gan_epochs": s.simplenet_gan_epochs,
         "batch_size": _TRAIN_BATCH, "image_size": s.image_size, "resize": s.image_size, "noise_std": 1.0,
         "adaptor_lr": 1e-3, "dsc_lr": 2e-3, "smoothing_sigma": 2.0},
        class_name=CLASS,
    )  # fmt: skip


def draem_settings(s: BenchSettings):
    from texad.methods import make_settings

    return make_settings(
        "draem",
        {"epochs": s.draem_epochs, "batch_size": _TRAIN_BATCH, "lr": 1e-3, "image_size": s.image_size,
         "recon_base_width": 2, "disc_base_width": 2, "anomaly_source": "synthetic", "score_pool": 5},
        class_name=CLASS,
    )  # fmt: skip


SETTINGS: dict[str, Callable] = {
    "method_a": method_a_settings,
    "method_b": method_b_settings,
    "simplenet": simplenet_settings,
    "draem": draem_settings,
}


def method_settings(s: BenchSettings) -> dict:
    """Every method's config block (``methods.<name>``, schema defaults filled in; recorded in each JSON)."""
    return {name: make(s).to_config()["methods"][name] for name, make in SETTINGS.items()}


def runtime(s: BenchSettings, device: str):
    """The runs' :class:`~texad.methods.base.Runtime`: ``device``, fp32, evaluation grid ``image_size``."""
    from texad.backbones.weights import default_cache_dir
    from texad.config import validate_config
    from texad.methods.base import Runtime

    config = {"run_name": "bench", "device": device, "precision": "fp32",
              "evaluation": {"resolution": s.image_size},
              "backbone": {"cache": str(default_cache_dir())}}  # fmt: skip
    return Runtime.from_config(validate_config(config, partial=True))


def run_key(s: BenchSettings, variant: str = "default"):
    from texad.methods.base import RunKey

    return RunKey(DATASET, CLASS, s.seed, variant)


def _variant(s: BenchSettings, method: str, variant: str):
    """``method``'s settings with ``variant`` applied (as ``texad run --variant`` builds them)."""
    from texad.methods import get
    from texad.methods.base import variant_settings

    return variant_settings(get(method).variants(SETTINGS[method](s)), variant, method)


# --------------------------------------------------------------------------------------------- setup
_KIND = {"method_a": "score", "method_b": "ddpm", "simplenet": "simplenet", "draem": "draem"}
_TRAINED = {
    "method_a": lambda s: f"score model ({s.score_iterations} iterations)",
    "method_b": lambda s: f"DDPM ({s.ddpm_epochs} epochs)",
    "simplenet": lambda s: f"model ({s.simplenet_meta_epochs} meta epochs)",
    "draem": lambda s: f"model ({s.draem_epochs} epochs)",
}


def prepare(work: Path, s: BenchSettings, *, train_device: str = "cpu", log=_log) -> dict:
    """Generate the synthetic class (and DRAEM's anomaly-source class) and train the four tiny models under
    ``work`` (each method module's ``train``); returns the paths and training seconds (plain data,
    picklable)."""
    from texad.data.synth import generate_class
    from texad.methods import get

    work = Path(work)
    data = work / "data"
    generate_class(data, CLASS, image_size=s.class_image_size, n_train=s.n_train, n_test_good=s.n_test_good,
                   n_test_per_defect=s.n_test_per_defect, seed=s.seed, defects=s.defects)  # fmt: skip
    generate_class(data, SOURCE_CLASS, image_size=s.class_image_size, n_train=max(2, min(4, s.n_train)),
                   n_test_good=1, n_test_per_defect=1, seed=s.seed, defects=s.defects[:1])  # fmt: skip
    class_dir = data / CLASS
    models_dir = work / "models"
    rt, run = runtime(s, train_device), run_key(s)
    # DRAEM's anomaly sources: the synthetic classes under data/ other than the trained one (carpet)
    inputs = {"draem": {"anomaly_root": data}}
    train_s: dict[str, float] = {}
    models: dict[str, str] = {}
    for method, kind in _KIND.items():
        module, settings = get(method), SETTINGS[method](s)
        out = models_dir / module.model_file(kind, settings, run)
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the trainers' progress lines
            module.train(kind, settings, run, rt, class_dir=class_dir, out=out,
                         ckpt_dir=work / f"ck_{method}", **inputs.get(method, {}))  # fmt: skip
        train_s[method] = time.perf_counter() - t
        models[method] = str(out)
        log(f"trained {method} {_TRAINED[method](s)} in {train_s[method]:.1f}s")

    return {
        "work": str(work),
        "class_dir": str(class_dir),
        "models": models,
        "train_s": train_s,
        "train_device": train_device,
        "n_train": s.n_train,
        "n_test": s.n_test,
    }


# ------------------------------------------------------------------------------------ the method runs
def _row(result: dict, method: str, variant: str, pipeline_s: float, n: int, wall_s: float) -> dict:
    """One repetition of a method's run: the seconds the per-image figure is based on, and the result's own
    timings and metrics."""
    t, m = result["timings"], result["metrics"]
    return {
        "method": method,
        "variant": variant,
        "n_images": n,
        "pipeline_s": pipeline_s,
        "s_per_image": pipeline_s / n,
        "nfe_per_image": t.get("nfe_per_image"),
        "inference_s": t.get("inference_s"),
        "images_per_s": t.get("images_per_s"),
        "image_auroc": m.get("image_auroc"),
        "pixel_auroc": m.get("pixel_auroc"),
        "wall_s": wall_s,
    }


def run_method_once(setup: dict, s: BenchSettings, method: str, variant: str, device: str, out: Path) -> dict:
    """One run of ``method``'s ``variant``: its detector through :func:`texad.methods.run.run_class`, as
    ``texad run`` does. Per-image seconds = the test pass (``extra.timing.test_s``: loading the test images
    and scoring them, for Method B the set's fusion too) / images; the fit on the training images (Method A's
    train statistics) is recorded apart (``train_stats_s``; ``inference_s`` holds both). ``wall_s``: the whole
    call (model load, fit, test pass, evaluation, writing)."""
    from texad.methods import get
    from texad.methods.run import run_class

    settings, run, rt = _variant(s, method, variant), run_key(s, variant), runtime(s, device)
    t = time.perf_counter()
    detector = get(method).Detector(settings, rt, run, {"model": Path(setup["models"][method])})
    detector.batch_size = s.batch_size  # the bench's inference batch (see _TRAIN_BATCH)
    tag = f"{method}_{variant}"
    result = run_class(detector, Path(setup["class_dir"]), run, rt, out_result=out / f"{tag}.json",
                       out_maps=out / f"{tag}.npz")  # fmt: skip
    wall = time.perf_counter() - t
    timing = result["extra"]["timing"]
    row = _row(result, method, variant, timing["test_s"], result["metrics"]["n_images"], wall)
    row["train_stats_s"] = timing["train_stats_s"]
    return row


METHOD_RUNS: dict[str, Callable] = {
    name: (lambda setup, s, device, out, _name=name: run_method_once(setup, s, _name, "default", device, out))
    for name in ("method_a", "method_b", "simplenet", "draem")
}


# -------------------------------------------------------------------------------- the pipeline parts
class _ZeroNet(torch.nn.Module):
    """A network that costs nothing: zeros shaped like its input."""

    def forward(self, x: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class Parts:
    """The diffusion pipelines' pieces on one device: the networks, the test batches, and timers for one
    batched forward pass, the loader, the samplers without a network and Method B's feature distance."""

    def __init__(self, setup: dict, s: BenchSettings, device: str):
        from texad.backbones.features import load_backbone
        from texad.backbones.weights import BACKBONES
        from texad.data.mvtec import MVTecDataset
        from texad.diffusion.training import load_diffusion_model
        from texad.evaluation.protocol import grid_size
        from texad.methods.method_a.detector import load_score_model_any
        from texad.methods.method_b.settings import MAP_LAYERS

        self.s, self.device = s, device
        self.class_dir = Path(setup["class_dir"])
        a = method_a_settings(s)
        self.a_sde = a.sde
        # the inference of each Method A run (default: T scales; full_chain: the full-length reverse SDE)
        self.a_inference = {v: _variant(s, "method_a", v).inference for v in ("default", "full_chain")}
        nets: list[torch.nn.Module] = []  # the bare score network, as the score function wraps it

        def keep(net: torch.nn.Module) -> torch.nn.Module:
            nets.append(net)
            return net

        path = Path(setup["models"]["method_a"])
        self.score_model, _ = load_score_model_any(path, "own", device, a.sde.n_steps, prepare=keep)
        self.score_net = nets[0]
        self.ddpm, schedule, _ = load_diffusion_model(Path(setup["models"]["method_b"]), device=device)
        self.schedule = schedule.to(torch.device(device))
        self.b_inference = method_b_settings(s).inference
        self.map_layers = MAP_LAYERS
        backbone = self.b_inference.feature_backbone
        self.extractor = load_backbone(backbone, weights=BACKBONES[backbone], cache_dir=None,
                                       layers=MAP_LAYERS).to(device)  # fmt: skip
        probe = MVTecDataset(self.class_dir, "test", image_size=s.image_size, mask_size="native")
        self.grid = grid_size(s.image_size, tuple(probe[0]["mask"].shape[-2:]))
        self.dataset = MVTecDataset(self.class_dir, "test", image_size=s.image_size, mask_size=self.grid)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=s.batch_size, shuffle=False)
        # the test batches as the runs see them, with the runs' per-image seeds
        self.batches = [(b["image"].to(device), [int(i) for i in b["index"]]) for b in loader]
        self.batch_sizes = [x.shape[0] for x, _ in self.batches]
        self.n_images = sum(self.batch_sizes)

    def seeds(self, indices: list[int]) -> list[int]:
        """The runs' noise seeds of these test images (:func:`texad.methods.base.image_seed`, from each file)."""
        from texad.methods.base import image_identity, image_seed

        return [image_seed(self.s.seed, CLASS, image_identity(self.dataset.samples[i].path)) for i in indices]

    # ---- one batched forward pass of each network
    def _forward_seconds(self, fn: Callable[[int], Callable[[], object]]) -> dict[str, float]:
        out = {}
        with torch.no_grad():
            for b in sorted(set(self.batch_sizes)):
                call = fn(b)
                call()  # warm-up
                _sync(self.device)
                times = []
                for _ in range(self.s.fwd_calls):
                    t = time.perf_counter()
                    call()
                    _sync(self.device)
                    times.append(time.perf_counter() - t)
                times.sort()
                out[str(b)] = times[len(times) // 2]
        return out

    def forward_a(self) -> dict[str, float]:
        """Seconds of one forward pass of the score network per batch size (the input the chain gives it:
        float32 images and float32 noise labels)."""
        size, dev, sde = self.s.image_size, self.device, self.score_model.sde

        def make(b: int):
            x = torch.rand(b, 3, size, size, device=dev)
            labels = sde.noise_label(torch.full((b,), 0.5, dtype=torch.float64)).to(dev, torch.float32)
            return lambda: self.score_net(x, labels)

        return self._forward_seconds(make)

    def forward_b(self) -> dict[str, float]:
        """Seconds of one forward pass of the DDPM's U-Net per batch size (float32 images, long timesteps)."""
        size, dev = self.s.image_size, self.device

        def make(b: int):
            x = torch.rand(b, 3, size, size, device=dev) * 2 - 1
            t = torch.full((b,), 100, dtype=torch.long, device=dev)
            return lambda: self.ddpm(x, t)

        return self._forward_seconds(make)

    # ---- the rest of the pipeline
    def loader_seconds(self) -> float:
        """The test set read, decoded and resized through the runs' DataLoader (no model)."""
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.s.batch_size, shuffle=False)
        t = time.perf_counter()
        for batch in loader:
            batch["image"].to(self.device)
        _sync(self.device)
        return time.perf_counter() - t

    def null_sampler_a(self, variant: str) -> float:
        """Method A's chains of ``variant`` (``default`` or ``full_chain``) over the test batches with a
        network that costs nothing (returns zeros) behind the real score-function wrapper (noise labels, dtype
        casts): noise draws, SDE steps, norms, bookkeeping."""
        from texad.methods.method_a.infer import raw_maps, score_model_from_net

        model = score_model_from_net(_ZeroNet(), self.score_model.sde)
        inf = self.a_inference[variant]
        t = time.perf_counter()
        for x, idx in self.batches:
            raw_maps(model, x, inf, seeds=self.seeds(idx), sigma_end=self.a_sde.sigma_min)
        _sync(self.device)
        return time.perf_counter() - t

    def null_sampler_b(self) -> float:
        """Method B's reconstruction loop over the test batches with a zero-cost network."""
        from texad.methods.method_b.infer import reconstruct

        inf = self.b_inference
        t = time.perf_counter()
        for x, idx in self.batches:
            reconstruct(
                lambda x_t, tt: torch.zeros_like(x_t), self.schedule, x * 2 - 1, inf, seeds=self.seeds(idx)
            )
        _sync(self.device)
        return time.perf_counter() - t

    def features_b(self) -> float:
        """Method B's feature distance (EfficientNet-Lite0 on the input and its reconstruction) per batch."""
        from texad.methods.method_b.anomaly_map import feature_distance

        size, feature_size = self.s.image_size, self.b_inference.feature_size
        t = time.perf_counter()
        for x, _ in self.batches:
            xm = x * 2 - 1
            feature_distance(
                self.extractor, xm, xm.flip(-1), self.map_layers, (size, size), feature_size
            ).cpu()
        _sync(self.device)
        return time.perf_counter() - t


# ------------------------------------------------------------------------------------------- measure
def measure(setup: dict, s: BenchSettings, device: str, *, log=_log) -> dict:
    """Every timed task ``s.reps`` times on ``device``, the order alternating between repetitions (after one
    untimed warm-up of each cheap task). Returns {"reps": {task: [one value per repetition]}, ...}."""
    out_root = Path(tempfile.mkdtemp(prefix=f"runs_{device.replace(':', '_')}_", dir=setup["work"]))
    parts = Parts(setup, s, device)

    def run(name: str, fn: Callable[[Path], dict]):
        d = out_root / name
        d.mkdir(exist_ok=True)
        return fn(d)

    tasks: dict[str, Callable[[], object]] = {
        "method_a_default": lambda: run(
            "a", lambda d: run_method_once(setup, s, "method_a", "default", device, d)
        ),
        "method_a_full_chain": lambda: run(
            "af", lambda d: run_method_once(setup, s, "method_a", "full_chain", device, d)
        ),
        "forward_a": parts.forward_a,
        "null_sampler_a_default": lambda: parts.null_sampler_a("default"),
        "null_sampler_a_full_chain": lambda: parts.null_sampler_a("full_chain"),
        "loader": parts.loader_seconds,
        "method_b": lambda: run("b", lambda d: METHOD_RUNS["method_b"](setup, s, device, d)),
        "forward_b": parts.forward_b,
        "null_sampler_b": parts.null_sampler_b,
        "features_b": parts.features_b,
        "simplenet": lambda: run("sn", lambda d: METHOD_RUNS["simplenet"](setup, s, device, d)),
        "draem": lambda: run("dr", lambda d: METHOD_RUNS["draem"](setup, s, device, d)),
    }  # the order of one repetition: each pipeline next to its parts
    warm = (
        [k for k in tasks if k not in ("method_a_full_chain", "null_sampler_a_full_chain")]
        if s.warmup
        else []
    )
    t = time.perf_counter()
    for name in warm:
        tasks[name]()
    log(f"{device}: warm-up done in {time.perf_counter() - t:.1f}s")
    reps: dict[str, list] = {k: [] for k in tasks}
    task_s: dict[str, list[float]] = {k: [] for k in tasks}  # wall seconds of each task call
    order = list(tasks)
    loads: list[float] = []  # 1-minute load average at the start of each repetition
    loop_start = time.perf_counter()
    for r in range(s.reps):
        spent = time.perf_counter() - loop_start
        if r >= s.min_reps and spent + spent / r > s.rep_budget_s:  # the next one would end past the budget
            log(f"{device}: stopping after {r} repetitions (time guard {s.rep_budget_s:.0f}s)")
            break
        loads.append(round(os.getloadavg()[0], 2))
        t = time.perf_counter()
        for name in order if r % 2 == 0 else order[::-1]:
            t_task = time.perf_counter()
            reps[name].append(tasks[name]())
            task_s[name].append(time.perf_counter() - t_task)
        log(f"{device}: repetition {r + 1}/{s.reps} in {time.perf_counter() - t:.1f}s")
    return {
        "device": device,
        "batch_sizes": parts.batch_sizes,
        "n_images": parts.n_images,
        "reps_done": len(loads),
        "loadavg_1min_per_rep": loads,
        "order": order,
        "order_note": "even repetitions run the tasks in this order, odd ones reversed",
        "reps": reps,
        "task_wall_s": task_s,
    }


def _bare_seconds(forward: dict[str, float], batch_sizes: list[int], nfe: int) -> float:
    """Seconds the network evaluations alone cost for the whole test set: NFE x one batched forward pass at
    each of the loader's batch sizes."""
    return nfe * sum(forward[str(b)] for b in batch_sizes)


def _stats_of(rows: list[dict], key: str) -> dict:
    return stats([r[key] for r in rows if r.get(key) is not None])


# ------------------------------------------------------------------------------------------ records
def _header(s: BenchSettings, setup: dict, name: str, machine: dict) -> dict:
    return {
        "benchmark": name,
        "machine": machine,
        "settings": s.as_dict(),
        "method_settings": method_settings(s),
        "setup": {k: setup[k] for k in ("train_s", "train_device", "n_train", "n_test")},
        "statistic": "median over repetitions; spread = (max - min) / median; every repetition kept",
    }


def tscales_record(s: BenchSettings, setup: dict, measured: dict[str, dict], machine: dict) -> dict:
    """(a) Method A T scales vs the full-length reverse SDE on the same test images."""
    rec = _header(s, setup, "method_a_tscales_vs_full_chain", machine)
    rec["devices"] = {}
    for device, m in measured.items():
        d_rows, f_rows = m["reps"]["method_a_default"], m["reps"]["method_a_full_chain"]
        d_spi, f_spi = _stats_of(d_rows, "s_per_image"), _stats_of(f_rows, "s_per_image")
        pair = [ratio(f["s_per_image"], d["s_per_image"]) for d, f in zip(d_rows, f_rows, strict=True)]
        nfe_d, nfe_f = d_rows[0]["nfe_per_image"], f_rows[0]["nfe_per_image"]
        rec["devices"][device] = {
            "device": device,
            "batch_size": s.batch_size,
            "image_size": s.image_size,
            "n_images": m["n_images"],
            "default": {"nfe_per_image": nfe_d, "s_per_image": d_spi,
                        "image_auroc": _stats_of(d_rows, "image_auroc"),
                        "pixel_auroc": _stats_of(d_rows, "pixel_auroc"), "reps": d_rows},
            "full_chain": {"nfe_per_image": nfe_f, "s_per_image": f_spi,
                           "image_auroc": _stats_of(f_rows, "image_auroc"),
                           "pixel_auroc": _stats_of(f_rows, "pixel_auroc"), "reps": f_rows},
            "reps_done": m["reps_done"],
            "loadavg_1min_per_rep": m["loadavg_1min_per_rep"],
            # speed-up = median full-chain s/img / median default s/img; per_pair: the same ratio in each
            # repetition (the two runs next to each other), for its spread; best: fastest / fastest
            "speedup": ratio(f_spi["median"], d_spi["median"]),
            "speedup_best": ratio(f_spi["min"], d_spi["min"]),
            "speedup_per_pair": stats([p for p in pair if p is not None]),
            "nfe_ratio": ratio(nfe_f, nfe_d),
        }  # fmt: skip
    return rec


def _overhead_entry(
    rows: list[dict], forward: list[dict], loader: list[float], null: list[float], batch_sizes: list[int],
    n: int, features: list[float] | None = None,
) -> dict:  # fmt: skip
    nfe = rows[0]["nfe_per_image"]
    pipe = [r["s_per_image"] for r in rows]
    bare = [_bare_seconds(f, batch_sizes, nfe) / n for f in forward]
    per_rep = [ratio(p, b) for p, b in zip(pipe, bare, strict=True)]
    p_st, b_st = stats(pipe), stats(bare)
    overhead = ratio(p_st["median"], b_st["median"])
    parts = {
        "network_bare": b_st,
        "data_loading": stats([v / n for v in loader]),
        "sampler_without_network": stats([v / n for v in null]),
    }
    if features is not None:
        parts["feature_extractor"] = stats([v / n for v in features])
    explained = sum(p["median"] for p in parts.values())
    breakdown = {k: {"s_per_image": v["median"], "share_of_pipeline": ratio(v["median"], p_st["median"])}
                 for k, v in parts.items()}  # fmt: skip
    rest = p_st["median"] - explained
    breakdown["rest"] = {"s_per_image": rest, "share_of_pipeline": ratio(rest, p_st["median"])}
    return {
        "nfe_per_image": nfe,
        "pipeline_s_per_image": p_st,
        "bare_s_per_image": b_st,
        "forward_s_per_batch": forward,
        "overhead_ratio": overhead,  # median pipeline s/img / median bare s/img
        "overhead_ratio_best": ratio(p_st["min"], b_st["min"]),  # fastest pipeline / fastest bare
        "overhead_ratio_per_rep": stats([r for r in per_rep if r is not None]),
        "target": OVERHEAD_TARGET,
        "meets_target": overhead is not None and overhead <= OVERHEAD_TARGET,
        "parts": parts,
        "breakdown": breakdown,
        "biggest_non_network_part": max(
            (k for k in breakdown if k != "network_bare"), key=lambda k: breakdown[k]["s_per_image"]
        ),
    }


def overhead_record(s: BenchSettings, setup: dict, measured: dict[str, dict], machine: dict) -> dict:
    """(b) each diffusion pipeline's seconds per image against NFE x one batched forward pass."""
    rec = _header(s, setup, "diffusion_pipeline_overhead", machine)
    rec["definition"] = (
        "overhead ratio = pipeline seconds per test image / bare seconds per test image, bare = NFE per image x "
        "(sum over the loader's batches of one batched forward pass at that batch size) / images; target <= "
        f"{OVERHEAD_TARGET}. Method A's pipeline is its test pass (extra.timing.test_s: loading + chains); "
        "Method B's is its test pass too (extra.timing.test_s: loading, reconstruction, pixel and feature "
        "distances)."
    )
    rec["devices"] = {}
    for device, m in measured.items():
        r, bs, n = m["reps"], m["batch_sizes"], m["n_images"]
        rec["devices"][device] = {
            "device": device,
            "batch_size": s.batch_size,
            "batch_sizes": bs,
            "image_size": s.image_size,
            "n_images": n,
            "reps_done": m["reps_done"],
            "loadavg_1min_per_rep": m["loadavg_1min_per_rep"],
            "task_wall_s": m["task_wall_s"],
            "methods": {
                "method_a_default": _overhead_entry(r["method_a_default"], r["forward_a"], r["loader"],
                                                    r["null_sampler_a_default"], bs, n),
                "method_a_full_chain": _overhead_entry(r["method_a_full_chain"], r["forward_a"], r["loader"],
                                                       r["null_sampler_a_full_chain"], bs, n),
                "method_b": _overhead_entry(r["method_b"], r["forward_b"], r["loader"], r["null_sampler_b"], bs,
                                            n, features=r["features_b"]),
            },
        }  # fmt: skip
    return rec


def throughput_record(s: BenchSettings, setup: dict, measured: dict[str, dict], machine: dict) -> dict:
    """(c) images per second of each method's inference (the figure its result JSON records)."""
    rec = _header(s, setup, "inference_throughput", machine)
    rec["definition"] = {
        "method_a": "n test images / extra.timing.test_s (test pass: loading + T-scale chains; the train-"
        "statistics pass is apart, see inference_s)",
        "method_a_full_chain": "as method_a, full-length reverse SDE",
        "method_b": "n test images / extra.timing.test_s (loading + reconstruction + pixel and feature "
        "distances; a train-statistics pass is apart, see inference_s)",
        "simplenet": "n test images / extra.timing.test_s (loading + backbone, adaptor, discriminator, map "
        "upsampling and smoothing)",
        "draem": "n test images / extra.timing.test_s (loading + both networks + image scores)",
    }
    rec["devices"] = {}
    keys = {"method_a": "method_a_default", "method_a_full_chain": "method_a_full_chain", "method_b": "method_b",
            "simplenet": "simplenet", "draem": "draem"}  # fmt: skip
    for device, m in measured.items():
        methods = {}
        for name, key in keys.items():
            rows = m["reps"][key]
            methods[name] = {
                "images_per_s": _stats_of(rows, "images_per_s"),
                "s_per_image": _stats_of(rows, "s_per_image"),
                "nfe_per_image": rows[0]["nfe_per_image"],
                "image_auroc": _stats_of(rows, "image_auroc"),
                "wall_s_of_run_call": _stats_of(rows, "wall_s"),
            }
        rec["devices"][device] = {"device": device, "batch_size": s.batch_size, "image_size": s.image_size,
                                  "n_images": m["n_images"], "reps_done": m["reps_done"],
                                  "loadavg_1min_per_rep": m["loadavg_1min_per_rep"], "methods": methods}  # fmt: skip
    return rec


# ------------------------------------------------------------------------------------------- memory
def _memory_child(job: dict) -> dict:
    """Run one method once in this (fresh) process and report its peak memory over the imports' baseline."""
    import texad.methods.draem.detector  # noqa: F401  - imports before the baseline
    import texad.methods.method_a.detector  # noqa: F401
    import texad.methods.method_b.detector  # noqa: F401
    import texad.methods.run  # noqa: F401
    import texad.methods.simplenet.detector  # noqa: F401

    torch.set_num_threads(job["threads"])
    s = BenchSettings.from_dict(job["settings"])
    device, method = job["device"], job["method"]
    out = Path(tempfile.mkdtemp(prefix=f"mem_{method}_", dir=job["setup"]["work"]))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    with RSSSampler() as sampler:
        row = METHOD_RUNS[method](job["setup"], s, device, out)
    rec = {"method": method, "device": device, **sampler.record(), "s_per_image": row["s_per_image"]}
    if cuda:
        rec["cuda_max_allocated_mb"] = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
        rec["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return rec


def _memory_in_fresh_process(job: dict) -> dict:
    """Run :func:`_memory_child` in a new interpreter (this file with ``--memory-child``)."""
    with tempfile.TemporaryDirectory(prefix="mem_job_", dir=job["setup"]["work"]) as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(job_path), str(out_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out_path.is_file():
            raise RuntimeError(
                f"the memory run of {job['method']} on {job['device']} failed (exit {proc.returncode}):\n"
                f"{proc.stderr[-4000:]}"
            )
        return json.loads(out_path.read_text())


def measure_memory(
    setup: dict, s: BenchSettings, devices: list[str], *, methods: tuple[str, ...] | None = None, log=_log
) -> list[dict]:
    """(d) each method's whole run (model load, inference, evaluation, writing) once per device, each in a
    fresh process, so that one method's allocations never hide another's peak."""
    out = []
    for device in devices:
        for method in METHOD_RUNS if methods is None else methods:
            job = {"method": method, "device": device, "setup": setup, "settings": s.as_dict(),
                   "threads": torch.get_num_threads()}  # fmt: skip
            rec = _memory_in_fresh_process(job)
            out.append(rec)
            log(f"{device}: memory of {method}: +{rec['rss_peak_delta_mb']:.0f} MB RSS")
    return out


def memory_record(s: BenchSettings, setup: dict, rows: list[dict], machine: dict) -> dict:
    rec = _header(s, setup, "peak_memory", machine)
    rec["definition"] = (
        "one run of each method (model load, inference on the test set, evaluation, writing) in a fresh "
        "process after its imports: rss_peak_delta_mb = peak RSS sampled every 2 ms minus the RSS "
        "before the run; ru_maxrss_after_mb = the process's lifetime peak RSS (getrusage, imports included; "
        "ru_maxrss_delta_mb moves only when the run sets a new lifetime peak); on CUDA "
        "cuda_max_allocated_mb = torch.cuda.max_memory_allocated minus the allocation before the run"
    )
    rec["batch_size"], rec["image_size"] = s.batch_size, s.image_size
    rec["runs"] = rows
    return rec


# ---------------------------------------------------------------------------------------------- all
def run_all(
    out_dir: Path, s: BenchSettings, *, devices: list[str] | None = None, memory: bool = True,
    memory_methods: tuple[str, ...] | None = None, work: Path | None = None, log=_log,
) -> dict[str, dict]:  # fmt: skip
    """Prepare, measure on every device, write ``tscales.json``, ``overhead.json``, ``throughput.json`` and
    (``memory``) ``memory.json`` into ``out_dir``; returns the records by file stem. ``memory_methods``: the
    methods whose memory is measured (default: all four); ``work``: where the temporary class and models go."""
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    started = time.perf_counter()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="texad_bench_", dir=work) as tmp:
        setup = prepare(Path(tmp), s, train_device=devices[-1], log=log)
        measured = {d: measure(setup, s, d, log=log) for d in devices}
        mem = measure_memory(setup, s, devices, methods=memory_methods, log=log) if memory else None
    machine["loadavg_end_1_5_15"] = machine_info()["loadavg_1_5_15"]
    records = {
        "tscales": tscales_record(s, setup, measured, machine),
        "overhead": overhead_record(s, setup, measured, machine),
        "throughput": throughput_record(s, setup, measured, machine),
    }
    if mem is not None:
        records["memory"] = memory_record(s, setup, mem, machine)
    total = time.perf_counter() - started
    for name, rec in records.items():
        rec["bench_pipeline_total_s"] = total
        write_json(Path(out_dir) / f"{name}.json", rec)
    log(f"wrote {', '.join(f'{n}.json' for n in records)} to {out_dir} ({total:.0f}s in all)")
    return records


def main(argv: list[str] | None = None) -> dict[str, dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--reps", type=int, default=BenchSettings.reps)
    ap.add_argument("--batch-size", type=int, default=BenchSettings.batch_size)
    ap.add_argument("--image-size", type=int, default=BenchSettings.image_size)
    ap.add_argument("--sde-steps", type=int, default=BenchSettings.sde_steps)
    ap.add_argument("--score-iterations", type=int, default=BenchSettings.score_iterations)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-cuda", action="store_true", help="CPU only even when CUDA is available")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the temporary class and models go")
    ap.add_argument("--memory-child", nargs=2, type=Path, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:  # one method's memory run in this fresh process (see measure_memory)
        job_path, out_path = args.memory_child
        write_json(out_path, _memory_child(json.loads(job_path.read_text())))
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    s = BenchSettings(reps=args.reps, batch_size=args.batch_size, image_size=args.image_size,
                      sde_steps=args.sde_steps, score_iterations=args.score_iterations)  # fmt: skip
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    return run_all(args.out_dir, s, devices=devices, memory=not args.no_memory, work=args.work_dir)


if __name__ == "__main__":
    main()
