"""The validation split (issue 23, item 1): one anomaly generator below the methods, a seeded split per class from
normal images only, the training view of the rest, and the identity of the models trained on it."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from texad.config import ConfigError, validate_config
from texad.data.anomalies import ANOMALY_KINDS, draw_anomaly, draw_perlin, recipe_for
from texad.data.defects import draw_defect
from texad.data.holdout import Holdout, HoldoutError, held_out_count
from texad.data.mvtec import MVTecDataset
from texad.data.synth import generate_class
from texad.data.validation import ValidationSettings, build_training_view, build_validation_split
from texad.methods import get, make_settings, model_owner
from texad.methods.base import RunKey
from texad.methods.draem.anomaly_generator import simulate_anomaly
from texad.plan import Plan, settings_arg

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48


def _texture(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _settings(**kw) -> ValidationSettings:
    block = {"holdout": 0.25, "min_holdout": 2, "anomalies": ["perlin", "scratch"], "seed": 0, **kw}
    return ValidationSettings.from_config(validate_config({"validation": block}, partial=True))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two tiny synthetic classes: woven (grayscale, 12 training images) and wood (colour, the anomaly source)."""
    base = tmp_path_factory.mktemp("vsplit")
    generate_class(base, "woven", image_size=SIZE, n_train=12, n_test_good=2, n_test_per_defect=1, seed=0)
    generate_class(base, "wood", image_size=SIZE, n_train=4, n_test_good=1, n_test_per_defect=1, seed=0)
    return base


def _split(
    root: Path, out: Path, settings: ValidationSettings, cls: str = "woven", sources: bool = True
) -> dict:
    paths = sorted((root / "wood" / "train" / "good").glob("*.png")) if sources and cls == "woven" else None
    return build_validation_split(root / cls, out, settings, dataset="synthetic", class_name=cls,
                                  marker=out / "split.json", source_paths=paths,
                                  source_kind="synthetic" if paths else None)  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a split by relative path: its bytes (a link: the name of the file it points to)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[p.relative_to(folder).as_posix()] = os.readlink(p).rsplit("/", 1)[-1].encode()
        elif p.is_file() and p.name != "split.json":
            out[p.relative_to(folder).as_posix()] = p.read_bytes()
    return out


# ------------------------------------------------------------------------------------------ the generator
def test_draem_and_the_embedded_set_draw_the_same_values_as_before_the_move():
    """Digests computed with the generator in texad.methods.draem (anomaly_generator.py, perlin.py) and the defect
    painters in texad.data.synth, before they moved down to texad.data."""

    def digest(*arrays) -> str:
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes())
        return h.hexdigest()[:16]

    image = torch.from_numpy(_texture(32, 32, 2)).permute(2, 0, 1).float() / 255.0
    sources = [_texture(32, 32, 10 + i) for i in range(3)]
    for name, expected in (("code", "28485c5f02000982"), ("paper", "458ecf0b13d6d040")):
        outs = []
        for s in range(12):
            o = simulate_anomaly(image, np.random.default_rng(s), recipe_for(name), sources)
            outs += [o.input.numpy(), o.target.numpy(), o.mask.numpy(),
                     np.array([o.label, -1 if o.opacity is None else o.opacity])]  # fmt: skip
        assert digest(*outs) == expected, name


def test_the_embedded_set_paints_the_same_defects_as_before_the_move(tmp_path):
    for name in ("woven", "carpet"):
        generate_class(tmp_path, name, image_size=48, n_train=2, n_test_good=1, n_test_per_defect=2, seed=3)
    h = hashlib.sha256()
    for p in sorted(tmp_path.rglob("*.png")):
        h.update(p.relative_to(tmp_path).as_posix().encode())
        h.update(p.read_bytes())
    assert h.hexdigest()[:16] == "8c792b39a75108d4"


@pytest.mark.parametrize("shape", [(48, 48, 3), (40, 56, 3), (56, 40), (32, 32)])
def test_every_kind_draws_onto_any_image_with_an_exact_mask(shape):
    """The defect kinds on images of no synthetic class (noise, non-square, grayscale) and the Perlin anomaly: the
    mask is exactly the changed pixels, and not empty."""
    image = _texture(shape[0], shape[1], 1, channels=3 if len(shape) == 3 else 1)
    sources = [_texture(shape[0], shape[1], 7, channels=3)]
    for kind in ANOMALY_KINDS:
        for seed in range(3):
            out, mask, _ = draw_anomaly(kind, image, np.random.default_rng(seed), sources=sources)
            assert out.shape == image.shape and out.dtype == np.uint8 and mask.shape == shape[:2]
            changed = out != image if out.ndim == 2 else (out != image).any(-1)
            np.testing.assert_array_equal(mask, changed, err_msg=f"{kind} {shape} {seed}")
            assert mask.any(), (kind, shape, seed)
    with pytest.raises(ValueError, match="at least 32 x 32"):
        draw_defect(_texture(24, 40, 0), "hole", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown anomaly kind 'dent'"):
        draw_anomaly("dent", image, np.random.default_rng(0))


def test_a_perlin_anomaly_covers_at_least_its_minimum_area():
    image = _texture(64, 64, 3)
    areas = [
        draw_perlin(image, [_texture(64, 64, 4)], np.random.default_rng(s), recipe_for("code"))[1].mean()
        for s in range(40)
    ]
    assert min(areas) >= 0.005 and max(areas) > 0.02


# --------------------------------------------------------------------------------------------- the split
def test_the_split_is_seeded_and_deterministic(root, tmp_path):
    a = _split(root, tmp_path / "a", _settings())
    b = _split(root, tmp_path / "b", _settings())
    assert _files(tmp_path / "a") == _files(tmp_path / "b")  # same seed: the same bytes
    assert {k: v for k, v in a.items() if k != "class_dir"} == {
        k: v for k, v in b.items() if k != "class_dir"
    }
    other = _split(root, tmp_path / "c", _settings(seed=1))
    assert other["held_out"] != a["held_out"] and len(other["held_out"]) == len(a["held_out"]) == 3
    # which images are held out is a function of the seed, the class and the names: not of the folder's order
    names = [f"{i:03d}.png" for i in range(12)]
    assert Holdout(0.25, 2, 0).choose(names, "woven") == Holdout(0.25, 2, 0).choose(names[::-1], "woven")
    assert a["held_out"] == Holdout(0.25, 2, 0).choose(names, "woven")
    assert Holdout(0.25, 2, 0).choose(names, "woven") != Holdout(0.25, 2, 0).choose(names, "wood")


def test_the_split_reads_as_an_mvtec_class_with_exact_masks(root, tmp_path):
    out = tmp_path / "split"
    m = _split(root, out, _settings())
    assert m["validates_on_training_images"] is False and m["n_normal"] == 3 and m["n_anomalous"] == 6
    assert m["n_train"] == 12 and m["n_trained_on"] == 9 and m["source"]["groups"] == ["wood"]
    assert sorted(p.name for p in (out / "train" / "good").iterdir()) == sorted(
        set(f"{i:03d}.png" for i in range(12)) - set(m["held_out"])
    )
    assert sorted(p.name for p in (out / "test" / "good").iterdir()) == m["held_out"]
    test = MVTecDataset(out, "test", image_size=SIZE, mask_size="native")
    assert list(test.labels) == [0] * 3 + [1] * 6
    assert [test.samples[i].defect for i in range(len(test))] == ["good"] * 3 + ["perlin"] * 3 + [
        "scratch"
    ] * 3
    for i in range(len(test)):
        sample = test.samples[i]
        if sample.label == 0:
            assert not test[i]["mask"].any()
            continue
        # the mask is exactly where the anomalous image differs from its held-out original
        original = np.asarray(Image.open(out / "test" / "good" / f"{sample.path.stem}.png"))
        drawn = np.asarray(Image.open(sample.path))
        mask = np.asarray(Image.open(sample.mask)) > 0
        np.testing.assert_array_equal(mask, drawn != original)
        assert mask.any() and test[i]["mask"].bool()[0].numpy().tolist() == mask.tolist()
    assert len(MVTecDataset(out, "train", image_size=SIZE)) == 9


def test_holdout_zero_validates_on_the_training_images_and_says_so(root, tmp_path):
    out = tmp_path / "h0"
    m = _split(root, out, _settings(holdout=0, anomalies=["stain"]), sources=False)
    training = sorted(p.name for p in (root / "woven" / "train" / "good").iterdir())
    assert m["validates_on_training_images"] is True and m["held_out"] == [] and m["holdout"] == 0.0
    assert sorted(p.name for p in (out / "test" / "good").iterdir()) == training
    assert sorted(p.name for p in (out / "train" / "good").iterdir()) == training
    assert m["n_normal"] == m["n_anomalous"] == m["n_trained_on"] == 12 and m["source"] is None
    # one class and no DTD: the Perlin sources are the class's own other training images, never the image itself
    own = _split(root, tmp_path / "own", _settings(holdout=0, anomalies=["perlin"]), cls="wood")
    assert own["source"]["kind"] == "own_class" and own["n_anomalous"] == 4
    assert all(e["source"] != f"wood/train/good/{e['image']}" for e in own["images"])


def test_the_minimum_count_and_too_few_images(root, tmp_path):
    assert held_out_count(0.1, 5, 40, "x") == 5  # ceil(4) < min_holdout 5
    assert held_out_count(0.2, 5, 40, "x") == 8 and held_out_count(0.0, 5, 3, "x") == 0
    assert held_out_count(0.01, 1, 3, "x") == 1
    # in the split job (counts not known before it runs): the class, the count and the key
    with pytest.raises(HoldoutError) as err:
        _split(root, tmp_path / "few", _settings(min_holdout=3), cls="wood")
    text = str(err.value)
    assert "class synthetic/wood has 4 training image(s)" in text and "validation.holdout 0.25" in text
    assert "validation.min_holdout 3" in text and "leaves 1 to train on" in text
    assert not (tmp_path / "few").exists()
    # ... and before any job where the counts are known: the synthetic set's n_train, a user folder's classes
    config = {"datasets": {"synthetic": {"enabled": True, "classes": ["woven"], "n_train": 6}},
              "methods": {"simplenet": {"enabled": True}}}  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"class synthetic/woven has 6 training image\(s\): validation\.holdout"
    ):
        Plan(validate_config(config))
    Plan(validate_config({**config, "validation": {"holdout": 0.2, "min_holdout": 1}}))
    Plan(validate_config({**config, "validation": {"holdout": 0}}))  # 0 and 0.0 alike
    Plan(validate_config({**config, "validation": {"holdout": 0.0}}))
    # the CLI names it as a user error
    run = subprocess.run(
        [sys.executable, "-m", "texad", "validation-split", "--settings", '{"validation": {"min_holdout": 3}}',
         "--dataset", "synthetic", "--class", "wood", "--class-dir", str(root / "wood"), "--out",
         str(tmp_path / "cli"), "--marker", str(tmp_path / "cli" / "split.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 1 and "texad: error: class synthetic/wood has 4 training image(s)" in run.stderr


def test_the_training_view_trains_on_exactly_the_rest(root, tmp_path):
    held = Holdout(0.25, 2, 0)
    view = tmp_path / "view"
    record = build_training_view(root / "woven", view, held, dataset="synthetic", class_name="woven",
                                 marker=view / "view.json")  # fmt: skip
    split = _split(root, tmp_path / "split", _settings())
    assert record["held_out"] == split["held_out"]  # the two jobs agree on the held-out images
    names = sorted(p.name for p in (view / "train" / "good").iterdir())
    assert names == record["trains_on"] and not set(names) & set(record["held_out"])
    assert set(names) | set(record["held_out"]) == {f"{i:03d}.png" for i in range(12)}
    assert json.loads((view / "view.json").read_text())["holdout"] == 0.25
    # the test split is the class's own
    ours, theirs = (
        MVTecDataset(view, "test", image_size=SIZE),
        MVTecDataset(root / "woven", "test", image_size=SIZE),
    )
    assert [s.path.resolve() for s in ours.samples] == [s.path.resolve() for s in theirs.samples]
    assert [s.mask.resolve() if s.mask else None for s in ours.samples] == [
        s.mask.resolve() if s.mask else None for s in theirs.samples
    ]


def test_the_validation_contact_sheet(root, tmp_path):
    from texad.report.contact_sheet import make_contact_sheet

    _split(root, tmp_path / "split", _settings())
    png = make_contact_sheet(
        tmp_path / "split", tmp_path / "sheet.png", normals="test", title="woven: validation"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[0] > 200


# -------------------------------------------------------------------------------------- identity and plan
#: A small config; the model hashes below were computed for it before holdouts existed.
CFG = {
    "seeds": [0], "image_size": 32,
    "datasets": {"synthetic": {"enabled": True, "classes": ["woven", "wood"], "image_size": 64, "n_train": 12}},
    "methods": {
        "method_a": {"enabled": True, "network": {"preset": "tiny", "nf": 8}},
        "method_b": {"enabled": True, "diffusion": {"preset": "tiny"},
                     "feature_adaptation": {"epochs": {"default": 0, "wood": 2}},
                     "inference": {"feature_backbone": "efficientnet_lite0"}},
        "simplenet": {"enabled": True, "backbone": "efficientnet_lite0", "image_size": 32, "resize": 32},
        "draem": {"enabled": True, "image_size": 32, "anomaly_source": "synthetic"},
    },
}  # fmt: skip
BEFORE = {"ddpm": "46972fed57b5", "score": "74ff8bb97879", "simplenet": "6a9819fdc1ce", "draem": "5f454fdefcf3",
          "features": "46edcbf456a6"}  # fmt: skip
KINDS = tuple(BEFORE)


def _hashes(validation: dict) -> dict[str, str]:
    plan = Plan(validate_config({**CFG, "validation": validation}))
    return {kind: plan.model_hash(kind, "synthetic", "wood", 0) for kind in KINDS}


def test_model_identities_hold_the_holdout_and_stay_as_they_were_without_one():
    assert _hashes({"holdout": 0}) == _hashes({"holdout": 0.0, "min_holdout": 2, "seed": 9}) == BEFORE
    held = _hashes({"holdout": 0.2})
    assert all(held[k] != BEFORE[k] for k in KINDS), held
    for other in ({"holdout": 0.25}, {"holdout": 0.2, "min_holdout": 2}, {"holdout": 0.2, "seed": 1}):
        assert all(_hashes(other)[k] != held[k] for k in KINDS), other
    # the anomalies shape no model
    assert _hashes({"holdout": 0.2, "anomalies": ["fold"]}) == held


def test_the_plan_wires_the_split_into_every_train_and_run_job():
    plan = Plan(validate_config({**CFG, "validation": {"holdout": 0.2, "anomalies": ["perlin"]}}))
    assert plan.training_view("synthetic", "wood") == "results/splits/synthetic/wood"
    assert plan.training_view_marker("synthetic", "wood") == "results/splits/synthetic/wood/view.json"
    assert plan.validation_dir("synthetic", "wood") == "results/validation/synthetic/wood"
    assert plan.validation_marker("synthetic", "wood") == "results/validation/synthetic/wood/split.json"
    assert plan.training_view_settings() == {"validation": {"holdout": 0.2, "min_holdout": 5, "seed": 0}}
    targets = plan.final_outputs()
    assert "results/validation/synthetic/woven/split.json" in targets
    assert "results/data/synthetic/woven/validation_sheet.png" in targets
    # DTD off: the Perlin anomalies come from the other classes' training images
    inputs, args = plan.validation_sources("synthetic", "wood")
    assert inputs == ["resources/datasets/synthetic/woven.manifest.json"]
    assert (
        args == "--source-kind synthetic --anomaly-root resources/datasets/synthetic --source-classes woven"
    )
    # a train job and a run job name, from their settings alone, the model the plan named
    for kind in KINDS:
        owner = get(model_owner(kind))
        job = validate_config(json.loads(shlex.split(settings_arg(plan.train_settings(kind, "wood")))[0]),
                              partial=True)  # fmt: skip
        assert Holdout.from_config(job) == plan.holdout
        settings = owner.Settings.from_config(job, "wood")
        expected = plan.model_hash(kind, "synthetic", "wood", 0)
        assert owner.identity(kind, settings, RunKey.of(job, "synthetic", "wood", 0)) == expected
        assert owner.identity(kind, settings, RunKey("synthetic", "wood", 0, "default")) != expected
    run = plan.run_settings("draem", "wood", "default")
    assert run["validation"] == {"holdout": 0.2, "min_holdout": 5, "seed": 0}
    # holdout 0: the class folder as before, and job settings without a validation block
    plain = Plan(validate_config({**CFG, "validation": {"holdout": 0}}))
    assert plain.training_view("synthetic", "wood") == plain.class_dir("synthetic", "wood")
    assert plain.training_view_marker("synthetic", "wood") == plain.stage_marker("synthetic", "wood")
    assert "validation" not in plain.run_settings("draem", "wood", "default")
    assert "validation" not in plain.train_settings("draem", "wood")


@pytest.mark.slow
def test_the_demo_dry_run_trains_and_runs_every_method_on_the_view(tmp_path):
    from test_workflow import smk

    run = smk("-n", "-p", "--configfile", str(ROOT / "config" / "demo.yaml"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    commands = [line for line in run.stdout.splitlines() if "python -m texad " in line]
    trains = [c for c in commands if " train " in c or " run " in c]
    assert len(trains) >= 4 * 3 * 2
    for command in trains:
        cls = command.split("--class ", 1)[1].split()[0]
        assert f"--class-dir results/splits/synthetic/{cls} " in command, command
    splits = [c for c in commands if " validation-split " in c]
    assert len(splits) == 3 and all(
        "--source-kind synthetic" in c and '"anomalies":["perlin"]' in c for c in splits
    )


def test_a_model_trained_on_the_view_is_loaded_by_its_run_and_by_predict(root, tmp_path):
    """DRAEM through the jobs' own entry points: the trainer and the detector name the same model, and a model file
    alone says which images it did not see (texad predict rebuilds the run's key from it)."""
    from texad.methods.jobs import run_method, train_model
    from texad.predict.models import resolve_model

    held = Holdout(0.25, 2, 0)
    view = tmp_path / "view"
    build_training_view(root / "woven", view, held, dataset="synthetic", class_name="woven",
                        marker=view / "view.json")  # fmt: skip
    block = {"epochs": 1, "batch_size": 4, "image_size": 32, "recon_base_width": 2, "disc_base_width": 2,
             "anomaly_source": "synthetic", "score_pool": 3}  # fmt: skip
    config = validate_config({"device": "cpu", "evaluation": {"resolution": 32}, **held.to_config(),
                              **make_settings("draem", block).to_config()}, partial=True)  # fmt: skip
    run = RunKey.of(config, "synthetic", "woven", 0)
    model = (
        tmp_path
        / "models"
        / "synthetic"
        / "woven"
        / "seed0"
        / get("draem").model_file("draem", make_settings("draem", block), run)
    )
    train_model("draem", config, run, class_dir=view, out=model, ckpt_dir=tmp_path / "ck",
                expect_hash=get("draem").identity("draem", make_settings("draem", block), run),
                anomaly_root=root, source_classes=["woven", "wood"])  # fmt: skip
    result = run_method("draem", config, run, class_dir=view, models={"model": model},
                        out_result=tmp_path / "runs" / "synthetic" / "woven" / "draem" / "default" / "seed0.json",
                        out_maps=tmp_path / "maps.npz")  # fmt: skip
    assert result["extra"]["holdout"] == held.identity() and result["metrics"]["n_images"] == 6
    # the run without the holdout in its key names another model and refuses this one
    with pytest.raises(ValueError, match="a setting that shapes the model differs"):
        run_method("draem", {k: v for k, v in config.items() if k != "validation"},
                   RunKey("synthetic", "woven", 0, "default"), class_dir=view, models={"model": model},
                   out_result=tmp_path / "x.json", out_maps=tmp_path / "x.npz")  # fmt: skip
    assert resolve_model(model).run.holdout == held
    assert (
        resolve_model(tmp_path / "runs" / "synthetic" / "woven" / "draem" / "default" / "seed0.json").run
        == run
    )
