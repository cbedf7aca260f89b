"""Peak memory of a network's job.

- CPU, measured: one training step (forward + backward, batch 1; inference for a frozen network) at the given
  size in a fresh Python process, whose peak resident set (``ru_maxrss``) is the job's need on a CPU node
  (interpreter and torch included). Cached beside the FLOP profiles.
- GPU, estimated at the rule's batch size: a training job holds weights, gradients, Adam's two moments and an EMA
  copy (5 x 4 bytes per parameter) plus the activations saved for backward (:mod:`.flops`) x batch; an inference
  job holds the weights plus at most the same activations x batch (an upper bound: inference frees most of them).
  ``make gpu-check`` measures the real peak (``torch.cuda.max_memory_allocated``) where a GPU was lent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .flops import Profile, default_cache
from .networks import Net

__all__ = ["cpu_peak_mb", "gpu_estimate_mb", "TRAIN_BYTES_PER_PARAM"]

TRAIN_BYTES_PER_PARAM = 20  # fp32 weights, gradients, Adam m and v, EMA weights
_MB = 2**20


def gpu_estimate_mb(prof: Profile, batch: int, train: bool) -> float:
    """Estimated GPU memory (MB) of a job running ``prof``'s network at ``batch`` images (fp32)."""
    fixed = prof.params * (TRAIN_BYTES_PER_PARAM if train else 4)
    return (fixed + batch * prof.act_bytes) / _MB


def _measure_here(net: Net) -> float:
    import resource

    import torch

    from .networks import build, example, infer_step, train_step

    torch.set_num_threads(1)
    trainable = net.kind != "simplenet_features"
    kind_net = Net.of("features", **{**net.kw, "trainable": True}) if net.kind == "features" else net
    model = build(kind_net if trainable else net)
    inputs = example(net, 1)
    if trainable:
        train_step(model.train(), kind_net, inputs)
    else:
        infer_step(model, net, inputs)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def cpu_peak_mb(net: Net, cache: Path | None = None, timeout: float = 300) -> float | None:
    """Peak resident memory (MB) of one training step of ``net`` at batch 1 in a fresh process; None when the
    measurement fails (reported as missing, never guessed)."""
    cache = default_cache() if cache is None else cache
    key = f"cpu_peak|{net.label}"
    stored = {}
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except (OSError, ValueError):
            stored = {}
    if key in stored:
        return stored[key]
    arg = json.dumps({"kind": net.kind, "args": [list(a) for a in net.args]})
    try:
        out = subprocess.run([sys.executable, "-m", "texad.cost.memory", arg], capture_output=True, text=True,
                             timeout=timeout, check=True)  # fmt: skip
        value = float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None
    try:
        fresh = json.loads(cache.read_text()) if cache.exists() else {}
        fresh[key] = value
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(fresh, indent=1, sort_keys=True))
        tmp.replace(cache)
    except (OSError, ValueError):
        pass
    return value


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["args"]}
    print(_measure_here(Net.of(spec["kind"], **args)))
