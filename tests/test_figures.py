"""Publication figures (texad.report.figures, texad.report.figures_cli): files written, plotted numbers
against the inputs they came from, and errors that name the bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from test_aggregate import METRICS, write_run

from texad.methods.run import save_maps
from texad.report import figures as F
from texad.report.figures_cli import add_parsers
from texad.results import record as R
from texad.results.aggregate import collect

GRID = (8, 8)
# test images of one class: (defect, stem, label); two defect types, the first with two images
TEST_IMAGES = [
    ("good", "000", 0),
    ("good", "001", 0),
    ("hole", "000", 1),
    ("hole", "001", 1),
    ("stain", "000", 1),
]


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="texad")
    add_parsers(parser.add_subparsers(required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def assert_figure_files(png: Path, pdf: Path) -> tuple[int, int]:
    """Both files exist and are valid, no temp file is left beside them; returns the PNG size."""
    assert pdf.read_bytes()[:4] == b"%PDF"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        size = im.size
    assert not [p for p in png.parent.iterdir() if p.name.endswith(".tmp")]
    return size


# ----------------------------------------------------------------------------------------------- maps fixtures
def mask_of(stem: str) -> np.ndarray:
    """A 16x16 defect mask whose position depends on the image, so pixel ROCs differ per image."""
    m = np.zeros((16, 16), np.uint8)
    k = int(stem)
    m[4 + 2 * k : 10 + 2 * k, 3:9] = 255
    return m


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """An MVTec-layout class under ``<root>/resources/datasets/tiny/cls`` (RGB and grayscale images)."""
    root = tmp_path_factory.mktemp("repo")
    cls = root / "resources" / "datasets" / "tiny" / "cls"
    rng = np.random.default_rng(0)
    for i, (defect, stem, label) in enumerate(TEST_IMAGES):
        folder = cls / "test" / defect
        folder.mkdir(parents=True, exist_ok=True)
        shape = (16, 16, 3) if i % 2 else (16, 16)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"{stem}.png")
        if label:
            gt = cls / "ground_truth" / defect
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask_of(stem)).save(gt / f"{stem}_mask.png")
    return root


def rel_paths() -> list[str]:
    return [f"resources/datasets/tiny/cls/test/{d}/{s}.png" for d, s, _ in TEST_IMAGES]


def write_maps(path: Path, seed: int, *, reconstructions: bool, order=None) -> Path:
    """A maps file as the methods write it: noisy maps that are higher inside the masks."""
    rng = np.random.default_rng(seed)
    order = list(range(len(TEST_IMAGES))) if order is None else order
    labels = np.array([TEST_IMAGES[i][2] for i in order])
    masks = np.stack([
        np.asarray(Image.fromarray(mask_of(TEST_IMAGES[i][1]) if TEST_IMAGES[i][2] else np.zeros((16, 16), np.uint8))
                   .resize(GRID, Image.NEAREST)) > 127
        for i in order
    ])  # fmt: skip
    maps = rng.normal(0, 1, (len(order), *GRID)) + 1.5 * masks
    arrays = {
        "maps": maps.astype(np.float16),
        "scores": (maps.reshape(len(order), -1).max(1) + rng.normal(0, 0.5, len(order))).astype(np.float32),
        "labels": labels,
        "paths": np.array([rel_paths()[i] for i in order]),
    }
    if reconstructions:
        arrays["reconstructions"] = rng.integers(0, 255, (len(order), 4, 4, 3), dtype=np.uint8)
    save_maps(path, **arrays)
    return path


@pytest.fixture(scope="module")
def maps_files(dataset, tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("maps")
    a = write_maps(out / "method_a" / "default" / "seed0.npz", 1, reconstructions=False)
    b = write_maps(out / "method_b" / "default" / "seed0.npz", 2, reconstructions=True, order=[4, 3, 2, 1, 0])
    return a, b


# ----------------------------------------------------------------------------------------------- Figure 1
def test_rows_take_one_image_per_defect_type_then_one_normal():
    paths, labels = rel_paths(), [t[2] for t in TEST_IMAGES]
    assert F.select_rows(paths, labels, 3) == [2, 4, 0]  # hole/000, stain/000, good/000
    assert F.select_rows(paths, labels, 5) == [2, 4, 3, 0, 1]  # defect types in turn, then normals fill up
    assert F.select_rows(paths[2:], labels[2:], 2) == [0, 2]  # no normal image: defective rows only
    with pytest.raises(ValueError, match="rows must be >= 1"):
        F.select_rows(paths, labels, 0)


@pytest.mark.parametrize(("n_methods", "rows"), [(2, 3), (1, 5)])
def test_figure_grid_has_four_columns_per_method_and_one_row_per_image(
    dataset, maps_files, tmp_path, monkeypatch, n_methods, rows
):
    monkeypatch.chdir(dataset)  # the maps' image paths are relative to the repository root
    png, pdf = tmp_path / "fig" / "grid.png", tmp_path / "fig" / "grid.pdf"
    maps = maps_files[:n_methods]
    labels = ["method_a", "method_b"][:n_methods]
    assert cli("figure-grid", "--maps", *maps, "--labels", *labels, "--out-png", png, "--out-pdf", pdf,
               "--rows", rows, "--title", "tiny cls") == 0  # fmt: skip
    w, h = assert_figure_files(png, pdf)
    # tiles across and down, measured from the PNG's pixel size
    step = F.GRID_TILE_IN + F.GRID_GAP_IN
    across = (w / F.DPI - F.GRID_LEFT_IN + F.GRID_GAP_IN) / step
    down = (h / F.DPI - F.GRID_TOP_IN - 0.05 + F.GRID_GAP_IN) / step
    assert across == pytest.approx(4 * n_methods, abs=0.02)
    assert down == pytest.approx(rows, abs=0.02)


def test_figure_grid_matches_images_by_path_and_uses_the_default_labels(dataset, maps_files, tmp_path):
    # method_b lists its images in reverse order: rows still show the same image for both methods
    info = F.figure_grid(maps_files, tmp_path / "g.png", tmp_path / "g.pdf", rows=3, root=dataset)
    assert [Path(p).parent.name + "/" + Path(p).stem for p in info["rows"]] == [
        "hole/000",
        "stain/000",
        "good/000",
    ]
    assert info["methods"] == ["method_a", "method_b"]  # from .../<method>/<variant>/seed0.npz


# ----------------------------------------------------------------------------------------------- ROC
def test_roc_curves_equal_sklearn(dataset, maps_files, tmp_path):
    png, pdf = tmp_path / "roc.png", tmp_path / "roc.pdf"
    assert (
        cli("roc-curves", "--maps", *maps_files, "--out-png", png, "--out-pdf", pdf, "--root", dataset) == 0
    )
    assert_figure_files(png, pdf)
    curves = F.roc_curves(maps_files, ["A", "B"], dataset)
    assert [c.label for c in curves] == ["A", "B"]
    for c, path in zip(curves, maps_files, strict=True):
        z = np.load(path)
        assert c.image.auroc == pytest.approx(roc_auc_score(z["labels"], z["scores"]))
        fpr, tpr, _ = roc_curve(z["labels"], z["scores"])
        np.testing.assert_allclose(c.image.fpr, fpr)
        np.testing.assert_allclose(c.image.tpr, tpr)
        # pixel level: the masks on the map grid, built here independently of the module
        masks = [
            np.asarray(Image.open(dataset / p.replace("test/hole", "ground_truth/hole")
                                  .replace("test/stain", "ground_truth/stain").replace(".png", "_mask.png"))
                       .resize(GRID, Image.NEAREST)) > 127 if y else np.zeros(GRID, bool)
            for p, y in zip(z["paths"], z["labels"], strict=True)
        ]  # fmt: skip
        y, s = np.stack(masks).ravel(), z["maps"].astype(np.float32).ravel()
        assert c.n_pixels == y.size
        assert c.pixel.auroc == pytest.approx(roc_auc_score(y, s))
    assert curves[0].pixel.auroc != pytest.approx(curves[1].pixel.auroc)


def test_pixel_subsample_is_deterministic(dataset, maps_files):
    mf = F.load_maps(maps_files[0])
    (a, n), (b, _) = F.pixel_roc(mf, dataset, max_pixels=100), F.pixel_roc(mf, dataset, max_pixels=100)
    assert n == 100 and a.auroc == b.auroc
    np.testing.assert_array_equal(a.fpr, b.fpr)


# ----------------------------------------------------------------------------------------------- result fixtures
def write(root: Path, cls: str, method: str, variant: str, seed: int, *, auroc: float, pixel: float = 0.5,
          nfe=None, ips: float = 10.0, extra: dict | None = None, mode: str | None = None) -> Path:  # fmt: skip
    values = dict.fromkeys(METRICS, 0.5)
    values.update(image_auroc=auroc, pixel_auroc=pixel)
    timings = {"train_s": 1.0, "inference_s": 2.0, "images_per_s": ips, "nfe_per_image": nfe}
    path = write_run(root, "tiny", cls, method, variant, seed, values, timings)
    if extra is not None or mode is not None:
        result = R.read_result(path)
        result["extra"] = extra or {}
        if mode is not None:
            result["evaluation"]["switches"] = {"mode": mode}
        R.write_result(path, result)
    return path


def a_extra(n_scales: int, steps: int, sigma_hi: float = 0.4, mode: str = "t_scales",
            metric: str = "score_residual") -> dict:  # fmt: skip
    """``extra.config`` as a Method A run records it (its variant applied)."""
    inference = {"mode": mode, "n_scales": n_scales, "steps_per_scale": steps, "sigma_hi": sigma_hi,
                 "metric": metric}  # fmt: skip
    return {"config": {"image_size": 32, "methods": {"method_a": {"model": "own", "inference": inference}}}}


def b_config(w: float, s: float = 0.5, blur_sigma: float = 3.0, t_start: int = 250) -> dict:
    """``extra.config`` as a Method B run records it: per-class keys hold the run's class value as ``default``."""
    inference = {"t_start": t_start, "skip": 25, "w": {"default": w}, "s": s, "blur_sigma": blur_sigma}
    return {"image_size": 32, "methods": {"method_b": {"inference": inference}}}


# variant -> (n_scales, steps_per_scale, sigma_hi, mode); metric_score and the s0.8 point are off the curves
A_VARIANTS = {
    "default": (4, 1, 0.4, "t_scales"),
    "K1_n1_s0.4": (1, 1, 0.4, "t_scales"),
    "K2_n1_s0.4": (2, 1, 0.4, "t_scales"),
    "K4_n5_s0.4": (4, 5, 0.4, "t_scales"),
    "K4_n1_s0.8": (4, 1, 0.8, "t_scales"),
    "metric_score": (4, 1, 0.4, "t_scales"),
    "full_chain": (4, 1, 0.4, "full_chain"),
}


@pytest.fixture(scope="module")
def method_a_runs(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("results_a")
    rng = np.random.default_rng(7)
    values = {}
    for variant, (k, n, sigma, mode) in A_VARIANTS.items():
        for cls in ("carpet", "wood"):
            for seed in (0, 1):
                auroc, pixel = float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.6, 1.0))
                values[(variant, cls, seed)] = (auroc, pixel)
                # seed 1 records no mode switch: the mode is read from extra.config's inference
                write(root, cls, "method_a", variant, seed, auroc=auroc, pixel=pixel, nfe=2 * k * n,
                      extra=a_extra(k, n, sigma, mode), mode=mode if seed == 0 else None)  # fmt: skip
    write(root, "carpet", "simplenet", "default", 0, auroc=0.9)  # other methods are left out
    return root / "runs", values


def expected(values: dict, variants, index: int = 0) -> tuple[float, float]:
    """Mean over runs and std over seeds of the per-seed class mean, from the written values."""
    xs = {k: v[index] for k, v in values.items() if k[0] in variants}
    per_seed = [np.mean([x for k, x in xs.items() if k[2] == seed]) for seed in (0, 1)]
    return float(np.mean(list(xs.values()))), float(np.std(per_seed, ddof=1))


def test_method_a_curves_are_the_means_of_their_results(method_a_runs, tmp_path):
    runs, values = method_a_runs
    png, pdf = tmp_path / "a.png", tmp_path / "a.pdf"
    assert (
        cli("ablation-curves", "--method", "method_a", "--results", runs, "--out-png", png, "--out-pdf", pdf)
        == 0
    )
    assert_figure_files(png, pdf)
    curves = F.ablation_curves(collect(runs), "method_a")
    pts = curves.points.set_index(["line", "x"])
    assert sorted(pts.index) == [(1, 1), (1, 2), (1, 4), (5, 4)]  # metric_score, s0.8, full_chain left out
    for (line, x), variant in {(1, 1): "K1_n1_s0.4", (1, 2): "K2_n1_s0.4", (1, 4): "default",
                               (5, 4): "K4_n5_s0.4"}.items():  # fmt: skip
        for i, metric in enumerate(("image_auroc", "pixel_auroc")):
            mean, std = expected(values, {variant}, i)
            assert pts.loc[(line, x), metric] == pytest.approx(mean)
            assert pts.loc[(line, x), f"{metric}_std"] == pytest.approx(std)
        assert pts.loc[(line, x), "nfe_per_image"] == 2 * x * line
        assert pts.loc[(line, x), "has_default"] == (variant == "default")
    ref = curves.reference.iloc[0]
    assert ref["image_auroc"] == pytest.approx(expected(values, {"full_chain"})[0])
    assert ref["pixel_auroc"] == pytest.approx(expected(values, {"full_chain"}, 1)[0])


# class -> default w; s, blur and t_start defaults are 0.5, 3, 250
B_DEFAULT_W = {"carpet": 4.0, "wood": 2.0}
B_POINTS = {  # the map-terms points (one term alone at the class's default point) lie on neither curve
    "carpet": ["w2_s0.5_blur3_t250", "w8_s0.5_blur3_t250", "w4_s0.25_blur3_t250", "w4_s0.5_blur5_t250",
               "w4_s0.5_blur3_t250_pixel"],
    "wood": ["w4_s0.5_blur3_t250", "w8_s0.5_blur3_t250", "w2_s0.25_blur3_t250", "w2_s0.5_blur3_t100",
             "w2_s0.5_blur3_t250_feature"],
}  # fmt: skip


@pytest.fixture(scope="module")
def method_b_runs(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("results_b")
    rng = np.random.default_rng(11)
    values = {}
    for cls, w in B_DEFAULT_W.items():
        for seed in (0, 1):
            auroc = float(rng.uniform(0.6, 1.0))
            values[(cls, "default", seed)] = auroc
            # carpet: the point name and the config, as the runs record them; wood: a dict of values (seed 0),
            # or only the config, its per-class w as {default: w} (seed 1)
            if cls == "carpet":
                extra = {"ablation_point": f"w{w:g}_s0.5_blur3_t250", "config": b_config(w)}
            elif seed == 0:
                extra = {"ablation_point": {"w": w, "s": 0.5, "blur_sigma": 3, "t_start": 250}}
            else:
                extra = {"config": b_config(w)}
            write(root, cls, "method_b", "default", seed, auroc=auroc, nfe=10, extra=extra)
            for variant in B_POINTS[cls]:
                auroc = float(rng.uniform(0.6, 1.0))
                values[(cls, variant, seed)] = auroc
                write(root, cls, "method_b", variant, seed, auroc=auroc, nfe=10)
    return root / "runs", values


def test_method_b_curves_are_the_means_of_their_results(method_b_runs, tmp_path):
    runs, values = method_b_runs
    png, pdf = tmp_path / "b.png", tmp_path / "b.pdf"
    assert (
        cli("ablation-curves", "--method", "method_b", "--results", runs, "--out-png", png, "--out-pdf", pdf)
        == 0
    )
    assert_figure_files(png, pdf)
    pts = F.ablation_curves(collect(runs), "method_b").points.set_index(["axis", "x"])
    want = {  # (axis, x) -> the (class, variant) runs behind the point
        ("w", 2.0): {("carpet", "w2_s0.5_blur3_t250"), ("wood", "default")},
        ("w", 4.0): {("carpet", "default"), ("wood", "w4_s0.5_blur3_t250")},
        ("w", 8.0): {("carpet", "w8_s0.5_blur3_t250"), ("wood", "w8_s0.5_blur3_t250")},
        ("s", 0.25): {
            ("carpet", "w4_s0.25_blur3_t250"),
            ("wood", "w2_s0.25_blur3_t250"),
        },  # at each class's w
        ("s", 0.5): {("carpet", "default"), ("wood", "default")},
    }
    assert sorted(pts.index) == sorted(want)  # the blur, t_start and map-terms points are on neither axis
    for key, runs_behind in want.items():
        xs = {k: v for k, v in values.items() if (k[0], k[1]) in runs_behind}
        per_seed = [np.mean([v for k, v in xs.items() if k[2] == s]) for s in (0, 1)]
        assert pts.loc[key, "image_auroc"] == pytest.approx(np.mean(list(xs.values())))
        assert pts.loc[key, "image_auroc_std"] == pytest.approx(np.std(per_seed, ddof=1))
        assert pts.loc[key, "n_runs"] == 4


# ----------------------------------------------------------------------------------------------- speed-accuracy
def test_speed_accuracy_points_are_the_results_cost_and_auroc(tmp_path):
    root = tmp_path / "res"
    runs = {  # (method, variant) -> (nfe, images/s, image AUROC per class)
        ("method_a", "default"): (8, 4.0, {"carpet": 0.9, "wood": 0.8}),
        ("method_a", "full_chain"): (48, 0.5, {"carpet": 0.7, "wood": 0.9}),
        ("method_b", "default"): (10, 2.0, {"carpet": 0.95, "wood": 0.85}),
        ("simplenet", "default"): (None, 20.0, {"carpet": 0.6, "wood": 0.7}),
    }
    for (method, variant), (nfe, ips, aurocs) in runs.items():
        for cls, auroc in aurocs.items():
            write(root, cls, method, variant, 0, auroc=auroc, nfe=nfe, ips=ips)
    png, pdf = tmp_path / "s.png", tmp_path / "s.pdf"
    assert cli("speed-accuracy", "--results", root / "runs", "--out-png", png, "--out-pdf", pdf) == 0
    assert_figure_files(png, pdf)
    pts = F.speed_accuracy_points(collect(root / "runs")).set_index(["method", "variant"])
    assert sorted(pts.index) == sorted(runs)
    for key, (nfe, ips, aurocs) in runs.items():
        row = pts.loc[key]
        assert row["image_auroc"] == pytest.approx(np.mean(list(aurocs.values())))
        assert row["images_per_s"] == pytest.approx(ips)
        assert np.isnan(row["nfe_per_image"]) if nfe is None else row["nfe_per_image"] == nfe
        assert row["is_default"] == (key[1] == "default")


def test_throughput_is_images_over_time_across_classes(tmp_path):
    write(tmp_path, "carpet", "draem", "default", 0, auroc=0.9, ips=2.0)
    write(tmp_path, "wood", "draem", "default", 0, auroc=0.8, ips=6.0)
    pts = F.speed_accuracy_points(collect(tmp_path / "runs"))
    assert pts.loc[0, "images_per_s"] == pytest.approx(1 / np.mean([1 / 2.0, 1 / 6.0]))


# ----------------------------------------------------------------------------------------------- errors
def test_bad_maps_inputs_name_the_file(dataset, maps_files, tmp_path):
    out = ("--out-png", tmp_path / "x.png", "--out-pdf", tmp_path / "x.pdf")
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=f"maps file {missing} does not exist"):
        cli("figure-grid", "--maps", missing, *out)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"maps file {garbage} is not a readable .npz"):
        cli("roc-curves", "--maps", garbage, *out)
    partial = tmp_path / "partial.npz"
    np.savez(partial, maps=np.zeros((2, *GRID), np.float16), scores=np.zeros(2))
    with pytest.raises(ValueError, match=f"maps file {partial} lacks labels, paths"):
        cli("figure-grid", "--maps", partial, *out)
    with pytest.raises(ValueError, match="got 1 labels"):
        cli("roc-curves", "--maps", *maps_files, "--labels", "only_one", "--root", dataset, *out)
    # image paths relative to another folder: the missing mask/image is named, with what to do
    with pytest.raises(FileNotFoundError, match="no ground-truth mask for .*hole/000.png.*--root"):
        cli("roc-curves", "--maps", maps_files[0], "--root", tmp_path, *out)
    with pytest.raises(FileNotFoundError, match="test image .*hole/000.png.* does not exist"):
        cli("figure-grid", "--maps", maps_files[0], "--root", tmp_path, *out)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.pdf").exists()


def test_single_class_labels_cannot_make_a_roc(dataset, tmp_path):
    path = tmp_path / "normal_only.npz"
    save_maps(path, maps=np.zeros((2, *GRID), np.float16), scores=np.zeros(2, np.float32), labels=np.zeros(2),
              paths=np.array(rel_paths()[:2]))  # fmt: skip
    with pytest.raises(ValueError, match=f"{path} .*needs normal and anomalous"):
        F.roc_curves([path], root=dataset)


def test_bad_result_inputs_are_errors(method_a_runs, tmp_path):
    out = ("--out-png", tmp_path / "x.png", "--out-pdf", tmp_path / "x.pdf")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no result JSON files found"):
        cli("speed-accuracy", "--results", empty, *out)
    with pytest.raises(ValueError, match="does not exist"):
        cli("ablation-curves", "--method", "method_a", "--results", tmp_path / "missing", *out)
    runs, _ = method_a_runs
    with pytest.raises(ValueError, match="no method_b results among the given result files"):
        cli("ablation-curves", "--method", "method_b", "--results", runs, *out)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=f"result file {bad} is not valid JSON"):
        cli("speed-accuracy", "--results", bad, *out)
    assert not (tmp_path / "x.png").exists()


def test_method_b_without_its_default_run_is_an_error(tmp_path):
    write(tmp_path, "carpet", "method_b", "w2_s0.5_blur3_t250", 0, auroc=0.9, nfe=10)
    with pytest.raises(ValueError, match="no method_b default run of tiny/carpet"):
        F.ablation_curves(collect(tmp_path / "runs"), "method_b")
