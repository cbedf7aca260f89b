"""DRAEM applied to images: the trained networks' anomaly channel as the map, its pooled maximum as the score.

The images are read whole at the model's ``image_size`` (no crop); :func:`texad.methods.run.run_class` resizes
the maps to the evaluation grid as for every method. DRAEM has no pretrained backbone (both networks are trained
from scratch): the result's ``backbone`` is null and ``extra.weights`` says so.
"""

from __future__ import annotations

import numpy as np
import torch

from texad.methods.base import Detector, RunKey, Runtime, Scored, require_model
from texad.methods.run import to_uint8_hwc

from .infer import image_scores, predict
from .model_reader import load_draem_model
from .settings import DraemSettings, model_hash

__all__ = ["DraemDetector"]

WEIGHTS_NOTE = "none: DRAEM has no pretrained backbone; both sub-networks are trained from scratch"


class DraemDetector(Detector):
    method = "draem"

    def __init__(self, settings: DraemSettings, runtime: Runtime, run: RunKey, models: dict):
        self.device = torch.device(runtime.torch_device())
        self.accel = runtime.accel().on(self.device)
        recon, disc, self.meta = load_draem_model(models["model"], self.device)
        expected = model_hash(settings, run.dataset, run.class_name, run.seed, run.holdout)
        require_model("DRAEM model", models["model"], self.meta["model_hash"], expected)
        self.recon, self.disc = self.accel.prepare(recon, self.device), self.accel.prepare(disc, self.device)
        self.settings = settings
        self.load_size = settings.image_size
        self.batch_size = settings.batch_size
        self.protocol = settings.protocol

    def score(self, images: torch.Tensor, seeds: list[int]) -> Scored:
        maps, reconstruction = predict(self.recon, self.disc, images.to(self.device))
        scores = image_scores(maps, self.settings.score_pool)
        return Scored(
            maps=maps.float().cpu().numpy(),
            scores=scores.float().cpu().numpy().astype(np.float64),
            reconstructions=to_uint8_hwc(reconstruction),
        )

    def record(self) -> dict:
        s, meta, train = self.settings, self.meta, self.meta["train"]
        return {
            "switches": {
                "recipe": s.recipe,
                "anomaly_source": meta["anomaly_source"]["kind"],
                "score_pool": s.score_pool,
                "color_order": "rgb",
                "protocol": s.protocol,
            },  # fmt: skip
            "backbone": None,
            "model_hash": meta["model_hash"],
            "train_s": train.get("seconds"),
            "precision": self.accel.precision,
            "extra": {
                "weights": WEIGHTS_NOTE,
                "anomaly_source": meta["anomaly_source"],
                "recipe": meta["recipe"],
                "image_size": s.image_size,
                "n_params": meta["n_params"],
                "train": {
                    k: train.get(k)
                    for k in ("epochs", "steps", "seconds", "device", "lr_milestones", "lr_gamma")
                },  # fmt: skip
            },
        }
