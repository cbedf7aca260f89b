"""SimpleNet's ``selected`` variant: its candidates are meta epochs of the default's one training run, whose model file
keeps their weights (``select.meta_epoch``); no candidate retrains.

Tiny models (32 px, 16-d embeddings, 3 meta epochs of one pass over 6 images) train in about a second each.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from texad.config import ConfigError, validate_config
from texad.data.holdout import Holdout
from texad.data.synth import generate_class
from texad.methods import get, make_settings
from texad.methods import simplenet as simplenet_module
from texad.methods.base import ORACLE, SELECTED, RunKey, candidates, run_variants
from texad.methods.jobs import run_method, train_model
from texad.methods.selection import choose, score_candidates
from texad.methods.simplenet.data import load_test_set
from texad.methods.simplenet.detector import SimpleNetDetector
from texad.methods.simplenet.infer import image_scores
from texad.methods.simplenet.settings import Select, model_hash
from texad.methods.simplenet.training import TrainingStopped, load_simplenet, train_simplenet
from texad.plan import Plan
from texad.predict import predict_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATASET, CLASS, SEED = "synthetic", "carpet", 0
RUN = RunKey(DATASET, CLASS, SEED, "default")
TINY = {"backbone": "efficientnet_lite0", "pretrain_embed_dim": 16, "target_embed_dim": 16, "dsc_hidden": 16,
        "meta_epochs": 3, "gan_epochs": 1, "batch_size": 4, "image_size": 32, "resize": 32}  # fmt: skip
#: TINY that learns fast enough for its epochs to score differently
BLOCK = {**TINY, "noise_std": 1.0, "adaptor_lr": 1e-3, "dsc_lr": 2e-3}
KEPT = [1, 2]  # the candidate epochs besides the last (3)


def _config(root: Path, select: list[int], **block) -> dict:
    """The part of a config a SimpleNet job reads, with ``select.meta_epoch`` = ``select``."""
    top = {"run_name": "t", "device": "cpu", "evaluation": {"resolution": 32},
           "backbone": {"cache": str(root / "weights")}}  # fmt: skip
    methods = {"simplenet": {**BLOCK, **block, "select": {"meta_epoch": select}}}
    return validate_config({**top, "methods": methods}, partial=True)


def _train(class_dir: Path, out: Path, settings, **kw) -> dict:
    return train_simplenet(class_dir, out, out.with_suffix(".ckpt"), settings, dataset=DATASET, class_name=CLASS,
                           seed=SEED, backbone_weights=settings.backbone_weights, device="cpu", progress=False,
                           log=lambda *a: None, **kw)  # fmt: skip


def _weights(path: Path, epoch: int | None = None) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    part = data if epoch is None else data["snapshots"][epoch]
    return {"adaptor": part["adaptor"], "discriminator": part["discriminator"]}


def _assert_same_weights(a: dict, b: dict) -> None:
    for part in ("adaptor", "discriminator"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A class (6 training images), a validation split of its own, and a results tree with the default's model,
    trained once with the candidate epochs' snapshots, where the workflow puts it."""
    root = tmp_path_factory.mktemp("sn_select")
    generate_class(root / "data", CLASS, image_size=32, n_train=6, n_test_good=3, n_test_per_defect=1, seed=0)
    generate_class(root / "val", CLASS, image_size=32, n_train=2, n_test_good=3, n_test_per_defect=1, seed=5)
    (root / "val" / CLASS / "split.json").write_text(json.dumps({
        "holdout": 0.25, "n_normal": 3, "n_anomalous": 4, "seed": 5, "anomalies": ["generator"],
        "validates_on_training_images": False}))  # fmt: skip
    config = _config(root, KEPT)
    settings = get("simplenet").Settings.from_config(config, CLASS)
    model = (
        root
        / "results/models"
        / DATASET
        / CLASS
        / f"seed{SEED}"
        / simplenet_module.model_file("simplenet", settings, RUN)
    )
    train_model("simplenet", config, RUN, class_dir=root / "data" / CLASS, out=model, ckpt_dir=root / "ckpt",
                expect_hash=simplenet_module.identity("simplenet", settings, RUN))  # fmt: skip
    return root


def _model(tree: Path) -> Path:
    (model,) = (tree / "results/models" / DATASET / CLASS / f"seed{SEED}").glob("simplenet-*.pt")
    return model


# ------------------------------------------------------------------------------------------------ config
def test_config_refuses_epochs_past_the_training_and_the_official_selection():
    with pytest.raises(
        ConfigError, match=r"methods\.simplenet\.select\.meta_epoch: \[4\] exceed .*meta_epochs = 3"
    ):
        make_settings("simplenet", {**TINY, "select": {"meta_epoch": [2, 4]}})
    with pytest.raises(ConfigError, match=r"methods\.simplenet\.select\.meta_epoch: .*selection is official"):
        make_settings("simplenet", {**TINY, "selection": "official", "select": {"meta_epoch": [2]}})
    for bad in ([0], [2, 2], [1.5]):  # the schema: unique integers from 1
        with pytest.raises(ConfigError, match=r"methods\.simplenet\.select\.meta_epoch|meta_epoch"):
            make_settings("simplenet", {**TINY, "select": {"meta_epoch": bad}})
    s = make_settings("simplenet", {**TINY, "select": {"meta_epoch": [3, 2, 1]}})
    assert s.select == Select(meta_epoch=(3, 2, 1))
    assert s.kept_epochs == (1, 2)  # the last epoch's are the main weights
    assert make_settings("simplenet", TINY).select == Select(meta_epoch=())


def test_candidates_are_the_default_and_each_listed_epoch():
    s = make_settings("simplenet", {**TINY, "select": {"meta_epoch": [2, 3, 1]}})
    found = candidates(simplenet_module, s)
    assert [v.name for v in found] == ["default", "epoch2", "epoch1"]  # the last epoch is the default, once
    assert [v.select for v in found] == [Select((3,)), Select((2,)), Select((1,))]
    assert [v.settings.select for v in found] == [v.select for v in found]
    assert [v.settings.snapshot_epoch for v in found] == [None, 2, 1]
    assert {replace(v.settings, select=s.select) for v in found} == {s}  # nothing else changes
    assert candidates(simplenet_module, make_settings("simplenet", TINY)) == []
    # the last epoch alone is no choice
    assert (
        candidates(simplenet_module, make_settings("simplenet", {**TINY, "select": {"meta_epoch": [3]}}))
        == []
    )
    # the official variant (best test-set epoch) keeps no candidate epochs: its own model, as before
    official = simplenet_module.official(s).settings
    assert official.select == Select(()) and official.selection == "official"
    assert [v.name for v in run_variants(simplenet_module, s)] == ["default", "epoch2", "epoch1", "official"]


def test_plan_runs_the_candidates_on_the_defaults_model():
    def config(**select) -> dict:
        return validate_config({
            "seeds": [0], "datasets": {"synthetic": {"enabled": True, "classes": ["woven", "carpet"]}},
            "methods": {"simplenet": {"enabled": True, **TINY, "select": select}}, "official": {"seeds": [0]},
        })  # fmt: skip

    plan = Plan(config(meta_epoch=[1, 2]))
    assert plan.candidates("simplenet", "carpet") == ["default", "epoch1", "epoch2"]
    assert "results/runs/synthetic/carpet/simplenet/epoch2/seed0.json" in plan.candidate_results()
    block = {v: plan.run_settings("simplenet", "carpet", v)["methods"]["simplenet"]
             for v in ("default", "epoch1", "official")}  # fmt: skip
    assert block["default"]["select"] == {"meta_epoch": []} and block["epoch1"]["select"] == {
        "meta_epoch": [1]
    }
    assert block["official"]["select"] == {"meta_epoch": []}
    models = {v: plan.run_models("simplenet", "synthetic", "carpet", 0, v)["model"]
              for v in ("default", "epoch1", "epoch2", "official")}  # fmt: skip
    assert models["default"] == models["epoch1"] == models["epoch2"] != models["official"]
    # the one model is trained with the snapshots; the official model is the one a config without select plans
    assert plan.train_settings("simplenet", "carpet")["methods"]["simplenet"]["select"] == {
        "meta_epoch": [1, 2]
    }
    bare = Plan(config())
    assert bare.run_models("simplenet", "synthetic", "carpet", 0, "official") == {"model": models["official"]}
    assert bare.run_models("simplenet", "synthetic", "carpet", 0, "default") != {"model": models["default"]}
    assert plan.selection_keys() == [("synthetic", c, "simplenet") for c in ("woven", "carpet")]


# ---------------------------------------------------------------------------------------------- identity
def test_identity_keeps_every_hash_without_snapshots_and_names_the_kept_epochs():
    def h(s, **key):
        key = {"dataset": DATASET, "class_name": CLASS, "seed": 0, **key}
        return model_hash(s, backbone_weights=s.backbone_weights, **key)

    # hashes computed before `select` existed (texad at 9697e48): a model without snapshots keeps its name
    tiny = make_settings("simplenet", TINY)
    assert h(tiny) == "b8406ebf50a0"
    assert h(make_settings("simplenet")) == "3d5f723713b4"
    default = make_settings("simplenet")
    held = {"class_name": "wood", "seed": 1, "holdout": Holdout(0.2, 5, 0)}
    assert h(default, **held) == "7ac5bfeb4921"
    assert h(simplenet_module.official(default).settings, **held) == "deea62e615da"
    # the official variant of a config with candidates is still that model
    listed = make_settings("simplenet", {"select": {"meta_epoch": [10, 20]}})
    assert h(simplenet_module.official(listed).settings, **held) == "deea62e615da"

    def with_select(*epochs):
        return h(make_settings("simplenet", {**TINY, "select": {"meta_epoch": list(epochs)}}))

    assert with_select(3) == h(tiny)  # the last epoch is the main weights: nothing more is kept
    assert with_select(1) != h(tiny) and with_select(1, 2) not in (h(tiny), with_select(1))
    assert with_select(2, 1) == with_select(1, 2, 3)  # the kept set, in any order, the last aside
    ident = simplenet_module.model_identity(
        make_settings("simplenet", {**TINY, "select": {"meta_epoch": [2, 1, 3]}}), dataset=DATASET,
        class_name=CLASS, seed=0, backbone_weights="w",
    )  # fmt: skip
    assert ident["settings"]["kept_meta_epochs"] == [1, 2] and "select" not in ident["settings"]
    bare = simplenet_module.model_identity(
        tiny, dataset=DATASET, class_name=CLASS, seed=0, backbone_weights="w"
    )
    assert "kept_meta_epochs" not in bare["settings"]


# ---------------------------------------------------------------------------------------------- training
def test_a_snapshot_is_the_weights_a_run_of_that_many_epochs_ends_with(tree, tmp_path):
    settings = make_settings("simplenet", {**BLOCK, "select": {"meta_epoch": KEPT}})
    data = torch.load(_model(tree), map_location="cpu", weights_only=True)
    assert sorted(data["snapshots"]) == KEPT and data["train"]["kept_meta_epochs"] == KEPT
    for epoch in KEPT:
        short = make_settings("simplenet", {**BLOCK, "meta_epochs": epoch})
        _train(tree / "data" / CLASS, tmp_path / f"e{epoch}.pt", short)
        _assert_same_weights(_weights(_model(tree), epoch), _weights(tmp_path / f"e{epoch}.pt"))
    # the main weights are the last epoch's, as without snapshots
    _train(tree / "data" / CLASS, tmp_path / "plain.pt", replace(settings, select=Select(())))
    _assert_same_weights(_weights(_model(tree)), _weights(tmp_path / "plain.pt"))
    assert torch.load(tmp_path / "plain.pt", weights_only=True)["snapshots"] == {}
    assert not torch.equal(data["snapshots"][1]["adaptor"]["weight"], data["adaptor"]["weight"])


def test_resume_keeps_the_snapshots_taken_before_the_stop(tree, tmp_path):
    settings = make_settings("simplenet", {**BLOCK, "select": {"meta_epoch": KEPT}})
    with pytest.raises(TrainingStopped):
        _train(tree / "data" / CLASS, tmp_path / "cut.pt", settings, _stop_after_meta_epoch=1)
    ckpt = torch.load(tmp_path / "cut.ckpt" / "last.pt", weights_only=True)
    assert sorted(ckpt["snapshots"]) == [1]
    resumed = _train(tree / "data" / CLASS, tmp_path / "cut.pt", settings)
    assert resumed["resumed_from_meta_epoch"] == 1
    for epoch in (None, *KEPT):
        _assert_same_weights(_weights(tmp_path / "cut.pt", epoch), _weights(_model(tree), epoch))


def test_load_simplenet_names_the_epochs_a_file_keeps(tree):
    model = _model(tree)
    _, settings, meta = load_simplenet(model)
    assert meta["scored_meta_epoch"] == 3 and meta["kept_meta_epochs"] == KEPT and "snapshots" not in meta
    assert load_simplenet(model, meta_epoch=3)[2]["scored_meta_epoch"] == 3  # the last: the main weights
    net, _, meta = load_simplenet(model, meta_epoch=2)
    assert meta["scored_meta_epoch"] == 2
    torch.testing.assert_close(net.adaptor.weight.detach(), _weights(model, 2)["adaptor"]["weight"])
    with pytest.raises(
        ValueError, match=rf"{model.name} keeps the weights of meta epochs \[1, 2\] .*not of epoch 5"
    ):
        load_simplenet(model, meta_epoch=5)


# ------------------------------------------------------------------------------------------------- runs
def _run(tree: Path, name: str, select: list[int], **block) -> dict:
    """The run job of candidate ``name`` as the plan gives it: its own epoch in ``select`` (none for the default)."""
    config = _config(tree, select, **block)
    return run_method("simplenet", config, replace(RUN, variant=name), class_dir=tree / "data" / CLASS,
                      models={"model": _model(tree)},
                      out_result=tree / "results/runs" / DATASET / CLASS / "simplenet" / name / f"seed{SEED}.json",
                      out_maps=tree / "results/maps" / DATASET / CLASS / "simplenet" / name / f"seed{SEED}.npz")  # fmt: skip


def _predicted(out: Path) -> np.ndarray:
    """The image scores ``texad predict`` wrote, in its file order (the names sort in test-set order)."""
    with open(out / "scores.csv", newline="") as fh:
        return np.array([float(row["score"]) for row in csv.DictReader(fh)])


def _maps(tree: Path, name: str) -> Path:
    return tree / "results/maps" / DATASET / CLASS / "simplenet" / name / f"seed{SEED}.npz"


@pytest.fixture(scope="module")
def runs(tree) -> dict[str, dict]:
    return {"default": _run(tree, "default", []), "epoch1": _run(tree, "epoch1", [1]),
            "epoch2": _run(tree, "epoch2", [2])}  # fmt: skip


def test_each_candidate_scores_with_its_epochs_weights(tree, runs):
    test = load_test_set(tree / "data" / CLASS, make_settings("simplenet", BLOCK), 32)
    scores = {}
    for name, epoch in (("default", 3), ("epoch1", 1), ("epoch2", 2)):
        result = runs[name]
        sel = result["extra"]["selection"]
        assert sel["scored_meta_epoch"] == epoch and sel["kept_meta_epochs"] == KEPT
        assert sel["mode"] == "last" and sel["used_test_set"] is False
        assert result["model_hash"] == runs["default"]["model_hash"]  # one model for all
        net, _, _ = load_simplenet(_model(tree), meta_epoch=epoch)
        with torch.no_grad():
            expected = image_scores(net.patch_scores(test.images)).numpy()
        scores[name] = np.load(_maps(tree, name))["scores"]
        np.testing.assert_allclose(scores[name], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(scores["epoch1"], scores["default"])
    assert not np.allclose(scores["epoch2"], scores["epoch1"])
    assert runs["epoch1"]["extra"]["config"]["methods"]["simplenet"]["select"] == {"meta_epoch": [1]}
    # the default candidate (its select names the last epoch) is the default run
    again = _run(tree, "default", [3])
    assert again["metrics"] == runs["default"]["metrics"]


def test_a_run_refuses_a_model_that_does_not_keep_its_epoch_or_is_another(tree, tmp_path):
    from settings_checks import cpu_runtime

    runtime, model = cpu_runtime(32), {"model": _model(tree)}
    s = make_settings("simplenet", {**BLOCK, "select": {"meta_epoch": [1]}})
    SimpleNetDetector(s, runtime, RUN, model)  # kept
    # another meta_epochs (with the epoch, or as a default run) or another shaping setting: another model
    for other in (
        replace(s, meta_epochs=4),
        replace(s, meta_epochs=4, select=Select(())),
        replace(s, noise_std=0.5),
    ):
        with pytest.raises(ValueError, match="a setting that shapes the model differs"):
            SimpleNetDetector(other, runtime, RUN, model)
    # a model trained without snapshots serves the default run only
    plain = make_settings("simplenet", BLOCK)
    _train(tree / "data" / CLASS, tmp_path / "plain.pt", plain)
    SimpleNetDetector(plain, runtime, RUN, {"model": tmp_path / "plain.pt"})
    with pytest.raises(ValueError, match=r"plain\.pt keeps the weights of meta epochs \[\] .*not of epoch 1"):
        SimpleNetDetector(s, runtime, RUN, {"model": tmp_path / "plain.pt"})


def test_select_choose_and_predict_the_selected_run(tree, runs, tmp_path):
    config = _config(tree, KEPT)
    config["selection"] = {"criterion": "mean_auroc"}
    record = score_candidates("simplenet", config, RUN, validation_dir=tree / "val" / CLASS,
                              models={"model": _model(tree)}, out=tree / "selection.json")  # fmt: skip
    assert [c["name"] for c in record["candidates"]] == ["default", "epoch1", "epoch2"]
    assert [c["values"] for c in record["candidates"]] == [{"meta_epoch": e} for e in (3, 1, 2)]
    runs_dir = tree / "results/runs" / DATASET / CLASS / "simplenet"
    names = ["default", "epoch1", "epoch2"]
    out = {v: (runs_dir / v / f"seed{SEED}.json", _maps(tree, v)) for v in (SELECTED, ORACLE)}
    written = choose(tree / "selection.json", [runs_dir / n / f"seed{SEED}.json" for n in names],
                     [_maps(tree, n) for n in names], out=out)  # fmt: skip
    epochs = {"default": 3, "epoch1": 1, "epoch2": 2}
    for result in written.values():
        sel = result["extra"]["selection"]
        assert sel["chosen"] in names and sel["values"] == {"meta_epoch": epochs[sel["chosen"]]}
        # the run's own record is kept beside the choice: the epoch it scored
        assert sel["scored_meta_epoch"] == epochs[sel["chosen"]] and sel["used_test_set"] is False
        assert result["metrics"] == runs[sel["chosen"]]["metrics"]
    # texad predict on the selected run scores with its epoch: its benchmark scores again
    selected = out[SELECTED][0]
    flat = tmp_path / "flat"
    flat.mkdir()
    from texad.data.layout import list_samples

    samples = list_samples(tree / "data" / CLASS, "test")
    for i, sample in enumerate(samples):  # names sort in test-set order
        (flat / f"{i:03d}_{sample.path.name}").write_bytes(sample.path.read_bytes())
    normal = tree / "data" / CLASS / "train" / "good"
    rec = predict_folder(selected, flat, tmp_path / "pred", normal=normal, device="cpu")
    assert rec["settings"]["select"] == {
        "meta_epoch": [epochs[written[SELECTED]["extra"]["selection"]["chosen"]]]
    }
    np.testing.assert_allclose(
        _predicted(tmp_path / "pred"), np.load(out[SELECTED][1])["scores"], rtol=1e-5, atol=1e-6
    )
    # each candidate's own run JSON too; the bare model file runs as the default run (its last weights)
    for name in ("epoch1", "default"):
        predict_folder(
            runs_dir / name / f"seed{SEED}.json", flat, tmp_path / name, normal=normal, device="cpu"
        )
        np.testing.assert_allclose(
            _predicted(tmp_path / name), np.load(_maps(tree, name))["scores"], rtol=1e-5, atol=1e-6
        )
    rec = predict_folder(_model(tree), flat, tmp_path / "file", normal=normal, device="cpu")
    assert rec["settings"]["select"] == {"meta_epoch": []}
    np.testing.assert_allclose(
        _predicted(tmp_path / "file"), np.load(_maps(tree, "default"))["scores"], rtol=1e-5, atol=1e-6
    )
