"""Per-class DRAEM training (spec §2.4), resumable, with the official optimiser and schedule.

- Data: ``train/good`` of one class at ``image_size`` (RGB in [0, 1], no normalisation), kept in memory;
  anomaly sources from a list of image paths (:mod:`texad.data.anomaly_sources`). Each epoch is one pass over
  the images in a fresh seeded permutation (the official sampler draws with replacement, quirk 7: a shuffled epoch is
  the accepted fix), the last incomplete batch kept as the official ``DataLoader`` does, except that a
  trailing batch of ONE image is dropped (BatchNorm in training mode cannot take it at small sizes).
- Every sample is simulated from its own generator ``default_rng([seed, epoch, position])``, so a run is
  the same with any number of loader workers and after a resume, and needs no generator state.
- Networks initialised from ``torch.manual_seed(seed)`` (official init); one Adam over both networks
  (lr, default betas, no weight decay), MultiStepLR stepped per epoch (:meth:`DraemSettings.lr_schedule`);
  loss = MSE + (1 - SSIM) + focal; the focal gradient also reaches the reconstructive network.
- Resumable: ``ckpt_dir/last.pt`` is written atomically every ``checkpoint_every`` epochs and at the end,
  so a killed-and-resumed CPU run ends with bit-identical weights. Keep ``ckpt_dir`` outside the Snakemake
  rule's outputs (Snakemake deletes the outputs of a failed job). The final model (last epoch: no model
  selection, quirk 11) goes atomically to ``out``; :func:`load_draem_model` reads it back.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from texad.checkpoints import TrainingStopped, cpu_state, read_checkpoint, save_torch
from texad.data.anomaly_sources import SourceBank, describe_sources
from texad.data.holdout import Holdout
from texad.data.mvtec import MVTecDataset

from .anomaly_generator import simulate_anomaly
from .loss import draem_loss
from .model import build_networks, count_parameters
from .model_reader import load_draem_model
from .settings import FORMAT, DraemSettings, model_hash

__all__ = ["TrainingStopped", "epoch_batches", "load_draem_model", "load_train_images", "train_draem"]

CHECKPOINT_NAME = "last.pt"
_CKPT_KEYS = ("model_hash", "epoch", "step", "recon", "disc", "optimizer", "scheduler", "torch_rng")
CHECKPOINT_EVERY = 10  # epochs between resumable checkpoints (and the last epoch)
_SHUFFLE_STREAM = 0x5F1E  # keeps the permutation stream apart from the per-sample streams


def load_train_images(class_dir: Path, image_size: int) -> torch.Tensor:
    """All ``train/good`` images of a class as one float32 (N, 3, S, S) tensor in [0, 1]."""
    data = MVTecDataset(class_dir, "train", image_size)
    return torch.stack([data[i]["image"] for i in range(len(data))])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Image indices of each batch of ``epoch`` (1-based): a seeded permutation cut into batches."""
    perm = np.random.default_rng([seed, _SHUFFLE_STREAM, epoch]).permutation(n)
    batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


class _SimulatedSamples(torch.utils.data.Dataset):
    """Item ``(epoch, position, image_index)`` -> one simulated sample, from its own generator."""

    def __init__(
        self, images: torch.Tensor, sources: Sequence[np.ndarray], settings: DraemSettings, seed: int
    ):
        self.images = images
        self.sources = sources
        self.recipe = settings.anomaly_recipe()
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        epoch, position, index = key
        rng = np.random.default_rng([self.seed, int(epoch), int(position)])
        s = simulate_anomaly(self.images[int(index)], rng, self.recipe, self.sources)
        return {"input": s.input, "target": s.target, "mask": s.mask, "label": torch.tensor(s.label)}


class _Plan(torch.utils.data.Sampler):
    """Batches of ``(epoch, position, image_index)`` keys for epochs ``first..last``."""

    def __init__(self, n: int, batch_size: int, seed: int, first: int, last: int):
        self.n, self.batch_size, self.seed, self.first, self.last = n, batch_size, seed, first, last

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for epoch in range(self.first, self.last + 1):
            position = 0
            for batch in epoch_batches(self.n, self.batch_size, self.seed, epoch):
                yield [(epoch, position + j, int(i)) for j, i in enumerate(batch)]
                position += len(batch)

    def __len__(self) -> int:
        return (self.last - self.first + 1) * len(epoch_batches(self.n, self.batch_size, self.seed, 1))


def _read_checkpoint(path: Path, expected_hash: str, epochs: int) -> dict:
    ckpt = read_checkpoint(path, what="DRAEM", keys=_CKPT_KEYS, model_hash=expected_hash)
    if not 0 <= int(ckpt["epoch"]) <= epochs:
        raise ValueError(f"DRAEM checkpoint {path} is at epoch {ckpt['epoch']} of {epochs}; delete it")
    return ckpt


def train_draem(
    class_dir: str | Path,
    anomaly_source_paths: Sequence[str | Path],
    settings: DraemSettings,
    *,
    dataset: str,
    class_name: str,
    seed: int,
    out: str | Path,
    ckpt_dir: str | Path,
    device: str,
    checkpoint_every: int = CHECKPOINT_EVERY,
    num_workers: int = 0,
    progress: bool | None = None,
    log=print,
    holdout: Holdout | None = None,
    _stop_after_epoch: int | None = None,
) -> dict:
    """Train DRAEM on one class, resuming from ``ckpt_dir/last.pt`` when it exists; returns the summary.

    ``dataset`` / ``class_name`` / ``seed`` enter the model identity and every message, and so does ``holdout``, the
    share of the class's training images held out for validation (``class_dir`` is then the view without them;
    None: all of train/good). ``anomaly_source_paths``
    must not contain the class's own images (see :func:`~texad.data.anomaly_sources.source_paths`). The model
    file keeps the settings block it was trained with (``config``), inference-only keys included.
    """
    class_dir, out, ckpt_dir = Path(class_dir), Path(out), Path(ckpt_dir)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    own = [p for p in anomaly_source_paths if class_dir.resolve() in Path(p).resolve().parents]
    if own:
        raise ValueError(f"anomaly sources include the trained class's own images, e.g. {own[0]}")
    s = settings
    dev = torch.device(device)
    mhash = model_hash(s, dataset, class_name, seed, holdout)
    tag = f"{dataset}/{class_name}"
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    ckpt = _read_checkpoint(ckpt_path, mhash, s.epochs) if ckpt_path.exists() else None

    images = load_train_images(class_dir, s.image_size)
    bank = SourceBank(anomaly_source_paths, s.image_size)
    if len(bank) == 0:
        raise ValueError(f"[{tag}] no anomaly source images given")
    sources = describe_sources(s.anomaly_source, bank.paths)

    torch.manual_seed(seed)
    recon, disc = build_networks(s.recon_base_width, s.disc_base_width)  # on CPU: init independent of device
    recon.to(dev).train()
    disc.to(dev).train()
    n_params = {"reconstructive": count_parameters(recon), "discriminative": count_parameters(disc)}
    optimizer = torch.optim.Adam([*recon.parameters(), *disc.parameters()], lr=s.lr)
    milestones, gamma = s.lr_schedule()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=gamma)

    start_epoch, step, seconds, seen, losses, resumed_from = 0, 0, 0.0, 0, [], None
    if ckpt is not None:
        recon.load_state_dict(ckpt["recon"])
        disc.load_state_dict(ckpt["disc"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        seconds, seen = float(ckpt.get("seconds", 0.0)), int(ckpt.get("images", 0))
        losses = [dict(v) for v in ckpt.get("epoch_losses", [])]
        resumed_from = start_epoch
        log(f"[{tag}] resuming DRAEM from {ckpt_path} at epoch {start_epoch}/{s.epochs}")
    del ckpt

    def save_checkpoint(epoch: int) -> None:
        save_torch(
            ckpt_path,
            {
                "format": FORMAT,
                "model_hash": mhash,
                "epoch": epoch,
                "step": step,
                "seconds": seconds,
                "images": seen,
                "epoch_losses": list(losses),
                "recon": cpu_state(recon),
                "disc": cpu_state(disc),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
        )

    n_images = images.shape[0]
    per_epoch = len(epoch_batches(n_images, s.batch_size, seed, 1))
    samples = _SimulatedSamples(images, bank, s, seed)
    loader = torch.utils.data.DataLoader(
        samples,
        batch_sampler=_Plan(n_images, s.batch_size, seed, start_epoch + 1, s.epochs),
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    batches = iter(loader)
    bar = tqdm(
        range(start_epoch, s.epochs),
        initial=start_epoch,
        total=s.epochs,
        desc=f"draem {tag}",
        unit="epoch",
        disable=None if progress is None else not progress,
    )
    run_images, run_seconds = 0, 0.0
    for epoch_index in bar:
        epoch = epoch_index + 1
        t0 = time.perf_counter()
        totals = {"loss": 0.0, "l2": 0.0, "ssim": 0.0, "focal": 0.0}
        for _ in range(per_epoch):
            batch = next(batches)
            x_in = batch["input"].to(dev, non_blocking=True)
            target = batch["target"].to(dev, non_blocking=True)
            mask = batch["mask"].to(dev, non_blocking=True)
            step += 1
            reconstruction = recon(x_in)
            logits = disc(torch.cat((reconstruction, x_in), dim=1))
            loss, parts = draem_loss(reconstruction, target, logits, mask)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(
                    f"non-finite DRAEM loss ({value}; terms {parts}) for {dataset} class {class_name!r} at epoch "
                    f"{epoch}, global step {step}; lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals["loss"] += value
            for k, v in parts.items():
                totals[k] += v
            run_images += x_in.shape[0]
            seen += x_in.shape[0]
        scheduler.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        seconds += dt
        run_seconds += dt
        losses.append({k: v / per_epoch for k, v in totals.items()})
        ips = run_images / run_seconds if run_seconds > 0 else float("nan")
        bar.set_postfix(loss=f"{losses[-1]['loss']:.3f}", img_s=f"{ips:.1f}")
        if epoch % checkpoint_every == 0 or epoch == s.epochs:
            save_checkpoint(epoch)
        if _stop_after_epoch is not None and epoch >= _stop_after_epoch and epoch < s.epochs:
            bar.close()
            del batches
            raise TrainingStopped(f"stopped after epoch {epoch} (test hook)")
    bar.close()
    del batches

    summary = {
        "epochs": s.epochs,
        "steps": step,
        "seconds": seconds,
        "images_per_s": seen / seconds if seconds > 0 else None,
        "final_loss": losses[-1] if losses else None,
        "lr_milestones": milestones,
        "lr_gamma": gamma,
        "device": str(dev),
        "precision": "fp32",
        "resumed_from_epoch": resumed_from,
        "epoch_losses": losses,
    }
    final = {
        "format": FORMAT,
        "model_hash": mhash,
        "config": s.to_config(),
        "dataset": dataset,
        "class_name": class_name,
        "seed": int(seed),
        "holdout": None if holdout is None else holdout.identity(),
        "recipe": s.anomaly_recipe().as_dict(),
        "anomaly_source": sources,
        "n_params": n_params,
        "state_dict": {"recon": cpu_state(recon), "disc": cpu_state(disc)},
        "train": summary,
    }
    save_torch(out, final)
    log(f"[{tag}] wrote DRAEM model {mhash} ({sum(n_params.values())} parameters) to {out}")
    return summary
