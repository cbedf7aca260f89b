"""Method B applied to images: reconstruct each image (:mod:`.infer`), compare it with its reconstruction in pixels
and features, fuse, normalise, smooth and take the maximum (:mod:`.anomaly_map`).

The fusion scale max D_f / max D_p is taken over a set of images (``fusion_norm``: the whole test set, or DDAD's
batches of 16), so the maps of a set are completed in :meth:`MethodBDetector.finalize`; ``texad predict`` fixes the
scale on normal images first (:meth:`MethodBDetector.calibrate`), after which every image is scored on its own.
"""

from __future__ import annotations

import torch

from texad.backbones.features import load_backbone
from texad.backbones.weights import BACKBONES
from texad.diffusion.training import load_diffusion_model, require_trained_level
from texad.methods.base import Detector, RunKey, Runtime, Scored, require_model
from texad.methods.run import to_uint8_hwc

from .ablation import inference_point
from .anomaly_map import anomaly_maps, feature_distance, fusion_scale, fusion_v, pixel_distance
from .domain_adaptation import load_adapted_state
from .infer import reconstruct
from .settings import MAP_LAYERS, MethodBSettings, adaptation_settings, ddpm_train_settings

__all__ = ["MethodBDetector"]


class MethodBDetector(Detector):
    method = "method_b"

    def __init__(self, settings: MethodBSettings, runtime: Runtime, run: RunKey, models: dict):
        self.device = torch.device(runtime.torch_device())
        self.accel = runtime.accel().on(self.device)
        inf = settings.inference
        model, schedule, self.meta = load_diffusion_model(models["model"], device=self.device)
        expected = ddpm_train_settings(settings, run.dataset, run.class_name, run.seed).model_hash()
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
        self.needs_fit = inf.normalise == "train_stats"
        self.fit_images = inf.normalise_images
        self.train_distances: tuple[torch.Tensor, torch.Tensor] | None = None
        self.scale: torch.Tensor | None = None  # a fixed fusion scale (calibrate), else the set's own

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
        """The distances of the first ``normalise_images`` training images (the ``train_stats`` statistics)."""
        n = images.shape[0] if self.fit_images is None else min(images.shape[0], self.fit_images)
        bs, dp, df = self.batch_size, [], []
        for i in range(0, n, bs):
            p, f, _ = self._distances(images[i : min(i + bs, n)], seeds[i : min(i + bs, n)])
            dp.append(p)
            df.append(f)
        self.train_distances = (torch.cat(dp), torch.cat(df))

    def _maps(self, d_pixel: torch.Tensor, d_feature: torch.Tensor):
        if self.needs_fit and self.train_distances is None:
            raise RuntimeError("Method B normalises with training statistics: call fit() first")
        return anomaly_maps(d_pixel, d_feature, self.inf, scale=self.scale, train=self.train_distances)

    def score(self, images: torch.Tensor, seeds: list[int]) -> Scored:
        d_pixel, d_feature, out = self._distances(images, seeds)
        out.pending = {"d_pixel": d_pixel, "d_feature": d_feature}
        if self.scale is not None:  # one image's maps need no other image
            out.maps, out.scores = self._maps(d_pixel, d_feature)
        return out

    def finalize(self, parts: list[Scored]) -> Scored:
        """The set's maps, fused at its own scale (``fusion_norm``) unless a scale was fixed by :meth:`calibrate`."""
        out = Scored.concat(parts)
        out.pending = {k: torch.cat([p.pending[k] for p in parts]) for k in ("d_pixel", "d_feature")}
        if out.maps is None:
            out.maps, out.scores = self._maps(out.pending["d_pixel"], out.pending["d_feature"])
        return out

    def calibrate(self, normal: Scored) -> Scored:
        """Fix the fusion scale at the normal images' max D_f / max D_p and return their maps at that scale (0 where
        a map is one term alone: ``map_terms`` pixel or feature)."""
        scale = fusion_scale(normal.pending["d_pixel"], normal.pending["d_feature"], fusion_v(self.inf))
        self.scale = torch.zeros(()) if scale is None else scale  # no fusion: the maps are D_f (or D_p)
        normal.maps, normal.scores = self._maps(normal.pending["d_pixel"], normal.pending["d_feature"])
        return normal

    def record(self) -> dict:
        inf, meta = self.inf, self.meta
        n_train = 0 if self.train_distances is None else len(self.train_distances[0])
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
                "train_stats_images": n_train,
                "fusion_scale": None if self.scale is None else float(self.scale),
            },
        }
