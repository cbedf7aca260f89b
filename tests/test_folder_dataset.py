"""Users' own image folders (datasets.folder): discovery and names, the layout check's errors and report, the
view the methods read, the config's checks, and the tiny workflow on a folder dataset to the report."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from texad.config import ConfigError, validate_config
from texad.data.folder import FolderSpec, class_names, fingerprint, index_class, safe_name
from texad.data.layout import LayoutError, image_metrics_only, list_samples
from texad.data.synth import generate_class
from texad.evaluation.metrics import evaluate
from texad.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def _synth(tmp: Path, name: str, seed: int, defects=("scratch", "hole"), n_train=4) -> Path:
    generate_class(tmp, name, image_size=SIZE, n_train=n_train, n_test_good=2, n_test_per_defect=1, seed=seed,
                   defects=defects)  # fmt: skip
    return tmp / name


def build_folder_datasets(root: Path) -> dict:
    """Two user datasets with names of their own: ``surfaces`` (MVTec layout: ``brick`` in RGB PNG with a stray
    text file, ``Gravel Pit`` in grayscale JPEG without masks) and ``line_cam`` (anomalib's Folder layout:
    ``grass`` with good/bad/masks and a held-out split, ``moss`` likewise with one image of another size).
    Returns the datasets.folder entries."""
    tmp = root / ".gen"
    shutil.copytree(_synth(tmp, "wood", 1), root / "surfaces" / "brick")
    (root / "surfaces" / "brick" / "README.txt").write_text("line 3, camera 2\n")
    woven = _synth(tmp, "woven", 2)
    for p in woven.rglob("*.png"):
        out = root / "surfaces" / "Gravel Pit" / p.relative_to(woven)
        out.parent.mkdir(parents=True, exist_ok=True)
        if "ground_truth" not in p.parts:  # no masks: image metrics only
            Image.open(p).convert("L").save(out.with_suffix(".jpg"), quality=95)
    for cls, texture, seed in (("grass", "carpet", 3), ("moss", "tile", 4)):
        src, dst = _synth(tmp, texture, seed), root / "line_cam" / cls
        for sub in ("good", "bad", "masks"):
            (dst / sub).mkdir(parents=True)
        for p in sorted(src.glob("t*/good/*.png")):
            shutil.copy(p, dst / "good" / f"{p.parent.parent.name}_{p.name}")
        for p in sorted(src.glob("test/[!g]*/*.png")):
            shutil.copy(p, dst / "bad" / f"{p.parent.name}_{p.name}")
            shutil.copy(src / "ground_truth" / p.parent.name / f"{p.stem}_mask.png",
                        dst / "masks" / f"{p.parent.name}_{p.stem}_mask.png")  # fmt: skip
    odd = sorted((root / "line_cam" / "moss" / "good").iterdir())[0]  # one image of another size
    Image.open(odd).resize((72, 72)).save(odd)
    shutil.rmtree(tmp)
    return [
        {"name": "surfaces", "path": str(root / "surfaces")},
        {"name": "line_cam", "path": str(root / "line_cam"), "layout": "folder", "normal_dir": "good",
         "abnormal_dir": "bad", "mask_dir": "masks"},
    ]  # fmt: skip


def _spec(entry: dict, index: int = 0) -> FolderSpec:
    block = validate_config({"datasets": {"folder": [entry]}}, partial=True)["datasets"]["folder"][0]
    return FolderSpec.from_config(block, index)


@pytest.fixture()
def folders(tmp_path):
    return tmp_path, build_folder_datasets(tmp_path / "data")


# ------------------------------------------------------------------------------------------ names and index
def test_classes_are_found_and_unsafe_names_mapped(folders, tmp_path):
    _, (surfaces, line_cam) = folders
    assert class_names(_spec(surfaces)) == {"Gravel_Pit": "Gravel Pit", "brick": "brick"}
    assert class_names(_spec(line_cam)) == {"grass": "grass", "moss": "moss"}
    assert safe_name("a-b c.d") == "a_b_c_d"
    clash = tmp_path / "clash"
    for name in ("a b", "a-b"):
        (clash / name / "train").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"'a b' and 'a-b' both map to the safe name 'a_b'; rename one"):
        class_names(_spec({"name": "x", "path": str(clash)}))
    (tmp_path / "mean" / "mean" / "train").mkdir(parents=True)
    assert class_names(_spec({"name": "x", "path": str(tmp_path / "mean")})) == {"class_mean": "mean"}
    with pytest.raises(LayoutError, match=r"datasets.folder\[0\].path is .*nowhere, which is not a folder"):
        class_names(_spec({"name": "x", "path": str(tmp_path / "nowhere")}))
    with pytest.raises(LayoutError, match=r"datasets.folder\[0\].classes: no class folder 'tiles'"):
        class_names(_spec({**surfaces, "classes": ["tiles"]}))
    brick = Path(surfaces["path"]) / "brick"
    with pytest.raises(LayoutError, match=r"looks like a class: set datasets.folder\[0\].path to its parent"):
        class_names(_spec({"name": "x", "path": str(brick)}))


def test_index_checks_reports_and_builds_a_view_the_methods_read(folders, tmp_path):
    _, (surfaces, line_cam) = folders
    view, marker = tmp_path / "views" / "brick", tmp_path / "views" / "brick.manifest.json"
    manifest = index_class(_spec(surfaces), "brick", "brick", view=view, marker=marker)
    report = manifest["report"]
    assert report["counts"] == {"test/good": 2, "test/hole": 1, "test/scratch": 1, "train/good": 4}
    assert report["skipped"] == {"n": 1, "non_image": 1, "examples": ["README.txt"]}
    assert json.loads(marker.read_text())["fingerprint"] == fingerprint(Path(surfaces["path"]) / "brick")
    files = {f["path"]: f for f in manifest["files"]}
    image = Path(surfaces["path"]) / "brick" / "train" / "good" / "000.png"
    assert files["train/good/000.png"]["size"] == image.stat().st_size
    assert files["train/good/000.png"]["mtime_ns"] == image.stat().st_mtime_ns
    import hashlib

    assert files["train/good/000.png"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    test = list_samples(view, "test")
    assert [s.defect for s in test] == ["good", "good", "hole", "scratch"]
    assert all(s.mask is not None and s.mask.resolve().parent.parent.name == "ground_truth" for s in test[2:])
    assert not image_metrics_only(view)

    gravel = index_class(
        _spec(surfaces), "Gravel_Pit", "Gravel Pit", view=tmp_path / "g", marker=tmp_path / "g.json"
    )
    assert gravel["report"]["modes"] == {"L": 8} and gravel["report"]["class_name"] == "Gravel Pit"
    assert gravel["report"]["image_metrics_only"] and image_metrics_only(tmp_path / "g")

    # anomalib's layout: a seeded fifth of the normal images held out for testing, recorded by name
    spec = _spec(line_cam, 1)
    one = index_class(spec, "grass", "grass", view=tmp_path / "a", marker=tmp_path / "a.json")["report"]
    two = index_class(spec, "grass", "grass", view=tmp_path / "b", marker=tmp_path / "b.json")["report"]
    assert one["split"] == two["split"] and one["split"]["rule"] == "held out"
    assert one["counts"] == {"test/bad": 2, "test/good": 1, "train/good": 5}
    held = one["split"]["test_good"]
    assert [p.name for p in (tmp_path / "a" / "test" / "good").iterdir()] == [Path(held[0]).name]
    other = index_class(_spec({**line_cam, "split_seed": 7}, 1), "grass", "grass", view=tmp_path / "c",
                        marker=tmp_path / "c.json")["report"]  # fmt: skip
    assert other["split"]["seed"] == 7


def _fresh_class(tmp_path: Path) -> tuple[dict, Path]:
    root = tmp_path / "user"
    shutil.copytree(_synth(tmp_path / ".g", "wood", 5), root / "plank")
    return {"name": "user", "path": str(root)}, root / "plank"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / "ground_truth" / "hole" / "000_mask.png").unlink(),
         r"defect image .*test/hole/000.png has no mask: expected 000_mask.png or 000.png in"),
        (lambda c: (c / "test" / "hole" / "000.png").unlink(),
         r"mask .*ground_truth/hole/000_mask.png has no defect image named 000\.\*"),
        (lambda c: Image.new("L", (32, 32)).save(c / "ground_truth" / "hole" / "000_mask.png"),
         r"mask .*000_mask.png is 32x32 but its image .*000.png is 64x64; save the mask at its image's size"),
        (lambda c: Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64) % 7).save(
            c / "ground_truth" / "hole" / "000_mask.png"),
         r"mask .*000_mask.png is not binary: it holds 7 grey levels .*save it as a PNG with 0 for normal"),
        (lambda c: [p.unlink() for p in c.rglob("*.png")],
         r"class 'plank' in .* holds no images; add images or drop the class"),
        (lambda c: [p.unlink() for p in (c / "train" / "good").iterdir()],
         r"class 'plank' has no normal training images in .*train/good; add some there"),
        (lambda c: (c / "train" / "good" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated"),
         r"cannot read image .*train/good/001.png .*; re-export it or remove it from the folder"),
        (lambda c: [p.unlink() for p in (c / "test" / "good").iterdir()],
         r"class 'plank' has no normal test images in .*test/good"),
        (lambda c: [shutil.rmtree(c / "test" / d) for d in ("hole", "scratch")],
         r"class 'plank' has no defect test images"),
    ],
    ids=["image-without-mask", "mask-without-image", "mask-size", "non-binary-mask", "empty-class",
         "no-normal-training", "unreadable", "no-normal-test", "no-defects"],
)  # fmt: skip
def test_each_bad_input_is_named_with_what_to_do(tmp_path, damage, message):
    entry, plank = _fresh_class(tmp_path)
    if "defect test" in message:  # no defect images: their masks go too
        shutil.rmtree(plank / "ground_truth")
    damage(plank)
    view = tmp_path / "view"
    with pytest.raises(LayoutError, match=message):
        index_class(_spec(entry), "plank", "plank", view=view, marker=tmp_path / "m.json")
    assert not view.exists() and not (tmp_path / "m.json").exists()  # nothing half-built


def test_a_class_without_masks_gets_image_metrics_only(tmp_path):
    entry, plank = _fresh_class(tmp_path)
    shutil.rmtree(plank / "ground_truth")
    view = tmp_path / "view"
    report = index_class(_spec(entry), "plank", "plank", view=view, marker=tmp_path / "m.json")["report"]
    assert report["image_metrics_only"] and any("image metrics only" in n for n in report["notes"])
    assert image_metrics_only(view)
    test = list_samples(view, "test")
    assert all(s.mask is None for s in test) and sum(s.label for s in test) == 2
    scores, labels = np.array([0.1, 0.4, 0.9, 0.3]), np.array([0, 0, 1, 1])
    metrics = evaluate(
        scores, np.zeros((4, 8, 8)), np.zeros((4, 8, 8), bool), labels=labels, pixel_metrics=False
    )
    assert metrics["image_auroc"] == 0.75 and metrics["pixel_auroc"] is None and metrics["aupro"] is None
    # a built-in dataset's class without masks is still an error
    with pytest.raises(LayoutError, match="no mask for"):
        list_samples(_drop_masks(tmp_path), "test")


def _drop_masks(tmp_path: Path) -> Path:
    cls = _synth(tmp_path / ".h", "wood", 6)
    shutil.rmtree(cls / "ground_truth")
    return cls


def test_config_checks_name_the_key(folders):
    _, (surfaces, line_cam) = folders
    cases = [
        ({**line_cam, "normal_dir": None}, r"datasets.folder\[0\].normal_dir: layout folder needs"),
        ({**surfaces, "mask_dir": "masks"}, r"datasets.folder\[0\].mask_dir: only layout folder reads"),
        ({**surfaces, "name": "dtd"}, r"datasets.folder\[0\].name: 'dtd' is a built-in dataset's name"),
        ({**surfaces, "name": "Bad Name"}, r"datasets.folder\[0\].name: 'Bad Name' does not match"),
        ({**line_cam, "normal_test_fraction": 0}, r"datasets.folder\[0\].normal_test_fraction"),
    ]
    for entry, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_config({"datasets": {"folder": [entry]}, "methods": {}})
    with pytest.raises(ConfigError, match=r"datasets.folder\[1\].name: 'surfaces' names two datasets"):
        validate_config({"datasets": {"folder": [surfaces, surfaces]}, "methods": {}})


def test_a_single_class_dataset_needs_another_draem_source(folders):
    _, (surfaces, _) = folders
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"] = {"synthetic": {"enabled": False}, "folder": [{**surfaces, "classes": ["brick"]}]}
    with pytest.raises(
        ConfigError, match="methods.draem.anomaly_source: synthetic pastes the other classes'"
    ):
        Plan(validate_config(cfg))
    cfg["datasets"]["folder"][0]["classes"] = None
    # the demo holds out at least 5 training images: a user class's 4 (counted on the disk) are too few, before
    # any job runs
    with pytest.raises(ConfigError, match=r"surfaces/brick has 4 training image\(s\): validation\.holdout"):
        Plan(validate_config(cfg))
    cfg["validation"] = {"holdout": 0.25, "min_holdout": 1}
    plan = Plan(validate_config(cfg))
    assert plan.class_keys() == [("surfaces", "Gravel_Pit"), ("surfaces", "brick")]
    assert plan.class_title("surfaces", "Gravel_Pit") == "Gravel_Pit (Gravel Pit)"
    assert plan.paper_tables() == ["extended"]  # the papers' tables leave users' datasets out
    # the cost model counts a user class's images on the disk, before anything runs
    assert plan.folder_counts("surfaces", "brick") == (4, 4)
    from texad.cost.plan_cost import plan_jobs

    jobs = [j.rule for j in plan_jobs(plan, None)]
    assert jobs.count("index_folder_class") == 2 and jobs.count("threshold") == 2 * 4
    assert jobs.count("training_view") == jobs.count("validation_split") == 2


# ---------------------------------------------------------------------------------------------- workflow
def _tiny_config(entries) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["datasets"] = {"synthetic": {"enabled": False}, "folder": entries}
    # a quarter of each class's training images held out for validation (at least one): the models train on the
    # rest, through a view of the user's class (a class without masks keeps its image-metrics-only mark there)
    cfg["validation"] = {"holdout": 0.25, "min_holdout": 1, "anomalies": ["perlin", "scratch"], "seed": 0}
    cfg["image_size"] = 32
    cfg["methods"]["method_b"]["train"] = {"epochs": {"default": 2}, "batch_size": 2, "t_max": 300}
    cfg["methods"]["method_b"]["feature_adaptation"] = {"epochs": {"default": 0}, "batch_size": 2}
    # no ablation points, and selection for DRAEM alone (one candidate besides the default): the folder path is
    # what this test covers; the ablations and every method's selection run in test_workflow's tiny demo
    cfg["methods"]["method_b"]["ablation"] = {"w": [], "s": [], "joint_w": [], "joint_s": [], "blur_sigma": [],
                                              "t_start": []}  # fmt: skip
    for block in cfg["methods"].values():
        block["select"] = {key: [] for key in block.get("select", {})}
    cfg["methods"]["draem"]["select"] = {"score_pool": [1]}
    cfg["methods"]["simplenet"].update(meta_epochs=1, gan_epochs=1, image_size=32, resize=32)
    cfg["methods"]["draem"].update(epochs=1, image_size=32, score_pool=3)
    cfg["methods"]["method_a"].update(
        sde={"sigma_max": 1.0, "n_steps": 10}, network={"preset": "tiny", "nf": 8},
        train={"batch_size": 2, "iterations": 3, "warmup": 1}, inference={"draws": 1, "batch_size": 4},
        ablation={"n_scales": [], "steps_per_scale": [], "sigma_hi": [], "full_chain": False, "metric": [],
                  "shared_ddpm": False, "speed_batches": []},
    )  # fmt: skip
    return cfg


def _smk(*args, cwd):
    from test_workflow import smk

    return smk(*args, cwd=cwd)


def test_folder_datasets_run_end_to_end_and_a_changed_file_makes_its_runs_stale(folders):
    tmp_path, entries = folders
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_tiny_config(entries)))
    run = _smk("--cores", "2", "--configfile", str(path), cwd=work)
    assert run.returncode == 0, run.stderr[-3000:]
    classes = {"surfaces": ("Gravel_Pit", "brick"), "line_cam": ("grass", "moss")}
    for dataset, names in classes.items():
        for cls in names:
            layout = json.loads((work / "results" / "data" / dataset / cls / "layout.json").read_text())
            assert layout["n_defective"] == 2 and layout["dataset"] == dataset
            assert any("mixed image sizes (64x64, 72x72)" in n for n in layout["notes"]) == (cls == "moss")
            for method in ("method_a", "method_b", "simplenet", "draem"):
                result = json.loads((work / "results" / "runs" / dataset / cls / method / "default" /
                                     "seed0.json").read_text())  # fmt: skip
                assert result["metrics"]["n_images"] == layout["n_test"]
                assert 0 <= result["metrics"]["image_auroc"] <= 1
                # Gravel Pit has no masks: image metrics only
                assert (
                    (result["metrics"]["pixel_auroc"] is None)
                    == (cls == "Gravel_Pit")
                    == layout["image_metrics_only"]
                )
            # the validation split of a user class: its held-out training images, with anomalies of every kind
            split = json.loads((work / "results" / "validation" / dataset / cls / "split.json").read_text())
            assert split["n_normal"] == len(split["held_out"]) >= 1
            assert split["n_anomalous"] == 2 * split["n_normal"]
            assert split["n_trained_on"] == layout["n_train"] - split["n_normal"]
            # and DRAEM's pool chosen on it: the selected run is one of its candidates' runs, relabelled
            selected = json.loads((work / "results" / "runs" / dataset / cls / "draem" / "selected" /
                                   "seed0.json").read_text())  # fmt: skip
            assert selected["extra"]["selection"]["chosen"] in ("default", "pool1")
    table = (work / "results" / "tables" / "image_auroc.md").read_text()
    assert "| surfaces | Gravel_Pit (Gravel Pit) |" in table and "| line_cam | grass |" in table
    pixel = (work / "results" / "tables" / "pixel_auroc.md").read_text()
    assert "| surfaces | Gravel_Pit (Gravel Pit) | n/a | n/a | n/a | n/a |" in pixel
    extended = (work / "results" / "tables" / "extended.md").read_text()
    assert "Gravel_Pit (Gravel Pit)" in extended and "moss" in extended
    assert not list((work / "results" / "tables").glob("paper_method_*"))
    # texad predict with a model trained on the folder
    out = tmp_path / "predicted"
    images = Path(entries[0]["path"]) / "brick" / "test" / "hole"
    normal = Path(entries[0]["path"]) / "brick" / "test" / "good"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    predicted = subprocess.run(
        [sys.executable, "-m", "texad", "predict", "--model",
         "results/runs/surfaces/brick/simplenet/default/seed0.json", "--images", str(images), "--normal",
         str(normal), "--out", str(out), "--device", "cpu"],
        cwd=work, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (out / "scores.csv").read_text().count("\n") == 2  # header and the one hole image
    # without --normal: the run's deployment thresholds, chosen on the class's normal test images
    run_thresholds = json.loads(
        (work / "results/runs/surfaces/brick/simplenet/default/seed0.threshold.json").read_text()
    )
    assert run_thresholds["rule"] == "fpr" and run_thresholds["n_normal"] == 2
    predicted = subprocess.run(
        [sys.executable, "-m", "texad", "predict", "--model",
         "results/runs/surfaces/brick/simplenet/default/seed0.json", "--images", str(images), "--out",
         str(tmp_path / "predicted_at_run"), "--device", "cpu"],
        cwd=work, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    record = json.loads((tmp_path / "predicted_at_run" / "threshold.json").read_text())
    assert record["normal_source"]["kind"] == "run"
    assert record["image_threshold"] == pytest.approx(run_thresholds["image_threshold"])
    # the report: every user class's contact sheet and figures, and the extended table
    report = _smk("--cores", "1", "--configfile", str(path), "--report", str(work / "report.html"), cwd=work)
    assert report.returncode == 0, report.stderr[-3000:]
    from report_browser import embedded

    shown = set(embedded(work / "report.html", "results"))
    for dataset, names in classes.items():
        for cls in names:
            assert f"results/data/{dataset}/{cls}/contact_sheet.png" in shown
            assert f"results/figures/{dataset}/{cls}/roc.png" in shown
    assert "results/report/tables/paper/extended.html" in shown
    assert _smk("-n", "--configfile", str(path), cwd=work).stdout.count("rule ") == 0
    # a file of one class changes: that class's index, and what is built from it, is stale; the others are not
    image = Path(entries[0]["path"]) / "brick" / "train" / "good" / "000.png"
    Image.open(image).rotate(90).save(image)
    plan = _smk("-n", "--configfile", str(path), cwd=work)
    assert plan.returncode == 0, plan.stderr[-3000:]
    text = plan.stdout + plan.stderr
    assert "wildcards: dataset=surfaces, cls=brick" in text and "Params have changed" in text
    assert "resources/datasets/surfaces/brick.manifest.json" in text
    outputs = [o for line in re.findall(r"output: (.*)", text) for o in line.split(", ")]
    assert "results/runs/surfaces/brick/method_b/default/seed0.json" in outputs
    assert not [o for o in outputs if o.startswith(("results/models/line_cam", "results/runs/line_cam"))], (
        outputs
    )


def test_the_readme_snippet_makes_a_folder_the_example_config_plans(tmp_path):
    """README "Your own images": its commands, verbatim but for `make install` and a dry run at the end, in a
    fresh folder that holds the repository's Snakefile, workflow, configs and venv."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Your own images", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.replace("make install && ", "") for line in block.splitlines() if line.strip()]
    assert lines[0] == ". .venv/bin/activate" and "config/folder-example.yaml" in lines[-1]
    lines[-1] += " -n"
    for name in ("Snakefile", "workflow", "config", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name if name != ".venv" else Path(sys.executable).parent.parent)
    run = subprocess.run(["bash", "-euc", "\n".join(lines)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    assert sorted(d.name for d in (tmp_path / "my_images").iterdir() if d.is_dir()) == ["felt", "oak planks"]
    assert "wildcards: dataset=my_surfaces, cls=oak_planks" in out and "rule index_folder_class" in out
    assert "results/runs/my_surfaces/felt/method_b/default/seed0.json" in out
    block = yaml.safe_load((ROOT / "config" / "folder-example.yaml").read_text())
    assert block == {"datasets": {"synthetic": {"enabled": False},
                                  "folder": [{"name": "my_surfaces", "path": "my_images"}]},
                     "validation": {"holdout": 0.2, "min_holdout": 5, "seed": 0,
                                    "anomalies": ["perlin", "scratch", "hole", "stain", "fold"]}}  # fmt: skip
    # the example turns the validation split on for the user's classes (issue 23, item 6), and its models train on
    # the rest of each class's training images
    assert "rule validation_split" in out and "results/validation/my_surfaces/oak_planks/split.json" in out
    assert "rule training_view" in out and "results/splits/my_surfaces/felt/view.json" in out
