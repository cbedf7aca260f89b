"""``texad gpu-check`` (``make gpu-check``): every paper-size network on the lent GPU, in fp32, bf16 (autocast),
channels_last and torch.compile: a few training steps and one inference batch each, checked against fp32.

Per network and mode it records training and inference images/s, the peak memory
(``torch.cuda.max_memory_allocated``; on a CPU the process's peak resident set), the inference output's largest
error relative to fp32 (max |out - ref| / max |ref|) against a stated tolerance, the achieved TFLOP/s (the FLOPs
of :mod:`.flops` x images/s) and the utilisation against the device's peak for that precision. The result is
``benchmarks/gpu.json`` (format in :mod:`texad.cost.devices`' reader), whose utilisation ``texad cost`` then uses
in place of its default.

fp32 modes run in strict fp32 (TF32 off), so their utilisation is against the FP32 peak. Modes run network by
network, compile last (it takes the longest); a mode that would start after ``budget_s`` is skipped with the
reason recorded, so the whole check ends in under 8 minutes. ``--tiny`` runs the test-size networks (the CPU
tests; bf16 autocast on the CPU, no compile) and marks the file ``tiny`` so that ``texad cost`` never reads it.
"""

from __future__ import annotations

import datetime as _dt
import json
import resource
import time
from pathlib import Path

import torch

from .devices import DEVICES, NAME_MATCH
from .flops import profile
from .networks import Net, build, example, paper_networks, tiny_networks

__all__ = ["MODES", "TOLERANCE", "BATCH", "run_check", "relative_error"]

MODES = ("fp32", "bf16", "channels_last", "compile")
#: relative error allowed against fp32: fp32 layouts / compiled kernels reorder sums (1e-3 covers them at these
#: depths); bf16 keeps 8 mantissa bits (2^-8 = 0.4 % per op), so a deep network's output may drift a few percent
TOLERANCE = {"fp32": 1e-3, "channels_last": 1e-3, "compile": 1e-3, "bf16": 5e-2}
#: images per batch at paper size (the rules' batch sizes, Method B/A inference 16)
BATCH = {"ddpm_unet": 8, "ncsnpp": 8, "draem": 8, "wide_resnet101_2": 16, "simplenet_wide_resnet50_2": 8,
         "simplenet_head": 8}  # fmt: skip
TINY_BATCH = 2


def relative_error(out, ref) -> float:
    """max |out - ref| / max |ref| over every output tensor (0 when both are identical)."""
    outs = out if isinstance(out, (list, tuple)) else [out]
    refs = ref if isinstance(ref, (list, tuple)) else [ref]
    err = max(float((o.float() - r.float()).abs().max()) for o, r in zip(outs, refs, strict=True))
    scale = max(float(r.float().abs().max()) for r in refs)
    return err / scale if scale > 0 else err


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _trainable(net: Net) -> Net | None:
    if net.kind == "simplenet_features":
        return None
    if net.kind == "features":
        return Net.of("features", **{**net.kw, "trainable": True})
    return net


def _forward(model, net: Net, inputs):
    from .networks import infer_step

    return infer_step(model, net, inputs)


def _train_loss(model, net: Net, inputs):
    if net.kind == "simplenet_head":
        real = model.adaptor(inputs[0])
        out = model.disc(torch.cat([real, real + 0.015 * torch.randn_like(real)]))
    else:
        out = model(*inputs)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(o.float().square().mean() for o in outs)


def _run_mode(net: Net, mode: str, dev: torch.device, batch: int, steps: int, state: dict, ref):
    """(record, inference output) of one network in one mode."""
    torch.manual_seed(0)
    with torch.device(dev):
        model = build(net)
    model.load_state_dict(state)
    inputs = state_inputs(net, batch, dev)
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(t.to(memory_format=torch.channels_last) if t.ndim == 4 else t for t in inputs)
    autocast = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if mode == "bf16"
        else torch.autocast(dev.type, enabled=False)
    )
    run_model = torch.compile(model) if mode == "compile" else model
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    # inference: one warm-up batch, then one timed batch
    with autocast:
        _forward(run_model, net, inputs)
        _sync(dev)
        t0 = time.perf_counter()
        out = _forward(run_model, net, inputs)
        _sync(dev)
    infer_s = time.perf_counter() - t0
    record = {"infer_images_per_s": batch / infer_s if infer_s > 0 else None}
    train_net = _trainable(net)
    if train_net is not None:
        if net.kind == "features":
            with torch.device(dev):
                tmodel = build(train_net)
            tmodel.load_state_dict(state)
            if mode == "channels_last":
                tmodel = tmodel.to(memory_format=torch.channels_last)
            run_train = torch.compile(tmodel) if mode == "compile" else tmodel
        else:
            tmodel, run_train = model, run_model
        tmodel.train()
        opt = torch.optim.Adam(tmodel.parameters(), lr=1e-6)
        elapsed = 0.0
        for i in range(steps + 1):  # the first step warms up (and compiles)
            _sync(dev)
            t0 = time.perf_counter()
            with autocast:
                loss = _train_loss(run_train, train_net, inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(dev)
            if i:
                elapsed += time.perf_counter() - t0
        record["train_images_per_s"] = steps * batch / elapsed if elapsed > 0 else None
    else:
        record["train_images_per_s"] = None
    record["peak_memory_mb"] = _peak_mb(dev)
    record["max_abs_err_vs_fp32"] = 0.0 if ref is None else relative_error(out, ref)
    record["tolerance"] = TOLERANCE[mode]
    record["ok"] = record["max_abs_err_vs_fp32"] <= TOLERANCE[mode]
    return record, out


def state_inputs(net: Net, batch: int, dev: torch.device):
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    inputs = example(net, batch, "cpu")
    torch.random.set_rng_state(gen_state)
    return tuple(t.to(dev) for t in inputs)


def _peak_tflops(device_name: str, mode: str) -> float | None:
    precision = "bf16" if mode == "bf16" else "fp32"
    for key, match in NAME_MATCH.items():
        if match in device_name:
            return DEVICES[key][precision]
    return None


def run_check(
    *, tiny: bool, out: Path, budget_s: float = 420.0, steps: int = 3, only: tuple[str, ...] | None = None
) -> dict:
    """Measure every network (``only``: those named) in every mode and write ``out`` (JSON); returns it."""
    cuda = torch.cuda.is_available()
    if not cuda and not tiny:
        raise SystemExit("gpu-check: no CUDA device; run `texad gpu-check --tiny` on a CPU (test size only)")
    dev = torch.device("cuda" if cuda else "cpu")
    if cuda:  # strict fp32 for the fp32 modes: their utilisation is against the FP32 peak
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    nets = tiny_networks() if tiny else paper_networks()
    if only:
        unknown = sorted(set(only) - set(nets))
        if unknown:
            raise ValueError(f"gpu-check: unknown networks {unknown}; choose from {sorted(nets)}")
        nets = {k: v for k, v in nets.items() if k in only}
    modes = [m for m in MODES if not (tiny and m == "compile")]
    start = time.perf_counter()
    result = {
        "device": name, "kind": dev.type, "torch": torch.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "tiny": bool(tiny),
        "budget_s": budget_s, "networks": {},
    }  # fmt: skip
    refs, states = {}, {}
    for label, net in nets.items():
        batch = TINY_BATCH if tiny else BATCH[label]
        prof = profile(net)
        torch.manual_seed(0)
        with torch.device(dev):
            states[label] = build(net).state_dict()
        size = net.kw.get("image_size")
        result["networks"][label] = {"network": net.label, "image_size": size, "batch_size": batch,
                                     "gflop_fwd_per_image": prof.infer_flops / 1e9,
                                     "gflop_train_per_image": prof.train_flops / 1e9, "modes": {}}  # fmt: skip
    order = [(label, m) for m in modes if m != "compile" for label in nets]
    order += [(label, "compile") for label in nets if "compile" in modes]
    for label, mode in order:
        entry = result["networks"][label]
        if time.perf_counter() - start > budget_s:
            entry["modes"][mode] = {"skipped": f"time budget of {budget_s:g} s spent"}
            continue
        net = nets[label]
        try:
            record, output = _run_mode(
                net, mode, dev, entry["batch_size"], steps, states[label], refs.get(label)
            )
        except Exception as exc:  # noqa: BLE001 - a mode that fails is recorded, the check goes on
            entry["modes"][mode] = {"skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
            continue
        if mode == "fp32":
            refs[label] = output
            # fp32 against itself, a second run: the check's own determinism (0 on a CPU)
            record["max_abs_err_vs_fp32"] = relative_error(_run_mode(net, mode, dev, entry["batch_size"], 0,
                                                                     states[label], None)[1], output)  # fmt: skip
            record["ok"] = record["max_abs_err_vs_fp32"] <= TOLERANCE["fp32"]
        peak = _peak_tflops(name, mode)
        rates = [(entry["gflop_train_per_image"], record["train_images_per_s"]),
                 (entry["gflop_fwd_per_image"], record["infer_images_per_s"])]  # fmt: skip
        achieved = [g * r / 1e3 for g, r in rates if g and r]
        record["achieved_tflops"] = max(achieved) if achieved else None
        record["utilisation"] = (
            sum(achieved) / len(achieved) / peak if achieved and peak and not tiny else None
        )
        entry["modes"][mode] = record
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    return result
