"""DDAD's feature-extractor domain adaptation (spec ``method_b_conditioned_blur_ddpm.md`` §1.4).

A trainable copy F of the pretrained extractor is fine-tuned against a frozen copy F0 so that features of a
conditioned reconstruction match those of its target, without drifting far from ImageNet:

    each shuffled batch (drop_last) is split in half: target y = first half, input x = second half;
    x_rec = reconstruct(x conditioned on y, w_DA, t_start, skip, eta; no blur guidance — DDAD's loop)
    L = sum over layers l of  (1 - cos(F_l(x_rec), F_l(y)))
                            + lambda (1 - cos(F_l(y), F0_l(y)))
                            + lambda (1 - cos(F_l(x_rec), F0_l(x_rec)))

with cosines over each sample's flattened feature map, averaged over the batch; AdamW. With ``feature_size``
set, the images are resized to it before the extractor, as the anomaly maps resize them (``inference.feature_size``), so
that the extractor is adapted at the scale at which it compares test images. DDAD runs F in
``train()`` mode (BatchNorm uses and updates batch statistics) and uses it in ``eval()`` at test time;
texad does the same. The adapted weights (parameters and BatchNorm buffers) are written atomically with
their identity; a checkpoint after every epoch lets a killed job resume.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from texad.backbones.features import FeatureExtractor
from texad.checkpoints import TrainingStopped, cpu_state, save_torch
from texad.config.identity import settings_hash
from texad.diffusion.schedules import NoiseSchedule

from .anomaly_map import resize_for_extractor
from .infer import reconstruct
from .settings import ADAPTATION_FORMAT as FORMAT
from .settings import AdaptationSettings, Inference

__all__ = [
    "ADAPTATION_LAYERS",
    "adaptation_loop",
    "adaptation_loss",
    "adapt_features",
    "load_adapted_state",
]

ADAPTATION_LAYERS = ("layer1", "layer2", "layer3")  # DDAD's extractor returns these three
_CHECKPOINT = "last.pt"

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def adaptation_loop(settings: AdaptationSettings, inference: Inference) -> Inference:
    """The reconstruction loop of the adaptation: DDAD's (conditioning weight ``w``, no blur guidance, one draw,
    its own ``t_start``/``skip``), with the run's ``eta``."""
    return replace(
        inference, t_start=settings.t_start, skip=settings.skip, eta=settings.eta, w=settings.w, s=0.0, draws=1,
        clip_x0=False, first_call_at_ts=False,
    )  # fmt: skip


def _cos_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1 - cos between each sample's flattened feature maps."""
    return (1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()


def adaptation_loss(
    f_rec: Mapping[str, torch.Tensor],
    f_target: Mapping[str, torch.Tensor],
    f0_target: Mapping[str, torch.Tensor],
    f0_rec: Mapping[str, torch.Tensor],
    lam: float,
) -> torch.Tensor:
    """DDAD's loss, summed over the layers of ``f_rec`` (F: adapted extractor, F0: frozen original)."""
    total = None
    for layer in f_rec:
        term = (
            _cos_distance(f_rec[layer], f_target[layer])
            + lam * _cos_distance(f_target[layer], f0_target[layer])
            + lam * _cos_distance(f_rec[layer], f0_rec[layer])
        )
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no feature layers to adapt")
    return total


def _noise_seeds(seed: int, epoch: int, step: int, n: int) -> list[int]:
    return [zlib.crc32(f"{seed}/da/{epoch}/{step}/{i}".encode()) & 0x7FFFFFFF for i in range(n)]


def adapt_features(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    extractor: FeatureExtractor,
    images: torch.Tensor,
    settings: AdaptationSettings,
    inference: Inference,
    *,
    model_hash: str,
    out_path: Path,
    ckpt_dir: Path,
    config: dict | None = None,
    class_tag: str = "",
    progress: bool | None = None,
    log=print,
    _stop_after_epoch: int | None = None,
) -> dict:
    """Fine-tune a copy of ``extractor`` (frozen, returning :data:`ADAPTATION_LAYERS`) on ``images``
    ((N, 3, H, W) in [-1, 1], normal training images) and write it to ``out_path``; returns the summary.
    ``inference``: the run's Method B inference, whose loop the adaptation reconstructs with
    (:func:`adaptation_loop`). ``config``: the config block the settings come from, kept in the file.

    Resumes from ``ckpt_dir/last.pt`` when it belongs to the same identity. ``_stop_after_epoch`` (tests
    only) raises :class:`~texad.checkpoints.TrainingStopped` after that epoch's checkpoint.
    """
    out_path, ckpt_dir = Path(out_path), Path(ckpt_dir)
    s = settings
    if tuple(extractor.layers) != ADAPTATION_LAYERS:
        raise ValueError(f"the extractor must return {ADAPTATION_LAYERS}, got {extractor.layers}")
    n = images.shape[0]
    if n < s.batch_size:
        raise ValueError(
            f"{class_tag}: feature adaptation needs at least batch_size={s.batch_size} training images, "
            f"found {n}; lower methods.method_b.feature_adaptation.batch_size"
        )
    identity = s.identity(model_hash, extractor.name, extractor.weights)
    ident_hash = settings_hash(identity)
    frozen = extractor
    adapted = extractor.trainable_copy().train()
    optimizer = torch.optim.AdamW(adapted.parameters(), lr=s.lr)
    shuffle = torch.Generator().manual_seed(s.seed)
    recon = adaptation_loop(s, inference)

    def extractor_input(t: torch.Tensor) -> torch.Tensor:  # [0, 1], at the maps' comparison size
        return (resize_for_extractor(t, s.feature_size) + 1.0) / 2.0

    start_epoch, losses, seconds = 0, [], 0.0
    ckpt_path = ckpt_dir / _CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("identity_hash") != ident_hash:
            raise ValueError(
                f"adaptation checkpoint {ckpt_path} belongs to {ckpt.get('identity_hash')}, these settings give "
                f"{ident_hash}; delete it to start over"
            )
        adapted.load_state_dict(ckpt["extractor"])
        optimizer.load_state_dict(ckpt["optimizer"])
        shuffle.set_state(ckpt["shuffle_generator"])
        start_epoch, losses, seconds = int(ckpt["epoch"]), list(ckpt["losses"]), float(ckpt["seconds"])
        log(f"[{class_tag}] resuming feature adaptation at epoch {start_epoch}/{s.epochs}")

    half = s.batch_size // 2
    bar = tqdm(range(start_epoch, s.epochs), initial=start_epoch, total=s.epochs, unit="epoch",
               desc=f"adapt {class_tag}", disable=None if progress is None else not progress)  # fmt: skip
    for epoch in bar:
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        epoch_loss, steps = 0.0, 0
        for step in range(n // s.batch_size):
            idx = order[step * s.batch_size : (step + 1) * s.batch_size].to(images.device)
            target, inputs = images[idx[:half]], images[idx[half : 2 * half]]
            x_rec, _ = reconstruct(
                eps_model,
                schedule,
                inputs,
                recon,
                seeds=_noise_seeds(s.seed, epoch, step, half),
                target=target,
            )
            rec_in, target_in = extractor_input(x_rec), extractor_input(target)
            f_rec, f_target = adapted(rec_in), adapted(target_in)
            with torch.no_grad():
                f0_target, f0_rec = frozen(target_in), frozen(rec_in)
            loss = adaptation_loss(f_rec, f_target, f0_target, f0_rec, s.lam)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite feature-adaptation loss ({float(loss)}) for {class_tag} at epoch {epoch + 1}, "
                    f"step {step + 1}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach())
            steps += 1
        losses.append(epoch_loss / max(steps, 1))
        seconds += time.perf_counter() - t0
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        save_torch(ckpt_path, {
            "identity_hash": ident_hash, "epoch": epoch + 1, "losses": losses, "seconds": seconds,
            "extractor": cpu_state(adapted), "optimizer": optimizer.state_dict(),
            "shuffle_generator": shuffle.get_state(),
        })  # fmt: skip
        if _stop_after_epoch is not None and epoch + 1 == _stop_after_epoch:
            raise TrainingStopped(f"stopped after epoch {epoch + 1} (test hook)")

    summary = {"epochs": s.epochs, "steps": s.epochs * (n // s.batch_size), "losses": losses, "seconds": seconds,
               "settings_hash": ident_hash}  # fmt: skip
    save_torch(out_path, {
        "format": FORMAT, "identity": identity, "identity_hash": ident_hash, "config": config, "summary": summary,
        "state_dict": cpu_state(adapted),
    })  # fmt: skip
    return summary


def load_adapted_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, record for ``FeatureExtractor.load_adapted``) of a file written by :func:`adapt_features`."""
    import hashlib

    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"adapted feature extractor {path} is unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a texad adapted feature extractor (format {FORMAT})")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    record = {
        "file": path.name,
        "sha256": sha,
        "epochs": int(data["summary"]["epochs"]),
        "settings_hash": data["identity_hash"],
    }
    return data["state_dict"], record
