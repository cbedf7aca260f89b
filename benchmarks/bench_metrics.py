"""Time the evaluation metrics, and their bootstrap intervals, on one synthetic class at the evaluation grid.

    python benchmarks/bench_metrics.py [--out benchmarks/metrics.json] [--n-images 150] [--size 256]

Builds ``n_images`` random float32 anomaly maps at ``size`` x ``size`` with realistic ground truth (about
a third good images; the others carry 1-4 defects: ellipses of very different sizes, thin scratches and
irregular blobs), then times every metric on its own and ``evaluate`` (all metrics sharing one sort),
reporting the median of ``--repeats`` runs.  Prints and writes a JSON record with machine information.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.ndimage as ndi
import sklearn

try:
    from texad.evaluation import metrics as M
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from texad.evaluation import metrics as M


def make_class(n_images: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image_scores, maps, masks) of one synthetic class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    masks = np.zeros((n_images, size, size), dtype=bool)
    n_good = n_images // 3
    for i in range(n_good, n_images):
        for _ in range(rng.integers(1, 5)):
            kind = rng.choice(["ellipse", "scratch", "blob"], p=[0.5, 0.2, 0.3])
            cy, cx = rng.uniform(0, size, 2)
            if kind == "ellipse":
                ry, rx = rng.uniform(0.005, 0.15, 2) * size
                t = rng.uniform(0, np.pi)
                dy, dx = yy - cy, xx - cx
                u = dy * np.cos(t) + dx * np.sin(t)
                v = -dy * np.sin(t) + dx * np.cos(t)
                masks[i] |= (u / ry) ** 2 + (v / rx) ** 2 <= 1
            elif kind == "scratch":
                t = rng.uniform(0, np.pi)
                length = rng.uniform(0.1, 0.5) * size
                width = rng.uniform(0.5, 2.5)
                dy, dx = yy - cy, xx - cx
                along = dy * np.cos(t) + dx * np.sin(t)
                across = -dy * np.sin(t) + dx * np.cos(t)
                masks[i] |= (np.abs(along) <= length / 2) & (np.abs(across) <= width)
            else:
                r = rng.uniform(0.03, 0.12) * size
                noise = ndi.gaussian_filter(rng.standard_normal((size, size)), r / 3, mode="wrap")
                noise /= noise.std() + 1e-12
                disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
                masks[i] |= disk & (noise > -0.3)
        if not masks[i].any():
            masks[i, int(size / 2), int(size / 2)] = True
    # maps: smooth texture-like background noise plus a blurred response on the defects
    background = ndi.gaussian_filter(rng.standard_normal(masks.shape).astype(np.float32), (0, 2, 2))
    response = ndi.gaussian_filter(masks.astype(np.float32), (0, 3, 3))
    maps = (background * 1.5 + 1.5 * response + rng.uniform(0, 0.3, (n_images, 1, 1))).astype(np.float32)
    image_scores = maps.reshape(n_images, -1).max(axis=1)
    return image_scores, maps, masks


def bootstrap_all(image_scores, maps, masks, labels, resamples: int) -> dict:
    """The 95 % bootstrap interval of all four metrics (image AUROC, pixel AUROC, pixel AP, AUPRO)."""
    from texad.evaluation import uncertainty as U

    weights = U.bootstrap_weights(labels, resamples, seed=0)
    values = U.pixel_metrics_resampled(U.pixel_histograms(maps, masks), weights)
    values["image_auroc"] = U.image_auroc_resampled(image_scores, labels, weights)
    return {k: U.interval(v) for k, v in values.items()}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_info() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = None
    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit_learn": sklearn.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record here")
    ap.add_argument("--n-images", type=int, default=150)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the interval timing")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    image_scores, maps, masks = make_class(args.n_images, args.size, args.seed)
    t_data = time.perf_counter() - t0
    labels = masks.reshape(args.n_images, -1).any(axis=1)

    seconds = {
        "image_auroc": median_time(lambda: M.image_auroc(image_scores, labels), args.repeats),
        "pixel_auroc": median_time(lambda: M.pixel_auroc(maps, masks), args.repeats),
        "pixel_ap": median_time(lambda: M.pixel_ap(maps, masks), args.repeats),
        "aupro": median_time(lambda: M.aupro(maps, masks), args.repeats),
        "pixel_f1_max": median_time(lambda: M.pixel_f1_max(maps, masks), args.repeats),
        "evaluate": median_time(lambda: M.evaluate(image_scores, maps, masks), args.repeats),
        f"bootstrap_intervals_{args.resamples}": median_time(
            lambda: bootstrap_all(image_scores, maps, masks, labels, args.resamples), args.repeats
        ),
    }
    result = M.evaluate(image_scores, maps, masks)
    _, n_regions = ndi.label(masks, structure=np.pad(np.ones((1, 3, 3), bool), ((1, 1), (0, 0), (0, 0))))
    record = {
        "benchmark": "texad.evaluation.metrics",
        "machine": machine_info(),
        "n_images": args.n_images,
        "n_anomalous_images": int(labels.sum()),
        "size": [args.size, args.size],
        "n_pixels": int(maps.size),
        "anomalous_pixel_fraction": float(masks.mean()),
        "n_regions": int(n_regions),
        "n_distinct_scores": int(np.unique(maps).size),
        "repeats": args.repeats,
        "statistic": "median",
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "data_generation_seconds": round(t_data, 3),
        "metrics": result,
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return record


if __name__ == "__main__":
    main()
