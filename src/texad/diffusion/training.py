"""Per-class training of the epsilon-prediction U-Net (spec ``method_b_conditioned_blur_ddpm.md`` §1.1, §3.1).

- Data: ``train/good`` of one class only, resized to ``image_size``, scaled to [-1, 1], no augmentation.
  The decoded set is kept in memory (on the training device) for the whole run; each epoch is one pass in
  a fresh permutation drawn from a seeded CPU generator, with ``drop_last`` (or the whole set as one batch
  when it is smaller than a batch).
- Objective: :func:`~texad.diffusion.losses.epsilon_loss` with ``reduction="sum_mean"`` (summed over
  C, H, W, averaged over the batch); timesteps and noise come from a seeded generator on the device.
- Optimiser: ``Adam`` with coupled L2 weight decay (DDAD) or ``AdamW``; gradients clipped by global norm
  (``grad_clip > 0``); an EMA of the weights (``ema > 0``; ``ema == 0`` keeps the raw weights, as DDAD).
- Mixed precision only on CUDA (``bf16`` autocast, or ``fp16`` autocast with a GradScaler); on CPU the run
  is forced to fp32 and the precision actually used is recorded.
- Resumable: ``ckpt_dir/last.pt`` is written atomically every ``checkpoint_every`` epochs and at the end,
  with every state that the rest of the run depends on (weights, EMA, optimiser, scaler, shuffle and
  noise generators, torch RNG), so a killed-and-resumed CPU run ends with bit-identical weights. Keep
  ``ckpt_dir`` outside the Snakemake rule's outputs: Snakemake deletes the outputs of a failed job.
- The final model file (EMA weights, settings, model hash, schedule, a training summary) is written
  atomically to ``out_path``; :func:`load_diffusion_model` reads it back.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from texad.checkpoints import TrainingStopped, cpu_state, read_checkpoint, save_torch
from texad.config.identity import settings_hash
from texad.data.mvtec import MVTecDataset

from .losses import epsilon_loss
from .schedules import NoiseSchedule
from .unet import build_unet, count_parameters

__all__ = [
    "FORMAT",
    "DiffusionTrainSettings",
    "TrainingStopped",
    "train_diffusion",
    "load_diffusion_model",
    "load_train_images",
]

#: Version of the training recipe and file layout; part of the model identity.
FORMAT = "texad.diffusion.train/2"  # 2: EMA decay warm-up
CHECKPOINT_NAME = "last.pt"
_PRECISIONS = ("fp32", "bf16", "fp16")
_OPTIMIZERS = ("adam", "adamw")
_CKPT_KEYS = (
    "model_hash",
    "epoch",
    "step",
    "model",
    "ema",
    "optimizer",
    "scaler",
    "shuffle_generator",
    "noise_generator",
    "torch_rng",
)
_MODEL_KEYS = ("state_dict", "settings", "model_hash", "schedule")


@dataclass(frozen=True)
class DiffusionTrainSettings:
    """Everything that shapes a trained diffusion model (device, precision and checkpointing do not)."""

    dataset: str
    class_name: str
    preset: str = "paper"
    image_size: int = 256
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    epochs: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    optimizer: str = "adam"  # "adam" (DDAD: coupled L2) or "adamw"
    ema: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("image_size", "timesteps", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema!r}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0:
            raise ValueError(
                f"need lr > 0 and weight_decay >= 0, got lr={self.lr!r}, wd={self.weight_decay!r}"
            )

    def identity(self) -> dict:
        """The settings hashed into :meth:`model_hash`: every field plus the format version."""
        return {"format": FORMAT, **asdict(self)}

    def model_hash(self) -> str:
        return settings_hash(self.identity())


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _stack_images(batch: list[dict]) -> torch.Tensor:
    return torch.stack([item["image"] for item in batch])


def load_train_images(class_dir: Path, image_size: int, num_workers: int = 0) -> torch.Tensor:
    """All ``train/good`` images of a class as one float32 (N, 3, H, W) tensor in [-1, 1]."""
    dataset = MVTecDataset(class_dir, "train", image_size)
    if len(dataset) == 0:  # list_samples already refuses this; keep the guard explicit
        raise ValueError(f"{class_dir}/train/good holds no images")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=16, shuffle=False, num_workers=num_workers, collate_fn=_stack_images
    )
    images = torch.cat(list(loader))
    return images.mul_(2.0).sub_(1.0)


def _resolve_precision(device: torch.device, precision: str, log) -> str:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if device.type != "cuda" and precision != "fp32":
        log(f"precision {precision} is only used on CUDA; training on {device} in fp32")
        return "fp32"
    return precision


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch: a fresh permutation, full batches only (drop_last), or the whole set
    as one batch when it is smaller than a batch."""
    perm = torch.randperm(n, generator=generator)
    if n < batch_size:
        return [perm]
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def ema_decay(decay: float, step: int) -> float:
    """EMA decay at global step ``step`` (1-based), warmed up as min(decay, (1 + step) / (10 + step)).

    Without the warm-up a short run's EMA is dominated by the zero-output initial weights (a 0.999 EMA
    averages over ~1000 steps), which makes CPU-sized models useless.
    """
    return 0.0 if decay == 0.0 else min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def _update_ema(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema_model.parameters(), model.parameters(), strict=True):
        if decay == 0.0:
            e.copy_(p)
        else:
            e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        e.copy_(b)


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------
def train_diffusion(
    class_dir: Path,
    out_path: Path,
    ckpt_dir: Path,
    settings: DiffusionTrainSettings,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    checkpoint_every: int = 50,
    num_workers: int = 0,
    progress: bool | None = None,
    log=print,
    _stop_after_epoch: int | None = None,
) -> dict:
    """Train one class's diffusion model, resuming from ``ckpt_dir/last.pt`` when it exists.

    Writes the final model (EMA weights) atomically to ``out_path`` and returns its training summary.
    ``_stop_after_epoch`` (tests only) raises :class:`TrainingStopped` once that epoch's checkpoint is
    written, as if the job were killed there.
    """
    class_dir, out_path, ckpt_dir = Path(class_dir), Path(out_path), Path(ckpt_dir)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    dev = torch.device(device)
    precision = _resolve_precision(dev, precision, log)
    s = settings
    model_hash = s.model_hash()
    tag = f"{s.dataset}/{s.class_name}"
    ckpt_path = ckpt_dir / CHECKPOINT_NAME

    # Read (and validate) the checkpoint before any expensive work.
    ckpt = (
        read_checkpoint(ckpt_path, what="training", keys=_CKPT_KEYS, model_hash=model_hash)
        if ckpt_path.exists()
        else None
    )
    if ckpt is not None and not 0 <= int(ckpt["epoch"]) <= s.epochs:
        raise ValueError(
            f"training checkpoint {ckpt_path} is at epoch {ckpt['epoch']} of {s.epochs}; delete it"
        )

    random.seed(s.seed)
    np.random.seed(s.seed % 2**32)
    torch.manual_seed(s.seed)

    images = load_train_images(class_dir, s.image_size, num_workers).to(dev)
    n_images = images.shape[0]
    schedule = NoiseSchedule.linear(s.timesteps, s.beta_start, s.beta_end).to(dev)

    model = build_unet(s.preset, s.image_size)  # built on CPU so the init does not depend on the device
    ema_model = copy.deepcopy(model)
    model.to(dev).train()
    ema_model.to(dev).eval().requires_grad_(False)
    n_params = count_parameters(model)
    opt_cls = torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW
    optimizer = opt_cls(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    shuffle_gen = torch.Generator().manual_seed(s.seed)
    noise_gen = torch.Generator(device=dev).manual_seed(s.seed + 1)

    start_epoch, step, seconds, seen, losses = 0, 0, 0.0, 0, []
    resumed_from = None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema_model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        shuffle_gen.set_state(ckpt["shuffle_generator"])
        noise_gen.set_state(ckpt["noise_generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], dev)
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        seconds = float(ckpt.get("seconds", 0.0))
        seen = int(ckpt.get("images", 0))
        losses = [float(v) for v in ckpt.get("epoch_losses", [])]
        resumed_from = start_epoch
        log(f"[{tag}] resuming from {ckpt_path} at epoch {start_epoch}/{s.epochs}")
        if ckpt.get("precision") not in (None, precision):
            log(f"[{tag}] checkpoint was trained in {ckpt['precision']}, continuing in {precision}")
    del ckpt

    def save_checkpoint(epoch: int) -> None:
        state = {
            "format": FORMAT,
            "model_hash": model_hash,
            "settings": asdict(s),
            "epoch": epoch,
            "step": step,
            "seconds": seconds,
            "images": seen,
            "epoch_losses": list(losses),
            "precision": precision,
            "model": cpu_state(model),
            "ema": cpu_state(ema_model),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "shuffle_generator": shuffle_gen.get_state(),
            "noise_generator": noise_gen.get_state().cpu(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        }
        save_torch(ckpt_path, state)

    bar = tqdm(
        range(start_epoch, s.epochs),
        initial=start_epoch,
        total=s.epochs,
        desc=f"train {tag}",
        unit="epoch",
        disable=None if progress is None else not progress,
    )
    run_images, run_seconds = 0, 0.0
    for epoch_index in bar:
        epoch = epoch_index + 1
        t0 = time.perf_counter()
        epoch_loss, epoch_steps = 0.0, 0
        for idx in _epoch_batches(n_images, s.batch_size, shuffle_gen):
            x0 = images[idx.to(dev)]
            step += 1
            with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss, _ = epsilon_loss(model, schedule, x0, generator=noise_gen, reduction="sum_mean")
            loss = loss.float()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(
                    f"non-finite training loss ({value}) for {s.dataset} class {s.class_name!r} at epoch "
                    f"{epoch}, global step {step}; lower the learning rate or use precision fp32/bf16"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if s.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            _update_ema(ema_model, model, ema_decay(s.ema, step))
            epoch_loss += value
            epoch_steps += 1
            run_images += x0.shape[0]
            seen += x0.shape[0]
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        seconds += dt
        run_seconds += dt
        losses.append(epoch_loss / max(epoch_steps, 1))
        ips = run_images / run_seconds if run_seconds > 0 else float("nan")
        bar.set_postfix(loss=f"{losses[-1]:.2f}", img_s=f"{ips:.1f}")
        if epoch % checkpoint_every == 0 or epoch == s.epochs:
            save_checkpoint(epoch)
            log(
                f"[{tag}] epoch {epoch}/{s.epochs} step {step} loss {losses[-1]:.4f} "
                f"{ips:.1f} img/s; checkpoint {ckpt_path}"
            )
        if _stop_after_epoch is not None and epoch >= _stop_after_epoch and epoch < s.epochs:
            bar.close()
            raise TrainingStopped(f"stopped after epoch {epoch} (test hook)")
    bar.close()

    summary = {
        "epochs": s.epochs,
        "steps": step,
        "seconds": seconds,
        "images_per_s": (seen / seconds) if seconds > 0 else None,
        "final_loss": losses[-1] if losses else None,
        "device": str(dev),
        "precision": precision,
        "resumed_from_epoch": resumed_from,
        "epoch_losses": list(losses),
    }
    final = {
        "format": FORMAT,
        "state_dict": cpu_state(ema_model),
        "settings": asdict(s),
        "model_hash": model_hash,
        "n_params": n_params,
        "schedule": {"timesteps": s.timesteps, "beta_start": s.beta_start, "beta_end": s.beta_end},
        "train": summary,
    }
    save_torch(out_path, final)
    log(f"[{tag}] wrote model {model_hash} ({n_params} parameters) to {out_path}")
    return summary


def load_diffusion_model(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, NoiseSchedule, dict]:
    """Read a model written by :func:`train_diffusion`: the EMA-weight U-Net in eval mode on ``device``,
    its noise schedule, and the meta dict (settings, model_hash, n_params, schedule, train summary)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"diffusion model file {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in _MODEL_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a texad diffusion model file (missing {missing})")
    settings = DiffusionTrainSettings(**data["settings"])
    if settings.model_hash() != data["model_hash"]:
        raise ValueError(
            f"{path} records model {data['model_hash']}, but its settings hash to {settings.model_hash()} "
            f"(format {data.get('format')!r} vs {FORMAT!r}); retrain it"
        )
    model = build_unet(settings.preset, settings.image_size)
    model.load_state_dict(data["state_dict"])
    model.to(device).eval().requires_grad_(False)
    sched = data["schedule"]
    schedule = NoiseSchedule.linear(
        int(sched["timesteps"]), float(sched["beta_start"]), float(sched["beta_end"])
    )
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model, schedule, meta
