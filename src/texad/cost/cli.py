"""``texad cost`` (a config's GPU-hours before running it) and ``texad gpu-check`` (the networks measured on a GPU).

:func:`add_parsers` adds both subcommands; torch is imported only when one runs.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

__all__ = ["add_parsers", "cmd_cost", "cmd_gpu_check", "cost_table"]

_GPU_JSON = "benchmarks/gpu.json"


def cost_table(config_path: Path, device: str, precision: str, utilisation: float | None, gpu_json: Path | None,
               cache: Path | None = None, measure_cpu: bool = True):  # fmt: skip
    """(rows, device, total GPU-hours) of a config file."""
    from texad.config import load_config
    from texad.plan import Plan

    from .devices import resolve
    from .plan_cost import rule_costs

    dev = resolve(device, precision, utilisation, gpu_json)
    rows = rule_costs(Plan(load_config(Path(config_path))), dev, cache, measure_cpu)
    return rows, dev, sum(r.gpu_hours for r in rows)


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def render(rows, dev, total: float, fmt: str, title: str) -> str:
    """The table as Markdown, CSV or JSON."""
    dominant = [r.rule for r in rows if r.share >= 0.1] or [rows[0].rule]
    if fmt == "json":
        return json.dumps({
            "config": title, "device": dev.describe(), "total_gpu_hours": total, "dominant": dominant,
            "total_jobs": sum(r.jobs for r in rows),
            "rules": [{"rule": r.rule, "jobs": r.jobs, "gflop_per_job": r.gflop_per_job,
                       "cpu_peak_mb": r.cpu_peak_mb, "gpu_mem_mb_est": r.gpu_mem_mb,
                       "gpu_hours": r.gpu_hours, "share": r.share} for r in rows],
        }, indent=1)  # fmt: skip
    header = ["rule", "jobs", "GFLOP/job", "peak mem CPU MB", "est. GPU mem MB", "GPU-hours", "share %"]
    body = [
        [r.rule, str(r.jobs), _fmt(r.gflop_per_job, ",.0f"), _fmt(r.cpu_peak_mb, ",.0f"),
         _fmt(r.gpu_mem_mb, ",.0f"), _fmt(r.gpu_hours, ",.2f"), _fmt(100 * r.share, ".1f")]
        for r in rows
    ]  # fmt: skip
    body.append(["total", str(sum(r.jobs for r in rows)), "", "", "", f"{total:,.2f}", "100.0"])
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *body])
        return buf.getvalue()
    lines = [f"### {title}: {total:,.1f} GPU-hours on {dev.describe()}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", f"Dominant rules (>= 10 % of the GPU-hours): {', '.join(dominant)}", ""]
    return "\n".join(lines)


def cmd_cost(args) -> int:
    gpu_json = None if args.gpu_json == "none" else Path(args.gpu_json)
    chunks = []
    for config in args.configfile:
        rows, dev, total = cost_table(Path(config), args.device, args.precision, args.utilisation, gpu_json,
                                      None if args.cache is None else Path(args.cache), not args.no_measure)  # fmt: skip
        chunks.append(render(rows, dev, total, args.format, str(config)))
    text = "\n".join(chunks)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(args.out)
    else:
        print(text)
    return 0


def cmd_gpu_check(args) -> int:
    from .gpu_check import run_check

    result = run_check(tiny=args.tiny, out=Path(args.out), budget_s=args.budget_s, steps=args.steps)
    bad = [f"{n}/{m}" for n, net in result["networks"].items() for m, v in net["modes"].items()
           if v.get("ok") is False]  # fmt: skip
    print(f"gpu-check: wrote {args.out}" + (f"; outside tolerance: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


def add_parsers(sub) -> None:
    """Add ``cost`` and ``gpu-check`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "cost", help="a config's jobs, FLOPs, memory and GPU-hours per rule, before running it"
    )
    p.add_argument("--configfile", nargs="+", required=True, help="config YAML file(s); one table each")
    p.add_argument("--device", choices=("h100", "a100"), default="h100", help="GPU the hours are for")
    p.add_argument(
        "--precision", choices=("fp32", "tf32", "bf16"), default="bf16", help="the GPU's precision"
    )
    p.add_argument("--utilisation", type=float, default=None,
                   help="achieved / peak FLOP/s (default: measured in --gpu-json, else texad.cost.devices')")  # fmt: skip
    p.add_argument(
        "--gpu-json", default=_GPU_JSON, help=f"`make gpu-check`'s output ('none': ignore; {_GPU_JSON})"
    )
    p.add_argument("--format", choices=("md", "csv", "json"), default="md")
    p.add_argument("--out", default=None, help="write the table here instead of printing it")
    p.add_argument(
        "--cache", default=None, help="profile cache (default $TEXAD_COST_CACHE or ~/.cache/texad)"
    )
    p.add_argument("--no-measure", action="store_true", help="skip the CPU peak-memory measurement (n/a)")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser(
        "gpu-check", help="each paper-size network's speed, memory and accuracy per precision mode"
    )
    p.add_argument("--tiny", action="store_true", help="test-size networks (the CPU run of the tests)")
    p.add_argument("--out", default=_GPU_JSON, help=f"the JSON written (default {_GPU_JSON})")
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new modes after this many seconds"
    )
    p.add_argument("--steps", type=int, default=3, help="timed training steps per mode")
    p.set_defaults(func=cmd_gpu_check)
