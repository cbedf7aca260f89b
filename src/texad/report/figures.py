"""Publication figures from the runs' maps files and result JSONs, each written as PNG and PDF (atomically).

* :func:`figure_grid`: Figure 1 of a class: original | reconstruction | ground truth | anomaly map per method;
* :func:`roc_figure`: image-level and pixel-level ROC curves of a class, one curve per method;
* :func:`ablation_figure`: Method A's T-scales curves or Method B's guidance curves, dataset means;
* :func:`speed_accuracy_figure`: cost (NFE/image, images/s) against image AUROC, every method and variant.

Every figure function returns the numbers it plotted (:func:`image_roc`, :func:`pixel_roc`,
:func:`ablation_curves`, :func:`speed_accuracy_points` compute them alone), so captions and tests can check them
against the inputs. matplotlib is imported only when a figure is drawn (Agg backend).
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from texad.atomic import atomic_write
from texad.config.settings import per_class
from texad.data.layout import find_mask, image_metrics_only
from texad.report.contact_sheet import _load, _load_mask
from texad.results.ablation import REFERENCE_VARIANT, _seed_std, ablation_table
from texad.results.aggregate import collect
from texad.results.record import method_block, read_result

__all__ = [
    "DPI",
    "MapsFile",
    "Roc",
    "RocCurves",
    "AblationCurves",
    "load_maps",
    "select_rows",
    "grid_figsize",
    "figure_grid",
    "image_roc",
    "pixel_roc",
    "roc_figure",
    "ablation_curves",
    "ablation_figure",
    "speed_accuracy_points",
    "speed_accuracy_figure",
]

DPI = 150
#: Figure-1 grid geometry (inches): one square tile per panel, a fixed margin for row labels and column titles.
GRID_TILE_IN = 1.3
GRID_GAP_IN = 0.04
GRID_LEFT_IN = 0.3
GRID_TOP_IN = 0.55
GRID_COLUMNS = ("original", "reconstruction", "ground truth", "anomaly map")

_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays editable and searchable in the paper
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_MARKERS = {"method_a": "o", "method_b": "s", "simplenet": "^", "draem": "D"}
_EXTRA_MARKERS = ("v", "P", "X", "*", "<", ">")
_T_SCALES_VARIANT = re.compile(r"^K\d+_n\d+_s[0-9.eE+-]+$")
_POINT_KEYS = ("w", "s", "blur_sigma", "t_start")
_METRIC_LABEL = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC"}


# ----------------------------------------------------------------------------------------------- output
def _pyplot():
    """pyplot on the Agg backend: figures are files, never windows (also on a headless cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: str | Path, out_pdf: str | Path) -> tuple[Path, Path]:
    """Both files atomically (a killed job leaves no half figure), then close the figure to free its memory."""
    plt = _pyplot()
    try:
        png = atomic_write(
            out_png,
            lambda fh: fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None}),
            binary=True,
        )
        pdf = atomic_write(
            out_pdf, lambda fh: fig.savefig(fh, format="pdf", metadata={"CreationDate": None}), binary=True
        )
    finally:
        plt.close(fig)
    return png, pdf


# ----------------------------------------------------------------------------------------------- maps files
@dataclass(frozen=True)
class MapsFile:
    """One run's maps file (``texad.methods.run.save_maps``), checked for consistent lengths."""

    path: Path
    maps: np.ndarray  # (N, H, W) float32, on the evaluation grid
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) 0 normal / 1 anomalous
    paths: tuple[str, ...]  # test image paths, relative to the repository root
    reconstructions: np.ndarray | None  # (N, h, w, 3) uint8 for the diffusion methods
    masks: np.ndarray | None = None  # (N, H, W) bool on the grid; None in older maps files

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.maps.shape[1]), int(self.maps.shape[2])


def load_maps(path: str | Path) -> MapsFile:
    """Read and check a maps file; a missing, unreadable or inconsistent file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"maps file {path} does not exist; run the method first (it writes "
            "results/maps/<dataset>/<class>/<method>/<variant>/seed<k>.npz)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"maps file {path} is not a readable .npz file ({exc}); rerun the method to rewrite it"
        ) from exc
    missing = [k for k in ("maps", "scores", "labels", "paths") if k not in arrays]
    if missing:
        raise ValueError(
            f"maps file {path} lacks {', '.join(missing)}; it must be written by texad.methods.run.save_maps"
        )
    maps, n = arrays["maps"], len(arrays["scores"])
    recon, masks = arrays.get("reconstructions"), arrays.get("masks")
    problems = []
    if maps.ndim != 3 or len(maps) != n:
        problems.append(f"maps has shape {maps.shape}, expected ({n}, H, W)")
    if len(arrays["labels"]) != n or len(arrays["paths"]) != n:
        problems.append(
            f"labels ({len(arrays['labels'])}) and paths ({len(arrays['paths'])}) must number {n}"
        )
    if not np.isin(arrays["labels"], (0, 1)).all():
        problems.append("labels must be 0 or 1")
    if recon is not None and (recon.ndim != 4 or len(recon) != n):
        problems.append(f"reconstructions has shape {recon.shape}, expected ({n}, h, w, 3)")
    if masks is not None and masks.shape != maps.shape:
        problems.append(f"masks has shape {masks.shape}, expected the maps' {maps.shape}")
    if n == 0:
        problems.append("it holds no test image")
    if problems:
        raise ValueError(f"invalid maps file {path}: " + "; ".join(problems))
    return MapsFile(
        path=path,
        maps=maps.astype(np.float32),
        scores=arrays["scores"].astype(np.float64),
        labels=arrays["labels"].astype(np.int64),
        paths=tuple(str(p) for p in arrays["paths"]),
        reconstructions=recon,
        masks=None if masks is None else masks.astype(bool),
    )


def _default_label(path: Path) -> str:
    """The method folder of ``.../<method>/<variant>/seed<k>.npz``, the name a reader knows the run by."""
    return path.parent.parent.name or path.stem


def _labels_for(files: Sequence[MapsFile], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [_default_label(f.path) for f in files]
    if len(labels) != len(files):
        raise ValueError(
            f"got {len(labels)} labels ({', '.join(labels)}) for {len(files)} maps files; give one each"
        )
    return list(labels)


def _image_path(rel: str, root: Path) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def ground_truth(rel: str, label: int, root: Path, shape: tuple[int, int]) -> np.ndarray:
    """The boolean mask of one test image on the map grid (all False for a normal image)."""
    if not label:
        return np.zeros(shape, bool)
    image = _image_path(rel, root)
    class_dir, defect = image.parent.parent.parent, image.parent.name
    mask = find_mask(class_dir, defect, image)
    if mask is None and image_metrics_only(class_dir):  # a user's class without masks
        return np.zeros(shape, bool)
    if mask is None:
        expected = class_dir / "ground_truth" / defect / f"{image.stem}_mask.png"
        raise FileNotFoundError(
            f"no ground-truth mask for {image}: expected {expected}; pass --root as the folder the maps' "
            "image paths are relative to (the repository root)"
        )
    return _load_mask(mask, shape)


# ----------------------------------------------------------------------------------------------- Figure 1
def select_rows(paths: Sequence[str], labels: Sequence[int], n_rows: int = 5) -> list[int]:
    """Indices of the grid's test images: defective ones first, one per defect type in turn (the first image
    by path of each), then normal images up to ``n_rows`` (one normal row is kept when there are normal ones)."""
    if n_rows < 1:
        raise ValueError(f"rows must be >= 1, got {n_rows}")
    order = sorted(range(len(paths)), key=lambda i: paths[i])
    good = [i for i in order if not labels[i]]
    by_defect: dict[str, list[int]] = {}
    for i in order:
        if labels[i]:
            by_defect.setdefault(Path(paths[i]).parent.name, []).append(i)
    n_defective = n_rows - 1 if good else n_rows
    chosen: list[int] = []
    for k in range(max((len(v) for v in by_defect.values()), default=0)):
        chosen += [v[k] for _, v in sorted(by_defect.items()) if k < len(v)]
    chosen = chosen[:n_defective]
    return chosen + good[: n_rows - len(chosen)]


def grid_figsize(n_methods: int, n_rows: int, aspect: float = 1.0) -> tuple[float, float]:
    """Figure size (inches) of a grid: 4 tiles per method across, ``n_rows`` down, tiles ``aspect`` = H / W."""
    ncols = len(GRID_COLUMNS) * n_methods
    tile_h = GRID_TILE_IN * aspect
    width = GRID_LEFT_IN + ncols * GRID_TILE_IN + (ncols - 1) * GRID_GAP_IN
    height = GRID_TOP_IN + n_rows * tile_h + (n_rows - 1) * GRID_GAP_IN + 0.05
    return width, height


def _to_grid(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An image resized to the map grid, so that every panel of a row shows the same pixels."""
    if img.shape[:2] == shape:
        return img
    return np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.BILINEAR))


def _original(rel: str, root: Path, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    image = _image_path(rel, root)
    if not image.is_file():
        raise FileNotFoundError(
            f"test image {image} (listed in the maps file) does not exist; pass --root as the folder the "
            "maps' image paths are relative to (the repository root)"
        )
    img, gray = _load(image)
    return _to_grid(img, shape), gray


def _map_range(maps: np.ndarray) -> tuple[float, float]:
    """One colour scale per method (robust percentiles of all its maps), so rows compare with each other."""
    lo, hi = np.percentile(maps, [1.0, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def _blank(ax, text: str) -> None:
    ax.set_facecolor("0.92")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=7, color="0.4")


def _draw_row(axes, mf: MapsFile, i: int, root: Path, vrange: tuple[float, float]) -> None:
    """The four panels of one test image for one method."""
    shape = mf.grid
    img, gray = _original(mf.paths[i], root, shape)
    kw = {"cmap": "gray", "vmin": 0, "vmax": 255} if gray else {}
    axes[0].imshow(img, interpolation="nearest", **kw)
    if mf.reconstructions is not None:
        rec = _to_grid(np.ascontiguousarray(mf.reconstructions[i]).astype(np.uint8), shape)
        axes[1].imshow(rec, interpolation="nearest")
    else:
        _blank(axes[1], "n/a")
    mask = ground_truth(mf.paths[i], int(mf.labels[i]), root, shape)
    axes[2].imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    base = img if gray else np.asarray(Image.fromarray(img).convert("L"))
    axes[3].imshow(base, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[3].imshow(
        mf.maps[i], cmap="jet", alpha=0.5, vmin=vrange[0], vmax=vrange[1], interpolation="bilinear"
    )


def _matched(files: Sequence[MapsFile], rows: list[int]) -> list[list[int]]:
    """For every file, the indices of the first file's chosen images (rows must show the same image)."""
    wanted = [files[0].paths[i] for i in rows]
    out = []
    for mf in files:
        where = {p: k for k, p in enumerate(mf.paths)}
        missing = [p for p in wanted if p not in where]
        if missing:
            raise ValueError(
                f"maps file {mf.path} lacks test images of {files[0].path} ({', '.join(missing[:3])}); "
                "give the maps of one class and seed"
            )
        out.append([where[p] for p in wanted])
    return out


def figure_grid(
    maps: Sequence[str | Path],
    out_png: str | Path,
    out_pdf: str | Path,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    rows: int = 5,
    root: str | Path = ".",
) -> dict:
    """Figure 1 of one class: per method (one maps file each) the columns original | reconstruction | ground
    truth | anomaly map (heat overlay), for the test images of :func:`select_rows`. Returns the drawn layout."""
    if not maps:
        raise ValueError("figure-grid needs at least one maps file")
    files = [load_maps(p) for p in maps]
    names = _labels_for(files, labels)
    root = Path(root)
    chosen = select_rows(files[0].paths, files[0].labels, rows)
    indices = _matched(files, chosen)
    h, w = files[0].grid
    plt = _pyplot()
    with plt.rc_context({**_STYLE, "axes.grid": False}):
        width, height = grid_figsize(len(files), len(chosen), h / w)
        ncols = len(GRID_COLUMNS) * len(files)
        fig, axes = plt.subplots(len(chosen), ncols, figsize=(width, height), squeeze=False)
        fig.subplots_adjust(
            left=GRID_LEFT_IN / width,
            right=1.0,
            bottom=0.05 / height,
            top=1.0 - GRID_TOP_IN / height,
            wspace=GRID_GAP_IN / GRID_TILE_IN,
            hspace=GRID_GAP_IN / (GRID_TILE_IN * h / w),
        )
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        for m, (mf, name) in enumerate(zip(files, names, strict=True)):
            vrange = _map_range(mf.maps)
            for c, col in enumerate(GRID_COLUMNS):
                axes[0, 4 * m + c].set_title(f"{name}\n{col}" if c == 0 else f"\n{col}", fontsize=7)
            for r, i in enumerate(indices[m]):
                _draw_row(axes[r, 4 * m : 4 * m + 4], mf, i, root, vrange)
        for r, i in enumerate(chosen):
            p = Path(files[0].paths[i])
            axes[r, 0].set_ylabel(f"{p.parent.name}/{p.stem}", fontsize=6)
        if title:
            fig.suptitle(title, fontsize=9, y=1.0 - 0.02 / height, va="top")
        png, pdf = _save(fig, out_png, out_pdf)
    return {"png": png, "pdf": pdf, "rows": [files[0].paths[i] for i in chosen], "methods": names,
            "figsize": (width, height)}  # fmt: skip


# ----------------------------------------------------------------------------------------------- ROC
@dataclass(frozen=True)
class Roc:
    """One ROC curve as plotted (sklearn's points) and its AUROC."""

    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float


@dataclass(frozen=True)
class RocCurves:
    label: str
    path: Path
    image: Roc
    pixel: Roc | None  # None: the class has no masks (image metrics only)
    n_pixels: int  # pixels behind the pixel-level curve (after subsampling)


def _roc(y: np.ndarray, s: np.ndarray, what: str) -> Roc:
    from sklearn.metrics import roc_auc_score, roc_curve

    if not np.isfinite(s).all():
        raise ValueError(f"{what}: scores hold NaN or infinite values; rerun the method")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"{what}: a ROC curve needs normal and anomalous samples, found only label {int(y[0])}"
        )
    fpr, tpr, _ = roc_curve(y, s)
    return Roc(fpr=fpr, tpr=tpr, auroc=float(roc_auc_score(y, s)))


def image_roc(mf: MapsFile) -> Roc:
    """Image-level ROC of a run from its image scores."""
    return _roc(mf.labels, mf.scores, f"maps file {mf.path} (image level)")


def pixel_roc(
    mf: MapsFile, root: str | Path = ".", *, max_pixels: int = 2_000_000, seed: int = 0
) -> tuple[Roc | None, int]:
    """Pixel-level ROC of a run's maps against the ground-truth masks on the map grid; above ``max_pixels``
    pixels a fixed-seed uniform subsample is used (same pixels on every call). Returns the curve and pixel count;
    (None, 0) for a user's class without masks."""
    root = Path(root)
    masks = np.stack(
        [ground_truth(p, int(y), root, mf.grid) for p, y in zip(mf.paths, mf.labels, strict=True)]
    )
    if not masks.any() and image_metrics_only(_image_path(mf.paths[0], root).parent.parent.parent):
        return None, 0
    y, s = masks.ravel(), mf.maps.ravel()
    if len(y) > max_pixels:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), size=max_pixels, replace=False))
        y, s = y[keep], s[keep]
    return _roc(y.astype(np.int64), s.astype(np.float64), f"maps file {mf.path} (pixel level)"), len(y)


def roc_curves(
    maps: Sequence[str | Path],
    labels: Sequence[str] | None = None,
    root: str | Path = ".",
    *,
    max_pixels: int = 2_000_000,
) -> list[RocCurves]:
    """Image- and pixel-level ROC of every maps file (one per method), in the given order."""
    if not maps:
        raise ValueError("roc-curves needs at least one maps file")
    files = [load_maps(p) for p in maps]
    out = []
    for mf, name in zip(files, _labels_for(files, labels), strict=True):
        pix, n = pixel_roc(mf, root, max_pixels=max_pixels)
        out.append(RocCurves(label=name, path=mf.path, image=image_roc(mf), pixel=pix, n_pixels=n))
    return out


def roc_figure(
    maps: Sequence[str | Path],
    out_png: str | Path,
    out_pdf: str | Path,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    root: str | Path = ".",
    max_pixels: int = 2_000_000,
) -> list[RocCurves]:
    """Two panels (image level, pixel level), one curve per method with its AUROC in the legend."""
    curves = roc_curves(maps, labels, root, max_pixels=max_pixels)
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
        for ax, level in zip(axes, ("image", "pixel"), strict=True):
            for c in curves:
                roc = getattr(c, level)
                if roc is not None:
                    ax.plot(roc.fpr, roc.tpr, lw=1.2, label=f"{c.label} (AUROC {100 * roc.auroc:.1f})")
            if all(getattr(c, level) is None for c in curves):
                ax.text(0.5, 0.5, "no masks:\nimage metrics only", ha="center", va="center")
            ax.plot([0, 1], [0, 1], ls=":", lw=0.8, color="0.5")
            ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
            ax.set_title(f"{level}-level ROC")
            ax.set_aspect("equal")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower right", frameon=False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        _save(fig, out_png, out_pdf)
    return curves


# ----------------------------------------------------------------------------------------------- ablations
@dataclass(frozen=True)
class AblationCurves:
    """Plotted points (``dataset, axis, line, x, nfe_per_image, n_runs, <metric>, <metric>_std, has_default``)
    and per-dataset reference values (Method A's ``full_chain``; empty for Method B)."""

    method: str
    points: pd.DataFrame
    reference: pd.DataFrame


def _runs_of(df: pd.DataFrame, method: str) -> pd.DataFrame:
    runs = df[df["method"] == method].reset_index(drop=True)
    if runs.empty:
        found = ", ".join(sorted(df["method"].unique()))
        raise ValueError(
            f"no {method} results among the given result files (found: {found}); give its runs folder"
        )
    return runs


def _stats(runs: pd.DataFrame, keys: list[str], metrics: Iterable[str]) -> pd.DataFrame:
    """Per group: the mean over runs (classes x seeds) and the std over seeds of the per-seed class mean, as in
    the ablation table."""
    rows = []
    for key, g in runs.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        row["nfe_per_image"] = float(g["nfe_per_image"].mean())
        row["n_runs"] = len(g)
        for m in metrics:
            row[m] = float(g[m].mean())
            row[f"{m}_std"] = _seed_std(g, m)
        row["has_default"] = bool((g["variant"] == "default").any())
        rows.append(row)
    return pd.DataFrame(rows)


def _method_a_settings(path: str) -> dict:
    """The T-scales settings of a Method A run (``extra.config``, ``evaluation.switches.mode``)."""
    result = read_result(path)
    inf = method_block(result).get("inference") or {}
    if "n_scales" not in inf or "steps_per_scale" not in inf:
        raise ValueError(
            f"result {path} lacks extra.config.methods.method_a.inference.n_scales / steps_per_scale; it is not a "
            "Method A run written by texad (rerun it)"
        )
    mode = (result["evaluation"].get("switches") or {}).get("mode") or inf.get("mode")
    return {"mode": mode, "n_scales": int(inf["n_scales"]), "steps_per_scale": int(inf["steps_per_scale"]),
            "sigma_hi": float(inf.get("sigma_hi", math.nan))}  # fmt: skip


def _method_a_curves(df: pd.DataFrame) -> AblationCurves:
    """Image/pixel AUROC against n_scales, one line per steps_per_scale, among the T-scales variants that keep
    the default's sigma_hi (the ``K<n>_n<s>_s<sigma>`` points of the one-factor ablation, plus ``default``)."""
    runs = _runs_of(df, "method_a")
    runs = pd.concat([runs, pd.DataFrame([_method_a_settings(p) for p in runs["path"]])], axis=1)
    family = runs[(runs["mode"] == "t_scales") & ((runs["variant"] == "default")
                                                   | runs["variant"].str.match(_T_SCALES_VARIANT))]  # fmt: skip
    keep = []
    for _, ds in family.groupby("dataset"):
        base = ds.loc[ds["variant"] == "default", "sigma_hi"]
        sigma = base.iloc[0] if len(base) else ds["sigma_hi"].mode().iloc[0]
        keep.append(ds[np.isclose(ds["sigma_hi"], sigma)])
    family = pd.concat(keep) if keep else family
    metrics = ("image_auroc", "pixel_auroc")
    points = _stats(family.assign(axis="n_scales", line=family["steps_per_scale"], x=family["n_scales"]),
                    ["dataset", "axis", "line", "x"], metrics)  # fmt: skip
    ref = runs[runs["variant"] == REFERENCE_VARIANT["method_a"]]
    reference = _stats(ref, ["dataset"], metrics) if len(ref) else pd.DataFrame()
    if points.empty:
        raise ValueError(
            "no Method A T-scales runs (variants default or K<n>_n<s>_s<sigma>) among the results"
        )
    return AblationCurves("method_a", points, reference)


def _parse_point(value) -> dict | None:
    """A guidance point (w, s, blur_sigma, t_start and map_terms) from inference settings or a point name
    (``w4_s0.5_blur3_t250``, ``..._pixel``), None when neither."""
    from texad.methods.method_b import parse_point

    if isinstance(value, Mapping) and all(k in value for k in _POINT_KEYS):
        return {**{k: float(value[k]) for k in _POINT_KEYS}, "map_terms": value.get("map_terms", "both")}
    if isinstance(value, str):
        try:
            point = parse_point(value)
        except ValueError:
            return None
        return {**{k: float(point[k]) for k in _POINT_KEYS}, "map_terms": point["map_terms"]}
    return None


def _method_b_point(path: str) -> dict:
    """A Method B run's (w, s, blur_sigma, t_start): ``extra.ablation_point``, else its inference settings,
    else its variant name."""
    result = read_result(path)
    inference = dict(method_block(result).get("inference") or {})
    if "w" in inference:  # a per-class value: the run's class's
        inference["w"] = per_class(inference["w"], result["class"])
    for candidate in ((result.get("extra") or {}).get("ablation_point"), inference, result["variant"]):
        point = _parse_point(candidate)
        if point is not None:
            return point
    raise ValueError(
        f"result {path}: cannot tell its guidance point (no extra.ablation_point, extra.config inference "
        "or point-named variant such as w4_s0.5_blur3_t250); rerun it with the current texad"
    )


def _method_b_curves(df: pd.DataFrame) -> AblationCurves:
    """Image AUROC against w (others at the class's default) and against s (w at the class's own default w);
    a class's default run is its point on both axes."""
    runs = _runs_of(df, "method_b")
    runs = pd.concat([runs, pd.DataFrame([_method_b_point(p) for p in runs["path"]])], axis=1)
    defaults = runs[runs["variant"] == "default"].drop_duplicates(["dataset", "class"])
    lacking = sorted(set(zip(runs["dataset"], runs["class"], strict=True))
                     - set(zip(defaults["dataset"], defaults["class"], strict=True)))  # fmt: skip
    if lacking:
        d, c = lacking[0]
        raise ValueError(
            f"no method_b default run of {d}/{c} among the results (results/runs/{d}/{c}/method_b/default/"
            "seed<k>.json): the curves are drawn around each class's default point"
        )
    keys = [*_POINT_KEYS, "map_terms"]
    base = defaults[["dataset", "class", *keys]].rename(columns={k: f"{k}_def" for k in keys})
    runs = runs.merge(base, on=["dataset", "class"], how="left")
    # a point equal to the class's default is the default run itself: count it once
    runs = runs.sort_values("variant", key=lambda v: v != "default", kind="stable")
    runs = runs.drop_duplicates(["dataset", "class", "seed", *keys])
    same = {k: np.isclose(runs[k], runs[f"{k}_def"]) for k in _POINT_KEYS}
    same["map_terms"] = (
        runs["map_terms"] == runs["map_terms_def"]
    )  # a one-term map is not on the w or s curve
    parts = []
    for axis, other in (("w", "s"), ("s", "w")):
        on_axis = same[other] & same["blur_sigma"] & same["t_start"] & same["map_terms"]
        parts.append(runs[on_axis].assign(axis=axis, line="", x=runs.loc[on_axis, axis]))
    points = _stats(pd.concat(parts), ["dataset", "axis", "line", "x"], ("image_auroc", "pixel_auroc"))
    return AblationCurves("method_b", points, pd.DataFrame())


def ablation_curves(df: pd.DataFrame, method: str) -> AblationCurves:
    """The dataset-mean curves of ``method``'s ablation from the long table of
    :func:`texad.results.aggregate.collect`."""
    if method == "method_a":
        return _method_a_curves(df)
    if method == "method_b":
        return _method_b_curves(df)
    raise ValueError(f"ablation curves exist for method_a and method_b, not {method!r}")


def _errorbar(ax, pts: pd.DataFrame, metric: str, **kw) -> None:
    yerr = pts[f"{metric}_std"].to_numpy()
    ax.errorbar(
        pts["x"], pts[metric], yerr=None if np.isnan(yerr).all() else yerr, capsize=2, lw=1.1, ms=4, **kw
    )


def _ring_defaults(ax, pts: pd.DataFrame, metric: str) -> None:
    """Circle the points that hold the default runs, so the configured setting stands out on the curve."""
    dflt = pts[pts["has_default"]]
    if len(dflt):
        ax.scatter(
            dflt["x"], dflt[metric], s=70, facecolors="none", edgecolors="k", zorder=3, label="default"
        )


def _log_axis(ax, base: float = 10) -> None:
    """A log x axis labelled with plain numbers (1, 2, 40), not powers."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.set_xscale("log", base=base)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_method_a(
    axes, points: pd.DataFrame, reference: pd.DataFrame, dataset: str, annotate_nfe: bool
) -> None:
    for ax, metric in zip(axes, ("image_auroc", "pixel_auroc"), strict=True):
        if not np.isfinite(points[metric].to_numpy(dtype=float)).any():  # users' classes without masks
            ax.text(
                0.5, 0.5, "no masks:\nimage metrics only", ha="center", va="center", transform=ax.transAxes
            )
            ax.set(title=f"{dataset}: {_METRIC_LABEL[metric]}", xticks=[], yticks=[])
            continue
        for line, pts in points.groupby("line"):
            _errorbar(ax, pts, metric, marker="o", label=f"{line} step{'s' if line != 1 else ''}/scale")
            _ring_defaults(ax, pts, metric)
            if annotate_nfe:
                for x, y, nfe in pts[["x", metric, "nfe_per_image"]].itertuples(index=False):
                    if np.isfinite(nfe):
                        ax.annotate(
                            f"{nfe:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=5.5
                        )
        ref = reference[reference["dataset"] == dataset] if len(reference) else reference
        if len(ref):
            r = ref.iloc[0]
            nfe = f", {r['nfe_per_image']:g} NFE" if np.isfinite(r["nfe_per_image"]) else ""
            ax.axhline(r[metric], ls="--", color="0.3", lw=1.0, label=f"full chain{nfe}")
        _log_axis(ax, base=2)
        ax.set_xticks(sorted(points["x"].unique()))
        ax.margins(x=0.1)
        ax.set(xlabel="T scales (n_scales)" + (" [labels: NFE/image]" if annotate_nfe else ""),
               ylabel=_METRIC_LABEL[metric], title=f"{dataset}: {_METRIC_LABEL[metric]}")  # fmt: skip
        ax.legend(frameon=False)


def _draw_method_b(axes, points: pd.DataFrame, dataset: str) -> None:
    for ax, axis in zip(axes, ("w", "s"), strict=True):
        pts = points[points["axis"] == axis].sort_values("x")
        _errorbar(ax, pts, "image_auroc", marker="s", color="C1")
        _ring_defaults(ax, pts, "image_auroc")
        other = "s" if axis == "w" else "w"
        ax.set(xlabel=f"guidance {axis} ({other} at the class default)", ylabel="image AUROC",
               title=f"{dataset}: image AUROC vs {axis}")  # fmt: skip
        ax.legend(frameon=False)


def ablation_figure(
    results: str | Path | Iterable[str | Path],
    method: str,
    out_png: str | Path,
    out_pdf: str | Path,
    *,
    title: str | None = None,
    annotate_nfe: bool = True,
) -> AblationCurves:
    """One row per dataset (mean over classes, error bars: std over seeds): Method A's AUROC against the number
    of T scales (full chain dashed), or Method B's image AUROC against w and against s."""
    curves = ablation_curves(collect(results), method)
    datasets = sorted(curves.points["dataset"].unique())
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(datasets), 2, figsize=(6.4, 2.8 * len(datasets)), squeeze=False)
        for row, dataset in zip(axes, datasets, strict=True):
            pts = curves.points[curves.points["dataset"] == dataset]
            if method == "method_a":
                _draw_method_a(row, pts, curves.reference, dataset, annotate_nfe)
            else:
                _draw_method_b(row, pts, dataset)
        fig.suptitle(title or f"{method} ablation (mean over classes)")
        fig.tight_layout()
        _save(fig, out_png, out_pdf)
    return curves


# ----------------------------------------------------------------------------------------------- speed vs accuracy
def speed_accuracy_points(df: pd.DataFrame) -> pd.DataFrame:
    """One point per (dataset, method, variant), dataset means as in the ablation table (a Method B default run
    also counts under its guidance point): ``nfe_per_image``, ``images_per_s`` (1 / mean s per image),
    ``image_auroc`` (+ ``_std``), ``is_default``."""
    if df.empty:
        raise ValueError("no results to plot")
    parts = []
    for method in sorted(df["method"].unique()):
        t = ablation_table(df, method)
        parts.append(
            t.assign(method=method, images_per_s=1.0 / t["s_per_image"], is_default=t["variant"] == "default")
        )
    cols = ["dataset", "method", "variant", "is_default", "n_runs", "nfe_per_image", "images_per_s",
            "image_auroc", "image_auroc_std"]  # fmt: skip
    return pd.concat(parts, ignore_index=True)[cols].sort_values(
        ["dataset", "method", "variant"], ignore_index=True
    )


def _style(method: str, order: list[str]) -> tuple[str, str]:
    """Colour and marker of a method: fixed for the four benchmarked ones, so every figure agrees."""
    if method in _MARKERS:
        return f"C{list(_MARKERS).index(method)}", _MARKERS[method]
    k = [m for m in order if m not in _MARKERS].index(method)
    return f"C{(len(_MARKERS) + k) % 10}", _EXTRA_MARKERS[k % len(_EXTRA_MARKERS)]


def _draw_speed(ax, pts: pd.DataFrame, xcol: str, methods: list[str]) -> None:
    pts = pts[np.isfinite(pts[xcol]) & np.isfinite(pts["image_auroc"])]
    if pts.empty:
        _blank(ax, "not recorded")
        return
    for method in methods:
        m = pts[pts["method"] == method]
        if m.empty:
            continue
        colour, marker = _style(method, methods)
        rest, dflt = m[~m["is_default"]], m[m["is_default"]]
        if len(rest):
            ax.scatter(
                rest[xcol], rest["image_auroc"], s=22, marker=marker, color=colour, alpha=0.6, label=method
            )
        ax.scatter(dflt[xcol], dflt["image_auroc"], s=70, marker=marker, color=colour, edgecolors="k",
                   linewidths=1.2, zorder=3, label=None if len(rest) else method)  # fmt: skip
    _log_axis(ax)
    ax.legend(frameon=False, title="bold edge: default", title_fontsize=6)


def speed_accuracy_figure(
    results: str | Path | Iterable[str | Path],
    out_png: str | Path,
    out_pdf: str | Path,
    *,
    title: str | None = None,
) -> pd.DataFrame:
    """Per dataset two panels: NFE/image (runs that record it: the diffusion methods) and images per second
    (every method) against image AUROC, one marker per method, default variants highlighted."""
    points = speed_accuracy_points(collect(results))
    datasets = sorted(points["dataset"].unique())
    methods = sorted(points["method"].unique())
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(len(datasets), 2, figsize=(6.8, 3.0 * len(datasets)), squeeze=False)
        for (left, right), dataset in zip(axes, datasets, strict=True):
            pts = points[points["dataset"] == dataset]
            _draw_speed(left, pts, "nfe_per_image", methods)
            left.set(
                xlabel="network evaluations per image", ylabel="image AUROC", title=f"{dataset}: cost in NFE"
            )
            _draw_speed(right, pts, "images_per_s", methods)
            right.set(xlabel="images per second", ylabel="image AUROC", title=f"{dataset}: throughput")
        fig.suptitle(title or "speed vs accuracy (mean over classes)")
        fig.tight_layout()
        _save(fig, out_png, out_pdf)
    return points


# ----------------------------------------------------------------------------------------------- selection
_SIDE_STYLE = {"default": ("o", "tab:gray"), "selected": ("s", "tab:blue"), "oracle": ("^", "tab:red")}


def selection_figure(
    table_csv: str | Path, out_png: str | Path, out_pdf: str | Path, title: str | None = None
):
    """default, selected and oracle of every method and class (``selection.csv``, :mod:`texad.results.selection_table`)
    side by side, one panel per metric, with their bootstrap intervals where the table has them."""
    import pandas as pd

    table = pd.read_csv(table_csv, keep_default_na=False, na_values=[""])
    metrics = [m for m in ("image_auroc", "pixel_auroc") if f"{m}_default" in table.columns]
    if table.empty or not metrics:
        raise ValueError(f"{table_csv} holds no selection rows")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6.0, 0.55 * len(table) + 2), 3.6), squeeze=False)
    labels = [f"{r['method']}\n{r['class']}" for _, r in table.iterrows()]
    x = np.arange(len(table))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, (side, (marker, colour)) in enumerate(_SIDE_STYLE.items()):
            y = 100 * table[f"{metric}_{side}"].to_numpy(float)
            low = 100 * table.get(f"{metric}_{side}_low", pd.Series(np.nan, index=table.index)).to_numpy(
                float
            )
            high = 100 * table.get(f"{metric}_{side}_high", pd.Series(np.nan, index=table.index)).to_numpy(
                float
            )
            err = np.vstack([np.where(np.isnan(low), 0, y - low), np.where(np.isnan(high), 0, high - y)])
            ax.errorbar(x + (k - 1) * 0.22, y, yerr=err, fmt=marker, color=colour, ms=5, capsize=2, lw=1,
                        label=side)  # fmt: skip
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel(f"{_METRIC_LABEL.get(metric, metric)} (%)")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title or "Settings chosen on validation (selected) vs the test set (oracle)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png, out_pdf)
