"""Every trained model's identity hash against what its trainer actually does, key by key of the schema.

For each method and each model kind it trains, the test walks the method's block of the config schema (no hand-kept
list of keys), changes one key at a time to another valid value, and trains the tiny model through the same entry
point as ``texad train`` (``texad.methods.jobs.train_model``). A key must change the identity hash exactly when it
changes the trained model file (its weights and its training record; the settings the file keeps for the record
and the wall-clock times aside). So a setting that shapes a model can never be left out of its identity, and an
inference-only setting never renames (and retrains) a model.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from texad.config import ConfigError, load_schema, validate_config
from texad.config.schema import _resolve
from texad.data.synth import generate_class
from texad.methods import get
from texad.methods.base import RunKey
from texad.methods.jobs import method_settings, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASS, OTHER, SEED = "wood", "carpet", 0
RUN = RunKey("synthetic", CLASS, SEED, "default")
#: What a model file keeps for the record rather than as the model: its settings and identity, and timings.
_RECORD_ONLY = {"format", "config", "settings", "model_hash", "identity", "identity_hash"}
_TIMES = {"seconds", "images_per_s", "selection_s", "settings_hash"}

#: Tiny base settings per method (every other key: the schema default). Values are chosen so that each key can
#: move: a nullable key starts non-null, SimpleNet's resize exceeds its image size (so the centre crop crops).
TINY = {
    "draem": {"epochs": 1, "batch_size": 2, "lr": 1e-3, "image_size": 32, "recon_base_width": 2,
              "disc_base_width": 2, "anomaly_source": "synthetic", "score_pool": 3},
    "simplenet": {"backbone": "efficientnet_lite0", "pretrain_embed_dim": 16, "target_embed_dim": 16,
                  "dsc_hidden": 16, "meta_epochs": 1, "gan_epochs": 1, "batch_size": 2, "image_size": 32,
                  "resize": 40, "noise_std": 1.0},
    "method_a": {"sde": {"sigma_max": 1.0, "n_steps": 10}, "network": {"preset": "tiny", "nf": 8},
                 "train": {"batch_size": 2, "iterations": 2, "warmup": 1}},
    "method_b": {"diffusion": {"preset": "tiny"},
                 "train": {"epochs": {"default": 1}, "batch_size": 2, "lr": 1e-3, "t_max": 300},
                 "inference": {"feature_backbone": "efficientnet_lite0", "normalise_images": 2},
                 "feature_adaptation": {"epochs": {"default": 1}, "batch_size": 2},
                 "ablation": {"t_start": [150]}},
}  # fmt: skip
TOP = {"image_size": 64, "device": "cpu"}  # a size every network preset takes
#: Keys whose other values are valid only beside another key's value: a transductive fusion scale belongs to DDAD's
#: protocol (the official variant), so the walk moves the protocol with it.
COMPANIONS = {("methods", "method_b", "inference", "fusion_norm"): {"protocol": "ddad"}}


# ------------------------------------------------------------------------------------------ the schema walk
def _leaves(schema: dict, root: dict, path: tuple = ()):
    """(key path, sub-schema) of every setting in a block: objects with properties are walked into; a per-class
    mapping (``default`` plus any class) is one setting."""
    schema = _resolve(schema, root)
    props = schema.get("properties")
    if schema.get("type") == "object" and props:
        for key, sub in props.items():
            if key != "enabled":
                yield from _leaves(sub, root, (*path, key))
    else:
        yield path, schema


def _number_candidates(value, schema: dict) -> list:
    integer = schema.get("type") == "integer"
    out = []
    if not integer and value != 0 and schema.get("minimum", 1) <= 0:
        out.append(0.0)
    out += [value * 2, value + 1, value - 1, value + 2] if integer else [value * 2, value / 2, value + 0.1]
    return out


def _candidates(value, schema: dict, root: dict) -> list:
    """Other values for a setting, most telling first (the first valid one is used)."""
    schema = _resolve(schema, root)
    for key in ("oneOf", "anyOf"):
        if (
            key in schema
        ):  # another branch first (null <-> a value, auto <-> a number), then within the branch
            out = []
            for branch in (_resolve(b, root) for b in schema[key]):
                if "const" in branch:
                    out.append(branch["const"])
                elif branch.get("type") == "null":
                    out.append(None)
                elif value is None or isinstance(value, str):
                    low = branch.get("minimum", 1) if branch.get("type") == "integer" else 1.0
                    out += [low, low * 2, low * 4]
                else:
                    out += _number_candidates(value, branch)
            return out
    if "enum" in schema:  # the last other choice: the smallest network or backbone where the enum is a size
        return [v for v in reversed(schema["enum"]) if v != value]
    kind = schema.get("type")
    if kind == "boolean":
        return [not value]
    if kind in ("integer", "number"):
        return _number_candidates(value, schema)
    if kind == "array":
        if value:
            return [value[:-1], [*value, value[-1]]]
        items = _resolve(schema.get("items", {}), root)
        return [[items["enum"][-1]]] if "enum" in items else [[1]]  # an empty axis gets one point
    if kind == "object":  # per class: the run's class, or only another class, gets its own value
        extra = _resolve(schema["additionalProperties"], root)
        default = value["default"]
        return [{**value, CLASS: c} for c in _number_candidates(default, extra)] + [
            {**value, OTHER: c} for c in _number_candidates(default, extra)
        ]
    raise AssertionError(f"no perturbation for schema {schema}")


def _get(block: dict, path: tuple):
    for key in path:
        block = block[key]
    return block


def _set(block: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(block)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _perturbations(method: str):
    """(label, config) for the base config and one valid change of every setting the method's block holds."""
    root = load_schema("config")
    block_schema = root["properties"]["methods"]["properties"][method]
    base = validate_config({**TOP, "methods": {method: TINY[method]}}, partial=True)
    yield "base", base
    settings = [(("image_size",), root["properties"]["image_size"])] if method.startswith("method_") else []
    settings += [(("methods", method, *p), s) for p, s in _leaves(block_schema, root)]
    for path, schema in settings:
        value = _get(base, path)
        for candidate in _candidates(value, schema, root):
            try:
                changed = _set(base, path, candidate)
                for key, companion in COMPANIONS.get(path, {}).items():
                    changed = _set(changed, (*path[:-1], key), companion)
                config = validate_config(changed, partial=True)
                method_settings(config, method, CLASS)  # the checks the schema cannot express
            except (ConfigError, ValueError):
                continue
            if _get(config, path) != value:
                labels = {OTHER: "another class", CLASS: "its class"}
                where = next(
                    (v for k, v in labels.items() if isinstance(candidate, dict) and k in candidate), ""
                )
                yield f"{'.'.join(path)} = {candidate!r}{f' ({where})' if where else ''}", config
                break
        else:
            raise AssertionError(f"{'.'.join(path)}: no valid other value among the candidates")


# ------------------------------------------------------------------------------------------- the models
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    for name in (CLASS, OTHER):
        generate_class(root / "synthetic", name, image_size=48, n_train=4, n_test_good=2, n_test_per_defect=1,
                       seed=0, defects=("scratch", "hole"))  # fmt: skip
    dtd = root / "dtd" / "images" / "banded"  # DRAEM's official source: a DTD-like folder of JPEGs
    dtd.mkdir(parents=True)
    for i, path in enumerate(sorted((root / "synthetic" / OTHER / "train" / "good").iterdir())):
        from PIL import Image

        Image.open(path).convert("RGB").save(dtd / f"banded_{i:04d}.jpg")
    return root


@pytest.fixture()
def random_torchvision_weights(monkeypatch):
    """torchvision backbones at random initialisation (no weight files here): a changed backbone still trains."""
    import texad.backbones.features as features
    import texad.methods.simplenet.training as simplenet_train

    real = features.load_backbone

    def load(name, *, weights, cache_dir, layers=features.LAYER_NAMES):
        return real(
            name, weights="none" if weights == "torchvision" else weights, cache_dir=cache_dir, layers=layers
        )

    monkeypatch.setattr(features, "load_backbone", load)
    monkeypatch.setattr(simplenet_train, "load_backbone", load)


def _content(path: Path) -> dict:
    """What a model file holds as the model: everything but its record of settings and the timings."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    out = {k: v for k, v in data.items() if k not in _RECORD_ONLY}
    for summary in ("train", "summary"):
        if isinstance(out.get(summary), dict):
            out[summary] = {k: v for k, v in out[summary].items() if k not in _TIMES}
    return out


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class _Trainer:
    """Trains models as ``texad train`` would; the DDPM a feature adaptation starts from is trained once per DDPM
    identity (the ``ddpm`` kind's own check covers that identity)."""

    def __init__(self, data: Path, work: Path):
        self.data, self.work, self.count, self.ddpms = data, work, 0, {}

    def inputs(self, kind: str, config: dict) -> dict:
        if kind == "draem":
            dtd = method_settings(config, "draem", CLASS).anomaly_source == "dtd"
            return {"anomaly_root": self.data / "dtd"} if dtd else {
                "anomaly_root": self.data / "synthetic", "source_classes": [OTHER]}  # fmt: skip
        if kind == "features":
            ddpm = get("method_b").identity("ddpm", method_settings(config, "method_b", CLASS), RUN)
            if ddpm not in self.ddpms:
                self.ddpms[ddpm] = self.train("ddpm", config)
            return {"model": self.ddpms[ddpm]}
        return {}

    def train(self, kind: str, config: dict) -> Path:
        self.count += 1
        folder = self.work / f"{kind}-{self.count}"
        out = folder / "model.pt"
        train_model(kind, config, RUN, class_dir=self.data / "synthetic" / CLASS, out=out, ckpt_dir=folder / "ckpt",
                    **self.inputs(kind, config))  # fmt: skip
        return out


@pytest.mark.parametrize("method", ["draem", "simplenet", "method_a", "method_b"])
def test_a_key_changes_the_identity_exactly_when_it_changes_the_trained_model(
    method, data, tmp_path, random_torchvision_weights
):
    module = get(method)
    trainer = _Trainer(data, tmp_path)
    perturbations = list(_perturbations(method))
    _, base = perturbations[0]
    for kind in module.MODELS:
        base_hash = module.identity(kind, method_settings(base, method, CLASS), RUN)
        base_model = _content(trainer.train(kind, base))
        wrong = []
        for label, config in perturbations[1:]:
            identity = module.identity(kind, method_settings(config, method, CLASS), RUN)
            hash_changed = identity != base_hash
            # no identity: these settings train no model of this kind (a class without feature adaptation)
            model_changed = identity is None or not _same(_content(trainer.train(kind, config)), base_model)
            if hash_changed != model_changed:
                what = (
                    "renames the model but trains the same one"
                    if hash_changed
                    else "changes the model, not its hash"
                )
                wrong.append(f"{kind}: {label} {what}")
        assert not wrong, "\n".join(wrong)
        assert len(perturbations) > 5  # the walk found the block's keys


def test_the_walk_covers_every_key_of_each_settings_type():
    """The perturbations reach every field of the settings dataclasses (nested ones included)."""
    for method in ("draem", "simplenet", "method_a", "method_b"):
        labels = {label.split(" = ")[0] for label, _ in _perturbations(method)}
        settings = method_settings(validate_config({**TOP, "methods": {method: TINY[method]}}, partial=True),
                                   method, CLASS)  # fmt: skip

        def fields(obj, prefix):
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                key = f.metadata.get("key", f.name)
                if dataclasses.is_dataclass(value):
                    yield from fields(value, f"{prefix}.{key}")
                else:
                    yield f"{prefix}.{key}"

        expected = set(fields(settings, f"methods.{method}"))
        if method.startswith("method_"):  # the diffusion methods' image_size is the config's top-level key
            expected = expected - {f"methods.{method}.image_size"} | {"image_size"}
        assert expected == labels - {"base"}, method
