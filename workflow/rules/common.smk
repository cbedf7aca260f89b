# Config validation and the input functions the rule files share; what the workflow plans is texad.plan.
import os
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError

from texad.config import ConfigError, validate_config
from texad.plan import (
    ABLATED_METHODS,
    DIFFUSION_METHODS,
    METRIC_TABLES,
    PAPER_TABLES,
    Plan,
    settings_arg,
)
from texad.methods import METHODS

try:
    _validated = validate_config(dict(config))
    PLAN = Plan(_validated)
except ConfigError as exc:
    raise WorkflowError(
        f"{exc}\n(schema: workflow/schemas/config.schema.yaml)"
    ) from None
config.clear()
config.update(_validated)

PYTHON_TEXAD = "python -m texad"
PUBLISHED = os.path.join(workflow.basedir, "workflow", "report", "published.yaml")
CLAIMS = os.path.join(workflow.basedir, "workflow", "report", "claims.yaml")


wildcard_constraints:
    dataset="|".join(PLAN.dataset_names()),
    cls=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    model_hash=r"[0-9a-f]+",
    fe_hash=r"[0-9a-f]+",
    # `selected` and `oracle` are written by the choose rule (selection.smk), not by a method run
    variant=r"(?!(?:selected|oracle)/)[A-Za-z0-9_.-]+",
    backbone=r"[a-z0-9_]+",
    prefix=r"[0-9a-f]{8}",


# --- resources --------------------------------------------------------------------------------------------


def uses_gpu():
    return config["device"] != "cpu"


def compute_threads(gpu_threads):
    """Threads of a torch job: `gpu_threads` on a GPU run (data loading beside the GPU); one on a CPU run, where
    small jobs side by side use the cores better than one job's thread pool (the demo: 2 cores).
    """
    return gpu_threads if uses_gpu() else 1


def torch_resources(gpu_mem_mb, cpu_mem_mb, gpu_runtime, cpu_runtime):
    """The resource block of a torch job: memory (MB) and runtime (minutes) on a GPU run or a CPU run."""
    gpu = uses_gpu()
    return {
        "mem_mb": gpu_mem_mb if gpu else cpu_mem_mb,
        "runtime": gpu_runtime if gpu else cpu_runtime,
        "gpu": 1 if gpu else 0,
    }


def torch_env(wildcards):
    """The CUDA environment for GPU runs, the CPU one otherwise."""
    return "../../envs/texad-cuda.yaml" if uses_gpu() else "../../envs/texad-cpu.yaml"


# --- input functions --------------------------------------------------------------------------------------


def class_dir(wildcards):
    """The class folder that train and run jobs read: the class itself, or with validation.holdout > 0 its
    training view (train/good without the held-out images; test and ground_truth the class's own).
    """
    return PLAN.training_view(wildcards.dataset, wildcards.cls)


def staged_class_dir(wildcards):
    """The class folder as staged (the data stage's jobs: index, check, contact sheet, the split)."""
    return PLAN.class_dir(wildcards.dataset, wildcards.cls)


def class_runs(wildcards):
    """Every run of one class: result JSONs, and their maps files in the same order."""
    results = PLAN.class_results(wildcards.dataset, wildcards.cls)
    maps = [
        r.replace("results/runs/", "results/maps/", 1).removesuffix(".json") + ".npz"
        for r in results
    ]
    return {"results": results, "maps": maps}


def figure_title(wildcards):
    """A class's figure title: dataset / class, a renamed user class with its folder's name."""
    return shlex.quote(
        f"{wildcards.dataset} / {PLAN.class_title(wildcards.dataset, wildcards.cls)}"
    )


def stage_marker(wildcards):
    """The completion marker of `class_dir`: the class's stage marker, or its training view's."""
    return PLAN.training_view_marker(wildcards.dataset, wildcards.cls)


def staged_marker(wildcards):
    """The completion marker of the job that puts the class folder in place."""
    return PLAN.stage_marker(wildcards.dataset, wildcards.cls)


def train_settings(kind):
    """A train job's settings (the owning method's whole block, kept in the model file). Derived from the
    output path, whose identity hash names every setting that shapes the model (and picks an `official`
    variant's own model, e.g. SimpleNet's), so Snakemake's params trigger does not retrain a model when only an
    inference key changes."""
    return lambda wildcards, output: settings_arg(
        PLAN.train_settings(
            kind,
            wildcards.cls,
            wildcards.dataset,
            wildcards.seed,
            wildcards.get("model_hash", wildcards.get("fe_hash")),
        )
    )


def train_weights(method, kind):
    return lambda wildcards: PLAN.weights(method, wildcards.cls, kind)


def run_inputs(method):
    """A run's inputs: its class folder's marker, the models it loads (by role) and the staged weights."""
    return lambda wildcards: {
        "marker": stage_marker(wildcards),
        "weights": PLAN.weights(method, wildcards.cls),
        **PLAN.run_models(
            method,
            wildcards.dataset,
            wildcards.cls,
            wildcards.seed,
            wildcards.variant,
        ),
    }


def run_settings(method):
    """A run's settings: its variant's point, its class's per-class values and the top-level keys it reads."""
    return lambda wildcards: settings_arg(
        PLAN.run_settings(method, wildcards.cls, wildcards.variant)
    )


def models_arg(wildcards, input):
    """`--model` and, for Method B with feature adaptation, `--features`."""
    features = f" --features {input.features}" if "features" in input.keys() else ""
    return f"--model {input.model}{features}"


def draem_sources(wildcards):
    return PLAN.draem_sources(wildcards.dataset, wildcards.cls)[0]


def draem_source_args(wildcards):
    return PLAN.draem_sources(wildcards.dataset, wildcards.cls)[1]


def get_final_output():
    return PLAN.final_outputs()


def candidate_fit_states(wildcards):
    """The fit states of a method's candidates' test-set runs (training-image statistics only): texad select
    takes them instead of fitting each candidate again."""
    runs = f"results/runs/{wildcards.dataset}/{wildcards.cls}/{wildcards.method}"
    return [
        f"{runs}/{v}/seed{wildcards.seed}.fit.npz"
        for v in PLAN.candidates(wildcards.method, wildcards.cls)
    ]


def select_inputs(wildcards):
    """A select job's inputs: the validation split, the default run's models, the staged weights and the
    candidates' fit states."""
    return {
        "split": PLAN.validation_marker(wildcards.dataset, wildcards.cls),
        "weights": PLAN.weights(wildcards.method, wildcards.cls),
        "fits": candidate_fit_states(wildcards),
        **PLAN.run_models(
            wildcards.method,
            wildcards.dataset,
            wildcards.cls,
            wildcards.seed,
            "default",
        ),
    }


def choose_inputs(wildcards):
    """A choose job's inputs: the choice and every candidate's test-set run (result JSONs, maps, fit states)."""
    results = [
        f"results/runs/{wildcards.dataset}/{wildcards.cls}/{wildcards.method}/{v}/seed{wildcards.seed}.json"
        for v in PLAN.candidates(wildcards.method, wildcards.cls)
    ]
    maps = [
        r.replace("results/runs/", "results/maps/", 1).removesuffix(".json") + ".npz"
        for r in results
    ]
    return {
        "selection": f"results/selection/{wildcards.dataset}/{wildcards.cls}/{wildcards.method}/seed{wildcards.seed}.json",
        "results": results,
        "maps": maps,
        "fits": [r.removesuffix(".json") + ".fit.npz" for r in results],
    }
