"""SimpleNet applied to images: -D(adaptor(features)) per patch, upsampled and smoothed (:mod:`.infer`).

A run scores with the model's last weights, or, where its ``select`` names one meta epoch (a candidate of the
``selected`` variant), with the weights the model file kept at that epoch.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from texad.methods.base import Detector, RunKey, Runtime, Scored, require_model

from .infer import predict
from .settings import SimpleNetSettings, model_hash
from .training import load_simplenet

__all__ = ["SimpleNetDetector"]

_TRAIN_FACTS = ("steps", "selection_s", "final_loss", "features_cached", "resumed_from_meta_epoch", "device")


class SimpleNetDetector(Detector):
    method = "simplenet"

    def __init__(self, settings: SimpleNetSettings, runtime: Runtime, run: RunKey, models: dict):
        self.device = torch.device(runtime.torch_device())
        self.accel = runtime.accel().on(self.device)
        self.model, trained, self.meta = load_simplenet(
            models["model"], weights_cache=runtime.weights_cache, device=self.device,
            meta_epoch=settings.snapshot_epoch,
        )  # fmt: skip
        # a run carries its own candidate epoch (or none), the model the epochs its training kept: the identity
        # is the run's settings with the model's kept epochs (load_simplenet refused an epoch it does not keep)
        expected = model_hash(replace(settings, select=trained.select), dataset=run.dataset,
                              class_name=run.class_name, seed=run.seed,
                              backbone_weights=self.meta["identity"]["backbone_weights"],
                              holdout=run.holdout)  # fmt: skip
        require_model("SimpleNet model", models["model"], self.meta["model_hash"], expected)
        self.settings = settings
        self.load_size = settings.load_size
        self.crop = settings.image_size if settings.center_crop else None
        self.batch_size = settings.batch_size

    def score(self, images: torch.Tensor, seeds: list[int]) -> Scored:
        maps, scores, _ = predict(self.model, images, sigma=self.settings.smoothing_sigma,
                                  batch_size=images.shape[0], device=self.device, accel=self.accel)  # fmt: skip
        return Scored(maps=maps, scores=scores)

    def record(self) -> dict:
        s, train = self.settings, self.meta["train"]
        return {
            "switches": {"center_crop": s.center_crop, "selection": s.selection},
            "backbone": self.meta["backbone"],
            "model_hash": self.meta["model_hash"],
            "train_s": train["seconds"],
            "precision": self.accel.precision,
            "extra": {
                "selection": {
                    "mode": train["selection"],
                    "used_test_set": train["used_test_set"],
                    "selected_meta_epoch": train["selected_meta_epoch"],
                    "selected_test_record": train["selected_test_record"],
                    "scored_meta_epoch": self.meta["scored_meta_epoch"],
                    "kept_meta_epochs": self.meta["kept_meta_epochs"],
                },
                "input_size": s.image_size,
                "feature_grid": train["feature_grid"],
                "n_params": train["n_params"],
                "train": {k: train[k] for k in _TRAIN_FACTS},
                "history": train["history"],
            },
        }
