"""Method B applied to images: reconstruct each image (:mod:`.infer`), compare it with its reconstruction in pixels
and features, fuse, normalise, smooth and take the maximum (:mod:`.anomaly_map`).

The fusion scale max D_f / max D_p is fixed by :meth:`MethodBDetector.fit` on the run's first ``normalise_images``
training images (``fusion_norm: train``, the default protocol), with the ``train_stats`` statistics at that scale, so
every test image is scored on its own. :meth:`~MethodBDetector.fit_state` keeps the distances' maxima and the
statistics, which ``texad predict`` loads. The labelled ``official`` variant fuses each test batch of 16 at its own
scale (DDAD's ``batch16``, transductive): its maps are completed in :meth:`MethodBDetector.finalize`.
"""

from __future__ import annotations

import numpy as np
import torch

from texad.backbones.features import load_backbone
from texad.backbones.weights import BACKBONES
from texad.diffusion.training import load_diffusion_model, require_trained_level
from texad.evaluation.train_stats import TrainStats
from texad.methods.base import Detector, RunKey, Runtime, Scored, require_model
from texad.methods.run import to_uint8_hwc

from .ablation import inference_point
from .anomaly_map import (
    anomaly_maps,
    feature_distance,
    fusion_scale,
    fusion_v,
    pixel_distance,
    train_map_statistics,
)
from .domain_adaptation import load_adapted_state
from .infer import reconstruct
from .settings import MAP_LAYERS, MethodBSettings, adaptation_settings, ddpm_train_settings, needs_fit

__all__ = ["MethodBDetector"]


class MethodBDetector(Detector):
    method = "method_b"

    def __init__(self, settings: MethodBSettings, runtime: Runtime, run: RunKey, models: dict):
        self.device = torch.device(runtime.torch_device())
        self.accel = runtime.accel().on(self.device)
        inf = settings.inference
        model, schedule, self.meta = load_diffusion_model(models["model"], device=self.device)
        expected = ddpm_train_settings(
            settings, run.dataset, run.class_name, run.seed, run.holdout
        ).model_hash()
        require_model("DDPM", models["model"], self.meta["model_hash"], expected)
        require_trained_level(self.meta, inf.t_start, f"Method B on {run.class_name}")
        self.model = self.accel.prepare(model, self.device)
        self.schedule = schedule.to(self.device)
        extractor = load_backbone(inf.feature_backbone, weights=BACKBONES[inf.feature_backbone],
                                  cache_dir=runtime.weights_cache, layers=MAP_LAYERS)  # fmt: skip
        if models.get("features") is not None:
            state, record = load_adapted_state(models["features"])
            adaptation = adaptation_settings(settings, run.seed)
            wanted = None if adaptation is None else adaptation.identity_hash(
                self.meta["model_hash"], inf.feature_backbone, BACKBONES[inf.feature_backbone]
            )  # fmt: skip
            require_model("adapted feature extractor", models["features"], record["settings_hash"], wanted)
            extractor.load_adapted(state, record)
        self.extractor = extractor.to(self.device)
        self.settings, self.inf = settings, inf
        self.load_size = int(self.meta["settings"]["image_size"])
        self.batch_size = inf.batch_size
        self.protocol = inf.protocol
        if inf.normalise == "train_stats" and inf.fusion_norm != "train":
            raise ValueError(
                "methods.method_b.inference.normalise: train_stats fuses the training maps at the training images' "
                f"scale, but fusion_norm is {inf.fusion_norm!r}; use fusion_norm: train"
            )
        self.needs_fit = needs_fit(inf)
        self.fit_images = inf.normalise_images
        self.transductive = inf.fusion_norm != "train"
        self.state: dict[str, np.ndarray] = {}  # what fit() computed (or a run's, loaded)
        self.scale: torch.Tensor | None = None  # the training images' fusion scale (fusion_norm train)
        self.stats: TrainStats | None = None  # the train_stats statistics at that scale

    def _distances(self, images: torch.Tensor, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor, Scored]:
        """D_p, D_f (N, H, W) on the CPU, and a Scored with the reconstructions and the NFE."""
        x = images.to(self.device) * 2.0 - 1.0
        with torch.no_grad():
            x_rec, info = reconstruct(
                lambda x_t, t: self.model(x_t, t), self.schedule, x, self.inf, seeds=seeds
            )
            d_pixel = pixel_distance(x, x_rec).float().cpu()
            d_feature = feature_distance(self.extractor, x, x_rec, MAP_LAYERS, (self.load_size,) * 2,
                                         self.inf.feature_size).float().cpu()  # fmt: skip
        out = Scored(
            None, None, reconstructions=to_uint8_hwc((x_rec + 1) / 2), nfe_per_image=info["nfe_per_image"]
        )
        return d_pixel, d_feature, out

    def fit(self, images: torch.Tensor, seeds: list[int]) -> None:
        """The distances of the first ``normalise_images`` training images: their maxima (the fusion scale) and,
        for ``train_stats``, the statistics of their maps at that scale."""
        n = images.shape[0] if self.fit_images is None else min(images.shape[0], self.fit_images)
        bs, dp, df = self.batch_size, [], []
        for i in range(0, n, bs):
            p, f, _ = self._distances(images[i : min(i + bs, n)], seeds[i : min(i + bs, n)])
            dp.append(p)
            df.append(f)
        dp, df = torch.cat(dp), torch.cat(df)
        state = {
            "n_images": np.asarray(n),
            "d_pixel_max": dp.max().numpy(),
            "d_feature_max": df.max().numpy(),
        }
        if self.inf.normalise == "train_stats":
            stats = train_map_statistics(dp, df, self.inf, self._scale(state))
            state.update(mean=stats.mean, std=stats.std)
        self.load_fit_state(state)  # one path for a fit and a run's loaded state: the same maps

    def _scale(self, state: dict) -> torch.Tensor:
        """max D_f / max D_p of the training images (0 without a pixel term: the maps are then D_f or D_p)."""
        d_pixel, d_feature = (
            torch.as_tensor(np.asarray(state[k], dtype=np.float32)) for k in ("d_pixel_max", "d_feature_max")
        )
        scale = fusion_scale(d_pixel, d_feature, fusion_v(self.inf))
        return torch.zeros(()) if scale is None else scale

    def fit_state(self) -> dict[str, np.ndarray]:
        """``n_images``, the training distances' maxima ``d_pixel_max``, ``d_feature_max`` (the fusion scale) and,
        for ``train_stats``, the per-pixel ``mean`` and ``std`` of their maps."""
        return dict(self.state)

    def load_fit_state(self, state) -> None:
        if not self.needs_fit:
            return super().load_fit_state(state)
        need = ["n_images", "d_pixel_max", "d_feature_max"]
        need += ["mean", "std"] if self.inf.normalise == "train_stats" else []
        missing = [k for k in need if k not in state]
        if missing:
            raise ValueError(f"Method B's fit state holds no {', '.join(missing)} (fusion_norm {self.inf.fusion_norm}, "
                             f"normalise {self.inf.normalise})")  # fmt: skip
        state = {k: np.asarray(state[k]) for k in need}
        stats = None
        if self.inf.normalise == "train_stats":
            mean, std = (state[k].astype(np.float64) for k in ("mean", "std"))
            if mean.shape != std.shape or mean.shape != (self.load_size, self.load_size):
                raise ValueError(
                    f"Method B's fit state holds statistics of {mean.shape} maps, this model's are "
                    f"{(self.load_size, self.load_size)}"
                )
            stats = TrainStats(mean=mean, std=std)
        self.state, self.scale, self.stats = state, self._scale(state), stats

    def _maps(self, d_pixel: torch.Tensor, d_feature: torch.Tensor):
        if self.needs_fit and not self.state:
            raise RuntimeError(
                "Method B fuses at the training images' scale: call fit() (or load_fit_state) first"
            )
        return anomaly_maps(d_pixel, d_feature, self.inf, scale=self.scale, stats=self.stats)

    def score(self, images: torch.Tensor, seeds: list[int]) -> Scored:
        d_pixel, d_feature, out = self._distances(images, seeds)
        if self.transductive:  # the maps wait for the whole set (finalize)
            out.pending = {"d_pixel": d_pixel, "d_feature": d_feature}
        else:  # one image's maps need no other image
            out.maps, out.scores = self._maps(d_pixel, d_feature)
        return out

    def finalize(self, parts: list[Scored]) -> Scored:
        """The set's maps: already made batch by batch at the training images' scale, or, for the official
        variant's transductive ``fusion_norm``, fused here at the set's own."""
        out = Scored.concat(parts)
        if self.transductive:
            d_pixel, d_feature = (torch.cat([p.pending[k] for p in parts]) for k in ("d_pixel", "d_feature"))
            out.maps, out.scores = self._maps(d_pixel, d_feature)
        return out

    def record(self) -> dict:
        inf, meta = self.inf, self.meta
        n_train = int(self.state["n_images"]) if self.state else 0
        return {
            "switches": {
                "fusion_norm": inf.fusion_norm,
                "protocol": inf.protocol,
                "clip_x0": inf.clip_x0,
                "normalise": inf.normalise,
                "draws": inf.draws,
            },  # fmt: skip
            "backbone": self.extractor.describe(),
            "model_hash": meta["model_hash"],
            "train_s": meta["train"].get("seconds"),
            "precision": self.accel.precision,
            "extra": {
                "image_size": self.load_size,
                "n_params": meta.get("n_params"),
                "accel": self.accel.as_dict(),
                "train_precision": meta["train"].get("precision", "fp32"),
                # the run's guidance point, so the ablation table counts a default run under its point too
                "ablation_point": inference_point(inf),
                "train_stats_images": n_train,  # the training images of the fit (fusion scale, statistics)
                "fusion_scale": None if self.scale is None else float(self.scale),
            },
        }
