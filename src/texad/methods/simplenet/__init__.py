"""SimpleNet (Liu et al., CVPR 2023) re-implemented from the official code's behaviour; see spec
``baselines_simplenet_draem.md`` §1. Fair by default: whole image (no centre crop), last-epoch model.

The registry module of ``methods.simplenet`` (see :class:`texad.methods.base.MethodModule`): one model kind,
``simplenet`` (feature adaptor and discriminator on a frozen pretrained backbone), no ablation. The candidates of
its ``selected`` variant are meta epochs of the default's one training run (``select.meta_epoch``), whose model file
keeps their weights beside the last.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from texad.methods.base import RunKey, Runtime, Variant, lazy_detector, no_candidates

from .settings import FORMAT, Select, SimpleNetSettings, model_hash, model_identity, shaping_settings

NAME = "simplenet"
MODELS = ("simplenet",)
Settings = SimpleNetSettings

__all__ = [
    "FORMAT",
    "MODELS",
    "NAME",
    "Settings",
    "SimpleNetSettings",
    "backbones",
    "candidates",
    "identity",
    "model_file",
    "model_hash",
    "model_identity",
    "models",
    "official",
    "shaping_settings",
    "train",
    "variants",
]


def identity(kind: str, settings: SimpleNetSettings, run: RunKey) -> str:
    return model_hash(settings, dataset=run.dataset, class_name=run.class_name, seed=run.seed,
                      backbone_weights=settings.backbone_weights, holdout=run.holdout)  # fmt: skip


def model_file(kind: str, settings: SimpleNetSettings, run: RunKey) -> str:
    return f"simplenet-{identity(kind, settings, run)}.pt"


def models(settings: SimpleNetSettings) -> dict[str, str]:
    return {"model": "simplenet"}


def backbones(settings: SimpleNetSettings, kind: str | None) -> tuple[str, ...]:
    return (settings.backbone,)


def variants(settings: SimpleNetSettings) -> list[Variant]:
    return [Variant("default", settings)]


def candidates(settings: SimpleNetSettings) -> list[Variant]:
    """The candidates of the ``selected`` variant: ``default`` (the last meta epoch), then ``epoch<e>`` for each
    ``select.meta_epoch`` entry, each carrying that one epoch in its ``select`` (what its run scores with). Every
    candidate loads the default's model file, whose training kept the listed epochs' weights: none retrains."""
    if not settings.select.meta_epoch:
        return []
    out = {}
    for epoch in (settings.meta_epochs, *settings.select.meta_epoch):
        name = "default" if epoch == settings.meta_epochs else f"epoch{epoch}"
        chosen = Select(meta_epoch=(epoch,))
        out.setdefault(name, Variant(name, replace(settings, select=chosen), None, chosen))
    return list(out.values())


def official(settings: SimpleNetSettings) -> Variant:
    """The official code's protocol: the best test-set epoch and the resize-then-centre-crop (329 -> 288 in the
    paper's run). Both change the trained model (the selection reads the test set, the crop the training input),
    so it has a model of its own, which keeps no candidate epochs (``select`` emptied). The masks keep texad's rule
    on the cropped field of view."""
    return Variant(
        "official",
        replace(settings, selection="official", center_crop=True, select=no_candidates(settings.select)),
    )


def train(
    kind: str,
    settings: SimpleNetSettings,
    run: RunKey,
    runtime: Runtime,
    *,
    class_dir: Path,
    out: Path,
    ckpt_dir: Path,
    **_: Any,
) -> dict:
    """Train one class's SimpleNet. ``selection: official`` scores every meta epoch on the test set (at
    ``runtime``'s evaluation grid) and keeps the best, as the official code; ``last`` never reads it."""
    from .training import train_simplenet

    selector = None
    if settings.selection == "official":
        selector = _test_set_selector(Path(class_dir), settings, runtime)
    return train_simplenet(
        class_dir, out, ckpt_dir, settings, dataset=run.dataset, class_name=run.class_name, seed=run.seed,
        backbone_weights=settings.backbone_weights, weights_cache=runtime.weights_cache,
        device=runtime.torch_device(), selector=selector, holdout=run.holdout,
    )  # fmt: skip


def _test_set_selector(class_dir: Path, settings: SimpleNetSettings, runtime: Runtime):
    """The official epoch selector: (image AUROC, pixel AUROC) of the model on the test set."""
    from texad.evaluation.protocol import evaluate_on_grid

    from .data import load_test_set
    from .infer import predict

    test = load_test_set(class_dir, settings, runtime.resolution)
    device = runtime.torch_device()

    def select(model) -> tuple[float | None, float | None]:
        maps, scores, _ = predict(model, test.images, sigma=settings.smoothing_sigma,
                                  batch_size=settings.batch_size, device=device)  # fmt: skip
        metrics, _ = evaluate_on_grid(maps, scores, test.masks, test.labels, fpr_limit=runtime.fpr_limit)
        return metrics["image_auroc"], metrics["pixel_auroc"]

    return select


__getattr__ = lazy_detector(__name__, "SimpleNetDetector")
