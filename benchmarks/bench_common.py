"""Shared pieces of the ``make bench`` benchmarks: machine description, statistics, memory sampling and the
atomic JSON writer. Imported by ``bench_pipeline.py``, ``bench_snakemake.py`` and ``bench_summary.py``."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

try:
    import texad  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(ROOT / "src"))

from texad.atomic import atomic_write_text  # noqa: E402

__all__ = [
    "ROOT",
    "RSSSampler",
    "atomic_write_text",
    "cpu_model",
    "current_rss",
    "machine_info",
    "ratio",
    "stats",
    "write_json",
]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """The machine a figure was measured on: CPU model, cores, torch threads, GPU, versions and the load."""
    import numpy as np
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = None
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda_available": cuda,
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


def stats(values: Sequence[float]) -> dict:
    """Median and spread of repeated measurements (all values kept)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "rel_spread": None, "values": []}
    med = statistics.median(vals)
    lo, hi = min(vals), max(vals)
    return {
        "n": len(vals),
        "median": med,
        "min": lo,
        "max": hi,
        "rel_spread": (hi - lo) / med if med else None,  # (max - min) / median
        "values": vals,
    }


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return float(num) / float(den)


def write_json(path: Path, record: dict) -> Path:
    """Write ``record`` atomically (temp file in the same folder, then ``os.replace``)."""
    return atomic_write_text(Path(path), json.dumps(record, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ memory
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (``/proc/self/statm``; ru_maxrss where that is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _maxrss() -> int:
    """Peak RSS of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RSSSampler:
    """Peak RSS during a ``with`` block: a thread reads the RSS every ``interval`` seconds (torch releases the
    GIL in its kernels, so the thread keeps sampling); ``ru_maxrss`` before/after is recorded as well (it only
    moves when the block sets a new lifetime peak of the process)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.baseline = self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.maxrss_before = self.maxrss_after = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> RSSSampler:
        self.maxrss_before = _maxrss()
        self.baseline = self.peak = current_rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        self.maxrss_after = _maxrss()

    def record(self) -> dict:
        mb = 1024 * 1024
        return {
            "rss_baseline_mb": self.baseline / mb,
            "rss_peak_mb": self.peak / mb,
            "rss_peak_delta_mb": (self.peak - self.baseline) / mb,
            "ru_maxrss_before_mb": self.maxrss_before / mb,
            "ru_maxrss_after_mb": self.maxrss_after / mb,
            "ru_maxrss_delta_mb": (self.maxrss_after - self.maxrss_before) / mb,
            "rss_samples": self.samples,
            "sample_interval_s": self.interval,
        }
