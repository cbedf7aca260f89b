"""``texad predict``: a trained model applied to a folder reproduces its benchmark scores and thresholds on
normal images; bad inputs fail naming the file or folder and leave the output folder alone.

Every method is trained tiny (seconds) on a synthetic class and evaluated with its own run function, which
writes a result JSON into a results tree; predict then reads that result (or the bare model file).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from texad.data.layout import list_samples
from texad.data.mvtec import DatasetError
from texad.data.synth import generate_class
from texad.predict import predict_folder, quantile_threshold
from texad.predict.cli import add_parsers

DATASET, CLASS, SEED = "synthetic", "wood", 0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Data:
    root: Path  # dataset root (wood, the trained class; carpet, DRAEM's anomaly source)
    class_dir: Path
    flat: Path  # the test images in one folder, sorted in test-set order
    labels: np.ndarray
    normal: Path  # held-out good images of the same texture (another generator seed)
    results: Path  # a results tree: runs/ and models/

    def run_path(self, method: str) -> Path:
        return self.results / "runs" / DATASET / CLASS / method / "default" / f"seed{SEED}.json"

    def model_path(self, prefix: str, model_hash: str) -> Path:
        return self.results / "models" / DATASET / CLASS / f"seed{SEED}" / f"{prefix}-{model_hash}.pt"

    def maps_path(self, method: str) -> Path:
        return self.results / "maps" / f"{method}.npz"


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
    )


def _quiet(*_a, **_k) -> None:
    pass


# ------------------------------------------------------------------------- the methods' own runs
@pytest.fixture(scope="module")
def simplenet_run(data) -> Path:
    from texad.methods.simplenet import RunSpec, SimpleNetSettings, run_model_hash, run_simplenet

    settings = SimpleNetSettings(
        backbone="efficientnet_lite0", pretrain_embed_dim=64, target_embed_dim=64, dsc_hidden=64, meta_epochs=3,
        gan_epochs=1, batch_size=4, image_size=32, resize=32, noise_std=1.0, adaptor_lr=1e-3, dsc_lr=2e-3,
    )  # fmt: skip
    spec = RunSpec(run_name="t", dataset=DATASET, class_name=CLASS, seed=SEED,
                   backbone_weights="efficientnet_lite0", resolution=32, batch_size=8)  # fmt: skip
    run_simplenet(
        data.class_dir, spec, settings, model_path=data.model_path("simplenet", run_model_hash(spec, settings)),
        ckpt_dir=data.results / "ck_simplenet", out_result=data.run_path("simplenet"),
        out_maps=data.maps_path("simplenet"), progress=False, log=_quiet,
    )  # fmt: skip
    return data.run_path("simplenet")


@pytest.fixture(scope="module")
def method_b_run(data) -> Path:
    from texad.diffusion.training import DiffusionTrainSettings, train_diffusion
    from texad.methods.conditioned_blur.anomaly_map import MapSettings
    from texad.methods.conditioned_blur.infer import ReconstructionSettings
    from texad.methods.conditioned_blur.run import RunSpec, run_method_b

    ddpm = DiffusionTrainSettings(
        dataset=DATASET, class_name=CLASS, preset="tiny", image_size=32, epochs=2, batch_size=4, seed=SEED
    )
    model = data.model_path("ddpm", ddpm.model_hash())
    train_diffusion(data.class_dir, model, data.results / "ck_ddpm", ddpm, progress=False, log=_quiet)
    spec = RunSpec(run_name="t", dataset=DATASET, class_name=CLASS, variant="default", seed=SEED,
                   backbone="efficientnet_lite0", backbone_weights="efficientnet_lite0", weights_cache=None,
                   resolution=32, batch_size=8)  # fmt: skip
    recon = ReconstructionSettings(t_start=100, skip=50, blur_kernel=15)
    run_method_b(model, data.class_dir, spec, recon, MapSettings(smoothing_sigma=2.0, feature_size=64),
                 out_result=data.run_path("method_b"), out_maps=data.maps_path("method_b"))  # fmt: skip
    return data.run_path("method_b")


@pytest.fixture(scope="module")
def method_b_normalised_run(data, method_b_run) -> Path:
    """Method B with the train_stats normalisation (on 4 training images) and 2 draws, on the same DDPM."""
    from texad.methods.conditioned_blur.anomaly_map import MapSettings
    from texad.methods.conditioned_blur.infer import ReconstructionSettings
    from texad.methods.conditioned_blur.run import RunSpec, run_method_b

    model = next((data.results / "models" / DATASET / CLASS / f"seed{SEED}").glob("ddpm-*.pt"))
    spec = RunSpec(run_name="t", dataset=DATASET, class_name=CLASS, variant="normalised", seed=SEED,
                   backbone="efficientnet_lite0", backbone_weights="efficientnet_lite0", weights_cache=None,
                   resolution=32, batch_size=8)  # fmt: skip
    recon = ReconstructionSettings(t_start=100, skip=50, blur_kernel=15, draws=2)
    maps_cfg = MapSettings(smoothing_sigma=2.0, feature_size=64, normalise="train_stats", normalise_images=4)
    out = data.results / "runs" / DATASET / CLASS / "method_b" / "normalised" / f"seed{SEED}.json"
    run_method_b(model, data.class_dir, spec, recon, maps_cfg, out_result=out,
                 out_maps=data.maps_path("method_b_normalised"))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def method_a_run(data) -> Path:
    from texad.diffusion.training import train_diffusion
    from texad.methods.score_tscales.run import MethodASettings, RunSpec, run_method_a

    settings = MethodASettings.from_config({
        "sde": {"sigma_max": 1.0, "n_steps": 20},
        "network": {"preset": "tiny", "nf": 16},
        "train": {"batch_size": 8, "iterations": 40, "lr": 2e-3, "warmup": 5},
        "inference": {"draws": 1, "n_scales": 4, "steps_per_scale": 1, "batch_size": 5, "smoothing_sigma": 2},
    })  # fmt: skip
    ts = settings.train_settings(DATASET, CLASS, 32, SEED)
    model = data.model_path("score", ts.model_hash())
    train_diffusion(data.class_dir, model, data.results / "ck_score", ts, progress=False, log=_quiet)
    run_method_a(model, data.class_dir, RunSpec("t", DATASET, CLASS, "default", SEED, resolution=32), settings,
                 out_result=data.run_path("method_a"), out_maps=data.maps_path("method_a"))  # fmt: skip
    return data.run_path("method_a")


@pytest.fixture(scope="module")
def draem_run(data) -> Path:
    from texad.methods.draem import DraemSettings, RunSpec, run_draem, source_paths, train_draem

    settings = DraemSettings(epochs=2, batch_size=4, lr=1e-3, image_size=32, recon_base_width=2,
                             disc_base_width=2, anomaly_source="synthetic", score_pool=5)  # fmt: skip
    model = data.model_path("draem", settings.model_hash(DATASET, CLASS, SEED))
    paths = source_paths("synthetic", class_name=CLASS, dataset_root=data.root)
    train_draem(data.class_dir, paths, settings, out=model, ckpt_dir=data.results / "ck_draem", seed=SEED,
                dataset=DATASET, progress=False, log=_quiet)  # fmt: skip
    run_draem(model, data.class_dir, RunSpec("t", DATASET, CLASS, SEED, resolution=32, batch_size=8),
              out_result=data.run_path("draem"), out_maps=data.maps_path("draem"))  # fmt: skip
    return data.run_path("draem")


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


def _benchmark_scores(data: Data, method: str) -> np.ndarray:
    return np.load(data.maps_path(method))["scores"].astype(np.float64)


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


# --------------------------------------------------------------------------------------- behaviour
def test_simplenet_result_reproduces_the_benchmark_and_thresholds_on_normal_images(
    data, simplenet_run, tmp_path
):
    from texad.methods.simplenet import load_simplenet
    from texad.methods.simplenet import predict as simplenet_predict
    from texad.predict import load_images

    fpr = 0.25  # 8 normal images: the 0.75 quantile, not their maximum
    rec = predict_folder(simplenet_run, data.flat, tmp_path, normal=data.normal, fpr=fpr, device="cpu")
    checked = _check_outputs(data, tmp_path, fpr, map_side=32)
    assert checked["method"] == rec["method"] == "simplenet" and rec["settings_source"] == "result"
    assert rec["image_threshold_is_max"] is False and rec["normal_source"]["kind"] == "normal"
    _, scores, _, _ = _scores(tmp_path)
    np.testing.assert_allclose(scores, _benchmark_scores(data, "simplenet"), rtol=1e-5, atol=1e-6)
    assert scores[data.labels == 1].mean() > scores[data.labels == 0].mean()

    # the normal images' scores and pixel threshold, from the method's own inference
    model, settings, _ = load_simplenet(rec["model"]["path"])
    normal = load_images(sorted(data.normal.iterdir()), 32)
    maps, normal_scores, _ = simplenet_predict(model, normal, sigma=settings.smoothing_sigma, batch_size=3,
                                               device="cpu")  # fmt: skip
    np.testing.assert_allclose(list(rec["normal_scores"].values()), normal_scores, rtol=1e-5, atol=1e-6)
    assert rec["pixel_threshold"] == pytest.approx(
        float(np.quantile(maps, 1 - fpr, method="higher")), rel=1e-5
    )
    assert rec["model"]["model_hash"] == json.loads(simplenet_run.read_text())["model_hash"]


def test_method_b_result_reproduces_the_benchmark_with_folder_fusion(data, method_b_run, tmp_path):
    out = tmp_path / "folder"
    rec = predict_folder(method_b_run, data.flat, out, normal=data.normal, fpr=0.25, device="cpu",
                         settings={"fusion_scale": "folder"}, batch_size=5)  # fmt: skip
    _check_outputs(data, out, 0.25, map_side=32)
    _, scores, _, _ = _scores(out)
    # same model, settings and per-image seeds; the folder is fused as one test set, as the benchmark does
    np.testing.assert_allclose(scores, _benchmark_scores(data, "method_b"), rtol=1e-5, atol=1e-6)
    assert (
        rec["settings"]["reconstruction"]["t_start"] == 100
        and rec["backbone"]["name"] == "efficientnet_lite0"
    )
    # (a DDPM that separates defects takes minutes to train: Method A carries that check)


def test_method_b_default_fixes_the_fusion_scale_on_the_normal_images(data, method_b_run, tmp_path):
    """One scale for every image, so a score no longer depends on the other images of the folder."""
    rec = predict_folder(method_b_run, data.flat, tmp_path / "all", normal=data.normal, fpr=0.5, device="cpu")
    _check_outputs(data, tmp_path / "all", 0.5, map_side=32)
    assert rec["settings"]["fusion_scale"] == "normal" and rec["fusion_scale_value"] > 0
    names, scores, _, _ = _scores(tmp_path / "all")
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(data.flat / names[0], single / names[0])  # the first image keeps its index, hence its noise
    predict_folder(method_b_run, single, tmp_path / "single", normal=data.normal, fpr=0.5, device="cpu")
    assert _scores(tmp_path / "single")[1][0] == pytest.approx(scores[0], rel=1e-5)


def test_method_b_train_stats_normalisation_reproduces_the_benchmark(data, method_b_normalised_run, tmp_path):
    """The run's first 4 training images give the statistics, with the benchmark's per-image training seeds."""
    result = json.loads(method_b_normalised_run.read_text())
    assert result["evaluation"]["switches"]["normalise"] == "train_stats"
    assert result["timings"]["nfe_per_image"] == 2 * 2 * 2  # 2 draws x 2 steps x (1 + blur guidance)
    with pytest.raises(ValueError, match="--train-images"):
        predict_folder(method_b_normalised_run, data.flat, tmp_path / "x", normal=data.normal, device="cpu")
    train = data.class_dir / "train" / "good"
    predict_folder(method_b_normalised_run, data.flat, tmp_path / "n", normal=data.normal, train_images=train,
                   fpr=0.25, device="cpu", settings={"fusion_scale": "folder"})  # fmt: skip
    _check_outputs(data, tmp_path / "n", 0.25, map_side=32)
    np.testing.assert_allclose(
        _scores(tmp_path / "n")[1], _benchmark_scores(data, "method_b_normalised"), rtol=1e-5, atol=1e-5
    )


def test_method_a_result_reproduces_the_benchmark(data, method_a_run, tmp_path):
    train = data.class_dir / "train" / "good"
    rec = predict_folder(method_a_run, data.flat, tmp_path, normal=data.normal, train_images=train, fpr=0.1,
                         device="cpu")  # fmt: skip
    _check_outputs(data, tmp_path, 0.1, map_side=32)
    _, scores, _, _ = _scores(tmp_path)
    np.testing.assert_allclose(scores, _benchmark_scores(data, "method_a"), rtol=1e-5, atol=1e-5)
    assert scores[data.labels == 1].mean() > scores[data.labels == 0].mean()
    # seeded per image: a second run is bit-identical, another batch size equal to float rounding
    for name, bs in (("again", None), ("batch3", 3)):
        predict_folder(method_a_run, data.flat, tmp_path / name, normal=data.normal, train_images=train, fpr=0.1,
                       device="cpu", batch_size=bs)  # fmt: skip
    assert np.array_equal(_scores(tmp_path / "again")[1], scores)
    np.testing.assert_allclose(_scores(tmp_path / "batch3")[1], scores, rtol=1e-5, atol=1e-6)
    assert rec["image_threshold_is_max"] is True  # 8 normal images < 1 / 0.1
    assert any("fewer than 1/fpr" in w for w in rec["warnings"])
    with pytest.raises(ValueError, match="--train-images"):
        predict_folder(method_a_run, data.flat, tmp_path / "x", normal=data.normal, device="cpu")
    assert not (tmp_path / "x").exists()


def test_draem_result_reproduces_the_benchmark(data, draem_run, tmp_path):
    rec = predict_folder(draem_run, data.flat, tmp_path, normal=data.normal, fpr=0.25, device="cpu")
    _check_outputs(data, tmp_path, 0.25, map_side=32)
    np.testing.assert_allclose(_scores(tmp_path)[1], _benchmark_scores(data, "draem"), rtol=1e-5, atol=1e-6)
    assert rec["settings"] == {"score_pool": 5}


def test_model_file_uses_defaults_overridable_and_overlays_take_the_image_size(data, simplenet_run, tmp_path):
    result = json.loads(simplenet_run.read_text())
    model = data.model_path("simplenet", result["model_hash"])
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(data.flat / sorted(p.name for p in data.flat.iterdir())[-1], images / "a.png")
    Image.open(images / "a.png").resize((80, 48)).save(images / "b.png")  # not square, not the model's size
    warnings: list[str] = []
    rec = predict_folder(model, images, tmp_path / "out", train_images=data.class_dir / "train" / "good",
                         settings={"smoothing_sigma": 1.0}, device="cpu", warn=warnings.append)  # fmt: skip
    assert rec["settings_source"] == "defaults" and rec["settings"] == {"smoothing_sigma": 1.0}
    assert rec["normal_source"]["kind"] == "train" and any("training images" in w for w in warnings)
    assert rec["model"]["result"] is None and rec["model"]["model_hash"] == result["model_hash"]
    with Image.open(tmp_path / "out" / "overlays" / "b.png") as im:
        assert im.size == (80, 48)
    assert np.load(tmp_path / "out" / "maps" / "b.npy").shape == (32, 32)
    with pytest.raises(ValueError, match="unknown inference setting 'image_size'"):
        predict_folder(
            model, images, tmp_path / "o2", normal=data.normal, settings={"image_size": 64}, device="cpu"
        )


@pytest.mark.parametrize(
    ("method", "prefix", "overrides"),
    [
        ("method_a", "score", {"inference": {"n_scales": 1, "draws": 1}}),
        ("method_b", "ddpm", {"backbone": {"name": "efficientnet_lite0", "weights": "efficientnet_lite0"},
                              "reconstruction": {"t_start": 50, "blur_kernel": 15}}),
        ("draem", "draem", {}),
    ],
)  # fmt: skip
def test_every_model_file_names_its_method(data, request, tmp_path, method, prefix, overrides):
    run = request.getfixturevalue(f"{method}_run")
    model = data.model_path(prefix, json.loads(run.read_text())["model_hash"])
    rec = predict_folder(model, data.flat, tmp_path, normal=data.normal, train_images=data.class_dir / "train/good",
                         fpr=0.2, settings=overrides, device="cpu")  # fmt: skip
    assert rec["method"] == method and rec["settings_source"] == "defaults"
    assert rec["model"]["path"] == str(model.resolve()) and len(rec["model"]["sha256"]) == 64
    assert len(_scores(tmp_path)[0]) == len(data.labels)


def test_a_result_outside_its_results_tree_says_what_it_lacks(data, draem_run, tmp_path):
    moved = tmp_path / "seed0.json"
    shutil.copy(draem_run, moved)
    with pytest.raises(ValueError, match="records its model only by hash"):
        predict_folder(moved, data.flat, tmp_path / "out", normal=data.normal, device="cpu")


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
    assert rec["settings"] == {"score_pool": 3} and rec["settings_overrides"] == {"score_pool": 3}
    assert rec["fpr"] == 0.2 and rec["device"]["type"] == "cpu" and rec["texad"]
