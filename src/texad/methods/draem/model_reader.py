"""Reading a DRAEM model file written by :func:`texad.methods.draem.training.train_draem`.

Apart from the trainer so that a run job, which only reads the file, does not import the trainer's anomaly
generator (torchvision: about 1 s per job).
"""

from __future__ import annotations

from pathlib import Path

import torch

from texad.config import validate_config
from texad.data.holdout import Holdout

from .model import DiscriminativeNet, ReconstructiveNet
from .settings import FORMAT, DraemSettings, model_hash

__all__ = ["load_draem_model"]

_MODEL_KEYS = ("format", "state_dict", "config", "model_hash", "dataset", "class_name", "seed")


def load_draem_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ReconstructiveNet, DiscriminativeNet, dict]:
    """Read a model written by :func:`train_draem`: both networks in eval mode on ``device`` and the meta
    dict (``settings``: the :class:`DraemSettings` it was trained with; dataset, class_name, seed, model_hash,
    recipe, anomaly_source, n_params, train summary)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"DRAEM model file {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a DRAEM model of format {data.get('format')!r}, not {FORMAT!r}; retrain it"
        )
    missing = [k for k in _MODEL_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a texad DRAEM model file (missing {missing})")
    # validated: a file written before a key existed (select) gets the key's schema default
    config = validate_config(data["config"], partial=True)
    settings = DraemSettings.from_config(config, data["class_name"])
    holdout = Holdout.from_identity(data.get("holdout"))  # a file written before holdouts existed has none
    expected = model_hash(settings, data["dataset"], data["class_name"], data["seed"], holdout)
    if expected != data["model_hash"]:
        raise ValueError(
            f"{path} records model {data['model_hash']}, but its settings hash to {expected}; retrain it"
        )
    recon = ReconstructiveNet(settings.recon_base_width)
    disc = DiscriminativeNet(settings.disc_base_width)
    recon.load_state_dict(data["state_dict"]["recon"])
    disc.load_state_dict(data["state_dict"]["disc"])
    for net in (recon, disc):
        net.to(device).eval().requires_grad_(False)
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    meta["settings"] = settings
    return recon, disc, meta
