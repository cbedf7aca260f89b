"""Every setting a ``texad train``, ``texad run`` or ``texad select`` command accepts reaches the function that uses
it, unchanged.

For each method, the test walks the method's block of the config schema (no hand-kept list of keys, so a new key is
covered as soon as the schema has it) and the top-level keys the workflow gives a job, and moves every setting off
its schema default at once, to values that differ from one another where the schema allows (so that two swapped
keys show). Settings that cannot all move together (SimpleNet's test-set selection and its candidate epochs, say)
are moved in a second config. Per-class keys get three values (``default``, the run's class, another class).

Each command then runs through ``texad.cli.main`` with the ``--settings`` text the Snakemake rule passes
(``Plan.train_settings`` / ``run_settings`` / ``select_settings``, split as the shell splits it) and, as a user may,
with the whole config. The functions that do the work (the trainers, the detector, ``run_class``) are replaced by
spies that record their arguments and return at once: no training, no inference. The test asserts that each key's
value arrives in the recorded settings object at the field the key names (``key`` metadata where the spellings
differ), resolved for the command's class, and that the trainers' own settings types, the runtime and the run key
carry the values they map to.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import shlex
from functools import cache
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from texad.cli import main
from texad.config import load_schema, validate_config
from texad.config.checks import cross_key_problems
from texad.config.schema import _resolve
from texad.methods import get
from texad.methods.base import Runtime
from texad.plan import Plan

CLASS, OTHER, DATASET, SEED, WORKERS = "wood", "carpet", "synthetic", 3, 2
METHODS = ("method_a", "method_b", "simplenet", "draem")
KINDS = ("ddpm", "score", "simplenet", "draem", "features")
#: Values a generic walk cannot know: a run on this machine needs the CPU (``cuda`` is a valid value, but torch
#: refuses it here); every other setting is moved by the walk.
PREFERRED = {("device",): "cpu"}
#: Keys whose other values are valid only beside another key's (a transductive fusion belongs to DDAD's protocol).
COMPANIONS = {("methods", "method_b", "inference", "fusion_norm"): {"protocol": "ddad"}}
#: A run job's runtime (``texad.methods.base.Runtime``): the config key of each field.
RUNTIME_KEYS = {("run_name",): "run_name", ("device",): "device", ("precision",): "precision",
                ("channels_last",): "channels_last", ("compile",): "compile",
                ("evaluation", "resolution"): "resolution", ("evaluation", "fpr_limit"): "fpr_limit",
                ("backbone", "cache"): "weights_cache"}  # fmt: skip
#: The held-out share every model identity and run key carries (``texad.data.holdout.Holdout``).
HOLDOUT_KEYS = {("validation", k): k for k in ("holdout", "min_holdout", "seed")}
#: The trainers' own settings types: the method settings field each of their fields is built from (the run key's
#: dataset, class, seed and held-out share are checked apart).
DDPM_FIELDS = {"preset": ("diffusion", "preset"), "timesteps": ("diffusion", "timesteps"),
               "beta_start": ("diffusion", "beta_start"), "beta_end": ("diffusion", "beta_end"),
               "image_size": ("image_size",), **{k: ("train", k) for k in (
                   "epochs", "batch_size", "lr", "weight_decay", "optimizer", "ema", "grad_clip", "t_max")}}  # fmt: skip
SCORE_FIELDS = {"sde": ("sde", "type"), "sigma_min": ("sde", "sigma_min"), "sigma_max": ("sde", "sigma_max"),
                "preset": ("network", "preset"), "nf": ("network", "nf"), "image_size": ("image_size",),
                **{k: ("train", k) for k in (
                    "batch_size", "iterations", "lr", "warmup", "grad_clip", "ema", "hflip")}}  # fmt: skip
ADAPTATION_FIELDS = {**{k: ("feature_adaptation", k) for k in ("epochs", "w", "lr", "batch_size", "t_start", "skip")},
                     "lam": ("feature_adaptation", "lambda"), "eta": ("inference", "eta"),
                     "feature_size": ("inference", "feature_size")}  # fmt: skip
RUN_KEY_FIELDS = {"dataset", "class_name", "seed", "holdout"}
#: The top-level keys of a train job's settings each trainer reads (and where): checked per kind below.
TRAIN_TOP_READ = {
    "ddpm": {("device",), ("precision",), *HOLDOUT_KEYS},
    "score": {("device",), ("precision",), *HOLDOUT_KEYS},
    "simplenet": {("device",), ("backbone", "cache"), ("evaluation", "resolution"), ("evaluation", "fpr_limit"),
                  *HOLDOUT_KEYS},
    "draem": {("device",), *HOLDOUT_KEYS},
    "features": {("device",), ("backbone", "cache")},
}  # fmt: skip


# ------------------------------------------------------------------------------------ the schema walk
def _get(block, path: tuple):
    for key in path:
        block = block[key]
    return block


def _set(block: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        block = block[key]
    block[path[-1]] = value


def _leaves(schema: dict, root: dict, path: tuple = (), within=None):
    """(key path, sub-schema) of every setting under ``schema`` (``enabled`` is not one); a per-class mapping is one
    setting. ``within``: walk only the keys this instance holds (a job's settings)."""
    schema = _resolve(schema, root)
    props = schema.get("properties")
    if schema.get("type") == "object" and props:
        for key, sub in props.items():
            if key != "enabled" and (within is None or key in within):
                yield from _leaves(sub, root, (*path, key), None if within is None else within[key])
    else:
        yield path, schema


def _in_bounds(value, schema: dict) -> bool:
    return (
        value >= schema.get("minimum", value)
        and value <= schema.get("maximum", value)
        and ("exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"])
        and ("exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"])
        and ("multipleOf" not in schema or value % schema["multipleOf"] == 0)
    )


def _numbers(default, schema: dict) -> list:
    """Other valid numbers of a numeric setting, nearest first."""
    if schema.get("type") == "integer":
        step = schema.get("multipleOf", 1)
        base = default if default is not None else schema.get("minimum", 1)
        raw = [base + k * step for k in (1, 2, 3, 4, 5, 6, -1, -2, 250, 500)]
        raw = ([base] if default is None else []) + raw
    else:
        raw = (
            [default * f for f in (1.5, 0.5, 1.25, 0.75, 2.0, 3.0)]
            if default
            else [0.5, 0.25, 0.75, 1.5, 2.5]
        )
    return [v for v in raw if _in_bounds(v, schema) and v != default]


def _candidates(default, schema: dict, root: dict) -> list:
    """Other valid values of a setting (most of them), in order of preference."""
    schema = _resolve(schema, root)
    for key in ("oneOf", "anyOf"):
        if key in schema:  # another branch first (null -> a number, auto -> a number, 256 -> native)
            out = []
            for branch in (_resolve(b, root) for b in schema[key]):
                if "const" in branch:
                    out.append(branch["const"])
                elif branch.get("type") == "null":
                    out.append(None)
                else:
                    out += _numbers(default if isinstance(default, int | float) else None, branch)
            return [v for v in out if v != default]
    if "enum" in schema:
        return [v for v in schema["enum"] if v != default]
    kind = schema.get("type")
    if kind == "boolean":
        return [not default]
    if kind == "string":
        return [f"reach_{n}" for n in range(3)]
    if kind in ("integer", "number"):
        return _numbers(default, schema)
    if kind == "array":
        items = _resolve(schema.get("items", {}), root)
        if default:
            return [default[:-1], default[1:]] if len(default) > 1 else [[*default, x] for x in _candidates(
                default[0], items, root)]  # fmt: skip
        if "enum" in items:
            return [[v] for v in reversed(items["enum"])]
        return [[v] for v in _numbers(1 if items.get("type") == "integer" else 1.0, items)]
    if kind == "object":  # per class: a value for the default, for the run's class and for another class
        values = _numbers(default["default"], _resolve(schema["additionalProperties"], root))
        return [
            {"default": values[i], CLASS: values[i + 1], OTHER: values[i + 2]} for i in range(len(values) - 2)
        ]
    raise AssertionError(f"no other value for schema {schema}")


def _method_paths(method: str) -> list[tuple]:
    """The config path of every setting of ``method``'s settings type: its block's keys (and the diffusion methods'
    top-level ``image_size``)."""
    root = load_schema("config")
    block = root["properties"]["methods"]["properties"][method]
    top = [("image_size",)] if method in ("method_a", "method_b") else []
    return top + [("methods", method, *p) for p, _ in _leaves(block, root)]


def _base(method: str) -> dict:
    return {
        "datasets": {DATASET: {"enabled": True, "classes": [CLASS, OTHER]}},
        "methods": {method: {"enabled": True}},
    }


@cache
def _job_top_paths(method: str) -> dict[str, list[tuple]]:
    """The top-level settings each job of ``method`` is given (the keys of its ``--settings`` outside the method's
    block), by job: read from the plan's own job settings, so a key the plan starts to pass is covered."""
    root, plan = load_schema("config"), Plan(validate_config(_base(method)))
    fragments = {"run": plan.run_settings(method, CLASS, "default"), "select": plan.select_settings(method, CLASS),
                 **{k: plan.train_settings(k, CLASS) for k in get(method).MODELS}}  # fmt: skip
    out = {}
    for job, fragment in fragments.items():
        top = {k: v for k, v in fragment.items() if k not in ("methods", "image_size")}
        out[job] = [p for p, _ in _leaves(root, root, within=top)]
    return out


def _validator(schema: dict, root: dict):
    return jsonschema.Draft202012Validator({**schema, "$defs": root["$defs"]})


@cache
def _moved_paths(method: str) -> tuple[tuple, ...]:
    """The settings the configs move: the method's, the top-level keys its jobs are given (as the plan gives them)
    and those the checks below read (so a key the plan stops giving shows as one that does not arrive)."""
    given = [p for job in _job_top_paths(method).values() for p in job]
    read = [*RUNTIME_KEYS, *HOLDOUT_KEYS, ("selection", "criterion"), *set().union(*TRAIN_TOP_READ.values())]
    return tuple(dict.fromkeys(given + sorted(read) + _method_paths(method)))


@cache
def _moved_configs(method: str) -> tuple[dict, ...]:
    """Validated configs (the synthetic set with CLASS and OTHER, ``method`` enabled) in which every setting of
    :func:`_moved_paths` is off its default in at least one config; within a config, values already taken by another
    setting come last among each setting's choices (so two swapped settings show). Each config moves first what the
    previous ones could not, then everything else it still can."""
    root, paths = load_schema("config"), list(_moved_paths(method))
    schemas = {p: _resolve(_get(root["properties"], _schema_path(p)), root) for p in paths}
    defaults = validate_config(_base(method))
    others = validate_config({"methods": {m: {} for m in METHODS}}, partial=True)["methods"]

    # the methods whose settings a job of ``method`` builds (a shared DDPM reads Method B's, at its defaults here)
    built = ("method_a", "method_b") if method in ("method_a", "method_b") else (method,)

    def valid(config: dict) -> bool:
        if cross_key_problems(config):
            return False
        try:  # the checks the schema cannot express: the settings build for both classes
            for cls in (CLASS, OTHER):
                for m in built:
                    get(m).Settings.from_config({**config, "methods": {**others, **config["methods"]}}, cls)
        except ValueError:
            return False
        return True

    left, configs = list(paths), []
    while left:
        config, moved, used = copy.deepcopy(defaults), [], []
        for path in left + [p for p in paths if p not in left]:
            default = _get(defaults, path)
            options = [PREFERRED[path]] if path in PREFERRED else _candidates(default, schemas[path], root)
            options = [v for v in options if v not in used] + [v for v in options if v in used]
            check = _validator(schemas[path], root)
            for value in options:
                trial = copy.deepcopy(config)
                _set(trial, path, value)
                for key, companion in COMPANIONS.get(path, {}).items():
                    _set(trial, (*path[:-1], key), companion)
                if check.is_valid(value) and valid(trial):
                    config = trial
                    moved.append(path)
                    used.append(value)
                    break
        if not set(moved) & set(left):
            raise AssertionError(f"{method}: no valid config moves {['.'.join(p) for p in left]}")
        left = [p for p in left if p not in moved]
        configs.append(validate_config(config))
        Plan(configs[-1])  # the workflow takes it too
    return tuple(configs)


def _schema_path(path: tuple) -> list:
    out = []
    for key in path:
        out += [key, "properties"]
    return out[:-1]


# ----------------------------------------------------------------------------------------- expectations
def _resolved(value):
    """A config value as the command's class sees it: per class resolved, a list as the tuple a settings field
    holds."""
    if isinstance(value, dict) and "default" in value:
        return value.get(CLASS, value["default"])
    return tuple(value) if isinstance(value, list) else value


def _recorded(value):
    """A config value as a model file's record of the settings keeps it (``settings.to_config()``)."""
    return (
        {"default": value.get(CLASS, value["default"])}
        if isinstance(value, dict) and "default" in value
        else value
    )


def _same(a, b) -> bool:
    """Equal, and of the same type all the way down (6 is not 6.0, a list is not a tuple)."""
    if isinstance(a, list | tuple | dict) or isinstance(b, list | tuple | dict):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _field(obj, keys: tuple):
    """The value at config path ``keys`` of a settings object (a field's ``key`` metadata names its config key)."""
    for key in keys:
        fields = {f.metadata.get("key", f.name): f.name for f in dataclasses.fields(obj)}
        assert key in fields, f"{type(obj).__name__} has no field for config key {key!r}"
        obj = getattr(obj, fields[key])
    return obj


class Mismatches:
    """The keys that did not arrive as sent, reported together."""

    def __init__(self, where: str):
        self.where, self.wrong, self.checked = where, [], 0

    def check(self, what: str, sent, got) -> None:
        self.checked += 1
        if not _same(sent, got):
            self.wrong.append(f"{what}: sent {sent!r}, arrived {got!r}")

    def settings(self, settings, config: dict, method: str, skip: tuple[str, ...] = ()) -> None:
        """Every setting of ``method`` arrives in its settings object (``skip``: sub-blocks a job does not carry)."""
        for path in _method_paths(method):
            keys = path[2:] if path[0] == "methods" else path
            if keys[0] not in skip:
                self.check(".".join(path), _resolved(_get(config, path)), _field(settings, keys))

    def record(self, record: dict, config: dict, method: str) -> None:
        """The settings block a model file keeps holds every setting of ``method`` (its class's per-class values)."""
        for path in _method_paths(method):
            self.check(f"record {'.'.join(path)}", _recorded(_get(config, path)), _get(record, path))

    def trainer(self, trainer_settings, mapping: dict, config: dict, method: str) -> None:
        """A trainer's settings type: each field holds the setting it is built from."""
        names = {f.name for f in dataclasses.fields(trainer_settings)}
        assert names - RUN_KEY_FIELDS == set(mapping), (
            f"{type(trainer_settings).__name__}: map {sorted(names - RUN_KEY_FIELDS - set(mapping))} to their keys here"
        )
        for name, keys in mapping.items():
            path = keys if keys == ("image_size",) else ("methods", method, *keys)
            self.check(f"{type(trainer_settings).__name__}.{name} <- {'.'.join(path)}",
                       _resolved(_get(config, path)), getattr(trainer_settings, name))  # fmt: skip

    def holdout(self, holdout, config: dict) -> None:
        for path, name in HOLDOUT_KEYS.items():
            self.check(".".join(path), _get(config, path), getattr(holdout, name, None))

    def runtime(self, runtime: Runtime, config: dict) -> None:
        for path, name in RUNTIME_KEYS.items():
            sent = _get(config, path)
            self.check(
                ".".join(path), Path(sent) if name == "weights_cache" else sent, getattr(runtime, name)
            )

    def done(self) -> None:
        assert self.checked, self.where
        assert not self.wrong, f"{self.where}:\n  " + "\n  ".join(self.wrong)


# ---------------------------------------------------------------------------------------------- spies
def _spy(monkeypatch, owner, name: str, result=None) -> list[dict]:
    """Replace ``owner.name`` by a function that records its arguments by name (bound to the real signature, so a
    call the real function would refuse fails here too) and returns ``result(arguments)`` (default: {})."""
    real = getattr(owner, name)
    signature, calls = inspect.signature(real), []

    def spy(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        calls.append(dict(bound.arguments))
        return {} if result is None else result(bound.arguments)

    monkeypatch.setattr(owner, name, spy)
    return calls


class _Stand:
    """What a spied loader returns: moves to any device, and is called as a network would be."""

    def to(self, *args, **kwargs):
        return self

    def __call__(self, *args, **kwargs):
        return self


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """The working directory of a workflow (paths as the plan names them), with the anomaly sources DRAEM's trainer
    lists: the configured other class's train/good (beside a stray class folder that the workflow does not name,
    and so must not be read) and a DTD category."""
    monkeypatch.chdir(tmp_path)
    for folder, name in ((f"resources/datasets/{DATASET}/{OTHER}/train/good", "000.png"),
                         (f"resources/datasets/{DATASET}/stray/train/good", "000.png"),
                         ("resources/datasets/dtd/images/banded", "banded_0001.jpg")):  # fmt: skip
        Path(folder).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(Path(folder) / name)
    return tmp_path


def _settings_args(settings: dict) -> list[str]:
    """``--settings`` as the rule's shell passes it (``settings_arg``, split by the shell)."""
    from texad.plan import settings_arg

    return ["--settings", *shlex.split(settings_arg(settings))]


def _routes(config: dict, fragment: dict) -> dict[str, dict]:
    """The settings a job may be given: the plan's job settings (the workflow), or the whole config (by hand)."""
    return {"workflow": fragment, "whole config": config}


# --------------------------------------------------------------------------------------------- the tests
def test_every_setting_is_moved_off_its_default():
    """The configs the tests send move every setting of each method's block, and every top-level key its jobs are
    given, off the schema default; per-class keys hold another value for the run's class and for another class. The
    runtime and held-out maps name exactly the top-level keys the plan gives a run job, and every field of the
    runtime; each top-level key a train job is given is read by some trainer's check."""
    train_tops = set()
    for method in METHODS:
        configs, defaults = _moved_configs(method), validate_config(_base(method))
        tops = _job_top_paths(method)
        given = {p for job in tops.values() for p in job}
        assert set(_moved_paths(method)) >= given | set(_method_paths(method)), method
        for path in _moved_paths(method):
            moved = [c for c in configs if _get(c, path) != _get(defaults, path)]
            assert moved, f"{method}: {'.'.join(path)} is never moved"
            value = _get(moved[0], path)
            if isinstance(value, dict) and "default" in value:
                assert len({repr(value[k]) for k in ("default", CLASS, OTHER)}) == 3, path
        assert set(tops["run"]) == set(RUNTIME_KEYS) | set(HOLDOUT_KEYS), method
        assert set(tops["select"]) == set(tops["run"]) | {("selection", "criterion")}, method
        # a trainer reads only keys its job is given, and every key a train job is given is read by a trainer
        for kind in get(method).MODELS:
            assert TRAIN_TOP_READ[kind] <= set(tops[kind]), (method, kind)
            train_tops |= set(tops[kind])
    assert train_tops == set().union(*TRAIN_TOP_READ.values())
    assert {f.name for f in dataclasses.fields(Runtime)} == set(RUNTIME_KEYS.values())


def _train_argv(kind: str, settings: dict, plan: Plan) -> tuple[list[str], dict]:
    """``texad train <kind>`` as its rule writes it, and the paths it names."""
    model_hash = plan.model_hash(kind, DATASET, CLASS, SEED)
    out = plan.model_path(kind, DATASET, CLASS, SEED)
    paths = {"class_dir": plan.training_view(DATASET, CLASS), "out": out,
             "ckpt_dir": f"resources/checkpoints/{DATASET}/{CLASS}/seed{SEED}/{Path(out).stem}"}  # fmt: skip
    extra = []
    if kind == "draem":
        extra = shlex.split(plan.draem_sources(DATASET, CLASS)[1])
    if kind == "features":
        paths["model"] = plan.model_path("ddpm", DATASET, CLASS, SEED)
        extra = ["--model", paths["model"]]
    argv = ["train", kind, *_settings_args(settings), "--dataset", DATASET, "--class", CLASS, "--seed", str(SEED),
            "--class-dir", paths["class_dir"], "--out", out, "--ckpt-dir", paths["ckpt_dir"],
            "--expect-hash", model_hash, "--workers", str(WORKERS), *extra]  # fmt: skip
    return argv, paths


def _check_run_key(report: Mismatches, dataset, class_name, seed, holdout, config: dict) -> None:
    report.check("--dataset", DATASET, dataset)
    report.check("--class", CLASS, class_name)
    report.check("--seed", SEED, seed)
    report.holdout(holdout, config)


def _check_diffusion(report, call, config, paths, method, fields) -> None:
    """``train_diffusion`` (the DDPM of Method B, the score model of Method A)."""
    s = call["settings"]
    report.trainer(s, fields, config, method)
    _check_run_key(report, s.dataset, s.class_name, s.seed, s.holdout, config)
    report.record(call["config"], config, method)
    report.check(f"methods.{method}.train.checkpoint_every", _get(config, ("methods", method, "train",
                 "checkpoint_every")), call["checkpoint_every"])  # fmt: skip
    report.check("device", config["device"], call["device"])
    report.check("precision", config["precision"], call["precision"])
    report.check("--workers", WORKERS, call["num_workers"])
    for name, arg in (("class_dir", "class_dir"), ("out", "out_path"), ("ckpt_dir", "ckpt_dir")):
        report.check(f"--{name}", Path(paths[name]), Path(call[arg]))


def _check_simplenet(report, call, config, paths, selectors) -> None:
    from texad.backbones.weights import BACKBONES

    block = config["methods"]["simplenet"]
    report.settings(call["settings"], config, "simplenet")
    _check_run_key(report, call["dataset"], call["class_name"], call["seed"], call["holdout"], config)
    report.check("backbone's weights", BACKBONES[block["backbone"]], call["backbone_weights"])
    report.check("backbone.cache", Path(config["backbone"]["cache"]), call["weights_cache"])
    report.check("device", config["device"], call["device"])
    for name, arg in (("class_dir", "class_dir"), ("out", "out_path"), ("ckpt_dir", "ckpt_dir")):
        report.check(f"--{name}", Path(paths[name]), Path(call[arg]))
    official = block["selection"] == "official"  # the test-set selector: built from the evaluation keys
    report.check("selection official -> a test-set selector", official, call["selector"] is not None)
    if official:
        (selector,) = selectors
        report.check("the selector's class", Path(paths["class_dir"]), Path(selector["class_dir"]))
        report.check("the selector's settings", call["settings"], selector["settings"])
        for path in (("evaluation", "resolution"), ("evaluation", "fpr_limit")):
            report.check(".".join(path), _get(config, path), getattr(selector["runtime"], RUNTIME_KEYS[path]))
    selectors.clear()


def _check_draem(report, call, config, paths) -> None:
    report.settings(call["settings"], config, "draem")
    _check_run_key(report, call["dataset"], call["class_name"], call["seed"], call["holdout"], config)
    source = config["methods"]["draem"]["anomaly_source"]  # the other class's train/good, or DTD's images
    expected = {"synthetic": f"resources/datasets/{DATASET}/{OTHER}/train/good/000.png",
                "dtd": "resources/datasets/dtd/images/banded/banded_0001.jpg"}[source]  # fmt: skip
    report.check(f"anomaly_source {source}", [expected], [str(p) for p in call["anomaly_source_paths"]])
    report.check("device", config["device"], call["device"])
    report.check("--workers", WORKERS, call["num_workers"])
    for name, arg in (("class_dir", "class_dir"), ("out", "out"), ("ckpt_dir", "ckpt_dir")):
        report.check(f"--{name}", Path(paths[name]), Path(call[arg]))


def _check_features(report, call, config, paths, loads, plan) -> None:
    from texad.backbones.weights import BACKBONES

    inference = config["methods"]["method_b"]["inference"]
    report.trainer(call["settings"], ADAPTATION_FIELDS, config, "method_b")
    report.check("--seed", SEED, call["settings"].seed)
    for path in _method_paths("method_b"):
        if path[2:3] == ("inference",):
            report.check(".".join(path), _resolved(_get(config, path)), _field(call["inference"], path[3:]))
    report.record(call["config"], config, "method_b")
    report.check("the DDPM's identity", plan.model_hash("ddpm", DATASET, CLASS, SEED), call["model_hash"])
    report.check("class tag", f"{DATASET}/{CLASS}", call["class_tag"])
    for name, arg in (("out", "out_path"), ("ckpt_dir", "ckpt_dir")):
        report.check(f"--{name}", Path(paths[name]), Path(call[arg]))
    (ddpm,), (images,), (backbone,) = loads["ddpm"], loads["images"], loads["backbone"]
    report.check("--model", Path(paths["model"]), Path(ddpm["path"]))
    report.check("device", config["device"], ddpm["device"])
    report.check("--class-dir", Path(paths["class_dir"]), Path(images["class_dir"]))
    report.check("image_size", config["image_size"], images["image_size"])
    report.check("inference.feature_backbone", inference["feature_backbone"], backbone["name"])
    report.check("its weights", BACKBONES[inference["feature_backbone"]], backbone["weights"])
    report.check("backbone.cache", Path(config["backbone"]["cache"]), backbone["cache_dir"])
    for calls in loads.values():
        calls.clear()


@pytest.mark.parametrize("kind", KINDS)
def test_train_settings_reach_the_trainer(kind, workspace, monkeypatch, capsys):
    """``texad train <kind>``: every setting of the owning method's block arrives in the trainer (Method B's DDPM and
    Method A's score model: in the diffusion trainer's settings type and the record the model file keeps; the
    adaptation: in its settings, the inference block and the record), resolved for the job's class, and the run key,
    device, precision, workers, weight cache, evaluation grid and paths arrive where the trainer reads them."""
    import texad.backbones.features as features
    import texad.diffusion.training as diffusion
    import texad.methods.draem.training as draem
    import texad.methods.method_b.domain_adaptation as adaptation
    import texad.methods.simplenet as simplenet
    import texad.methods.simplenet.training as simplenet_training
    from texad.methods import model_owner

    method = model_owner(kind)
    selector, meta = object(), {}
    trainers = {"ddpm": (diffusion, "train_diffusion"), "score": (diffusion, "train_diffusion"),
                "simplenet": (simplenet_training, "train_simplenet"), "draem": (draem, "train_draem"),
                "features": (adaptation, "adapt_features")}  # fmt: skip
    calls = _spy(monkeypatch, *trainers[kind])
    selectors = _spy(monkeypatch, simplenet, "_test_set_selector", result=lambda _: selector)
    loads = {"ddpm": _spy(monkeypatch, diffusion, "load_diffusion_model", result=lambda _: (_Stand(), _Stand(), meta)),
             "images": _spy(monkeypatch, diffusion, "load_train_images", result=lambda _: _Stand()),
             "backbone": _spy(monkeypatch, features, "load_backbone", result=lambda _: _Stand())}  # fmt: skip
    for i, config in enumerate(_moved_configs(method)):
        plan = Plan(config)
        meta.update(model_hash=plan.model_hash("ddpm", DATASET, CLASS, SEED),
                    settings={"t_max": config["methods"].get("method_b", {}).get("train", {}).get("t_max")})  # fmt: skip
        fragment = plan.train_settings(
            kind, CLASS, DATASET, SEED, plan.model_hash(kind, DATASET, CLASS, SEED)
        )
        for route, settings in _routes(config, fragment).items():
            argv, paths = _train_argv(kind, settings, plan)
            assert main(argv) == 0, capsys.readouterr().err
            (call,) = calls
            calls.clear()
            report = Mismatches(f"texad train {kind}, config {i}, {route}")
            if kind in ("ddpm", "score"):
                _check_diffusion(
                    report, call, config, paths, method, DDPM_FIELDS if kind == "ddpm" else SCORE_FIELDS
                )
            elif kind == "simplenet":
                _check_simplenet(report, call, config, paths, selectors)
            elif kind == "draem":
                _check_draem(report, call, config, paths)
            else:
                _check_features(report, call, config, paths, loads, plan)
            report.done()


class _Detectors:
    """Stands in for a method's ``Detector``: records what it is built from."""

    def __init__(self, monkeypatch, method: str):
        self.built = []
        recorder = self

        class Detector:
            def __init__(self, settings, runtime, run, models):
                recorder.built.append({"settings": settings, "runtime": runtime, "run": run, "models": models,
                                       "detector": self})  # fmt: skip

        monkeypatch.setattr(get(method), "Detector", Detector, raising=False)


def _fake_result(k: int) -> dict:
    """The result of a spied ``run_class``: the k-th candidate's image AUROC rises with k, its pixel AUROC and their
    mean fall (so the criteria choose different candidates)."""
    metrics = {"image_auroc": 0.5 + 0.01 * k, "pixel_auroc": 0.9 - 0.02 * k, "aupro": 0.3 + 0.02 * (k % 2),
               "pixel_ap": 0.2 + 0.03 * (k % 3)}  # fmt: skip
    return {"metrics": metrics, "timings": {"inference_s": 0.0, "nfe_per_image": 1}}


def _run_class_spy(monkeypatch) -> list[dict]:
    """``run_class`` recording its arguments; its k-th call returns :func:`_fake_result` of k."""
    import texad.methods.run as run_module

    counter = itertools.count()
    return _spy(monkeypatch, run_module, "run_class", result=lambda _: _fake_result(next(counter)))


@pytest.mark.parametrize("method", METHODS)
def test_run_settings_reach_the_detector(method, workspace, monkeypatch, capsys):
    """``texad run <method>``: the detector is built from settings holding every key of the method's block (given
    the whole config; the plan gives a run job only its own ablation point and no candidates), resolved for the
    job's class, and from the runtime, run key and model files the job names; ``run_class`` gets them and the
    paths."""
    detectors = _Detectors(monkeypatch, method)
    runs = _run_class_spy(monkeypatch)
    for i, config in enumerate(_moved_configs(method)):
        plan = Plan(config)
        models = plan.run_models(method, DATASET, CLASS, SEED, "default")
        model_args = [a for role, path in models.items() for a in (f"--{role}", path)]
        class_dir, out = (
            plan.training_view(DATASET, CLASS),
            f"results/runs/{DATASET}/{CLASS}/{method}/default",
        )
        for route, settings in _routes(config, plan.run_settings(method, CLASS, "default")).items():
            argv = ["run", method, *_settings_args(settings), "--dataset", DATASET, "--class", CLASS, "--seed",
                    str(SEED), "--variant", "default", "--class-dir", class_dir, *model_args,
                    "--out", f"{out}/seed{SEED}.json", "--maps", f"{out}/seed{SEED}.npz"]  # fmt: skip
            assert main(argv) == 0, capsys.readouterr().err
            (built,), (call,) = detectors.built, runs
            detectors.built.clear()
            runs.clear()
            report = Mismatches(f"texad run {method}, config {i}, {route}")
            report.settings(
                built["settings"], config, method, skip=("ablation", "select") if route == "workflow" else ()
            )
            report.runtime(built["runtime"], config)
            run = built["run"]
            _check_run_key(report, run.dataset, run.class_name, run.seed, run.holdout, config)
            report.check("--variant", "default", run.variant)
            report.check("--model/--features", {role: Path(p) for role, p in models.items()}, built["models"])
            report.check("run_class's detector", True, call["detector"] is built["detector"])
            report.check(
                "run_class's runtime and run key", (built["runtime"], run), (call["runtime"], call["run"])
            )
            report.check("--class-dir", Path(class_dir), Path(call["class_dir"]))
            report.check("--out", Path(f"{out}/seed{SEED}.json"), Path(call["out_result"]))
            report.check("--maps", Path(f"{out}/seed{SEED}.npz"), Path(call["out_maps"]))
            report.done()


@pytest.mark.parametrize("method", METHODS)
def test_select_settings_reach_every_candidate(method, workspace, monkeypatch, capsys):
    """``texad select <method>``: the default candidate's detector holds every key of the method's block but the
    ablation and the candidates (resolved for the job's class), every value of the ``select`` lists is a candidate's,
    and the choice is made by the configured ``selection.criterion``."""
    import json

    detectors = _Detectors(monkeypatch, method)
    runs = _run_class_spy(monkeypatch)
    selected = 0
    for i, config in enumerate(_moved_configs(method)):
        plan = Plan(config)
        if not plan.candidates(method, CLASS):  # a config whose select lists had to stay empty
            continue
        selected += 1
        validation = Path(plan.validation_dir(DATASET, CLASS))
        validation.mkdir(parents=True, exist_ok=True)
        (validation / "split.json").write_text("{}")
        models = plan.run_models(method, DATASET, CLASS, SEED, "default")
        model_args = [a for role, path in models.items() for a in (f"--{role}", path)]
        for route, settings in _routes(config, plan.select_settings(method, CLASS)).items():
            out = Path(f"results/selection/{route.replace(' ', '_')}-{i}.json")
            argv = ["select", method, *_settings_args(settings), "--dataset", DATASET, "--class", CLASS, "--seed",
                    str(SEED), "--validation-dir", str(validation), *model_args, "--out", str(out)]  # fmt: skip
            assert main(argv) == 0, capsys.readouterr().err
            record = json.loads(out.read_text())
            report = Mismatches(f"texad select {method}, config {i}, {route}")
            first = detectors.built[0]
            report.check("the first candidate", "default", first["run"].variant)
            report.settings(first["settings"], config, method, skip=("ablation", "select"))
            for built in detectors.built:
                report.runtime(built["runtime"], config)
                run = built["run"]
                _check_run_key(report, run.dataset, run.class_name, run.seed, run.holdout, config)
                report.check(
                    "--model/--features", {role: Path(p) for role, p in models.items()}, built["models"]
                )
            for path in _method_paths(method):
                if path[2:3] == ("select",):
                    offered = [row["values"][path[3]] for row in record["candidates"]]
                    missing = [v for v in _get(config, path) if v not in offered]
                    report.check(".".join(path), [], missing)
            criterion = config["selection"]["criterion"]
            report.check("selection.criterion", criterion, record["criterion"])
            rows = record["candidates"]
            best = max(range(len(rows)), key=lambda k: (rows[k]["validation"][criterion], -k))
            report.check("the choice by selection.criterion", rows[best]["name"], record["chosen"])
            report.check("candidates scored", len(detectors.built), len(runs))
            detectors.built.clear()
            runs.clear()
            report.done()
    assert selected, f"{method}: no config has candidates"
