"""The ``official`` variants run through the jobs a workflow runs (``texad train`` / ``texad run --variant
official``) with the settings :class:`texad.plan.Plan` gives them, on a tiny synthetic class: Method B under DDAD's
protocol and DRAEM under its mask rule on the default's models, SimpleNet with its own (best test epoch, crop)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from texad import cli
from texad.config import canonical_json, validate_config
from texad.data.synth import generate_class
from texad.plan import Plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NO_GRID = {k: [] for k in ("w", "s", "joint_w", "joint_s", "blur_sigma", "t_start")}
CONFIG = {
    "run_name": "t", "device": "cpu", "seeds": [0], "official": {"seeds": [0]}, "image_size": 32,
    "evaluation": {"resolution": 32},
    "datasets": {"synthetic": {"enabled": True, "classes": ["wood", "carpet"]}},
    "methods": {
        "method_b": {
            "enabled": True, "diffusion": {"preset": "tiny"}, "train": {"epochs": {"default": 1}, "batch_size": 2},
            "inference": {"t_start": 100, "skip": 50, "blur_kernel": 15, "feature_size": 64,
                          "feature_backbone": "efficientnet_lite0", "batch_size": 4},
            "ablation": NO_GRID,
        },
        "simplenet": {"enabled": True, "backbone": "efficientnet_lite0", "pretrain_embed_dim": 64,
                      "target_embed_dim": 64, "dsc_hidden": 64, "meta_epochs": 2, "gan_epochs": 1, "batch_size": 4,
                      "image_size": 32, "resize": 40, "noise_std": 1.0},
        "draem": {"enabled": True, "epochs": 1, "batch_size": 4, "image_size": 32, "recon_base_width": 2,
                  "disc_base_width": 2, "anomaly_source": "synthetic", "score_pool": 5},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    for cls in ("wood", "carpet"):
        generate_class(root, cls, image_size=48, n_train=4, n_test_good=2, n_test_per_defect=1, seed=0)
    return root, Plan(validate_config(CONFIG))


def _key(cls_dir: Path) -> list[str]:
    return ["--dataset", "synthetic", "--class", "wood", "--seed", "0", "--class-dir", str(cls_dir)]


def _run(setup, method: str, variant: str, tmp: Path) -> tuple[dict, dict, dict[str, str]]:
    """Train the models the run loads (as the train jobs would), run it; (result, maps, model files by role)."""
    root, plan = setup
    models = plan.run_models(method, "synthetic", "wood", 0, variant)
    for path in models.values():
        out = tmp / path
        if out.exists():
            continue
        kind, digest = Path(path).stem.split("-")[0], Path(path).stem.rsplit("-", 1)[1]
        settings = canonical_json(plan.train_settings(kind, "wood", "synthetic", 0, digest))
        extra = ["--model", str(tmp / models["model"])] if kind == "features" else []
        if kind == "draem":
            extra = ["--anomaly-root", str(root), "--source-classes", "carpet"]
        assert cli.main(["train", kind, "--settings", settings, *_key(root / "wood"), "--out", str(out),
                         "--ckpt-dir", str(tmp / "ck" / digest), "--expect-hash", digest, *extra]) == 0  # fmt: skip
    result, maps = tmp / f"{method}-{variant}.json", tmp / f"{method}-{variant}.npz"
    settings = canonical_json(plan.run_settings(method, "wood", variant))
    args = ["run", method, "--settings", settings, "--variant", variant, *_key(root / "wood"), "--out", str(result),
            "--maps", str(maps), *[a for role, p in models.items() for a in (f"--{role}", str(tmp / p))]]  # fmt: skip
    assert cli.main(args) == 0
    with np.load(maps) as npz:
        arrays = {k: npz[k] for k in ("maps", "scores", "labels")}
    return json.loads(result.read_text()), arrays, models


def test_method_b_official_runs_ddads_protocol_on_the_default_models(setup, tmp_path):
    default, _, default_models = _run(setup, "method_b", "default", tmp_path)
    result, arrays, models = _run(setup, "method_b", "official", tmp_path)
    assert models == default_models and result["model_hash"] == default["model_hash"]  # one DDPM for both
    ev = result["evaluation"]
    assert (
        ev["grid"] == [28, 28] and ev["resolution"] == 32
    )  # 224 of 256, at 32 px: 28, whatever the resolution
    assert ev["protocol"]["name"] == "ddad" and ev["protocol"]["crop"] == {"from": 32, "to": 28}
    assert "> 0" in ev["protocol"]["masks"]
    assert ev["switches"]["protocol"] == "ddad" and ev["switches"]["fusion_norm"] == "batch16"
    assert arrays["maps"].shape[1:] == (28, 28)
    # the image score is the maximum of the cropped map (the maps file keeps float16)
    np.testing.assert_allclose(
        arrays["scores"], arrays["maps"].astype(np.float32).max(axis=(1, 2)), rtol=2e-3
    )
    assert default["evaluation"]["protocol"] == {
        "name": "texad", "masks": "area interpolation to the grid, >= 0.5", "crop": None,
    }  # fmt: skip
    assert default["evaluation"]["grid"] == [32, 32]
    assert result["variant"] == "official" and result["metrics"]["n_images"] == default["metrics"]["n_images"]


def test_draem_official_runs_its_mask_rule_on_the_default_model(setup, tmp_path):
    default, _, default_models = _run(setup, "draem", "default", tmp_path)
    result, arrays, models = _run(setup, "draem", "official", tmp_path)
    assert models == default_models and result["model_hash"] == default["model_hash"]
    ev = result["evaluation"]
    assert ev["protocol"]["name"] == "draem" and ev["protocol"]["crop"] is None and ev["grid"] == [32, 32]
    assert ev["switches"]["protocol"] == "draem"
    assert arrays["maps"].shape[1:] == (32, 32)


def test_simplenet_official_trains_its_own_model_and_evaluates_the_crop(setup, tmp_path):
    _, plan = setup
    default = plan.run_models("simplenet", "synthetic", "wood", 0, "default")
    result, arrays, models = _run(setup, "simplenet", "official", tmp_path)
    assert models["model"] != default["model"]  # the test-set selection and the crop shape the model
    ev = result["evaluation"]
    assert ev["switches"] == {"center_crop": True, "selection": "official"}
    assert ev["protocol"]["name"] == "texad" and ev["protocol"]["crop"] == {"from": 40, "to": 32}
    assert ev["grid"] == [32, 32] and arrays["maps"].shape[1:] == (32, 32)
    assert result["extra"]["selection"]["used_test_set"] is True
