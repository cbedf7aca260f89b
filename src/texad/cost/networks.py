"""The networks texad runs, each with an example input and the two steps a job repeats: a training step
(forward, loss, backward) and an inference step (forward, no gradients).

A :class:`Net` is plain data (its builder's arguments); :func:`build` makes the torch module on the current
default device, so the FLOP counter and the memory probe build it on the ``meta`` device (no weights, no
compute) and the GPU check on CUDA. The steps follow what texad's code runs per image:

- ``ddpm_unet``: Method B's epsilon U-Net (:func:`texad.diffusion.unet.build_unet`), loss ||eps_hat - eps||^2.
- ``ncsnpp``: Method A's score network (:func:`texad.diffusion.ncsnpp.build_ncsnpp`), DSM-style squared loss.
- ``draem``: DRAEM's reconstructive then discriminative network (6-channel input), both trained together.
- ``features``: a torchvision backbone cut at the deepest requested layer (Method B's feature extractor; its
  training step is DDAD's domain adaptation of a trainable copy).
- ``simplenet_features``: SimpleNet's frozen aggregator (backbone + local patch aggregation), inference only
  (training caches its output once, :mod:`texad.methods.simplenet.training`).
- ``simplenet_head``: SimpleNet's adaptor + discriminator on every patch of one image (real and fake patches in
  one discriminator batch, as the trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "NETWORKS",
    "Net",
    "build",
    "example",
    "train_step",
    "infer_step",
    "paper_networks",
    "tiny_networks",
]


@dataclass(frozen=True)
class Net:
    """One network at one size: ``kind`` (a key of :data:`NETWORKS`) and its builder's arguments."""

    kind: str
    args: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @staticmethod
    def of(kind: str, **args: Any) -> Net:
        if kind not in NETWORKS:
            raise ValueError(f"unknown network kind {kind!r}; choose from {sorted(NETWORKS)}")
        return Net(kind, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items())))

    @property
    def kw(self) -> dict[str, Any]:
        return dict(self.args)

    @property
    def label(self) -> str:
        return f"{self.kind}[{','.join(f'{k}={v}' for k, v in self.args)}]"


# ------------------------------------------------------------------------------------------- builders
class _Draem(nn.Module):
    def __init__(self, recon_base_width: int, disc_base_width: int):
        super().__init__()
        from texad.methods.draem.model import build_networks

        self.recon, self.disc = build_networks(recon_base_width, disc_base_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.recon(x)
        return self.disc(torch.cat([rec, x], dim=1))


class _Features(nn.Module):
    def __init__(self, backbone: str, layers: tuple[str, ...], trainable: bool):
        super().__init__()
        from texad.backbones.features import load_backbone

        ext = load_backbone(backbone, weights="none", cache_dir=None, layers=layers)
        self.ext = ext.trainable_copy() if trainable else ext

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.ext(x).values())


class _SimpleNetFeatures(nn.Module):
    def __init__(self, backbone: str, layers: tuple[str, ...], patchsize: int, pre_dim: int, target_dim: int):
        super().__init__()
        from texad.backbones.features import load_backbone
        from texad.methods.simplenet.model import FeatureAggregator

        ext = load_backbone(backbone, weights="none", cache_dir=None, layers=layers)
        self.agg = FeatureAggregator(ext, layers, patchsize, pre_dim, target_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.agg(x)


class _SimpleNetHead(nn.Module):
    def __init__(self, dim: int, dsc_layers: int, dsc_hidden: int):
        super().__init__()
        from texad.methods.simplenet.model import Discriminator, build_adaptor

        self.adaptor = build_adaptor(dim)
        self.disc = Discriminator(dim, dsc_layers, dsc_hidden)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.disc(self.adaptor(feats))


def _ddpm(preset: str, image_size: int) -> nn.Module:
    from texad.diffusion.unet import build_unet

    return build_unet(preset, image_size)


def _ncsnpp(preset: str, image_size: int, nf: int) -> nn.Module:
    from texad.diffusion.ncsnpp import build_ncsnpp

    return build_ncsnpp(preset, image_size, nf)


#: kind -> builder(**args)
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "ddpm_unet": _ddpm,
    "ncsnpp": _ncsnpp,
    "draem": lambda image_size, recon_base_width, disc_base_width: _Draem(recon_base_width, disc_base_width),
    "features": lambda backbone, image_size, layers, trainable=False: _Features(backbone, layers, trainable),
    "simplenet_features": lambda backbone, image_size, layers, patchsize, pre_dim, target_dim: (
        _SimpleNetFeatures(backbone, layers, patchsize, pre_dim, target_dim)
    ),
    "simplenet_head": lambda dim, dsc_layers, dsc_hidden, patches: _SimpleNetHead(
        dim, dsc_layers, dsc_hidden
    ),
}


def build(net: Net) -> nn.Module:
    """The module of ``net`` on the current default device (``with torch.device(...)``)."""
    return NETWORKS[net.kind](**net.kw)


def example(net: Net, batch: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """The inputs of ``batch`` images: (x, t) for the diffusion networks, (x,) for images, (patches,) for the head."""
    kw = net.kw
    if net.kind == "simplenet_head":
        return (torch.randn(batch * kw["patches"], kw["dim"], device=device),)
    size = kw["image_size"]
    x = torch.rand(batch, 3, size, size, device=device)
    if net.kind == "ddpm_unet":
        return x * 2 - 1, torch.randint(0, 1000, (batch,), device=device)
    if net.kind == "ncsnpp":
        return x, torch.rand(batch, device=device) * 10 + 0.01
    return (x,)


def _loss(out: Any) -> torch.Tensor:
    if isinstance(out, (list, tuple)):
        return sum(o.float().square().mean() for o in out)
    return out.float().square().mean()


def train_step(model: nn.Module, net: Net, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Forward, a squared loss and backward (the work of one training step; the optimiser update is O(params)).

    SimpleNet's head scores real and fake patches in one discriminator batch, as its trainer does."""
    if net.kind == "simplenet_head":
        (feats,) = inputs
        real = model.adaptor(feats)
        fake = real + 0.015 * torch.randn_like(real)
        out = model.disc(torch.cat([real, fake]))
    elif net.kind == "simplenet_features":
        raise ValueError("SimpleNet's aggregator is frozen: it has no training step")
    else:
        out = model(*inputs)
    loss = _loss(out)
    loss.backward()
    return loss.detach()


def infer_step(model: nn.Module, net: Net, inputs: tuple[torch.Tensor, ...]) -> Any:
    model.eval()
    with torch.no_grad():
        return model(*inputs)


# ---------------------------------------------------------------------------------------- the sets
def paper_networks() -> dict[str, Net]:
    """The paper-size networks (texad's defaults at the papers' sizes), by the names ``gpu.json`` uses."""
    return {
        "ddpm_unet": Net.of("ddpm_unet", preset="paper", image_size=256),
        "ncsnpp": Net.of("ncsnpp", preset="paper", image_size=256, nf=64),
        "draem": Net.of("draem", image_size=256, recon_base_width=128, disc_base_width=64),
        "wide_resnet101_2": Net.of(
            "features", backbone="wide_resnet101_2", image_size=256, layers=("layer1", "layer2", "layer3")
        ),
        "simplenet_wide_resnet50_2": Net.of(
            "simplenet_features",
            backbone="wide_resnet50_2",
            image_size=288,
            layers=("layer2", "layer3"),
            patchsize=3,
            pre_dim=1536,
            target_dim=1536,
        ),  # fmt: skip
        "simplenet_head": Net.of("simplenet_head", dim=1536, dsc_layers=2, dsc_hidden=1024, patches=36 * 36),
    }


def tiny_networks() -> dict[str, Net]:
    """The same networks at test size (the CPU run of the GPU check and the tests)."""
    return {
        "ddpm_unet": Net.of("ddpm_unet", preset="tiny", image_size=32),
        "ncsnpp": Net.of("ncsnpp", preset="tiny", image_size=32, nf=16),
        "draem": Net.of("draem", image_size=64, recon_base_width=8, disc_base_width=4),
        "wide_resnet101_2": Net.of(
            "features", backbone="efficientnet_lite0", image_size=32, layers=("layer1", "layer2", "layer3")
        ),
        "simplenet_wide_resnet50_2": Net.of(
            "simplenet_features",
            backbone="efficientnet_lite0",
            image_size=32,
            layers=("layer2", "layer3"),
            patchsize=3,
            pre_dim=64,
            target_dim=64,
        ),  # fmt: skip
        "simplenet_head": Net.of("simplenet_head", dim=64, dsc_layers=2, dsc_hidden=64, patches=16),
    }
