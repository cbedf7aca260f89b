"""FLOPs and activation memory of one network per image, counted on the ``meta`` device (shapes only, no weights,
no compute: a paper-size U-Net takes about a second).

FLOPs are what :class:`torch.utils.flop_counter.FlopCounterMode` counts: 2 x the multiply-accumulates of the
matrix products, convolutions and attention (element-wise ops, norms and pooling are not counted, the usual
convention; they are memory-bound and a few percent of the work of these networks). A training step is forward
+ backward (about 3 x forward); the optimiser update is O(parameters) and left out.

Activation bytes are those autograd saves for the backward pass of one image (fp32), counted with
``torch.autograd.graph.saved_tensors_hooks``: the per-image part of a training step's memory.

Profiles are cached on disk (a JSON keyed by the network and torch's version), so ``texad cost`` is quick after
its first run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .networks import NETWORKS, Net, build, example, infer_step, train_step

__all__ = ["Profile", "profile", "count_flops", "default_cache"]


@dataclass(frozen=True)
class Profile:
    """One network per image: ``params``, ``infer_flops`` (forward), ``train_flops`` (forward + backward; 0 for
    a frozen network) and ``act_bytes`` (saved for backward, fp32)."""

    params: int
    infer_flops: float
    train_flops: float
    act_bytes: float

    @property
    def param_bytes(self) -> float:
        return 4.0 * self.params


def default_cache() -> Path:
    """``$TEXAD_COST_CACHE``, else ``~/.cache/texad/cost.json``."""
    env = os.environ.get("TEXAD_COST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "texad" / "cost.json"


def count_flops(fn, *args) -> float:
    """FLOPs of ``fn(*args)`` as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return float(counter.get_total_flops())


def _trainable(net: Net) -> Net | None:
    if net.kind == "simplenet_features":
        return None
    if net.kind == "features":
        return Net.of("features", **{**net.kw, "trainable": True})
    return net


def _measure(net: Net, device: str = "meta") -> Profile:
    with torch.device(device):
        model = build(net)
        inputs = example(net, 1)
    params = sum(p.numel() for p in model.parameters())
    infer = count_flops(infer_step, model, net, inputs)
    train_net = _trainable(net)
    train, saved = 0.0, 0.0
    if train_net is not None:
        with torch.device(device):
            model = build(train_net).train()
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor):
            if not isinstance(t, torch.nn.Parameter):
                seen.setdefault(id(t), t.numel() * 4)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            train = count_flops(train_step, model, train_net, inputs)
        saved = float(sum(seen.values()))
    return Profile(params=int(params), infer_flops=infer, train_flops=train, act_bytes=saved)


def _key(net: Net) -> str:
    return f"{net.label}|torch={torch.__version__}"


_MEMO: dict[str, Profile] = {}


def profile(net: Net, cache: Path | None = None) -> Profile:
    """The :class:`Profile` of ``net``: from memory, the disk cache, or counted now (meta device; the CPU where
    an op has no meta kernel)."""
    if net.kind not in NETWORKS:
        raise ValueError(f"unknown network kind {net.kind!r}")
    key = _key(net)
    if key in _MEMO:
        return _MEMO[key]
    cache = default_cache() if cache is None else cache
    stored = {}
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}
    if key in stored:
        _MEMO[key] = Profile(**stored[key])
        return _MEMO[key]
    try:
        prof = _measure(net, "meta")
    except (NotImplementedError, RuntimeError):
        prof = _measure(net, "cpu")
    _MEMO[key] = prof
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fresh = json.loads(cache.read_text()) if cache.exists() else {}
        fresh[key] = asdict(prof)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fresh, indent=1, sort_keys=True))
        tmp.replace(cache)
    except (OSError, ValueError):
        pass  # a read-only home: counted again next time
    return prof
