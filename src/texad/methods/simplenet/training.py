"""Training SimpleNet on one class's ``train/good`` images (spec ``baselines_simplenet_draem.md`` §1.1-§1.3).

- Features: the frozen aggregator's output for every training image. The backbone is frozen, in eval mode
  and there is no augmentation, so a feature never changes during training: it is computed once and kept
  on the device when it fits in ``cache_bytes`` (else recomputed per batch; same values).
- One step: a shuffled batch of ``batch_size`` images (last batch kept, as the official DataLoader); its
  B*H*W features go through the adaptor, fakes are adapted + N(0, noise_std^2) noise (after the adaptor,
  so the adaptor gets gradients from both branches), real and fake are scored in ONE discriminator batch
  (BatchNorm statistics mix them, as the official code) and :func:`truncated_l1_loss` is minimised.
- Optimisers as the official code: AdamW(adaptor, lr = adaptor_lr, weight decay 0.01 = AdamW default),
  Adam(discriminator, lr = dsc_lr, weight decay 1e-5); no LR schedule.
- ``meta_epochs`` x ``gan_epochs`` passes. Selection ``last`` keeps the final weights (never reads the
  test set). ``official`` calls ``selector(model) -> (image_auroc, pixel_auroc)`` (the test set) after every
  meta epoch and keeps the best image AUROC, ties broken by pixel AUROC, as the official code.
- Snapshots: after each meta epoch of ``select.meta_epoch`` (but the last, the main weights) a copy of the adaptor
  and discriminator states is kept, and written to the model file under ``snapshots`` (by epoch): the candidates
  of the ``selected`` variant, scored without retraining (:func:`load_simplenet` with ``meta_epoch``). A snapshot
  is the state a run with ``meta_epochs`` = that epoch ends with (the same shuffles and noise up to there).
- Resumable: ``ckpt_dir/last.pt`` is written atomically after every ``checkpoint_every`` meta epochs with
  every state the rest of the run depends on (the snapshots kept so far among them), so a killed-and-resumed CPU run ends with identical weights.
  Keep ``ckpt_dir`` outside the Snakemake rule's outputs. The final model is written atomically.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from texad.backbones.features import load_backbone
from texad.checkpoints import TrainingStopped, cpu_state, read_checkpoint, save_torch
from texad.data.holdout import Holdout

from .data import load_images
from .loss import separation, truncated_l1_loss
from .model import Discriminator, FeatureAggregator, SimpleNet, build_adaptor
from .settings import FORMAT, SimpleNetSettings, model_hash, model_identity

__all__ = ["TrainingStopped", "build_model", "load_simplenet", "train_simplenet"]

CHECKPOINT_NAME = "last.pt"
ADAMW_WEIGHT_DECAY = 0.01  # torch's AdamW default, which the official adaptor optimiser relies on
DSC_WEIGHT_DECAY = 1e-5
_CKPT_KEYS = ("model_hash", "meta_epoch", "step", "adaptor", "discriminator", "adaptor_opt", "dsc_opt",
              "shuffle_generator", "noise_generator", "torch_rng")  # fmt: skip
_MODEL_KEYS = (
    "format",
    "model_hash",
    "identity",
    "config",
    "backbone",
    "adaptor",
    "discriminator",
    "train",
)

Selector = Callable[[SimpleNet], tuple[float | None, float | None]]


def build_model(
    settings: SimpleNetSettings, *, backbone_weights: str, weights_cache: Path | str | None
) -> SimpleNet:
    """A freshly initialised SimpleNet on the CPU (seed torch first for a reproducible initialisation)."""
    extractor = load_backbone(
        settings.backbone, weights=backbone_weights, cache_dir=weights_cache, layers=settings.layers
    )
    aggregator = FeatureAggregator(
        extractor, settings.layers, settings.patchsize, settings.pretrain_embed_dim, settings.target_embed_dim
    )
    adaptor = build_adaptor(settings.target_embed_dim)
    discriminator = Discriminator(settings.target_embed_dim, settings.dsc_layers, settings.dsc_hidden)
    return SimpleNet(aggregator, adaptor, discriminator)


def _read_checkpoint(path: Path, expected_hash: str) -> dict:
    return read_checkpoint(path, what="SimpleNet", keys=_CKPT_KEYS, model_hash=expected_hash)


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A fresh permutation cut into batches; the last, smaller batch is kept (DataLoader default)."""
    perm = torch.randperm(n, generator=generator)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


class _TrainFeatures:
    """The aggregated features of the training images: cached on the device, or recomputed per batch."""

    def __init__(
        self, aggregator: FeatureAggregator, images: torch.Tensor, dev: torch.device, cache_bytes: int
    ):
        self.aggregator, self.images, self.dev = aggregator, images, dev
        probe = aggregator(images[:1].to(dev))
        self.grid = tuple(probe.shape[1:3])
        need = images.shape[0] * probe[0].numel() * probe.element_size()
        self.cached = None
        if need <= cache_bytes:
            self.cached = torch.cat([aggregator(images[i : i + 8].to(dev)) for i in range(0, len(images), 8)])

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        feats = (
            self.cached[idx.to(self.dev)]
            if self.cached is not None
            else self.aggregator(self.images[idx].to(self.dev))
        )
        return feats.reshape(-1, feats.shape[-1])


def _better(
    record: tuple[float | None, float | None], best: tuple[float | None, float | None] | None
) -> bool:
    """The official rule: higher image AUROC wins; equal image AUROC and higher pixel AUROC wins."""
    if best is None:
        return True
    low = -math.inf
    i_new, p_new = (low if v is None else v for v in record)
    i_best, p_best = (low if v is None else v for v in best)
    return i_new > i_best or (i_new == i_best and p_new > p_best)


def train_simplenet(
    class_dir: Path,
    out_path: Path,
    ckpt_dir: Path,
    settings: SimpleNetSettings,
    *,
    dataset: str,
    class_name: str,
    seed: int,
    backbone_weights: str,
    weights_cache: Path | str | None = None,
    device: str,
    selector: Selector | None = None,
    checkpoint_every: int = 1,
    cache_bytes: int = 4 * 2**30,
    progress: bool | None = None,
    log=print,
    holdout: Holdout | None = None,
    _stop_after_meta_epoch: int | None = None,
) -> dict:
    """Train one class's SimpleNet, resuming from ``ckpt_dir/last.pt`` when it exists; returns the summary.
    ``holdout``: the share of the class's training images held out for validation, part of the identity
    (``class_dir`` is then the view without them; None: all of train/good).

    ``selector`` is required for ``settings.selection == "official"`` (and refused otherwise, so a fair
    run cannot read the test set by accident). The final model goes atomically to ``out_path``.
    """
    s = settings
    class_dir, out_path, ckpt_dir = Path(class_dir), Path(out_path), Path(ckpt_dir)
    official = s.selection == "official"
    if official and selector is None:
        raise ValueError("selection 'official' picks the best test-set epoch: pass a selector")
    if not official and selector is not None:
        raise ValueError("selection 'last' never reads the test set: do not pass a selector")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    kept = s.kept_epochs
    if official and kept:
        raise ValueError(
            f"methods.simplenet.select.meta_epoch {list(kept)}: candidate epochs are chosen on the validation "
            "split, not beside the official test-set selection"
        )
    dev = torch.device(device)
    tag = f"{dataset}/{class_name}"
    key = {"dataset": dataset, "class_name": class_name, "seed": seed, "holdout": holdout}
    ident = model_identity(s, backbone_weights=backbone_weights, **key)
    mhash = model_hash(s, backbone_weights=backbone_weights, **key)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    ckpt = _read_checkpoint(ckpt_path, mhash) if ckpt_path.exists() else None

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    model = build_model(s, backbone_weights=backbone_weights, weights_cache=weights_cache).to(dev)
    adaptor_opt = torch.optim.AdamW(
        model.adaptor.parameters(), lr=s.adaptor_lr, weight_decay=ADAMW_WEIGHT_DECAY
    )
    dsc_opt = torch.optim.Adam(model.discriminator.parameters(), lr=s.dsc_lr, weight_decay=DSC_WEIGHT_DECAY)
    shuffle_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)

    t_start = time.perf_counter()
    images = load_images(class_dir, "train", s)
    features = _TrainFeatures(model.aggregator, images, dev, cache_bytes)
    prep_s = time.perf_counter() - t_start

    start, step, seconds, selection_s = 0, 0, 0.0, 0.0
    history: list[dict] = []
    best_record, best_state, best_epoch, resumed_from = None, None, None, None
    snapshots: dict[int, dict] = {}  # meta epoch -> {"adaptor": state, "discriminator": state}
    if ckpt is not None:
        model.adaptor.load_state_dict(ckpt["adaptor"])
        model.discriminator.load_state_dict(ckpt["discriminator"])
        adaptor_opt.load_state_dict(ckpt["adaptor_opt"])
        dsc_opt.load_state_dict(ckpt["dsc_opt"])
        shuffle_gen.set_state(ckpt["shuffle_generator"])
        noise_gen.set_state(ckpt["noise_generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        start, step = int(ckpt["meta_epoch"]), int(ckpt["step"])
        seconds, selection_s = float(ckpt.get("seconds", 0.0)), float(ckpt.get("selection_s", 0.0))
        history = list(ckpt.get("history", []))
        snapshots = {int(e): state for e, state in ckpt.get("snapshots", {}).items()}
        if ckpt.get("best_state") is not None:
            best_state = ckpt["best_state"]
            best_record = tuple(ckpt["best_record"])
            best_epoch = int(ckpt["best_epoch"])
        resumed_from = start
        log(f"[{tag}] resuming SimpleNet from {ckpt_path} at meta epoch {start}/{s.meta_epochs}")
    del ckpt
    seconds += prep_s

    def save_checkpoint(meta_epoch: int) -> None:
        save_torch(ckpt_path, {
            "format": FORMAT, "model_hash": mhash, "meta_epoch": meta_epoch, "step": step,
            "seconds": seconds, "selection_s": selection_s, "history": history,
            "adaptor": cpu_state(model.adaptor), "discriminator": cpu_state(model.discriminator),
            "adaptor_opt": adaptor_opt.state_dict(), "dsc_opt": dsc_opt.state_dict(),
            "shuffle_generator": shuffle_gen.get_state(), "noise_generator": noise_gen.get_state().cpu(),
            "torch_rng": torch.get_rng_state(),
            "best_state": best_state, "best_record": best_record, "best_epoch": best_epoch,
            "snapshots": snapshots,
        })  # fmt: skip

    n_images = images.shape[0]
    bar = tqdm(range(start, s.meta_epochs), initial=start, total=s.meta_epochs, desc=f"simplenet {tag}",
               unit="meta-epoch", disable=None if progress is None else not progress)  # fmt: skip
    for meta_index in bar:
        meta_epoch = meta_index + 1
        t0 = time.perf_counter()
        model.train()  # the aggregator stays frozen in eval mode whatever is asked of it
        losses, p_real, p_fake = [], [], []
        for gan_epoch in range(1, s.gan_epochs + 1):
            for idx in _epoch_batches(n_images, s.batch_size, shuffle_gen):
                step += 1
                real = model.adaptor(features(idx))
                noise = torch.randn(real.shape, generator=noise_gen, device=dev, dtype=real.dtype)
                fake = real + s.noise_std * noise
                scores = model.discriminator(torch.cat([real, fake]))
                real_s, fake_s = scores[: real.shape[0]], scores[real.shape[0] :]
                loss = truncated_l1_loss(real_s, fake_s, s.dsc_margin)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise RuntimeError(
                        f"non-finite SimpleNet loss ({value}) for {dataset} class {class_name!r} at meta epoch "
                        f"{meta_epoch}, gan epoch {gan_epoch}, step {step}; lower adaptor_lr / dsc_lr"
                    )
                adaptor_opt.zero_grad(set_to_none=True)
                dsc_opt.zero_grad(set_to_none=True)
                loss.backward()
                adaptor_opt.step()
                dsc_opt.step()
                pr, pf = separation(real_s.detach(), fake_s.detach(), s.dsc_margin)
                losses.append(value)
                p_real.append(pr)
                p_fake.append(pf)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds += time.perf_counter() - t0
        entry = {"meta_epoch": meta_epoch, "loss": float(np.mean(losses)), "p_real": float(np.mean(p_real)),
                 "p_fake": float(np.mean(p_fake))}  # fmt: skip
        if official:
            t1 = time.perf_counter()
            model.eval()  # scored as at test time: BatchNorm running statistics
            record = selector(model)
            selection_s += time.perf_counter() - t1
            entry.update(test_image_auroc=record[0], test_pixel_auroc=record[1])
            if _better(record, best_record):
                best_record, best_epoch = tuple(record), meta_epoch
                best_state = {
                    "adaptor": cpu_state(model.adaptor),
                    "discriminator": cpu_state(model.discriminator),
                }
        history.append(entry)
        if meta_epoch in kept:  # a candidate of the selected variant: this epoch's weights, as they are
            snapshots[meta_epoch] = {
                "adaptor": cpu_state(model.adaptor),
                "discriminator": cpu_state(model.discriminator),
            }
        bar.set_postfix(
            loss=f"{entry['loss']:.4f}", p_real=f"{entry['p_real']:.2f}", p_fake=f"{entry['p_fake']:.2f}"
        )
        if meta_epoch % checkpoint_every == 0 or meta_epoch == s.meta_epochs:
            save_checkpoint(meta_epoch)
        if _stop_after_meta_epoch is not None and _stop_after_meta_epoch <= meta_epoch < s.meta_epochs:
            bar.close()
            raise TrainingStopped(f"stopped after meta epoch {meta_epoch} (test hook)")
    bar.close()

    if official:
        adaptor_state, dsc_state, selected = best_state["adaptor"], best_state["discriminator"], best_epoch
    else:
        adaptor_state, dsc_state, selected = (
            cpu_state(model.adaptor),
            cpu_state(model.discriminator),
            s.meta_epochs,
        )
    summary = {
        "seconds": seconds,
        "selection_s": selection_s,
        "steps": step,
        "meta_epochs": s.meta_epochs,
        "selection": s.selection,
        "selected_meta_epoch": selected,
        "kept_meta_epochs": sorted(snapshots),
        "used_test_set": official,
        "selected_test_record": list(best_record) if official else None,
        "feature_grid": list(features.grid),
        "features_cached": features.cached is not None,
        "device": str(dev),
        "resumed_from_meta_epoch": resumed_from,
        "n_params": sum(p.numel() for p in model.adaptor.parameters())
        + sum(p.numel() for p in model.discriminator.parameters()),
        "history": history,
        "final_loss": history[-1]["loss"] if history else None,
    }
    save_torch(out_path, {
        "format": FORMAT, "model_hash": mhash, "identity": ident, "config": s.to_config(),
        "backbone": model.aggregator.extractor.describe(),
        "adaptor": adaptor_state, "discriminator": dsc_state, "snapshots": snapshots, "train": summary,
    })  # fmt: skip
    log(
        f"[{tag}] wrote SimpleNet model {mhash} (selection {s.selection}, meta epoch {selected}) to {out_path}"
    )
    return summary


def load_simplenet(
    path: Path,
    *,
    weights_cache: Path | str | None = None,
    device: str | torch.device = "cpu",
    meta_epoch: int | None = None,
) -> tuple[SimpleNet, SimpleNetSettings, dict]:
    """Read a model written by :func:`train_simplenet`: (model in eval mode on ``device``, settings, meta).

    The backbone is rebuilt from the recorded name and weights and must have the recorded SHA-256. The
    settings are those the model was trained with (its config block); a run scores with its own settings, which
    may differ from these outside the identity (``smoothing_sigma`` under ``selection: last``). ``meta_epoch``:
    the weights of that meta epoch, a snapshot the file keeps (``select.meta_epoch``); None or the model's
    ``meta_epochs``: its main weights (the last epoch's, or the official selection's). ``meta["scored_meta_epoch"]``
    says which; ``meta["kept_meta_epochs"]`` lists the snapshots.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"SimpleNet model file {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in _MODEL_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a texad SimpleNet model file (missing {missing})")
    ident = data["identity"]
    settings = SimpleNetSettings.from_config(data["config"], ident["class_name"])
    again = model_hash(settings, dataset=ident["dataset"], class_name=ident["class_name"], seed=ident["seed"],
                       backbone_weights=ident["backbone_weights"],
                       holdout=Holdout.from_identity(ident.get("holdout")))  # fmt: skip
    if data.get("format") != FORMAT or again != data["model_hash"]:
        raise ValueError(
            f"{path} records model {data['model_hash']} (format {data.get('format')!r}), but its identity "
            f"hashes to {again} under {FORMAT!r}; retrain it"
        )
    model = build_model(settings, backbone_weights=ident["backbone_weights"], weights_cache=weights_cache)
    if model.aggregator.extractor.describe()["sha256"] != data["backbone"]["sha256"]:
        raise ValueError(f"{path} was trained on backbone weights {data['backbone']}, which differ from "
                         f"{model.aggregator.extractor.describe()}")  # fmt: skip
    snapshots = data.get("snapshots") or {}
    kept = sorted(int(e) for e in snapshots)
    weights, scored = data, data["train"]["selected_meta_epoch"]
    if meta_epoch is not None and meta_epoch != settings.meta_epochs:
        if meta_epoch not in snapshots:
            raise ValueError(
                f"{path} keeps the weights of meta epochs {kept} besides its last ({settings.meta_epochs}), not "
                f"of epoch {meta_epoch}: list the epoch in methods.simplenet.select.meta_epoch and retrain"
            )
        weights, scored = snapshots[meta_epoch], int(meta_epoch)
    model.adaptor.load_state_dict(weights["adaptor"])
    model.discriminator.load_state_dict(weights["discriminator"])
    model.to(device).eval()
    meta = {k: v for k, v in data.items() if k not in ("adaptor", "discriminator", "snapshots")}
    meta.update(scored_meta_epoch=scored, kept_meta_epochs=kept)
    return model, settings, meta
