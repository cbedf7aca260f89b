"""The paper-size rehearsal: config.yaml's workflow on the CPU at the paper's sizes with every count shrunk.

The overlays may change counts only; the two test-only switches (random torchvision weights, no published class
counts) are reachable from the environment alone, never from a config; and the rehearsal itself runs every
training rule for at least one optimiser step and every method on at least two test images, and writes the paper
tables, the figures and the report (about 6 minutes on 2 cores: the slow test below).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from texad.backbones.weights import KNOWN_WEIGHTS, stage_weights, verify_weight_file
from texad.config import ConfigError, validate_config
from texad.data.download import ChecksumError, file_digest
from texad.data.layout import LayoutError
from texad.data.stage import stage_dataset
from texad.data.synth import generate_class
from texad.rehearsal import switches
from texad.rehearsal.run import PROFILES, merged_config, rehearse

ROOT = Path(__file__).resolve().parents[1]

#: The keys an overlay may set: counts (iterations, epochs, batch sizes, images, draws, seeds, classes, ablation
#: and candidate points) and where the generated data lives. Anything else would change a size or a code path.
COUNT_KEYS = [
    r"seeds",
    r"official\.seeds",  # the seeds of the labelled official variants: a count, like seeds
    r"validation\.anomalies",  # the kinds drawn onto the validation split: fewer images, the same code per kind
    r"datasets\.(mvtec_ad|dtd_synthetic)\.(classes|path|accept_license)",
    r"datasets\.dtd_synthetic\.enabled",  # false: no class of it
    r"datasets\.dtd\.path",
    r"methods\.method_a\.train\.(batch_size|iterations)",
    r"methods\.method_a\.sde\.n_steps",  # the number of SDE grid levels (the full chain's length)
    r"methods\.method_a\.inference\.(draws|batch_size|steps_per_scale)",  # steps per level; the levels stay
    r"methods\.(method_a|method_b)\.ablation\..+",
    r"methods\.\w+\.select\..+",  # the selected variant's candidates: points, as the ablation's
    r"methods\.method_b\.train\.(epochs\.\w+|batch_size)",
    r"methods\.method_b\.inference\.batch_size",
    r"methods\.method_b\.feature_adaptation\.(epochs\.\w+|batch_size)",
    r"methods\.simplenet\.(meta_epochs|gan_epochs|batch_size)",
    r"methods\.draem\.(epochs|batch_size)",
]


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_overlays_change_counts_only(profile):
    overlay = yaml.safe_load((ROOT / PROFILES[profile].overlay).read_text())
    pattern = re.compile("|".join(f"(?:{k})" for k in COUNT_KEYS))
    changed = [path for path, _ in _leaves(overlay) if not pattern.fullmatch(path)]
    assert changed == [], f"{PROFILES[profile].overlay} changes more than counts: {changed}"
    merged, paper = (
        merged_config(ROOT, PROFILES[profile].overlay),
        validate_config(yaml.safe_load((ROOT / "config.yaml").read_text())),
    )
    # what fixes sizes and code paths is config.yaml's
    for method in ("method_a", "method_b", "simplenet", "draem"):
        for key in ("network", "diffusion", "image_size", "backbone", "recon_base_width", "target_embed_dim"):
            if key in paper["methods"][method]:
                assert merged["methods"][method][key] == paper["methods"][method][key], (method, key)
    assert merged["methods"]["method_b"]["inference"] == {
        **paper["methods"]["method_b"]["inference"],
        "batch_size": 2,
    }
    assert merged["image_size"] == 256 and merged["evaluation"] == paper["evaluation"]


def test_no_config_key_reaches_the_switches():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for key in ("test_weights", "TEXAD_TEST_WEIGHTS", "test_layout"):
        with pytest.raises(ConfigError, match=key):
            validate_config({**config, key: "x"})
    schema = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert switches.WEIGHTS_ENV not in schema and switches.LAYOUT_ENV not in schema


def test_weights_switch_accepts_the_listed_file_only_under_the_switch(tmp_path, monkeypatch):
    source = tmp_path / "random.pth"
    torch.save({"w": torch.arange(4.0)}, source)
    with pytest.raises(ChecksumError, match="wide_resnet50_2"):
        verify_weight_file(source, "wide_resnet50_2")
    table = tmp_path / "weights.json"
    table.write_text(json.dumps({"wide_resnet50_2": {"sha256": file_digest(source, "sha256"),
                                                     "url": source.as_uri()}}))  # fmt: skip
    monkeypatch.setenv(switches.WEIGHTS_ENV, str(table))
    assert switches.active() == {switches.WEIGHTS_ENV: str(table)}
    staged = stage_weights("wide_resnet50_2", tmp_path / "cache")  # downloads the switch's file:// URL
    assert staged.name == KNOWN_WEIGHTS["wide_resnet50_2"].file  # the name torchvision looks for
    assert verify_weight_file(staged, "wide_resnet50_2") == file_digest(source, "sha256")
    with pytest.raises(ChecksumError):  # an unlisted backbone keeps torchvision's digest
        verify_weight_file(source, "resnet18")


def test_layout_switch_checks_mvtec_classes_against_the_first_run(tmp_path, monkeypatch):
    data = tmp_path / "mvtec"
    generate_class(data / ".gen", "wood", image_size=32, n_train=2, n_test_good=1, n_test_per_defect=1,
                   defects=("scratch",))  # fmt: skip
    (data / ".gen" / "wood").rename(data / "wood")

    def stage():
        return stage_dataset("mvtec_ad", root=tmp_path / "root", cache=tmp_path / "cache", marker=tmp_path / "m.json",
                             classes=["wood"], path=data, accept_license=True)  # fmt: skip

    with pytest.raises(LayoutError, match="wood"):  # the published counts: 247 training images
        stage()
    monkeypatch.setenv(switches.LAYOUT_ENV, "first-run")
    assert stage()["layout"]["wood"]["n_train"] == 2
    (data / "wood" / "train" / "good" / "000.png").unlink()
    with pytest.raises(LayoutError, match="first successful run"):
        stage()
    monkeypatch.setenv(switches.LAYOUT_ENV, "off")
    with pytest.raises(ValueError, match="first-run"):
        switches.published_counts_checked()


@pytest.mark.slow
def test_paper_size_rehearsal(tmp_path):
    """config.yaml at paper size: every model kind trained >= 1 step, every run scored >= 2 images, tables and
    report written (check_outputs raises otherwise; these asserts say what was covered)."""
    summary = rehearse(ROOT, tmp_path, "test", cores=2)
    kinds = {Path(p).name.split("-")[0] for p in summary["models"]}
    assert kinds == {"ddpm", "score", "simplenet", "draem", "features"}
    assert all(n >= 1 for n in summary["models"].values())
    methods = {Path(p).parts[4] for p in summary["runs"]}
    assert methods == {"method_a", "method_b", "simplenet", "draem"}
    assert all(n >= 2 for n in summary["runs"].values())
    assert "results/tables/paper_method_b_table1.md" in summary["paper_tables"]
    results = [json.loads((tmp_path / p).read_text()) for p in summary["runs"]]
    assert {r["extra"]["test_switches"][switches.LAYOUT_ENV] for r in results} == {"first-run"}
    # about 5 GB of paper-size models, checkpoints and weights; kept when a check fails
    shutil.rmtree(tmp_path)
