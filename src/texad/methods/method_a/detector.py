"""Method A applied to images: raw T-scales maps (:mod:`.infer`), standardised by those of the class's training
images (``normalise: train_stats``), smoothed, scored by their maximum (:mod:`.anomaly_map`).

The model is the class's own score model (``model: own``) or Method B's DDPM read as a score model
(``shared_ddpm``, no extra training).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from texad.diffusion.training import load_diffusion_model, load_score_model, require_trained_level
from texad.methods.base import Detector, RunKey, Runtime, Scored, require_model
from texad.methods.run import to_uint8_hwc

from .anomaly_map import TrainStats, anomaly_maps, train_statistics
from .infer import ScoreModel, raw_maps, score_model_from_ddpm, score_model_from_net
from .settings import MethodASettings, score_train_settings

__all__ = ["MethodADetector", "load_score_model_any"]

_TIMED = ("default", "full_chain")


def load_score_model_any(
    model_path: Path, kind: str, device: str, n_steps: int, prepare: Callable | None = None
) -> tuple[ScoreModel, dict]:
    """(score model, model meta) for ``kind`` "own" (a score-model file) or "shared_ddpm" (a DDPM).

    ``prepare``: applied to the network before it is wrapped into a score function (the GPU fast path)."""
    prepare = prepare or (lambda net: net)
    if kind == "own":
        net, sde, meta = load_score_model(model_path, device=device, n_steps=n_steps)
        return score_model_from_net(prepare(net), sde), meta
    if kind == "shared_ddpm":
        net, schedule, meta = load_diffusion_model(model_path, device=device)
        return score_model_from_ddpm(prepare(net), schedule), meta
    raise ValueError(f"model must be 'own' or 'shared_ddpm', got {kind!r}")


class MethodADetector(Detector):
    method = "method_a"

    def __init__(self, settings: MethodASettings, runtime: Runtime, run: RunKey, models: dict):
        self.device = torch.device(runtime.torch_device())
        self.accel = runtime.accel().on(self.device)
        path = models["model"]
        self.model, self.meta = load_score_model_any(
            path, settings.model, str(self.device), settings.sde.n_steps,
            prepare=lambda net: self.accel.prepare(net, self.device),
        )  # fmt: skip
        inf = settings.inference
        if settings.model == "own":
            expected = score_train_settings(
                settings, run.dataset, run.class_name, run.seed, run.holdout
            ).model_hash()
            require_model("score model", path, self.meta["model_hash"], expected)
        else:  # Method B's DDPM: its identity is Method B's; it must be this class's, and trained where we start
            trained = self.meta["settings"]
            held = [trained.get("holdout"), None if run.holdout is None else run.holdout.identity()]
            held = [f" holding out {h}" if h else "" for h in held]
            require_model("a DDPM of", path, f"{trained['dataset']}/{trained['class_name']}/seed{trained['seed']}{held[0]}",
                          f"{run.dataset}/{run.class_name}/seed{run.seed}{held[1]}")  # fmt: skip
            top = self.model.level_time(inf.sigma_hi) * (
                self.model.sde.N - 1
            )  # the highest level, as a DDPM index
            require_trained_level(self.meta, top, f"Method A on the shared DDPM (sigma_hi {inf.sigma_hi:g})")
        self.settings, self.inf = settings, inf
        self.load_size = int(self.meta["settings"]["image_size"])
        self.batch_size = inf.batch_size
        self.needs_fit = inf.normalise == "train_stats"
        self.speed_batches = settings.ablation.speed_batches if run.variant in _TIMED else ()
        self.stats = None
        self.levels: list = []

    def _raw(self, images: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, dict]:
        maps, info = raw_maps(self.model, images.to(self.device), self.inf, seeds=seeds,
                              sigma_end=self.settings.sde.sigma_min)  # fmt: skip
        self.levels = info["levels"]
        return maps.float().cpu(), info

    def fit(self, images: torch.Tensor, seeds: list[int]) -> None:
        bs = self.batch_size
        raw = [self._raw(images[i : i + bs], seeds[i : i + bs])[0] for i in range(0, images.shape[0], bs)]
        self.stats = train_statistics(torch.cat(raw))

    def fit_state(self) -> dict[str, np.ndarray]:
        """The per-pixel mean and std of the training images' raw maps (``train_stats``)."""
        return {} if self.stats is None else {"mean": self.stats.mean, "std": self.stats.std}

    def load_fit_state(self, state) -> None:
        if not self.needs_fit:
            return super().load_fit_state(state)
        missing = [k for k in ("mean", "std") if k not in state]
        if missing:
            raise ValueError(
                f"Method A's fit state holds no {' or '.join(missing)} (the train_stats statistics)"
            )
        mean, std = (np.asarray(state[k], dtype=np.float64) for k in ("mean", "std"))
        if mean.shape != std.shape or mean.shape != (self.load_size, self.load_size):
            raise ValueError(
                f"Method A's fit state holds statistics of {mean.shape} maps, this model's are "
                f"{(self.load_size, self.load_size)}"
            )
        self.stats = TrainStats(mean=mean, std=std)

    def score(self, images: torch.Tensor, seeds: list[int]) -> Scored:
        if self.needs_fit and self.stats is None:
            raise RuntimeError("Method A normalises with training statistics: call fit() first")
        raw, info = self._raw(images, seeds)
        maps, scores = anomaly_maps(raw, self.stats, self.inf.smoothing_sigma)
        return Scored(maps=maps, scores=scores, reconstructions=to_uint8_hwc(info["reconstruction"]),
                      nfe_per_image=info["nfe_per_image"])  # fmt: skip

    def record(self) -> dict:
        s, inf, shared = self.settings, self.inf, self.settings.model == "shared_ddpm"
        return {
            "switches": {
                "metric": inf.metric,
                "normalise": inf.normalise,
                "mode": inf.mode,
                "model": s.model,
                "predictor": inf.predictor,
            },  # fmt: skip
            "backbone": None,
            "model_hash": self.meta["model_hash"],
            # the shared DDPM's training belongs to Method B
            "train_s": None if shared else self.meta["train"]["seconds"],
            "precision": self.accel.precision,
            "extra": {
                "image_size": self.load_size,
                "n_params": self.meta.get("n_params"),
                "accel": self.accel.as_dict(),
                "sde_model": self.model.sde.describe(),
                "levels_pixel": self.levels,
            },
        }
