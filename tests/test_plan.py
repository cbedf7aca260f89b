"""texad.plan: what the workflow plans, and that a job's settings name the same model in the plan and in the job.

A job receives its settings as JSON on the command line (``texad train|run ... --settings``); these tests pass that
JSON through the same parser the command uses (``texad.config.load_settings``) and check that the job computes the
identity the plan put in the file name, for every job of the paper and the demo config.
"""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from texad.config import ConfigError, load_config, load_settings, validate_config
from texad.methods import get, model_owner
from texad.methods.base import RunKey, run_variants, variant_settings
from texad.methods.jobs import method_settings
from texad.plan import Plan, settings_arg

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"paper": ROOT / "config.yaml", "demo": ROOT / "config" / "demo.yaml"}


def _job_config(arg: str) -> dict:
    """What a job parses from its ``--settings`` argument (a shell-quoted JSON)."""
    (text,) = shlex.split(arg)
    return load_settings(text)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def plan(request) -> Plan:
    return Plan(load_config(CONFIGS[request.param]))


def test_train_jobs_compute_the_identity_in_their_file_names(plan):
    seen = 0
    for dataset, cls in plan.class_keys():
        for seed in plan.config["seeds"]:
            for kind in ("ddpm", "score", "simplenet", "draem", "features"):
                expected = plan.model_hash(kind, dataset, cls, seed)
                if expected is None:  # no feature adaptation for this class
                    continue
                assert Path(plan.model_path(kind, dataset, cls, seed)).name.endswith(f"-{expected}.pt")
                config = _job_config(settings_arg(plan.train_settings(kind, cls)))
                owner = get(model_owner(kind))
                settings = method_settings(config, owner.NAME, cls)
                # the job's key, as `texad train` builds it: with the held-out share its settings name
                assert owner.identity(kind, settings, RunKey.of(config, dataset, cls, seed)) == expected
                seen += 1
    assert seen >= 12


def test_run_jobs_resolve_their_variant_as_the_plan_does_and_load_its_models(plan):
    for method in plan.enabled_methods():
        module = get(method)
        for dataset, cls in plan.class_keys():
            for variant in dict.fromkeys(plan.variants(method, cls) + plan.candidates(method, cls)):
                config = _job_config(settings_arg(plan.run_settings(method, cls, variant)))
                # what `texad run` does with its --settings and --variant
                applied = variant_settings(
                    run_variants(module, method_settings(config, method, cls)), variant, method
                )
                planned = plan._variant(method, cls, variant).settings
                if hasattr(planned, "ablation"):  # the job's settings carry only its own ablation entry
                    applied, planned = replace(applied, ablation=None), replace(planned, ablation=None)
                if hasattr(planned, "select"):  # and only its own candidate
                    applied, planned = replace(applied, select=None), replace(planned, select=None)
                assert applied == planned, (method, cls, variant)
                seed = plan.config["seeds"][0]
                models = plan.run_models(method, dataset, cls, seed, variant)
                for role, kind in module.models(applied).items():
                    assert models[role] == plan.model_path(kind, dataset, cls, seed)


def test_official_variants_are_planned_on_their_seeds_and_load_the_models_their_training_makes(plan):
    """config.yaml plans SimpleNet's, Method B's and DRAEM's ``official`` variant on seed 0 (the demo none); the
    job resolves the variant as the plan does; Method B and DRAEM load the default's models, SimpleNet its own,
    whose train job gets the official settings from the file's identity hash."""
    official = plan.official_results()
    if plan.config["run_name"] == "demo":
        assert official == [] and plan.official_seeds() == []
        return
    assert plan.official_seeds() == [0]
    assert {p.split("/")[4] for p in official} == {"simplenet", "method_b", "draem"}
    assert len(official) == 3 * len(plan.class_keys()) and all(
        p.endswith("/official/seed0.json") for p in official
    )
    assert set(official) <= set(plan.paper_table_results("extended"))
    assert not set(official) & set(plan.ablation_results("method_b"))
    for method in ("simplenet", "method_b", "draem"):
        module = get(method)
        for dataset, cls in plan.class_keys():
            config = _job_config(settings_arg(plan.run_settings(method, cls, "official")))
            applied = variant_settings(
                run_variants(module, method_settings(config, method, cls)), "official", method
            )
            planned = plan._variant(method, cls, "official").settings
            if hasattr(planned, "ablation"):
                applied, planned = replace(applied, ablation=None), replace(planned, ablation=None)
            if hasattr(planned, "select"):  # an official run carries no candidates
                assert not any(vars(applied.select).values())
                applied, planned = replace(applied, select=None), replace(planned, select=None)
            assert applied == planned
            models = plan.run_models(method, dataset, cls, 0, "official")
            default = plan.run_models(method, dataset, cls, 0, "default")
            assert (models == default) == (method != "simplenet"), (method, cls)
            for role, kind in module.models(applied).items():
                digest = Path(models[role]).stem.rsplit("-", 1)[1]
                job = _job_config(settings_arg(plan.train_settings(kind, cls, dataset, 0, digest)))
                owner = get(model_owner(kind))
                assert (
                    owner.identity(
                        kind, method_settings(job, owner.NAME, cls), RunKey.of(job, dataset, cls, 0, "x")
                    )
                    == digest
                )
    simplenet = plan._variant("simplenet", "carpet", "official").settings
    assert simplenet.selection == "official" and simplenet.center_crop
    inference = plan._variant("method_b", "carpet", "official").settings.inference
    assert (inference.protocol, inference.fusion_norm, inference.normalise) == ("ddad", "batch16", "none")
    assert plan._variant("draem", "carpet", "official").settings.protocol == "draem"
    assert not plan.has_official("method_a", "carpet")  # no official code


def test_official_seeds_must_be_run_seeds():
    config = load_config(CONFIGS["paper"])
    with pytest.raises(ConfigError, match=r"official.seeds \[5\] are not in seeds"):
        Plan({**config, "official": {"seeds": [5]}})
    bad = copy.deepcopy(config)
    bad["methods"]["simplenet"].update(resize=200, image_size=288)  # the official crop cannot cut 288 of 200
    with pytest.raises(ConfigError, match="resize"):
        Plan(bad)
    assert Plan({**bad, "official": {"seeds": []}}).official_results() == []


def test_another_point_of_a_grid_leaves_a_run_job_alone():
    raw = yaml.safe_load(CONFIGS["paper"].read_text())
    base = Plan(validate_config(copy.deepcopy(raw)))
    more = copy.deepcopy(raw)
    more["methods"]["method_a"]["ablation"]["n_scales"] = [1, 2, 4, 8, 16]
    more["methods"]["method_b"]["ablation"]["blur_sigma"] = [1, 3, 5, 7, 9]
    more["methods"]["method_b"]["inference"]["w"]["grid"] = 8  # another class's w
    grown = Plan(validate_config(more))
    assert set(grown.variants("method_a", "carpet")) - set(base.variants("method_a", "carpet")) == {
        "K16_n5_s0.4"
    }
    assert "w4_s0.5_blur7_t250" in grown.variants("method_b", "tile")
    for method in ("method_a", "method_b"):
        for variant in base.variants(method, "carpet"):
            assert grown.run_settings(method, "carpet", variant) == base.run_settings(
                method, "carpet", variant
            )
    # the configured inference itself is part of every point's job
    moved = copy.deepcopy(raw)
    moved["methods"]["method_a"]["inference"]["draws"] = 3
    shifted = Plan(validate_config(moved))
    assert all(
        shifted.run_settings("method_a", "carpet", v) != base.run_settings("method_a", "carpet", v)
        for v in base.variants("method_a", "carpet")
    )


def test_per_class_values_are_resolved_for_the_job_class():
    plan = Plan(load_config(CONFIGS["paper"]))
    carpet = plan.run_settings("method_b", "carpet", "default")["methods"]["method_b"]
    wood = plan.run_settings("method_b", "wood", "default")["methods"]["method_b"]
    assert carpet["inference"]["w"] == {"default": 0.0} and wood["inference"]["w"] == {"default": 11.0}
    assert carpet["train"]["epochs"] == {"default": 2500} and wood["train"]["epochs"] == {"default": 2000}
    # a train job gets the owner's whole block (the model file keeps it), the ablation grid included
    train = plan.train_settings("ddpm", "wood")["methods"]["method_b"]
    assert train["ablation"]["w"] == [0.0, 2.0, 4.0, 8.0, 11.0] and train["inference"]["w"] == {
        "default": 11.0
    }


def test_shared_ddpm_reads_method_b_ddpm_even_when_method_b_does_not_run():
    raw = yaml.safe_load(CONFIGS["demo"].read_text())
    raw["methods"]["method_b"]["enabled"] = False
    raw["methods"]["method_a"]["ablation"]["shared_ddpm"] = True
    plan = Plan(validate_config(raw))
    assert "method_b" not in plan.enabled_methods()
    ddpm = plan.run_models("method_a", "synthetic", "wood", 0, "shared_ddpm")["model"]
    assert Path(ddpm).name == f"ddpm-{plan.model_hash('ddpm', 'synthetic', 'wood', 0)}.pt"
    assert "results/runs/synthetic/wood/method_a/shared_ddpm/seed0.json" in plan.ablation_results("method_a")
    del raw["methods"]["method_b"]  # not even a block: the schema's defaults shape the DDPM
    plan = Plan(validate_config(raw))
    assert Path(plan.run_models("method_a", "synthetic", "wood", 0, "shared_ddpm")["model"]).name.startswith(
        "ddpm-"
    )


def test_settings_the_schema_cannot_check_stop_the_plan():
    raw = yaml.safe_load(CONFIGS["demo"].read_text())
    raw["image_size"] = 48
    raw["methods"]["method_a"]["network"]["preset"] = "paper"
    with pytest.raises(ConfigError) as err:
        Plan(validate_config(raw))
    assert (
        "image_size: 48 is not a multiple of 64, which methods.method_a.network.preset 'paper' needs"
        in str(err.value)
    )


def test_a_model_another_method_shapes_is_checked_where_that_method_does_not_run():
    """Method A alone with its shared_ddpm point reads Method B's DDPM: the schema defaults of Method B's block
    (the paper preset) must take the image size too, and the plan says so before any job starts."""
    raw = yaml.safe_load(CONFIGS["demo"].read_text())
    raw["image_size"] = 48
    for method in ("method_b", "simplenet", "draem"):
        raw["methods"][method]["enabled"] = False
    del raw["methods"]["method_b"]
    raw["methods"]["method_a"]["ablation"]["shared_ddpm"] = True
    with pytest.raises(ConfigError) as err:
        Plan(validate_config(raw))
    assert (
        "image_size: 48 is not a multiple of 32, which methods.method_b.diffusion.preset 'paper' needs"
        in str(err.value)
    )
    # no DDPM read: the size is Method A's alone
    raw["methods"]["method_a"]["ablation"]["shared_ddpm"] = False
    Plan(validate_config(raw))


def test_a_job_settings_argument_is_one_json_word():
    plan = Plan(load_config(CONFIGS["demo"]))
    arg = settings_arg(plan.run_settings("method_b", "woven", "default"))
    assert len(shlex.split(arg)) == 1 and json.loads(shlex.split(arg)[0])["run_name"] == "demo"


def test_the_t_scales_table_is_planned_only_with_a_method_a_ablation_point():
    config = load_config(CONFIGS["paper"])
    assert "paper_method_a_tscales" in Plan(config).paper_tables()
    bare = copy.deepcopy(config)
    bare["methods"]["method_a"]["ablation"].update(
        n_scales=[], steps_per_scale=[], sigma_hi=[], metric=[], full_chain=False, shared_ddpm=False
    )
    tables = Plan(bare).paper_tables()
    # the default alone fills no T-scales table (paper-tables stops on it): the job would fail the workflow
    assert "paper_method_a_tscales" not in tables and "paper_method_a_main" in tables
