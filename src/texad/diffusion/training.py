"""Per-class training of the epsilon-prediction U-Net (spec ``method_b_conditioned_blur_ddpm.md`` §1.1, §3.1).

- Data: ``train/good`` of one class only, resized to ``image_size``, scaled to [-1, 1], no augmentation.
  The decoded set is kept in memory (on the training device) for the whole run; each epoch is one pass in
  a fresh permutation drawn from a seeded CPU generator, with ``drop_last`` (or the whole set as one batch
  when it is smaller than a batch).
- Objective: :func:`~texad.diffusion.losses.epsilon_loss` with ``reduction="sum_mean"`` (summed over
  C, H, W, averaged over the batch); timesteps and noise come from a seeded generator on the device.
  ``t_max`` (None: all T levels, DDAD) trains on t < t_max only: partial-noise inference never visits the
  levels above its start step, so a short CPU run spends all its steps where they are used.
- Optimiser: ``Adam`` with coupled L2 weight decay (DDAD) or ``AdamW``; gradients clipped by global norm
  (``grad_clip > 0``; 0 = no clipping, as DDAD); an EMA of the weights (``ema > 0``; ``ema == 0`` keeps the raw
  weights, as DDAD). The global gradient norm *before* clipping is averaged per epoch and logged, beside the norm
  of coupled Adam's decay term ``weight_decay * |theta|``: with clipping at 1.0 the decay term can outweigh the
  clipped gradient several times over at paper size, and the log is where that shows.
- Mixed precision only on CUDA (``bf16`` autocast, or ``fp16`` autocast with a GradScaler); on CPU the run
  is forced to fp32 and the precision actually used is recorded.
- Resumable: ``ckpt_dir/last.pt`` is written atomically every ``checkpoint_every`` epochs and at the end,
  with every state that the rest of the run depends on (weights, EMA, optimiser, scaler, shuffle and
  noise generators, torch RNG), so a killed-and-resumed CPU run ends with bit-identical weights. Keep
  ``ckpt_dir`` outside the Snakemake rule's outputs: Snakemake deletes the outputs of a failed job.
- The final model file (EMA weights, the trainer's settings and model hash, the config block they were built from,
  schedule, a training summary) is written atomically to ``out_path``; :func:`load_diffusion_model` reads it back.

A second objective shares this machinery (spec ``method_a_score_tscales.md`` §3.2): a score model on a VE or VP
SDE (:class:`ScoreTrainSettings`, Method A). Its differences: data in [0, 1] for VE ([-1, 1] for VP), a random
horizontal flip per image (``hflip``, drawn from the shuffle generator), the continuous DSM loss
(:func:`~texad.diffusion.score_losses.dsm_loss`), Adam without weight decay, a linear learning-rate warm-up over
``warmup`` steps, and a run length in *iterations* (the last epoch stops early). ``sigma_max="auto"`` is resolved
from the data (largest pairwise distance of the training images, Song & Ermon 2020) and recorded in the model file;
the identity keeps "auto", so the model hash does not depend on reading the data. :func:`load_score_model` reads
the file back. DDPM settings, files and hashes are unchanged by this.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from texad.checkpoints import TrainingStopped, cpu_state, read_checkpoint, save_torch
from texad.data.mvtec import MVTecDataset

from .losses import epsilon_loss
from .ncsnpp import build_ncsnpp
from .schedules import NoiseSchedule
from .score_losses import dsm_loss
from .sde import SDE, VESDE, VPSDE, get_score_fn, max_pairwise_distance
from .settings import FORMAT, SCORE_FORMAT, SCORE_KIND, DiffusionTrainSettings, ScoreTrainSettings
from .unet import build_unet, count_parameters

__all__ = [
    "FORMAT",
    "SCORE_FORMAT",
    "DiffusionTrainSettings",
    "ScoreTrainSettings",
    "TrainingStopped",
    "build_sde",
    "train_diffusion",
    "load_diffusion_model",
    "load_score_model",
    "require_trained_level",
    "load_train_images",
]

CHECKPOINT_NAME = "last.pt"
_PRECISIONS = ("fp32", "bf16", "fp16")
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
_SCORE_MODEL_KEYS = ("state_dict", "settings", "model_hash", "sde")
VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0


def build_sde(settings: ScoreTrainSettings, sigma_max: float | None = None, n_steps: int = 1000) -> SDE:
    """The SDE of a score model; a VE SDE needs the resolved ``sigma_max`` when the setting is "auto"."""
    if settings.sde == "vp":
        return VPSDE(VP_BETA_MIN, VP_BETA_MAX, N=n_steps)
    value = settings.sigma_max if settings.sigma_max != "auto" else sigma_max
    if value is None:
        raise ValueError("sigma_max is 'auto': pass the value resolved from the training images")
    return VESDE(settings.sigma_min, float(value), N=n_steps)


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


def _clip_gradients(model: torch.nn.Module, optimizer, scaler, max_norm: float) -> float:
    """The global gradient norm before clipping (unscaled first under fp16); clip to ``max_norm`` when it is > 0."""
    scaler.unscale_(optimizer)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)
    return float(norm)


def _decay_note(model: torch.nn.Module, optimizer, grad_clip: float) -> str:
    """The clipping threshold and, for coupled Adam, which adds ``weight_decay * theta`` to the gradient after
    clipping, that term's norm: beside the gradient's it shows when the decay term dominates a clipped step."""
    note = f", clipped to {grad_clip:g}" if grad_clip > 0 else ""
    decay = optimizer.param_groups[0].get("weight_decay", 0.0)
    if type(optimizer) is not torch.optim.Adam or not decay:
        return note  # AdamW decays apart from the gradient; no decay, nothing to compare
    with torch.no_grad():
        theta = float(torch.nn.utils.get_total_norm([p.detach() for p in model.parameters()]))
    return f"{note}; weight-decay term {decay:g} x |theta| = {decay * theta:.4g}"


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
# objectives: what differs between the DDPM and the score model
# ----------------------------------------------------------------------------------------------------
class _DDPMRecipe:
    """Method B's epsilon-prediction DDPM: [-1, 1] data, no augmentation, a fixed number of epochs."""

    def __init__(self, s: DiffusionTrainSettings, images: torch.Tensor, dev: torch.device) -> None:
        self.s = s
        self.images = images
        self.schedule = NoiseSchedule.linear(s.timesteps, s.beta_start, s.beta_end).to(dev)
        self.n_epochs = s.epochs
        self.max_steps: int | None = None

    def build_model(self) -> torch.nn.Module:
        return build_unet(self.s.preset, self.s.image_size)

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        opt_cls = torch.optim.Adam if self.s.optimizer == "adam" else torch.optim.AdamW
        return opt_cls(model.parameters(), lr=self.s.lr, weight_decay=self.s.weight_decay)

    def batch(self, idx: torch.Tensor, shuffle_gen: torch.Generator) -> torch.Tensor:
        return self.images[idx.to(self.images.device)]

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        pass

    def loss(self, model: torch.nn.Module, x0: torch.Tensor, noise_gen: torch.Generator) -> torch.Tensor:
        loss, _ = epsilon_loss(
            model, self.schedule, x0, generator=noise_gen, reduction="sum_mean", t_max=self.s.t_max
        )
        return loss

    def file_fields(self) -> dict:
        s = self.s
        return {"schedule": {"timesteps": s.timesteps, "beta_start": s.beta_start, "beta_end": s.beta_end}}


class _ScoreRecipe:
    """Method A's score model: VE data in [0, 1] (VP in [-1, 1]), random h-flips, DSM, LR warm-up, iterations."""

    def __init__(self, s: ScoreTrainSettings, images: torch.Tensor, dev: torch.device, log) -> None:
        self.s = s
        self.images = (images + 1.0) / 2.0 if s.sde == "ve" else images
        resolved = None
        if s.sde == "ve" and s.sigma_max == "auto":
            resolved = max_pairwise_distance(self.images)
            log(
                f"[{s.dataset}/{s.class_name}] sigma_max auto = {resolved:.4f} (largest pairwise L2 distance)"
            )
            if not resolved > s.sigma_min:
                raise ValueError(
                    f"sigma_max auto = {resolved} is not above sigma_min = {s.sigma_min}: the training images "
                    f"of {s.dataset}/{s.class_name} are (nearly) identical; set sigma_max explicitly"
                )
        self.sde = build_sde(s, resolved)
        n = self.images.shape[0]
        steps_per_epoch = 1 if n < s.batch_size else n // s.batch_size
        self.n_epochs = math.ceil(s.iterations / steps_per_epoch)
        self.max_steps: int | None = s.iterations

    def build_model(self) -> torch.nn.Module:
        return build_ncsnpp(self.s.preset, self.s.image_size, self.s.nf, self.s.sde)

    def optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            model.parameters(), lr=self.s.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
        )

    def batch(self, idx: torch.Tensor, shuffle_gen: torch.Generator) -> torch.Tensor:
        x0 = self.images[idx.to(self.images.device)]
        if self.s.hflip:
            flip = (torch.rand(idx.shape[0], generator=shuffle_gen) < 0.5).to(x0.device)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        return x0

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """score_sde's linear warm-up, lr * min(step / warmup, 1), with ``step`` 1-based (no zero-LR first step)."""
        if self.s.warmup > 0:
            for group in optimizer.param_groups:
                group["lr"] = self.s.lr * min(step / self.s.warmup, 1.0)

    def loss(self, model: torch.nn.Module, x0: torch.Tensor, noise_gen: torch.Generator) -> torch.Tensor:
        loss, _ = dsm_loss(get_score_fn(self.sde, model), self.sde, x0, generator=noise_gen)
        return loss

    def file_fields(self) -> dict:
        return {"kind": SCORE_KIND, "sde": self.sde.describe()}


# ----------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------
def train_diffusion(
    class_dir: Path,
    out_path: Path,
    ckpt_dir: Path,
    settings: DiffusionTrainSettings | ScoreTrainSettings,
    *,
    device: str,
    precision: str,
    checkpoint_every: int,
    config: dict | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
    log=print,
    _stop_after_epoch: int | None = None,
) -> dict:
    """Train one class's diffusion model (a DDPM, or a score model for :class:`ScoreTrainSettings`), resuming from
    ``ckpt_dir/last.pt`` when it exists.

    Writes the final model (EMA weights) atomically to ``out_path`` and returns its training summary.
    ``checkpoint_every`` counts epochs (passes over the training set) for both kinds. ``config``: the config block
    the settings were built from, kept in the model file (a method reads its inference keys from it when the
    file is used on its own, e.g. by ``texad predict``). ``_stop_after_epoch``
    (tests only) raises :class:`TrainingStopped` once that epoch's checkpoint is written, as if the job were
    killed there.
    """
    class_dir, out_path, ckpt_dir = Path(class_dir), Path(out_path), Path(ckpt_dir)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if not isinstance(settings, DiffusionTrainSettings | ScoreTrainSettings):
        raise TypeError(
            f"settings must be DiffusionTrainSettings or ScoreTrainSettings, got {type(settings)}"
        )
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

    random.seed(s.seed)
    np.random.seed(s.seed % 2**32)
    torch.manual_seed(s.seed)

    images = load_train_images(class_dir, s.image_size, num_workers).to(dev)
    if isinstance(s, ScoreTrainSettings):
        recipe: _DDPMRecipe | _ScoreRecipe = _ScoreRecipe(s, images, dev, log)
    else:
        recipe = _DDPMRecipe(s, images, dev)
    n_images = images.shape[0]
    n_epochs = recipe.n_epochs
    if ckpt is not None and not 0 <= int(ckpt["epoch"]) <= n_epochs:
        raise ValueError(
            f"training checkpoint {ckpt_path} is at epoch {ckpt['epoch']} of {n_epochs}; delete it"
        )

    model = recipe.build_model()  # built on CPU so the init does not depend on the device
    ema_model = copy.deepcopy(model)
    model.to(dev).train()
    ema_model.to(dev).eval().requires_grad_(False)
    n_params = count_parameters(model)
    optimizer = recipe.optimizer(model)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    shuffle_gen = torch.Generator().manual_seed(s.seed)
    noise_gen = torch.Generator(device=dev).manual_seed(s.seed + 1)

    start_epoch, step, seconds, seen, losses, grad_norms = 0, 0, 0.0, 0, [], []
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
        grad_norms = [float(v) for v in ckpt.get("epoch_grad_norms", [])]
        resumed_from = start_epoch
        log(f"[{tag}] resuming from {ckpt_path} at epoch {start_epoch}/{n_epochs}")
        if ckpt.get("precision") not in (None, precision):
            log(f"[{tag}] checkpoint was trained in {ckpt['precision']}, continuing in {precision}")
    del ckpt

    def save_checkpoint(epoch: int) -> None:
        state = {
            "format": FORMAT if isinstance(s, DiffusionTrainSettings) else SCORE_FORMAT,
            "model_hash": model_hash,
            "settings": asdict(s),
            "epoch": epoch,
            "step": step,
            "seconds": seconds,
            "images": seen,
            "epoch_losses": list(losses),
            "epoch_grad_norms": list(grad_norms),
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
        range(start_epoch, n_epochs),
        initial=start_epoch,
        total=n_epochs,
        desc=f"train {tag}",
        unit="epoch",
        disable=None if progress is None else not progress,
    )
    run_images, run_seconds = 0, 0.0
    for epoch_index in bar:
        epoch = epoch_index + 1
        t0 = time.perf_counter()
        epoch_loss, epoch_grad_norm, epoch_steps = 0.0, 0.0, 0
        for idx in _epoch_batches(n_images, s.batch_size, shuffle_gen):
            if recipe.max_steps is not None and step >= recipe.max_steps:
                break  # the score model trains by iterations: the last epoch stops early
            x0 = recipe.batch(idx, shuffle_gen)
            step += 1
            recipe.set_lr(optimizer, step)
            with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = recipe.loss(model, x0, noise_gen)
            loss = loss.float()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(
                    f"non-finite training loss ({value}) for {s.dataset} class {s.class_name!r} at epoch "
                    f"{epoch}, global step {step}; lower the learning rate or use precision fp32/bf16"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            epoch_grad_norm += _clip_gradients(model, optimizer, scaler, s.grad_clip)
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
        grad_norms.append(epoch_grad_norm / max(epoch_steps, 1))
        ips = run_images / run_seconds if run_seconds > 0 else float("nan")
        bar.set_postfix(loss=f"{losses[-1]:.2f}", grad=f"{grad_norms[-1]:.2f}", img_s=f"{ips:.1f}")
        if epoch % checkpoint_every == 0 or epoch == n_epochs:
            save_checkpoint(epoch)
            log(
                f"[{tag}] epoch {epoch}/{n_epochs} step {step} loss {losses[-1]:.4f} "
                f"grad norm before clipping {grad_norms[-1]:.4g}{_decay_note(model, optimizer, s.grad_clip)} "
                f"{ips:.1f} img/s; checkpoint {ckpt_path}"
            )
        if _stop_after_epoch is not None and epoch >= _stop_after_epoch and epoch < n_epochs:
            bar.close()
            raise TrainingStopped(f"stopped after epoch {epoch} (test hook)")
    bar.close()

    summary = {
        "epochs": n_epochs,
        "steps": step,
        "seconds": seconds,
        "images_per_s": (seen / seconds) if seconds > 0 else None,
        "final_loss": losses[-1] if losses else None,
        "device": str(dev),
        "precision": precision,
        "resumed_from_epoch": resumed_from,
        "epoch_losses": list(losses),
        "epoch_grad_norms": list(grad_norms),
        "grad_clip": s.grad_clip,
    }
    final = {
        "format": FORMAT if isinstance(s, DiffusionTrainSettings) else SCORE_FORMAT,
        "state_dict": cpu_state(ema_model),
        "settings": asdict(s),
        "config": config,
        "model_hash": model_hash,
        "n_params": n_params,
        **recipe.file_fields(),
        "train": summary,
    }
    save_torch(out_path, final)
    log(f"[{tag}] wrote model {model_hash} ({n_params} parameters) to {out_path}")
    return summary


def _read_model_file(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"diffusion model file {path} is unreadable ({type(exc).__name__}: {exc})") from exc


def load_diffusion_model(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, NoiseSchedule, dict]:
    """Read a DDPM written by :func:`train_diffusion`: the EMA-weight U-Net in eval mode on ``device``,
    its noise schedule, and the meta dict (settings, model_hash, n_params, schedule, train summary)."""
    path = Path(path)
    data = _read_model_file(path)
    if isinstance(data, dict) and data.get("kind") == SCORE_KIND:
        raise ValueError(f"{path} is a score model (Method A), not a DDPM; read it with load_score_model")
    missing = [k for k in _MODEL_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a texad diffusion model file (missing {missing})")
    settings = DiffusionTrainSettings.from_record(data["settings"])
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


def require_trained_level(meta: dict, t: float, what: str) -> None:
    """Refuse to start ``what`` at DDPM level ``t`` when the model (``meta`` of :func:`load_diffusion_model`)
    was trained on t < ``t_max`` only and ``t`` is not below it: the network never saw that noise level."""
    t_max = meta["settings"].get("t_max")
    if t_max is not None and t >= t_max:
        raise ValueError(
            f"{what} starts at DDPM level t = {t:g}, but model {meta['model_hash']} was trained on t < {t_max} "
            "only (methods.method_b.train.t_max): lower the start step or retrain with a larger t_max"
        )


def load_score_model(
    path: Path, device: str | torch.device = "cpu", n_steps: int = 1000
) -> tuple[torch.nn.Module, SDE, dict]:
    """Read a score model written by :func:`train_diffusion`: the EMA-weight NCSN++ in eval mode on ``device``,
    its SDE (with the resolved sigma_max, discretised into ``n_steps`` for the full-chain reference), and the meta
    dict (settings, model_hash, n_params, sde, train summary)."""
    path = Path(path)
    data = _read_model_file(path)
    if not isinstance(data, dict) or data.get("kind") != SCORE_KIND:
        raise ValueError(
            f"{path} is not a texad score model file (Method A); a DDPM is read by load_diffusion_model"
        )
    missing = [k for k in _SCORE_MODEL_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path} is not a complete texad score model file (missing {missing})")
    settings = ScoreTrainSettings.from_record(data["settings"])
    if settings.model_hash() != data["model_hash"]:
        raise ValueError(
            f"{path} records model {data['model_hash']}, but its settings hash to {settings.model_hash()} "
            f"(format {data.get('format')!r} vs {SCORE_FORMAT!r}); retrain it"
        )
    sde = build_sde(settings, data["sde"].get("sigma_max"), n_steps=n_steps)
    model = build_ncsnpp(settings.preset, settings.image_size, settings.nf, settings.sde)
    model.load_state_dict(data["state_dict"])
    model.to(device).eval().requires_grad_(False)
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model, sde, meta
