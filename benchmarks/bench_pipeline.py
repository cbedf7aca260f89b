"""Speed and memory of the four methods' inference on tiny models, measured side by side in one process.

    python benchmarks/bench_pipeline.py [--out-dir benchmarks] [--reps 3] [--threads N] [--no-cuda]

Trains tiny models of every method (seconds each) on a small generated synthetic class, then repeats, with the
order of the measured things alternating between repetitions (forward, then reversed), so that load drifts on
a shared machine hit both sides of every ratio alike:

- Method A (``run_method_a``) with variant ``default`` (T scales) and ``full_chain`` (the full-length reverse
  SDE over the ``--sde-steps`` grid from sigma_hi), Method B (``run_method_b``), SimpleNet (``evaluate_model``)
  and DRAEM (``run_draem``), each on the same test images;
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


def _quiet(*_a, **_k) -> None:
    pass


def _log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[bench_pipeline {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ method settings
def method_a_settings(s: BenchSettings):
    from texad.methods.score_tscales.run import MethodASettings

    return MethodASettings.from_config(
        {
            "sde": {"type": "ve", "sigma_min": 0.01, "sigma_max": 1.0, "n_steps": s.sde_steps},
            "network": {"preset": "tiny", "nf": 16},
            "train": {"batch_size": 8, "iterations": s.score_iterations, "lr": 2e-3,
                      "warmup": min(20, s.score_iterations // 5)},
            "inference": {"metric": "score_residual", "predictor": "ancestral", "n_scales": 4, "sigma_lo": 0.05,
                          "sigma_hi": 0.4, "steps_per_scale": 5, "draws": s.draws, "normalise": "train_stats",
                          "smoothing_sigma": 2, "batch_size": s.batch_size},
        }
    )  # fmt: skip


def ddpm_settings(s: BenchSettings):
    from texad.diffusion.training import DiffusionTrainSettings

    return DiffusionTrainSettings(dataset=DATASET, class_name=CLASS, preset="tiny", image_size=s.image_size,
                                  epochs=s.ddpm_epochs, batch_size=4, lr=1e-3, seed=s.seed)  # fmt: skip


def recon_settings(s: BenchSettings):
    from texad.methods.conditioned_blur.infer import ReconstructionSettings

    # the paper's inference (DDAD grid 225..0, blur guidance); the blur kernel must fit reflect padding
    return ReconstructionSettings(w=4.0, s=0.5, blur_kernel=min(31, 2 * (s.image_size // 2) - 1))


def map_settings(s: BenchSettings):
    from texad.methods.conditioned_blur.anomaly_map import MapSettings

    return MapSettings(smoothing_sigma=2.0, feature_size=s.feature_size)


def simplenet_settings(s: BenchSettings):
    from texad.methods.simplenet import SimpleNetSettings

    return SimpleNetSettings(
        backbone="efficientnet_lite0", pretrain_embed_dim=64, target_embed_dim=64, dsc_hidden=64,
        meta_epochs=s.simplenet_meta_epochs, gan_epochs=s.simplenet_gan_epochs, batch_size=4,
        image_size=s.image_size, resize=s.image_size, noise_std=1.0, adaptor_lr=1e-3, dsc_lr=2e-3,
        smoothing_sigma=2.0,
    )  # fmt: skip


def draem_settings(s: BenchSettings):
    from texad.methods.draem import DraemSettings

    return DraemSettings(epochs=s.draem_epochs, batch_size=4, lr=1e-3, image_size=s.image_size,
                         recon_base_width=2, disc_base_width=2, anomaly_source="synthetic", score_pool=5)  # fmt: skip


def method_settings(s: BenchSettings) -> dict:
    """Every method's settings as plain data (recorded in each JSON)."""
    a = method_a_settings(s)
    return {
        "method_a": {"sde": asdict(a.sde), "network": asdict(a.network), "train": asdict(a.train),
                     "inference": a.inference.as_dict()},
        "method_b": {"ddpm": asdict(ddpm_settings(s)), "reconstruction": recon_settings(s).as_dict(),
                     "map": map_settings(s).as_dict(), "backbone": "efficientnet_lite0"},
        "simplenet": simplenet_settings(s).as_dict(),
        "draem": asdict(draem_settings(s)),
    }  # fmt: skip


def simplenet_spec(s: BenchSettings, device: str):
    from texad.methods.simplenet import RunSpec

    return RunSpec(run_name="bench", dataset=DATASET, class_name=CLASS, seed=s.seed,
                   backbone_weights="efficientnet_lite0", resolution=s.image_size, batch_size=s.batch_size,
                   device=device)  # fmt: skip


# --------------------------------------------------------------------------------------------- setup
def prepare(work: Path, s: BenchSettings, *, train_device: str = "cpu", log=_log) -> dict:
    """Generate the synthetic class (and DRAEM's anomaly-source class) and train the four tiny models under
    ``work``; returns the paths and training seconds (plain data, picklable)."""
    from texad.data.synth import generate_class
    from texad.diffusion.training import train_diffusion
    from texad.methods.draem import source_paths, train_draem
    from texad.methods.simplenet import run_model_hash, train_model

    work = Path(work)
    data = work / "data"
    generate_class(data, CLASS, image_size=s.class_image_size, n_train=s.n_train, n_test_good=s.n_test_good,
                   n_test_per_defect=s.n_test_per_defect, seed=s.seed, defects=s.defects)  # fmt: skip
    generate_class(data, SOURCE_CLASS, image_size=s.class_image_size, n_train=max(2, min(4, s.n_train)),
                   n_test_good=1, n_test_per_defect=1, seed=s.seed, defects=s.defects[:1])  # fmt: skip
    class_dir = data / CLASS
    models = work / "models"
    train_s: dict[str, float] = {}

    t = time.perf_counter()
    ts = method_a_settings(s).train_settings(DATASET, CLASS, s.image_size, s.seed)
    score = models / f"score-{ts.model_hash()}.pt"
    train_diffusion(class_dir, score, work / "ck_score", ts, device=train_device, progress=False, log=_quiet)
    train_s["method_a"] = time.perf_counter() - t
    log(f"trained method_a score model ({s.score_iterations} iterations) in {train_s['method_a']:.1f}s")

    t = time.perf_counter()
    dd = ddpm_settings(s)
    ddpm = models / f"ddpm-{dd.model_hash()}.pt"
    train_diffusion(class_dir, ddpm, work / "ck_ddpm", dd, device=train_device, progress=False, log=_quiet)
    train_s["method_b"] = time.perf_counter() - t
    log(f"trained method_b DDPM ({s.ddpm_epochs} epochs) in {train_s['method_b']:.1f}s")

    t = time.perf_counter()
    sn_settings, sn_spec = simplenet_settings(s), simplenet_spec(s, train_device)
    simplenet = models / f"simplenet-{run_model_hash(sn_spec, sn_settings)}.pt"
    train_model(class_dir, sn_spec, sn_settings, model_path=simplenet, ckpt_dir=work / "ck_simplenet",
                progress=False, log=_quiet)  # fmt: skip
    train_s["simplenet"] = time.perf_counter() - t
    log(f"trained simplenet ({s.simplenet_meta_epochs} meta epochs) in {train_s['simplenet']:.1f}s")

    t = time.perf_counter()
    dr = draem_settings(s)
    draem = models / f"draem-{dr.model_hash(DATASET, CLASS, s.seed)}.pt"
    paths = source_paths("synthetic", class_name=CLASS, dataset_root=data)
    train_draem(class_dir, paths, dr, out=draem, ckpt_dir=work / "ck_draem", seed=s.seed, device=train_device,
                dataset=DATASET, progress=False, log=_quiet)  # fmt: skip
    train_s["draem"] = time.perf_counter() - t
    log(f"trained draem ({s.draem_epochs} epochs) in {train_s['draem']:.1f}s")

    return {
        "work": str(work),
        "class_dir": str(class_dir),
        "models": {
            "method_a": str(score),
            "method_b": str(ddpm),
            "simplenet": str(simplenet),
            "draem": str(draem),
        },  # fmt: skip
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


def run_method_a_once(setup: dict, s: BenchSettings, variant: str, device: str, out: Path) -> dict:
    """``run_method_a``; per-image seconds = the test pass (``extra.timing.test_s``: loading + chains) / images
    (the train-statistics pass over the training images is recorded apart, in ``inference_s``)."""
    from texad.methods.score_tscales.run import RunSpec, run_method_a

    spec = RunSpec("bench", DATASET, CLASS, variant, s.seed, resolution=s.image_size, device=device)
    t = time.perf_counter()
    result = run_method_a(Path(setup["models"]["method_a"]), Path(setup["class_dir"]), spec,
                          method_a_settings(s), out_result=out / f"a_{variant}.json",
                          out_maps=out / f"a_{variant}.npz")  # fmt: skip
    wall = time.perf_counter() - t
    timing = result["extra"]["timing"]
    n = result["metrics"]["n_images"]
    row = _row(result, "method_a", variant, timing["test_s"], n, wall)
    row["train_stats_s"] = timing["train_stats_s"]
    return row


def run_method_b_once(setup: dict, s: BenchSettings, device: str, out: Path) -> dict:
    """``run_method_b``; per-image seconds = the test pass (``extra.timing.test_s``: loading, reconstruction,
    distances) / images (a train-statistics pass, when normalising, is recorded apart, in ``inference_s``)."""
    from texad.methods.conditioned_blur.run import RunSpec, run_method_b

    spec = RunSpec(run_name="bench", dataset=DATASET, class_name=CLASS, variant="default", seed=s.seed,
                   backbone="efficientnet_lite0", backbone_weights="efficientnet_lite0", weights_cache=None,
                   resolution=s.image_size, batch_size=s.batch_size, device=device)  # fmt: skip
    t = time.perf_counter()
    result = run_method_b(Path(setup["models"]["method_b"]), Path(setup["class_dir"]), spec, recon_settings(s),
                          map_settings(s), out_result=out / "b.json", out_maps=out / "b.npz")  # fmt: skip
    wall = time.perf_counter() - t
    timing = result["extra"]["timing"]
    n = result["metrics"]["n_images"]
    row = _row(result, "method_b", "default", timing["test_s"], n, wall)
    row["train_stats_s"] = timing["train_stats_s"]
    return row


def run_simplenet_once(setup: dict, s: BenchSettings, device: str, out: Path) -> dict:
    """``evaluate_model``; per-image seconds = its ``inference_s`` (network + map smoothing on the preloaded
    test set)."""
    from texad.methods.simplenet import evaluate_model

    t = time.perf_counter()
    result = evaluate_model(Path(setup["class_dir"]), simplenet_spec(s, device), simplenet_settings(s),
                            model_path=Path(setup["models"]["simplenet"]), out_result=out / "sn.json",
                            out_maps=out / "sn.npz")  # fmt: skip
    wall = time.perf_counter() - t
    n = result["metrics"]["n_images"]
    return _row(result, "simplenet", "default", result["timings"]["inference_s"], n, wall)


def run_draem_once(setup: dict, s: BenchSettings, device: str, out: Path) -> dict:
    """``run_draem``; per-image seconds = its ``inference_s`` (loading + both networks + image scores)."""
    from texad.methods.draem import RunSpec, run_draem

    spec = RunSpec("bench", DATASET, CLASS, s.seed, resolution=s.image_size, batch_size=s.batch_size,
                   device=device)  # fmt: skip
    t = time.perf_counter()
    result = run_draem(Path(setup["models"]["draem"]), Path(setup["class_dir"]), spec,
                       out_result=out / "dr.json", out_maps=out / "dr.npz")  # fmt: skip
    wall = time.perf_counter() - t
    n = result["metrics"]["n_images"]
    return _row(result, "draem", "default", result["timings"]["inference_s"], n, wall)


METHOD_RUNS: dict[str, Callable] = {
    "method_a": lambda setup, s, device, out: run_method_a_once(setup, s, "default", device, out),
    "method_b": run_method_b_once,
    "simplenet": run_simplenet_once,
    "draem": run_draem_once,
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
        from texad.data.mvtec import MVTecDataset
        from texad.diffusion.training import load_diffusion_model, load_score_model
        from texad.evaluation.protocol import grid_size
        from texad.methods.common import image_seed
        from texad.methods.score_tscales.infer import score_model_from_net

        self.s, self.device = s, device
        self.class_dir = Path(setup["class_dir"])
        a = method_a_settings(s)
        self.a_settings = a
        self.score_net, sde, _ = load_score_model(Path(setup["models"]["method_a"]), device=device,
                                                  n_steps=a.sde.n_steps)  # fmt: skip
        self.score_model = score_model_from_net(self.score_net, sde)
        self.ddpm, schedule, _ = load_diffusion_model(Path(setup["models"]["method_b"]), device=device)
        self.schedule = schedule.to(torch.device(device))
        ms = map_settings(s)
        self.maps_cfg = ms
        self.extractor = load_backbone("efficientnet_lite0", weights="efficientnet_lite0", cache_dir=None,
                                       layers=ms.layers).to(device)  # fmt: skip
        probe = MVTecDataset(self.class_dir, "test", image_size=s.image_size, mask_size="native")
        self.grid = grid_size(s.image_size, tuple(probe[0]["mask"].shape[-2:]))
        self.dataset = MVTecDataset(self.class_dir, "test", image_size=s.image_size, mask_size=self.grid)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=s.batch_size, shuffle=False)
        # the test batches as the runs see them, with the runs' per-image seeds
        self.batches = [(b["image"].to(device), [int(i) for i in b["index"]]) for b in loader]
        self.batch_sizes = [x.shape[0] for x, _ in self.batches]
        self.n_images = sum(self.batch_sizes)
        self.image_seed = image_seed

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

    def null_sampler_a(self, full_chain: bool) -> float:
        """Method A's chains over the test batches with a network that costs nothing (returns zeros) behind the
        real score-function wrapper (noise labels, dtype casts): noise draws, SDE steps, norms, bookkeeping."""
        from texad.methods.score_tscales.infer import raw_maps, score_model_from_net

        model = score_model_from_net(_ZeroNet(), self.score_model.sde)
        inf = self.a_settings.inference
        t = time.perf_counter()
        for x, idx in self.batches:
            seeds = [self.image_seed(self.s.seed, CLASS, i) for i in idx]
            raw_maps(
                model, x, inf, seeds=seeds, sigma_end=self.a_settings.sde.sigma_min, full_chain=full_chain
            )
        _sync(self.device)
        return time.perf_counter() - t

    def null_sampler_b(self) -> float:
        """Method B's reconstruction loop over the test batches with a zero-cost network."""
        from texad.methods.conditioned_blur.infer import reconstruct

        recon = recon_settings(self.s)
        t = time.perf_counter()
        for x, idx in self.batches:
            seeds = [self.image_seed(self.s.seed, CLASS, i) for i in idx]
            reconstruct(lambda x_t, tt: torch.zeros_like(x_t), self.schedule, x * 2 - 1, recon, seeds=seeds)
        _sync(self.device)
        return time.perf_counter() - t

    def features_b(self) -> float:
        """Method B's feature distance (EfficientNet-Lite0 on the input and its reconstruction) per batch."""
        from texad.methods.conditioned_blur.anomaly_map import feature_distance

        size, ms = self.s.image_size, self.maps_cfg
        t = time.perf_counter()
        for x, _ in self.batches:
            xm = x * 2 - 1
            feature_distance(self.extractor, xm, xm.flip(-1), ms.layers, (size, size), ms.feature_size).cpu()
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
        "method_a_default": lambda: run("a", lambda d: run_method_a_once(setup, s, "default", device, d)),
        "method_a_full_chain": lambda: run(
            "af", lambda d: run_method_a_once(setup, s, "full_chain", device, d)
        ),
        "forward_a": parts.forward_a,
        "null_sampler_a_default": lambda: parts.null_sampler_a(False),
        "null_sampler_a_full_chain": lambda: parts.null_sampler_a(True),
        "loader": parts.loader_seconds,
        "method_b": lambda: run("b", lambda d: run_method_b_once(setup, s, device, d)),
        "forward_b": parts.forward_b,
        "null_sampler_b": parts.null_sampler_b,
        "features_b": parts.features_b,
        "simplenet": lambda: run("sn", lambda d: run_simplenet_once(setup, s, device, d)),
        "draem": lambda: run("dr", lambda d: run_draem_once(setup, s, device, d)),
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
        "simplenet": "n / inference_s (backbone, adaptor, discriminator, map upsampling and smoothing on the "
        "preloaded test set)",
        "draem": "n / inference_s (loading + both networks + image scores)",
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
    import texad.methods.conditioned_blur.run  # noqa: F401  - imports before the baseline
    import texad.methods.draem  # noqa: F401
    import texad.methods.score_tscales.run  # noqa: F401
    import texad.methods.simplenet  # noqa: F401

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
