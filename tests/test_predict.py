"""``texad predict``: a trained model applied to a folder reproduces its benchmark scores and maps and thresholds on
normal images; bad inputs fail naming the file or folder and leave the output folder alone.

Every method is trained tiny (seconds) on a synthetic class with its module's trainer
(:func:`texad.methods.jobs.train_model`) and evaluated by :func:`texad.methods.jobs.run_method` into a results tree
laid out as the workflow's (``runs/<dataset>/<class>/<method>/default/seed<k>.json`` beside
``models/<dataset>/<class>/seed<k>/<kind>-<hash>.pt``); predict then reads that result (or the bare model file).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from texad.config import ConfigError, validate_config
from texad.data.layout import list_samples
from texad.data.mvtec import DatasetError
from texad.data.synth import generate_class
from texad.methods import get
from texad.methods.base import RunKey
from texad.methods.jobs import method_settings, run_method, train_model
from texad.predict import predict_folder, quantile_threshold
from texad.predict.cli import add_parsers

DATASET, CLASS, SEED = "synthetic", "wood", 0
RUN = RunKey(DATASET, CLASS, SEED, "default")
GRID = 64  # the benchmark's evaluation grid; the models read 32 x 32 images, so its maps are resized to it
# float16 keeps 11 significant bits: rounding to nearest moves a value by 2^-11 of it at most
HALF_ULP16 = 2.0**-11

# the methods' config blocks: tiny models, a few seconds of training each on the CPU
SIMPLENET = {
    "backbone": "efficientnet_lite0", "pretrain_embed_dim": 64, "target_embed_dim": 64, "dsc_hidden": 64,
    "meta_epochs": 3, "gan_epochs": 1, "batch_size": 4, "image_size": 32, "resize": 32, "noise_std": 1.0,
    "adaptor_lr": 1e-3, "dsc_lr": 2e-3, "smoothing_sigma": 2,
}  # fmt: skip
METHOD_B = {
    "diffusion": {"preset": "tiny"},
    "train": {"epochs": {"default": 2}, "batch_size": 4},
    "inference": {"t_start": 100, "skip": 50, "blur_kernel": 15, "smoothing_sigma": 2, "feature_size": 64,
                  "feature_backbone": "efficientnet_lite0", "batch_size": 8},
}  # fmt: skip
METHOD_A = {
    "sde": {"sigma_max": 1.0, "n_steps": 20},
    "network": {"preset": "tiny", "nf": 16},
    "train": {"batch_size": 8, "iterations": 40, "lr": 2e-3, "warmup": 5},
    "inference": {"draws": 1, "n_scales": 4, "steps_per_scale": 1, "batch_size": 5, "smoothing_sigma": 2},
    "ablation": {"speed_batches": []},
}
DRAEM = {
    "epochs": 2, "batch_size": 4, "lr": 1e-3, "image_size": 32, "recon_base_width": 2, "disc_base_width": 2,
    "anomaly_source": "synthetic", "score_pool": 5,
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Data:
    root: Path  # dataset root (wood, the trained class; carpet, DRAEM's anomaly source)
    class_dir: Path
    flat: Path  # the test images in one folder, sorted in test-set order
    labels: np.ndarray
    normal: Path  # held-out good images of the same texture (another generator seed)
    results: Path  # a results tree: runs/ and models/
    weights: Path  # the backbone weight cache of the runs

    def run_path(self, method: str, results: Path | None = None) -> Path:
        return (results or self.results) / "runs" / DATASET / CLASS / method / "default" / f"seed{SEED}.json"

    def model_dir(self, results: Path | None = None) -> Path:
        return (results or self.results) / "models" / DATASET / CLASS / f"seed{SEED}"

    def maps_path(self, name: str) -> Path:
        return self.results / "maps" / f"{name}.npz"

    def config(self, method: str, block: dict, **top) -> dict:
        """The part of a config that the jobs of ``method`` read, validated (the schema fills in the rest)."""
        runtime = {"run_name": "t", "device": "cpu", "evaluation": {"resolution": GRID},
                   "backbone": {"cache": str(self.weights)}}  # fmt: skip
        return validate_config({**runtime, **top, "methods": {method: block}}, partial=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    root = tmp_path_factory.mktemp("predict_data")
    generate_class(root, CLASS, image_size=64, n_train=8, n_test_good=4, n_test_per_defect=2, seed=0)
    generate_class(root, "carpet", image_size=64, n_train=4, n_test_good=1, n_test_per_defect=1, seed=0)
    held_out = tmp_path_factory.mktemp("predict_normal")
    generate_class(held_out, CLASS, image_size=64, n_train=8, n_test_good=1, n_test_per_defect=1, seed=1)
    flat = tmp_path_factory.mktemp("predict_flat")
    samples = list_samples(root / CLASS, "test")
    for i, s in enumerate(samples):  # names sort in test-set order: the same per-image noise seeds
        shutil.copy(s.path, flat / f"{i:03d}_{s.defect}_{s.path.name}")
    return Data(
        root=root,
        class_dir=root / CLASS,
        flat=flat,
        labels=np.array([s.label for s in samples]),
        normal=held_out / CLASS / "train" / "good",
        results=tmp_path_factory.mktemp("results"),
        weights=tmp_path_factory.mktemp("weights"),
    )


# ------------------------------------------------------------------------- the methods' own runs
def _train(data: Data, kind: str, method: str, config: dict, results: Path | None = None, **inputs) -> Path:
    """Train one model as ``texad train`` does, into the results tree under its module's file name."""
    module = get(method)
    settings = method_settings(config, method, CLASS)
    out = data.model_dir(results) / module.model_file(kind, settings, RUN)
    train_model(kind, config, RUN, class_dir=data.class_dir, out=out, ckpt_dir=data.results / "ckpt" / kind,
                expect_hash=module.identity(kind, settings, RUN), **inputs)  # fmt: skip
    assert out.is_file()
    return out


def _run(data: Data, method: str, config: dict, model: Path, name: str, results: Path | None = None) -> Path:
    """Run the method's default variant as ``texad run`` does: the result JSON into the results tree."""
    out = data.run_path(method, results)
    run_method(method, config, RUN, class_dir=data.class_dir, models={"model": model}, out_result=out,
               out_maps=data.maps_path(name))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def simplenet_run(data) -> Path:
    config = data.config("simplenet", SIMPLENET)
    return _run(data, "simplenet", config, _train(data, "simplenet", "simplenet", config), "simplenet")


@pytest.fixture(scope="module")
def method_b_run(data) -> Path:
    config = data.config("method_b", METHOD_B, image_size=32)
    return _run(data, "method_b", config, _train(data, "ddpm", "method_b", config), "method_b")


@pytest.fixture(scope="module")
def method_b_normalised_run(data, method_b_run, tmp_path_factory) -> Path:
    """Method B with the train_stats normalisation (on 4 training images) and 2 draws, on the same DDPM (a
    results tree of its own, the model copied in: a result names its model only by hash)."""
    results = tmp_path_factory.mktemp("results_normalised")
    block = {**METHOD_B, "inference": {**METHOD_B["inference"], "draws": 2, "normalise": "train_stats",
                                       "normalise_images": 4}}  # fmt: skip
    config = data.config("method_b", block, image_size=32)
    (model,) = data.model_dir().glob("ddpm-*.pt")
    settings = method_settings(config, "method_b", CLASS)
    assert model.name == get("method_b").model_file("ddpm", settings, RUN)  # inference keys shape no model
    data.model_dir(results).mkdir(parents=True)
    shutil.copy(model, data.model_dir(results) / model.name)
    return _run(
        data, "method_b", config, data.model_dir(results) / model.name, "method_b_normalised", results
    )


@pytest.fixture(scope="module")
def method_b_pixel_run(data, method_b_run, tmp_path_factory) -> Path:
    """Method B whose maps are the pixel distance alone (``map_terms: pixel``, the map-terms ablation), on the same
    DDPM (a results tree of its own, the model copied in)."""
    results = tmp_path_factory.mktemp("results_pixel")
    block = {**METHOD_B, "inference": {**METHOD_B["inference"], "map_terms": "pixel"}}
    config = data.config("method_b", block, image_size=32)
    (model,) = data.model_dir().glob("ddpm-*.pt")
    data.model_dir(results).mkdir(parents=True)
    shutil.copy(model, data.model_dir(results) / model.name)
    return _run(data, "method_b", config, data.model_dir(results) / model.name, "method_b_pixel", results)


@pytest.fixture(scope="module")
def method_a_run(data) -> Path:
    config = data.config("method_a", METHOD_A, image_size=32)
    return _run(data, "method_a", config, _train(data, "score", "method_a", config), "method_a")


@pytest.fixture(scope="module")
def draem_run(data) -> Path:
    config = data.config("draem", DRAEM)
    model = _train(data, "draem", "draem", config, anomaly_root=data.root)
    return _run(data, "draem", config, model, "draem")


# ---------------------------------------------------------------------------------------- helpers
def _scores(out: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    with open(out / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (
        [r["image"] for r in rows],
        np.array([float(r["score"]) for r in rows]),
        np.array([float(r["threshold"]) for r in rows]),
        np.array([int(r["anomalous"]) for r in rows]),
    )


def _benchmark_scores(data: Data, name: str) -> np.ndarray:
    return np.load(data.maps_path(name))["scores"].astype(np.float64)


def _model_file(data: Data, run: Path, kind: str) -> Path:
    return data.model_dir() / f"{kind}-{json.loads(run.read_text())['model_hash']}.pt"


def _check_outputs(data: Data, out: Path, fpr: float, *, map_side: int) -> dict:
    """Every image has its outputs; the threshold is the documented quantile; anomalous = score > it."""
    names, scores, thresholds, flags = _scores(out)
    assert names == sorted(p.name for p in data.flat.iterdir())
    rec = json.loads((out / "threshold.json").read_text())
    normal = np.array(list(rec["normal_scores"].values()))
    assert rec["n_normal"] == len(normal) == len(list(data.normal.iterdir()))
    assert rec["image_threshold"] == quantile_threshold(normal, fpr)
    assert rec["image_threshold"] == np.sort(normal)[int(np.ceil((1 - fpr) * (len(normal) - 1)))]
    assert np.all(thresholds == rec["image_threshold"]) and rec["fpr"] == fpr
    assert np.array_equal(flags, (scores > rec["image_threshold"]).astype(int))
    for name in names:
        stem = Path(name).stem
        amap = np.load(out / "maps" / f"{stem}.npy")
        assert amap.dtype == np.float16 and amap.shape == (map_side, map_side)
        with Image.open(out / "maps" / f"{stem}.png") as im:
            assert im.size == (map_side, map_side)
        with Image.open(out / "overlays" / f"{stem}.png") as im, Image.open(data.flat / name) as src:
            assert im.size == src.size and im.mode == "RGB"
    assert not [p for p in out.rglob("*.tmp")]
    return rec


def _check_maps_match_the_benchmark(data: Data, out: Path, name: str) -> None:
    """maps/*.npy (model input size, float16), resized to the evaluation grid as the benchmark resizes its maps
    (:func:`texad.evaluation.grid.resize_maps`), equal the benchmark run's maps of the same images (float16) pixel
    by pixel, to the rounding of the two files: predict rounds its map at the model's size, which the bilinear
    resize (weights >= 0, summing to 1) carries as at most 2^-11 of the resized |map|; the benchmark rounds its map
    on the grid, at most 2^-11 of |map| again; and 1e-5 of the maps' range covers float32 arithmetic (other
    batches, other image sets). A map mirrored left-right exceeds that bound."""
    from texad.evaluation.grid import resize_maps

    bench = np.load(data.maps_path(name))["maps"].astype(np.float32)
    assert bench.shape == (len(data.labels), GRID, GRID)
    names = _scores(out)[0]
    ours = np.stack([np.load(out / "maps" / f"{Path(n).stem}.npy") for n in names]).astype(np.float32)
    assert ours.shape[-1] < GRID  # a real resize, not a copy
    on_grid = resize_maps(ours, (GRID, GRID))
    assert float(bench.std()) > 0  # maps that vary, or equality would prove little
    arithmetic = 1e-5 * float(np.ptp(bench))
    bound = HALF_ULP16 * (resize_maps(np.abs(ours), (GRID, GRID)) + np.abs(bench)) + arithmetic
    excess = np.abs(on_grid - bench) - bound
    assert (excess <= 0).all(), (name, float(excess.max()), np.argwhere(excess > 0)[:3].tolist())
    assert (np.abs(on_grid[..., ::-1] - bench) > bound).any()  # the bound tells a mirrored map from the run's


# --------------------------------------------------------------------------------------- behaviour
def test_simplenet_result_reproduces_the_benchmark_and_thresholds_on_normal_images(
    data, simplenet_run, tmp_path
):
    from texad.methods.simplenet.infer import predict as simplenet_predict
    from texad.methods.simplenet.training import load_simplenet
    from texad.predict import load_images

    fpr = 0.25  # 8 normal images: the 0.75 quantile, not their maximum
    rec = predict_folder(simplenet_run, data.flat, tmp_path, normal=data.normal, fpr=fpr, device="cpu")
    checked = _check_outputs(data, tmp_path, fpr, map_side=32)
    assert checked["method"] == rec["method"] == "simplenet" and rec["settings_source"] == "result"
    assert rec["image_threshold_is_max"] is False and rec["normal_source"]["kind"] == "normal"
    assert rec["settings"]["smoothing_sigma"] == 2 and rec["backbone"]["name"] == "efficientnet_lite0"
    _, scores, _, _ = _scores(tmp_path)
    np.testing.assert_allclose(scores, _benchmark_scores(data, "simplenet"), rtol=1e-5, atol=1e-6)
    assert scores[data.labels == 1].mean() > scores[data.labels == 0].mean()
    _check_maps_match_the_benchmark(data, tmp_path, "simplenet")

    # the normal images' scores and pixel threshold, from the method's own inference
    model, settings, _ = load_simplenet(rec["model"]["path"])
    assert settings.smoothing_sigma == 2
    normal = load_images(sorted(data.normal.iterdir()), 32)
    maps, normal_scores, _ = simplenet_predict(model, normal, sigma=settings.smoothing_sigma, batch_size=3,
                                               device="cpu")  # fmt: skip
    np.testing.assert_allclose(list(rec["normal_scores"].values()), normal_scores, rtol=1e-5, atol=1e-6)
    assert rec["pixel_threshold"] == pytest.approx(
        float(np.quantile(maps, 1 - fpr, method="higher")), rel=1e-5
    )
    assert rec["model"]["model_hash"] == json.loads(simplenet_run.read_text())["model_hash"]
    assert rec["model"]["files"] == {"model": rec["model"]["path"]}


def test_method_b_result_reproduces_the_benchmark_with_its_fit_state(data, method_b_run, tmp_path):
    """The default run fused its maps at its training images' scale (``fusion_norm: train``) and keeps it in its fit
    state: predict needs no --train-images and gives the benchmark's scores and maps, at any batch size."""
    result = json.loads(method_b_run.read_text())
    assert result["evaluation"]["switches"]["fusion_norm"] == "train" and result["extra"]["fusion_scale"] > 0
    assert result["extra"]["train_stats_images"] == 8  # normalise_images null: every training image
    out = tmp_path / "out"
    rec = predict_folder(
        method_b_run, data.flat, out, normal=data.normal, fpr=0.25, device="cpu", batch_size=5
    )
    _check_outputs(data, out, 0.25, map_side=32)
    _, scores, _, _ = _scores(out)
    # same model, settings, fusion scale and per-image seeds
    np.testing.assert_allclose(scores, _benchmark_scores(data, "method_b"), rtol=1e-5, atol=1e-6)
    _check_maps_match_the_benchmark(data, out, "method_b")
    assert rec["settings"]["inference"]["t_start"] == 100 and rec["backbone"]["name"] == "efficientnet_lite0"
    assert rec["fusion_scale_value"] == result["extra"]["fusion_scale"]  # the run's, not the folder's
    fit = method_b_run.with_name("seed0.fit.npz")
    sha = result["extra"]["fit_state"]["sha256"]
    assert rec["fit_state"] == {"source": "run", "file": str(fit.resolve()), "sha256": sha}
    assert rec["warnings"] == []
    # (a DDPM that separates defects takes minutes to train: Method A carries that check)


def test_method_b_scores_an_image_alone_and_under_any_name_as_in_the_folder(data, method_b_run, tmp_path):
    """One fixed scale and noise from the image itself: a score depends neither on the other images of the folder
    nor on the file's name or place, and a normal image scores as the same image among --images."""
    rec = predict_folder(method_b_run, data.flat, tmp_path / "all", normal=data.normal, fpr=0.5, device="cpu")
    names, scores, _, _ = _scores(tmp_path / "all")
    last = len(names) - 1  # the last image of the folder, alone and renamed so that it sorts first
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(data.flat / names[last], single / "aaa.png")
    again = predict_folder(
        method_b_run, single, tmp_path / "single", normal=data.normal, fpr=0.5, device="cpu"
    )
    assert again["fusion_scale_value"] == rec["fusion_scale_value"]
    assert _scores(tmp_path / "single")[1][0] == pytest.approx(scores[last], rel=1e-5)
    normal = sorted(data.normal.iterdir())[0]
    shutil.copy(normal, single / "zzz.png")
    both = predict_folder(method_b_run, single, tmp_path / "both", normal=data.normal, fpr=0.5, device="cpu")
    assert _scores(tmp_path / "both")[1][1] == pytest.approx(both["normal_scores"][normal.name], rel=1e-5)


def test_method_b_official_run_is_applied_as_it_ran_and_said_to_be_transductive(data, method_b_run, tmp_path):
    """The official variant fuses each batch of 16 at its own scale (DDAD's protocol) and fits nothing: its fit
    state holds no arrays, and predict applies its settings as recorded, with a warning that a score then depends
    on the other images."""
    results = tmp_path / "results"
    (model,) = data.model_dir().glob("ddpm-*.pt")
    data.model_dir(results).mkdir(parents=True)
    shutil.copy(model, data.model_dir(results) / model.name)
    out = results / "runs" / DATASET / CLASS / "method_b" / "official" / f"seed{SEED}.json"
    config = data.config("method_b", METHOD_B, image_size=32)
    run_method("method_b", config, RunKey(DATASET, CLASS, SEED, "official"), class_dir=data.class_dir,
               models={"model": data.model_dir(results) / model.name}, out_result=out,
               out_maps=tmp_path / "official.npz")  # fmt: skip
    result = json.loads(out.read_text())
    assert (
        result["evaluation"]["switches"]["fusion_norm"] == "batch16"
        and result["extra"]["fusion_scale"] is None
    )
    with np.load(out.with_name("seed0.fit.npz")) as z:
        assert z.files == []
    rec = predict_folder(out, data.flat, tmp_path / "p", normal=data.normal, fpr=0.25, device="cpu")
    assert rec["settings"]["inference"]["fusion_norm"] == "batch16" and rec["fusion_scale_value"] is None
    assert rec["fit_state"] == {"source": None}
    assert any("transductive" in w for w in rec["warnings"])
    assert len(_scores(tmp_path / "p")[0]) == len(data.labels)


def test_method_b_pixel_map_terms_reproduce_the_benchmark(data, method_b_run, method_b_pixel_run, tmp_path):
    """A pixel-only map has no fusion scale to fix (0): each image scored on its own gives the benchmark's scores
    and maps, which differ from the fused ones; the run records its suffixed point."""
    result = json.loads(method_b_pixel_run.read_text())
    assert result["extra"]["ablation_point"] == "w4_s0.5_blur3_t100_pixel"
    assert result["extra"]["fusion_scale"] == 0.0 and result["timings"]["nfe_per_image"] == 2 * 2
    rec = predict_folder(
        method_b_pixel_run, data.flat, tmp_path / "p", normal=data.normal, fpr=0.25, device="cpu"
    )
    _check_outputs(data, tmp_path / "p", 0.25, map_side=32)
    assert rec["fusion_scale_value"] == 0.0
    assert rec["settings"]["inference"]["map_terms"] == "pixel"
    np.testing.assert_allclose(
        _scores(tmp_path / "p")[1], _benchmark_scores(data, "method_b_pixel"), rtol=1e-5, atol=1e-6
    )
    _check_maps_match_the_benchmark(data, tmp_path / "p", "method_b_pixel")
    assert not np.allclose(_benchmark_scores(data, "method_b_pixel"), _benchmark_scores(data, "method_b"))


def test_method_b_train_stats_normalisation_reproduces_the_benchmark(data, method_b_normalised_run, tmp_path):
    """The run's first 4 training images gave the fusion scale and the statistics, kept in its fit state: predict
    uses them with no --train-images. --train-images refit them instead (noted); on the run's own training images,
    whose noise follows the images, that gives the same maps."""
    result = json.loads(method_b_normalised_run.read_text())
    assert result["evaluation"]["switches"]["normalise"] == "train_stats"
    assert result["extra"]["train_stats_images"] == 4
    assert result["timings"]["nfe_per_image"] == 2 * 2 * 2  # 2 draws x 2 steps x (1 + blur guidance)
    with np.load(method_b_normalised_run.with_name("seed0.fit.npz")) as z:
        assert sorted(z.files) == ["d_feature_max", "d_pixel_max", "mean", "n_images", "std"]
        assert z["mean"].shape == z["std"].shape == (32, 32) and int(z["n_images"]) == 4
    rec = predict_folder(method_b_normalised_run, data.flat, tmp_path / "n", normal=data.normal, fpr=0.25,
                         device="cpu")  # fmt: skip
    _check_outputs(data, tmp_path / "n", 0.25, map_side=32)
    bench = _benchmark_scores(data, "method_b_normalised")
    np.testing.assert_allclose(_scores(tmp_path / "n")[1], bench, rtol=1e-5, atol=1e-5)
    _check_maps_match_the_benchmark(data, tmp_path / "n", "method_b_normalised")
    assert rec["fit_state"]["source"] == "run"

    train = data.class_dir / "train" / "good"
    refit = predict_folder(method_b_normalised_run, data.flat, tmp_path / "t", normal=data.normal,
                           train_images=train, fpr=0.25, device="cpu")  # fmt: skip
    assert refit["fit_state"]["source"] == "train_images"
    assert any("not taken from the run's own (seed0.fit.npz)" in w for w in refit["warnings"])
    np.testing.assert_allclose(_scores(tmp_path / "t")[1], bench, rtol=1e-5, atol=1e-5)
    other = predict_folder(method_b_normalised_run, data.flat, tmp_path / "o", normal=data.normal,
                           train_images=data.normal, fpr=0.25, device="cpu")  # fmt: skip
    assert other["fusion_scale_value"] != rec["fusion_scale_value"]  # really refitted, on other images


def test_method_a_result_reproduces_the_benchmark(data, method_a_run, tmp_path):
    """The run's train_stats statistics come from its fit state: no --train-images."""
    rec = predict_folder(method_a_run, data.flat, tmp_path, normal=data.normal, fpr=0.1, device="cpu")
    assert rec["fit_state"]["source"] == "run"
    _check_outputs(data, tmp_path, 0.1, map_side=32)
    _, scores, _, _ = _scores(tmp_path)
    np.testing.assert_allclose(scores, _benchmark_scores(data, "method_a"), rtol=1e-5, atol=1e-5)
    _check_maps_match_the_benchmark(data, tmp_path, "method_a")
    assert scores[data.labels == 1].mean() > scores[data.labels == 0].mean()
    # seeded per image: a second run is bit-identical, another batch size equal to float rounding
    for name, bs in (("again", None), ("batch3", 3)):
        predict_folder(method_a_run, data.flat, tmp_path / name, normal=data.normal, fpr=0.1, device="cpu",
                       batch_size=bs)  # fmt: skip
    assert np.array_equal(_scores(tmp_path / "again")[1], scores)
    np.testing.assert_allclose(_scores(tmp_path / "batch3")[1], scores, rtol=1e-5, atol=1e-6)
    assert rec["image_threshold_is_max"] is True  # 8 normal images < 1 / 0.1
    assert any("fewer than 1/fpr" in w for w in rec["warnings"])


def test_draem_result_reproduces_the_benchmark(data, draem_run, tmp_path):
    rec = predict_folder(draem_run, data.flat, tmp_path, normal=data.normal, fpr=0.25, device="cpu")
    _check_outputs(data, tmp_path, 0.25, map_side=32)
    np.testing.assert_allclose(_scores(tmp_path)[1], _benchmark_scores(data, "draem"), rtol=1e-5, atol=1e-6)
    _check_maps_match_the_benchmark(data, tmp_path, "draem")
    result = json.loads(draem_run.read_text())
    assert (
        rec["settings"] == result["extra"]["config"]["methods"]["draem"]
        and rec["settings"]["score_pool"] == 5
    )
    assert rec["settings_overrides"] == {} and rec["backbone"] is None


@pytest.mark.parametrize("method", ["method_a", "method_b", "simplenet", "draem"])
def test_every_method_thresholds_pixels_on_the_normal_maps_and_outlines_what_lies_above(
    data, request, tmp_path, method
):
    """The pixel threshold is the documented rule on every pixel of the --normal images' maps (here the benchmark's
    own test/good images, so their maps are the run's), whatever the method, and not the image threshold; each
    overlay outlines in magenta the edge of the region whose map lies above it, and nothing else."""
    from scipy import ndimage as ndi

    from texad.evaluation.grid import resize_maps

    run = request.getfixturevalue(f"{method}_run")
    names = sorted(p.name for p in data.flat.iterdir())
    good = [n for n, label in zip(names, data.labels, strict=True) if label == 0]
    (tmp_path / "normal").mkdir()
    for n in good:
        shutil.copy(data.flat / n, tmp_path / "normal" / n)
    out, fpr = tmp_path / "out", 0.1
    rec = predict_folder(run, data.flat, out, normal=tmp_path / "normal", fpr=fpr, device="cpu")
    _check_maps_match_the_benchmark(data, out, method)  # the normal images' maps are the run's
    maps = {n: np.load(out / "maps" / f"{Path(n).stem}.npy").astype(np.float32) for n in names}

    # rank ceil((1 - fpr)(n - 1)) of the n sorted pixel values of the normal images' maps (4 x 32 x 32); they were
    # scored among --normal and saved among --images: the same maps to float32 arithmetic, rounded to float16 here
    values = np.sort(np.concatenate([maps[n].ravel() for n in good]).astype(np.float64))
    reference = values[int(np.ceil((1 - fpr) * (values.size - 1)))]
    threshold = rec["pixel_threshold"]
    assert abs(threshold - reference) <= HALF_ULP16 * abs(reference) + 1e-5 * (values[-1] - values[0]), (
        threshold, reference, rec["image_threshold"])  # fmt: skip
    assert values[0] < reference < values[-1]

    edges = 0
    for n in names:
        with Image.open(out / "overlays" / f"{Path(n).stem}.png") as im:
            overlay = np.asarray(im.convert("RGB"))
        size = overlay.shape[:2]
        m = resize_maps(maps[n], size)  # the map on the image, as predict draws it (from float32 there)
        tol = HALF_ULP16 * resize_maps(np.abs(maps[n]), size) + 1e-6 * float(np.abs(maps[n]).max())
        above, below = m > threshold + tol, m < threshold - tol  # surely; in between: either
        magenta = (overlay == (255, 0, 255)).all(axis=-1)
        assert not (magenta & below).any(), n
        assert not (magenta & ndi.binary_erosion(above, border_value=1)).any(), n  # inside the region
        edge = above & ~ndi.binary_erosion(~below, border_value=1)  # above, beside a pixel below
        assert magenta[edge].all(), n
        edges += int(edge.sum())
    assert edges > 0


def test_model_file_uses_its_training_settings_overridable_and_overlays_take_the_image_size(
    data, simplenet_run, tmp_path
):
    """SimpleNet was trained with smoothing_sigma 2 (not the schema's 4): its model file predicts with 2."""
    model = _model_file(data, simplenet_run, "simplenet")
    rec = predict_folder(model, data.flat, tmp_path / "file", normal=data.normal, fpr=0.25, device="cpu")
    assert rec["settings_source"] == "model file" and rec["settings"]["smoothing_sigma"] == 2
    np.testing.assert_allclose(
        _scores(tmp_path / "file")[1], _benchmark_scores(data, "simplenet"), rtol=1e-5, atol=1e-6
    )
    _check_maps_match_the_benchmark(data, tmp_path / "file", "simplenet")  # smoothed as the run smoothed

    last = sorted(data.flat.iterdir())[-1]  # a defective image
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(last, images / "a.png")
    Image.open(images / "a.png").resize((80, 48)).save(images / "b.png")  # not square, not the model's size
    warnings: list[str] = []
    rec = predict_folder(model, images, tmp_path / "out", train_images=data.class_dir / "train" / "good",
                         settings={"smoothing_sigma": 1.0}, device="cpu", warn=warnings.append)  # fmt: skip
    assert rec["settings_source"] == "model file" and rec["settings"]["smoothing_sigma"] == 1.0
    assert rec["settings_overrides"] == {"smoothing_sigma": 1.0}
    assert rec["normal_source"]["kind"] == "train" and any("training images" in w for w in warnings)
    assert (
        rec["model"]["result"] is None
        and rec["model"]["model_hash"] == json.loads(simplenet_run.read_text())["model_hash"]
    )
    with Image.open(tmp_path / "out" / "overlays" / "b.png") as im:
        assert im.size == (80, 48)
    assert np.load(tmp_path / "out" / "maps" / "b.npy").shape == (32, 32)
    # a less smoothed map of the same image: the override took effect
    sharp = np.load(tmp_path / "out" / "maps" / "a.npy").astype(np.float64)
    smooth = np.load(tmp_path / "file" / "maps" / f"{last.stem}.npy").astype(np.float64)
    assert np.abs(np.diff(sharp, axis=-1)).mean() > np.abs(np.diff(smooth, axis=-1)).mean()

    # a key that shapes the model is refused, an unknown one named; nothing is written either way
    with pytest.raises(ValueError, match=r"methods\.simplenet\.image_size shapes the trained model"):
        predict_folder(
            model, images, tmp_path / "o2", normal=data.normal, settings={"image_size": 64}, device="cpu"
        )
    with pytest.raises(ConfigError, match="methods.simplenet.sigma"):
        predict_folder(
            model, images, tmp_path / "o2", normal=data.normal, settings={"sigma": 2}, device="cpu"
        )
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    ("method", "kind", "trained", "shaping"),
    [
        ("method_a", "score", ("inference", "smoothing_sigma", 2), {"network": {"nf": 32}}),
        ("method_b", "ddpm", ("inference", "t_start", 100), {"train": {"lr": 0.01}}),
        ("draem", "draem", ("score_pool", None, 5), {"epochs": 3}),
    ],
)
def test_every_model_file_names_its_method_and_keeps_its_settings(
    data, request, tmp_path, method, kind, trained, shaping
):
    """A model file carries its config block: predicting from it reproduces the benchmark run (the settings it was
    trained with, not the schema's defaults); an override of a key that shapes the model is refused."""
    run = request.getfixturevalue(f"{method}_run")
    model = _model_file(data, run, kind)
    train = data.class_dir / "train" / "good"
    rec = predict_folder(model, data.flat, tmp_path / "out", normal=data.normal, train_images=train, fpr=0.2,
                         device="cpu")  # fmt: skip
    assert rec["method"] == method and rec["settings_source"] == "model file"
    assert rec["model"]["path"] == str(model.resolve()) and len(rec["model"]["sha256"]) == 64
    group, key, value = trained
    assert (rec["settings"][group] if key is None else rec["settings"][group][key]) == value
    recorded = json.loads(run.read_text())["extra"]["config"]["methods"][method]
    assert {k: v for k, v in rec["settings"].items() if k != "ablation"} == {
        k: v for k, v in recorded.items() if k != "ablation"
    }
    assert len(_scores(tmp_path / "out")[0]) == len(data.labels)
    np.testing.assert_allclose(
        _scores(tmp_path / "out")[1], _benchmark_scores(data, method), rtol=1e-5, atol=1e-5
    )
    _check_maps_match_the_benchmark(data, tmp_path / "out", method)
    ((group, inner),) = shaping.items()  # the one key the override sets, e.g. network.nf
    key = f"{group}.{next(iter(inner))}" if isinstance(inner, dict) else group
    with pytest.raises(ValueError, match=rf"methods\.{method}\.{re.escape(key)} shapes the trained model"):
        predict_folder(model, data.flat, tmp_path / "o2", normal=data.normal, train_images=train, settings=shaping,
                       device="cpu")  # fmt: skip
    assert not (tmp_path / "o2").exists()


def test_a_result_outside_its_results_tree_says_what_it_lacks(data, draem_run, tmp_path):
    moved = tmp_path / "seed0.json"
    shutil.copy(draem_run, moved)
    with pytest.raises(ValueError, match="records its model only by hash"):
        predict_folder(moved, data.flat, tmp_path / "out", normal=data.normal, device="cpu")


# ------------------------------------------------------------------------------ the run's thresholds
def _with_thresholds(data: Data, run: Path, kind: str, name: str, root: Path, block: dict) -> Path:
    """A copy of ``run``'s results tree (result and model) with ``texad threshold``'s file beside the result."""
    from texad.cli import main
    from texad.evaluation.thresholds import threshold_path

    method = json.loads(run.read_text())["method"]
    result = data.run_path(method, root)
    result.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run, result)
    shutil.copy(run.with_name(f"{run.stem}.fit.npz"), result.with_name(f"{result.stem}.fit.npz"))
    data.model_dir(root).mkdir(parents=True, exist_ok=True)
    shutil.copy(_model_file(data, run, kind), data.model_dir(root))
    settings = json.dumps({"evaluation": {"threshold": block}})
    assert main(["threshold", "--result", str(result), "--maps", str(data.maps_path(name)), "--settings",
                 settings, "--out", str(threshold_path(result))]) == 0  # fmt: skip
    return result


def test_a_result_with_its_run_thresholds_needs_no_normal_images(data, draem_run, tmp_path, capsys):
    """Without --normal, the run's threshold file (chosen on the benchmark's normal test images) sets both
    thresholds; --normal still wins; an --fpr it cannot honour and a stale file are refused."""
    from texad.evaluation.thresholds import threshold_path

    result = _with_thresholds(
        data, draem_run, "draem", "draem", tmp_path / "results", {"rule": "fpr", "fpr": 0.25}
    )
    file = threshold_path(result)
    run_thr = json.loads(file.read_text())
    bench = _benchmark_scores(data, "draem")
    assert run_thr["image_threshold"] == quantile_threshold(bench[data.labels == 0], 0.25)

    rec = predict_folder(result, data.flat, tmp_path / "out", device="cpu")
    names, scores, thresholds, flags = _scores(tmp_path / "out")
    assert rec["normal_source"] == {"kind": "run", "file": str(file.resolve()), "rule": "fpr", "fpr": 0.25,
                                    "optimistic": False}  # fmt: skip
    assert (
        rec["image_threshold"] == run_thr["image_threshold"]
        and rec["pixel_threshold"] == run_thr["pixel_threshold"]
    )
    assert rec["fpr"] == 0.25 and rec["optimistic"] is False and rec["n_normal"] == run_thr["n_normal"] == 4
    assert rec["normal_scores"] == {} and np.all(thresholds == run_thr["image_threshold"])
    np.testing.assert_allclose(scores, bench, rtol=1e-5, atol=1e-6)  # the benchmark's own test images...
    assert np.array_equal(flags, (scores > rec["image_threshold"]).astype(int))
    assert flags[data.labels == 0].sum() <= 0.25 * 4  # ...so at most fpr of its normal ones are flagged

    # the user's normal images win over the run's file
    rec = predict_folder(result, data.flat, tmp_path / "normal", normal=data.normal, device="cpu")
    assert rec["normal_source"]["kind"] == "normal" and rec["fpr"] == 0.01 and len(rec["normal_scores"]) == 8

    # an --fpr that the file was not chosen at needs --normal; the file's own is fine
    with pytest.raises(ValueError, match=r"--fpr 0.1 needs normal images.*pass --normal"):
        predict_folder(result, data.flat, tmp_path / "x", fpr=0.1, device="cpu")
    assert not (tmp_path / "x").exists()
    assert (
        predict_folder(result, data.flat, tmp_path / "same", fpr=0.25, device="cpu")["normal_source"]["kind"]
        == "run"
    )

    # the command line says where the thresholds came from
    parser = argparse.ArgumentParser(prog="texad")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", "--model", str(result), "--images", str(data.flat), "--out",
                              str(tmp_path / "cli"), "--device", "cpu"])  # fmt: skip
    assert args.fpr is None and args.func(args) == 0
    assert "the run's fpr thresholds" in capsys.readouterr().out

    # rule f1_max: labelled optimistic wherever it is used
    _with_thresholds(data, draem_run, "draem", "draem", tmp_path / "results", {"rule": "f1_max", "fpr": 0.01})
    warnings: list[str] = []
    rec = predict_folder(result, data.flat, tmp_path / "f1", device="cpu", warn=warnings.append)
    assert rec["optimistic"] is True and rec["normal_source"]["rule"] == "f1_max" and rec["fpr"] is None
    assert any("optimistic" in w for w in warnings)
    # a class without masks has no pixel threshold: the overlays outline nothing, the colours span the maps
    no_pixel = {**json.loads(file.read_text()), "pixel_threshold": None, "pixel_threshold_reason": "no masks"}
    file.write_text(json.dumps(no_pixel))
    rec = predict_folder(result, data.flat, tmp_path / "nopix", device="cpu", warn=warnings.append)
    assert rec["pixel_threshold"] is None and any("no pixel threshold: no masks" in w for w in warnings)
    assert len(list((tmp_path / "nopix" / "overlays").iterdir())) == len(data.labels)

    # a file left from another run of the same name is not used silently
    stale = json.loads(file.read_text())
    stale["model"]["config_hash"] = "0" * 12
    file.write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="another run of this name"):
        predict_folder(result, data.flat, tmp_path / "stale", device="cpu")


def test_method_b_with_its_run_thresholds_scores_as_the_benchmark(data, method_b_run, tmp_path):
    """The run's thresholds were chosen on maps fused at the run's training scale, which its fit state brings:
    with no --normal and no --train-images, predict applies them to the same maps the benchmark made."""
    result = _with_thresholds(
        data, method_b_run, "ddpm", "method_b", tmp_path / "results", {"rule": "fpr", "fpr": 0.0}
    )
    rec = predict_folder(result, data.flat, tmp_path / "out", device="cpu", batch_size=5)
    bench = _benchmark_scores(data, "method_b")
    assert rec["image_threshold"] == bench[data.labels == 0].max()  # fpr 0: the largest normal test score
    np.testing.assert_allclose(_scores(tmp_path / "out")[1], bench, rtol=1e-5, atol=1e-6)
    assert rec["fit_state"]["source"] == "run" and rec["warnings"] == []


def test_a_fit_state_that_is_not_the_runs_is_refused_naming_the_file(data, method_a_run, draem_run, tmp_path):
    """The fit state beside a result is checked against the SHA-256 the result records, for a method that fits
    nothing too; a missing one and a result from before fit states are named, with what to do."""
    result = _with_thresholds(
        data, method_a_run, "score", "method_a", tmp_path / "a", {"rule": "fpr", "fpr": 0.25}
    )
    fit = result.with_name("seed0.fit.npz")
    recorded = json.loads(result.read_text())["extra"]["fit_state"]
    assert recorded["file"] == fit.name and recorded["sha256"] == hashlib.sha256(fit.read_bytes()).hexdigest()
    with np.load(fit) as z:
        state = {k: z[k] for k in z.files}
    assert sorted(state) == ["mean", "std"] and state["mean"].shape == (32, 32)
    state["mean"] = state["mean"] + 1.0  # other statistics under the run's name
    np.savez(fit, **state)
    with pytest.raises(
        ValueError, match=rf"fit state {re.escape(str(fit))} has SHA-256 [0-9a-f]{{64}}, but its result"
    ):
        predict_folder(result, data.flat, tmp_path / "x", normal=data.normal, device="cpu")
    fit.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(fit))):
        predict_folder(result, data.flat, tmp_path / "x", normal=data.normal, device="cpu")
    old = json.loads(result.read_text())
    del old["extra"]["fit_state"]
    result.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"records no fit state .*rerun it, or pass --train-images"):
        predict_folder(result, data.flat, tmp_path / "x", normal=data.normal, device="cpu")
    assert not (tmp_path / "x").exists()

    # DRAEM fits nothing: an empty fit state, checked all the same; --train-images unused say so
    draem = _with_thresholds(data, draem_run, "draem", "draem", tmp_path / "d", {"rule": "fpr", "fpr": 0.25})
    with np.load(draem.with_name("seed0.fit.npz")) as z:
        assert z.files == []
    rec = predict_folder(draem, data.flat, tmp_path / "d_out", normal=data.normal,
                         train_images=data.class_dir / "train" / "good", device="cpu")  # fmt: skip
    assert rec["fit_state"] == {"source": None}
    assert any("--train-images were not used" in w for w in rec["warnings"])
    draem.with_name("seed0.fit.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="seed0.fit.npz has SHA-256"):
        predict_folder(draem, data.flat, tmp_path / "y", normal=data.normal, device="cpu")


# ------------------------------------------------------------------------------------------- errors
def test_corrupt_image_is_named_and_nothing_is_written(data, simplenet_run, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(data.flat, images)
    victim = sorted(images.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated PNG
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=victim.name):
        predict_folder(simplenet_run, images, out, normal=data.normal, device="cpu")
    assert not out.exists() or not any(out.rglob("*"))


def test_missing_or_empty_folders_are_named(data, simplenet_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        predict_folder(simplenet_run, tmp_path / "nowhere", tmp_path / "out", normal=data.normal)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty holds no images"):
        predict_folder(simplenet_run, tmp_path / "empty", tmp_path / "out", normal=data.normal)
    with pytest.raises(FileNotFoundError, match="missing_normal"):
        predict_folder(simplenet_run, data.flat, tmp_path / "out", normal=tmp_path / "missing_normal")
    with pytest.raises(ValueError, match="--normal"):
        predict_folder(simplenet_run, data.flat, tmp_path / "out", device="cpu")
    with pytest.raises(FileNotFoundError, match="no_model.pt"):
        predict_folder(
            tmp_path / "no_model.pt", data.flat, tmp_path / "out", normal=data.normal, device="cpu"
        )
    assert not (tmp_path / "out").exists()


def test_existing_scores_are_kept_unless_overwrite(data, draem_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.csv").write_text("someone else's scores\n")
    with pytest.raises(FileExistsError, match="scores.csv"):
        predict_folder(draem_run, data.flat, out, normal=data.normal, device="cpu")
    assert (out / "scores.csv").read_text() == "someone else's scores\n"
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv"]
    predict_folder(draem_run, data.flat, out, normal=data.normal, device="cpu", overwrite=True)
    assert _scores(out)[0][0] == sorted(p.name for p in data.flat.iterdir())[0]
    # a second run into the same folder names the model of the scores already there
    with pytest.raises(
        FileExistsError, match=re.escape(f"(model {_model_file(data, draem_run, 'draem').resolve()})")
    ):
        predict_folder(draem_run, data.flat, out, normal=data.normal, device="cpu")


def test_cli_parser_runs_predict(data, draem_run, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="texad")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([
        "predict", "--model", str(draem_run), "--images", str(data.flat), "--out", str(tmp_path),
        "--normal", str(data.normal), "--fpr", "0.2", "--device", "cpu", "--batch-size", "3",
        "--settings", '{"score_pool": 3}',
    ])  # fmt: skip
    assert args.func(args) == 0
    assert "draem:" in capsys.readouterr().out
    rec = json.loads((tmp_path / "threshold.json").read_text())
    assert rec["settings"]["score_pool"] == 3 and rec["settings_overrides"] == {"score_pool": 3}
    assert rec["fpr"] == 0.2 and rec["device"]["type"] == "cpu" and rec["texad"]
    with pytest.raises(SystemExit):  # the fusion scale is the run's: no option chooses it
        parser.parse_args(
            ["predict", "--model", "m", "--images", "i", "--out", "o", "--fusion-scale", "folder"]
        )
    assert "unrecognized arguments: --fusion-scale" in capsys.readouterr().err
