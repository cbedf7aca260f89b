# Config validation, look-ups and input functions shared by every rule file.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from texad.config import ConfigError, validate_config

try:
    _validated = validate_config(dict(config))
except ConfigError as exc:
    raise WorkflowError(
        f"{exc}\n(schema: workflow/schemas/config.schema.yaml)"
    ) from None
config.clear()
config.update(_validated)

# Datasets made of MVTec-layout classes; `dtd` is DRAEM's anomaly source (images only).
CLASS_DATASETS = ("synthetic", "mvtec_ad", "dtd_synthetic")
DOWNLOADED = ("mvtec_ad", "dtd_synthetic", "dtd")
# Methods whose rules exist in this version of the workflow.
IMPLEMENTED_METHODS = ("method_a", "method_b", "simplenet", "draem")

_pending = [
    m
    for m, c in config["methods"].items()
    if c.get("enabled") and m not in IMPLEMENTED_METHODS
]
if _pending:
    sys.stderr.write(
        "texad: enabled methods not yet available in this version (only the data stage is planned for them): "
        + ", ".join(_pending)
        + "\n"
    )

PYTHON_TEXAD = "python -m texad"


wildcard_constraints:
    dataset="|".join(CLASS_DATASETS + ("dtd",)),
    cls=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    model_hash=r"[0-9a-f]+",
    fe_hash=r"[0-9a-f]+",
    variant=r"[A-Za-z0-9_.-]+",
    backbone=r"[a-z0-9_]+",
    prefix=r"[0-9a-f]{8}",


def dataset_cfg(dataset):
    return config["datasets"].get(dataset, {"enabled": False})


def enabled_class_datasets():
    return [d for d in CLASS_DATASETS if dataset_cfg(d)["enabled"]]


def dataset_root(dataset):
    """Where the class folders of `dataset` live: the user's copy (`path`) or texad's staging folder."""
    return dataset_cfg(dataset).get("path") or f"resources/datasets/{dataset}"


def class_dir(wildcards):
    return f"{dataset_root(wildcards.dataset)}/{wildcards.cls}"


def stage_marker_of(dataset, cls):
    """The completion marker of the job that puts a class folder in place."""
    if dataset == "synthetic":
        return f"resources/datasets/synthetic/{cls}.manifest.json"
    return f"resources/datasets/{dataset}.staged.json"


def stage_marker(wildcards):
    return stage_marker_of(wildcards.dataset, wildcards.cls)


def synth_params(wildcards):
    c = dataset_cfg("synthetic")
    return (
        f"--image-size {c['image_size']} --n-train {c['n_train']} --n-test-good {c['n_test_good']} "
        f"--n-test-per-defect {c['n_test_per_defect']} --seed {c['seed']}"
    )


def download_args(wildcards):
    """Explicit CLI arguments for `texad download` from datasets.<dataset>."""
    c = dataset_cfg(wildcards.dataset)
    args = []
    if c.get("classes"):
        args += ["--classes", *c["classes"]]
    for key in ("url", "archive", "path"):
        if c.get(key):
            args += [f"--{key}", shlex.quote(str(c[key]))]
    if c.get("accept_license"):
        args.append("--accept-license")
    if not c.get("keep_archive", True):
        args.append("--no-keep-archive")
    return " ".join(args)


def class_outputs(pattern):
    """`pattern` expanded over every enabled (dataset, class)."""
    return [
        pattern.format(dataset=d, cls=c)
        for d in enabled_class_datasets()
        for c in dataset_cfg(d)["classes"]
    ]


def per_class(mapping, cls):
    """A per-class config value (`{carpet: 0, ..., default: 4}`) for `cls`."""
    return mapping.get(cls, mapping["default"])


def uses_gpu():
    return config["device"] != "cpu"


def compute_threads(gpu_threads):
    """Threads of a torch job: `gpu_threads` on a GPU run (data loading beside the GPU); one on a CPU run, where
    small jobs side by side use the cores better than one job's thread pool (the demo: 2 cores).
    """
    return gpu_threads if uses_gpu() else 1


def torch_env(wildcards):
    """The CUDA environment for GPU runs, the CPU one otherwise."""
    return "../../envs/texad-cuda.yaml" if uses_gpu() else "../../envs/texad-cpu.yaml"


def ddpm_settings(dataset, cls, seed):
    """Everything that shapes the shared per-class DDPM (Method B, and Method A with model: shared_ddpm)."""
    b = config["methods"]["method_b"]
    return {
        "preset": b["diffusion"]["preset"],
        "image_size": config["image_size"],
        "timesteps": b["diffusion"]["timesteps"],
        "beta_start": b["diffusion"]["beta_start"],
        "beta_end": b["diffusion"]["beta_end"],
        "epochs": per_class(b["train"]["epochs"], cls),
        "batch_size": b["train"]["batch_size"],
        "lr": b["train"]["lr"],
        "weight_decay": b["train"]["weight_decay"],
        "optimizer": b["train"]["optimizer"],
        "ema": b["train"]["ema"],
        "grad_clip": b["train"]["grad_clip"],
        "seed": int(seed),
        **({"t_max": b["train"]["t_max"]} if b["train"]["t_max"] is not None else {}),
    }


def ddpm_hash(dataset, cls, seed):
    from texad.diffusion.training import DiffusionTrainSettings

    return DiffusionTrainSettings(
        dataset=dataset, class_name=cls, **ddpm_settings(dataset, cls, seed)
    ).model_hash()


def ddpm_model(wildcards):
    """The model file a run needs; its name carries the identity hash, so every variant reuses it."""
    h = ddpm_hash(wildcards.dataset, wildcards.cls, wildcards.seed)
    return f"results/models/{wildcards.dataset}/{wildcards.cls}/seed{wildcards.seed}/ddpm-{h}.pt"


def ddpm_train_args(wildcards):
    settings = ddpm_settings(wildcards.dataset, wildcards.cls, wildcards.seed)
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
    b = config["methods"]["method_b"]["train"]
    return f"{args} --device {config['device']} --precision {config['precision']} --checkpoint-every {b['checkpoint_every']}"


def staged_weights(backbone):
    """The cached weight file a torchvision backbone needs ([] for the offline EfficientNet-Lite0)."""
    from texad.backbones.weights import KNOWN_WEIGHTS

    if backbone == "efficientnet_lite0":
        return []
    return [
        f"{config['backbone']['cache']}/hub/checkpoints/{KNOWN_WEIGHTS[backbone].file}"
    ]


def method_b_weights(wildcards):
    return staged_weights(
        config["methods"]["method_b"]["inference"]["feature_backbone"]
    )


def adaptation_settings(cls, seed):
    """DDAD's feature adaptation for `cls` (None when its epochs are 0: the pretrained weights are used)."""
    from texad.methods.conditioned_blur.domain_adaptation import AdaptationSettings

    fa = config["methods"]["method_b"]["feature_adaptation"]
    epochs = per_class(fa["epochs"], cls)
    if epochs == 0:
        return None
    inf = config["methods"]["method_b"]["inference"]
    return AdaptationSettings(
        epochs=epochs,
        w=fa["w"],
        lam=fa["lambda"],
        lr=fa["lr"],
        batch_size=fa["batch_size"],
        t_start=inf["t_start"],
        skip=inf["skip"],
        eta=inf["eta"],
        seed=int(seed),
        feature_size=inf["feature_size"],
    )


def adapted_features(wildcards):
    """The adapted extractor a Method B run needs ([] without adaptation); the name carries its identity."""
    from texad.backbones.features import BACKBONES

    s = adaptation_settings(wildcards.cls, wildcards.seed)
    if s is None:
        return []
    backbone = config["methods"]["method_b"]["inference"]["feature_backbone"]
    h = s.identity_hash(
        ddpm_hash(wildcards.dataset, wildcards.cls, wildcards.seed),
        backbone,
        BACKBONES[backbone],
    )
    return [
        f"results/models/{wildcards.dataset}/{wildcards.cls}/seed{wildcards.seed}/features-{backbone}-{h}.pt"
    ]


def adaptation_args(wildcards):
    s = adaptation_settings(wildcards.cls, wildcards.seed)
    return (
        f"--epochs {s.epochs} --w {s.w} --lam {s.lam} --lr {s.lr} --batch-size {s.batch_size} "
        f"--t-start {s.t_start} --skip {s.skip} --eta {s.eta} --seed {s.seed} "
        f"--weights-cache {config['backbone']['cache']} --device {config['device']}"
        + (f" --feature-size {s.feature_size}" if s.feature_size is not None else "")
    )


def method_b_variant_names(cls):
    """`default` and every guidance point of methods.method_b.ablation for `cls` (inference only)."""
    from texad.methods.conditioned_blur.ablation import ablation_points

    return ["default"] + [
        p.name for p in ablation_points(config["methods"]["method_b"], cls)
    ]


def method_b_args(wildcards):
    """Explicit `texad method-b` arguments for a variant (`default` or an ablation point), from methods.method_b."""
    from texad.methods.conditioned_blur.ablation import resolve_point

    inf = config["methods"]["method_b"]["inference"]
    point = resolve_point(
        config["methods"]["method_b"], wildcards.cls, wildcards.variant
    )
    args = [
        f"--run-name {config['run_name']} --variant {wildcards.variant}",
        f"--t-start {point.t_start} --skip {point.skip} --eta {inf['eta']}",
        f"--w {point.w} --s {point.s}",
        f"--blur-sigma {point.blur_sigma} --blur-kernel {inf['blur_kernel']} --draws {inf['draws']}",
        f"--v {inf['v']} --smoothing-sigma {inf['smoothing_sigma']} --fusion-norm {inf['fusion_norm']}",
        f"--backbone {inf['feature_backbone']} --weights-cache {config['backbone']['cache']}",
        f"--resolution {config['evaluation']['resolution']} --fpr-limit {config['evaluation']['fpr_limit']}",
        f"--batch-size {inf['batch_size']} --device {config['device']}",
        accel_args(),
    ]
    if inf["feature_size"] is not None:
        args.append(f"--feature-size {inf['feature_size']}")
    args.append(f"--normalise {inf['normalise']}")
    if inf["normalise_images"] is not None:
        args.append(f"--normalise-images {inf['normalise_images']}")
    for path in adapted_features(wildcards):
        args.append(f"--adapted-features {path}")
    if inf["clip_x0"]:
        args.append("--clip-x0")
    if inf["first_call_at_ts"]:
        args.append("--first-call-at-ts")
    return " ".join(args)


def method_block(method):
    """methods.<method> without `enabled`: the settings a method's CLI takes as --settings JSON."""
    return {k: v for k, v in config["methods"][method].items() if k != "enabled"}


def settings_json(method):
    return shlex.quote(json.dumps(method_block(method), sort_keys=True))


def train_settings_json(method):
    """Only the settings that shape `method`'s trained model, as JSON for its train job: a change to evaluation
    settings (an ablation grid, a score pool) then neither renames the model nor retrains it through Snakemake's
    params trigger."""
    if method == "method_a":
        shaping = method_a_settings().shaping_block()
    elif method == "simplenet":
        from texad.methods.simplenet import SimpleNetSettings, shaping_settings

        shaping = shaping_settings(SimpleNetSettings.from_config(method_block(method)))
    elif method == "draem":
        shaping = draem_settings().shaping_settings()
    else:
        raise ValueError(f"no train settings for {method}")
    return shlex.quote(json.dumps(shaping, sort_keys=True))


def simplenet_hash(dataset, cls, seed):
    from texad.backbones.features import BACKBONES
    from texad.methods.simplenet import SimpleNetSettings, model_hash

    settings = SimpleNetSettings.from_config(method_block("simplenet"))
    return model_hash(
        settings,
        dataset=dataset,
        class_name=cls,
        seed=int(seed),
        backbone_weights=BACKBONES[settings.backbone],
    )


def simplenet_model(wildcards):
    h = simplenet_hash(wildcards.dataset, wildcards.cls, wildcards.seed)
    return f"results/models/{wildcards.dataset}/{wildcards.cls}/seed{wildcards.seed}/simplenet-{h}.pt"


def simplenet_weights(wildcards):
    return staged_weights(config["methods"]["simplenet"]["backbone"])


def draem_settings():
    from texad.methods.draem import DraemSettings

    return DraemSettings.from_config(method_block("draem"))


def draem_model(wildcards):
    h = draem_settings().model_hash(
        wildcards.dataset, wildcards.cls, int(wildcards.seed)
    )
    return f"results/models/{wildcards.dataset}/{wildcards.cls}/seed{wildcards.seed}/draem-{h}.pt"


def draem_source_inputs(wildcards):
    """DTD (official) or the other classes of the same dataset (offline demo) must be staged first."""
    if draem_settings().anomaly_source == "dtd":
        return ["resources/datasets/dtd.staged.json"]
    return [
        stage_marker_of(wildcards.dataset, c)
        for c in dataset_cfg(wildcards.dataset)["classes"]
        if c != wildcards.cls
    ]


def draem_source_args(wildcards):
    if draem_settings().anomaly_source == "dtd":
        return f"--anomaly-root {dataset_root('dtd')}"
    others = [
        c for c in dataset_cfg(wildcards.dataset)["classes"] if c != wildcards.cls
    ]
    return f"--anomaly-root {dataset_root(wildcards.dataset)} --source-classes {' '.join(others)}"


def method_a_settings():
    from texad.methods.score_tscales.run import MethodASettings

    return MethodASettings.from_config(method_block("method_a"))


def method_a_variant_names():
    """`default` and every ablation point of methods.method_a (none retrains the score model)."""
    from texad.methods.score_tscales.run import ablation_variants

    return ["default"] + [v.name for v in ablation_variants(method_a_settings())]


def score_model_hash(dataset, cls, seed):
    return (
        method_a_settings()
        .train_settings(dataset, cls, config["image_size"], int(seed))
        .model_hash()
    )


def method_a_model(wildcards):
    """The class's own score model, or Method B's DDPM for a `shared_ddpm` run (no extra training)."""
    from texad.methods.score_tscales.run import resolve_variant

    variant = resolve_variant(method_a_settings(), wildcards.variant)
    if variant.model == "shared_ddpm":
        return ddpm_model(wildcards)
    h = score_model_hash(wildcards.dataset, wildcards.cls, wildcards.seed)
    return f"results/models/{wildcards.dataset}/{wildcards.cls}/seed{wildcards.seed}/score-{h}.pt"


def method_a_run_args(wildcards):
    """A Method A job's own settings: the model and SDE settings plus its variant's point (inference, mode, model),
    so that changing another point of the grid leaves this job alone."""
    from texad.methods.score_tscales.run import resolve_variant, variant_to_json

    settings = method_a_settings()
    block = {**settings.shaping_block(), "model": settings.model}
    block["sde"]["n_steps"] = settings.sde.n_steps
    point = variant_to_json(resolve_variant(settings, wildcards.variant))
    return (
        f"--settings {shlex.quote(json.dumps(block, sort_keys=True))} "
        f"--point {shlex.quote(json.dumps(point, sort_keys=True))}"
    )


def accel_args():
    """The GPU fast path of an evaluation job's network evaluations (ignored on a CPU: results record fp32)."""
    args = f"--precision {config['precision']}"
    if config["channels_last"]:
        args += " --channels-last"
    if config["compile"]:
        args += " --compile"
    return args


def method_a_speed_batches(wildcards):
    """The default and the full-chain reference are also timed at ablation.speed_batches (spec §3.4: the speed-up)."""
    batches = config["methods"]["method_a"]["ablation"]["speed_batches"]
    if wildcards.variant not in ("default", "full_chain") or not batches:
        return ""
    return "--speed-batches " + " ".join(str(b) for b in batches)


def run_args(wildcards):
    """CLI arguments every baseline run shares (settings JSON, protocol, device, weight cache)."""
    ev = config["evaluation"]
    return (
        f"--dataset {wildcards.dataset} --class {wildcards.cls} --seed {wildcards.seed} "
        f"--run-name {config['run_name']} --resolution {ev['resolution']} --fpr-limit {ev['fpr_limit']} "
        f"--weights-cache {config['backbone']['cache']} --device {config['device']}"
    )


def eval_args(wildcards):
    """run_args of an evaluation job: also the GPU fast path of its network evaluations."""
    return f"{run_args(wildcards)} {accel_args()}"


def method_results():
    """The result JSON of every enabled, implemented method on every enabled class and seed."""
    methods = enabled_methods()
    return [
        f"results/runs/{d}/{c}/{m}/default/seed{s}.json"
        for d in enabled_class_datasets()
        for c in dataset_cfg(d)["classes"]
        for m in methods
        for s in config["seeds"]
    ]


ABLATED_METHODS = ("method_a", "method_b")


def ablation_results(method):
    """The result JSON of `default` and every ablation point of `method` on every class and seed."""
    if method not in ABLATED_METHODS or not config["methods"].get(method, {}).get(
        "enabled"
    ):
        return []
    variants = {
        "method_a": lambda cls: method_a_variant_names(),
        "method_b": method_b_variant_names,
    }[method]
    return [
        f"results/runs/{d}/{c}/{method}/{v}/seed{s}.json"
        for d in enabled_class_datasets()
        for c in dataset_cfg(d)["classes"]
        for v in variants(c)
        for s in config["seeds"]
    ]


def get_final_output():
    targets = class_outputs("results/data/{dataset}/{cls}/layout.json")
    targets += class_outputs("results/data/{dataset}/{cls}/contact_sheet.png")
    if dataset_cfg("dtd")["enabled"]:
        targets.append("resources/datasets/dtd.staged.json")
    if method_results():
        targets.append("results/tables/image_auroc.csv")
    for method in ABLATED_METHODS:
        if ablation_results(method):
            targets.append(f"results/tables/ablation_{method}.csv")
    targets += [f"results/report/tables/{g}/{t}.html" for g, t in report_tables()]
    targets += report_figures()
    return targets


# --- report: tables and figures -------------------------------------------------------------------------

DIFFUSION_METHODS = ("method_a", "method_b")
METRIC_TABLES = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
# Paper tables and the methods each needs (planned when one of them is enabled).
PAPER_TABLES = {
    "paper_method_b_table1": ("method_b",),
    "paper_method_a_main": ("method_a",),
    "paper_method_a_tscales": ("method_a",),
    "extended": IMPLEMENTED_METHODS,
}
PUBLISHED = os.path.join(workflow.basedir, "workflow", "report", "published.yaml")


def enabled_methods():
    """The implemented methods the config enables."""
    return [
        m for m in IMPLEMENTED_METHODS if config["methods"].get(m, {}).get("enabled")
    ]


def figure_seed():
    """Figures of single runs (Figure-1 grids, ROC curves) show the first seed."""
    return config["seeds"][0]


def default_maps(wildcards, methods):
    return [
        f"results/maps/{wildcards.dataset}/{wildcards.cls}/{m}/default/seed{figure_seed()}.npz"
        for m in methods
        if m in enabled_methods()
    ]


def paper_tables():
    return [
        t for t, needs in PAPER_TABLES.items() if set(needs) & set(enabled_methods())
    ]


def paper_table_results(wildcards):
    results = method_results()
    if wildcards.table == "paper_method_a_tscales":
        results = results + ablation_results("method_a")
    return sorted(set(results))


def report_tables():
    """Every table shown in the report, as (group, name): results/report/tables/{group}/{name}.html."""
    tables = []
    if method_results():
        tables += [("benchmark", m) for m in METRIC_TABLES]
        tables += [("paper", t) for t in paper_tables()]
    tables += [
        ("ablation", f"ablation_{m}") for m in ABLATED_METHODS if ablation_results(m)
    ]
    return tables


def report_figures():
    figures = []
    if not method_results():
        return figures
    diffusion = [m for m in DIFFUSION_METHODS if m in enabled_methods()]
    if diffusion:
        figures += class_outputs("results/figures/{dataset}/{cls}/figure1.png")
    figures += class_outputs("results/figures/{dataset}/{cls}/roc.png")
    figures += [
        f"results/figures/ablation_{m}.png"
        for m in ABLATED_METHODS
        if ablation_results(m)
    ]
    figures.append("results/figures/speed_accuracy.png")
    return figures
