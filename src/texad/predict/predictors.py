"""One adapter per method: find a trained model and its inference settings, then score image batches.

``--model`` is a benchmark result JSON or a model file. A result names its model only by ``model_hash``, so
its file is looked up in the workflow's layout (``<root>/runs/<dataset>/<class>/<method>/<variant>/seed<k>.json``
-> ``<root>/models/<dataset>/<class>/seed<k>/<kind>-<model_hash>.pt``) and the loaded file must carry that
hash; the settings recorded in the result are used as they are. A model file gives its method through its
metadata and the method's default inference settings are used. Either way ``overrides`` (``--settings``)
may change the inference settings, never what shaped the trained model.

Each adapter reuses its method's own loader and inference functions, so a prediction is the number the
benchmark would have produced for the same image, model, settings and seed. Images come in as float RGB
in [0, 1] at :attr:`Predictor.load_size`, read exactly as :class:`texad.data.mvtec.MVTecDataset` reads them;
maps come out at the model's input size, one score per image (higher = more anomalous).

Two methods normalise with data beyond the image itself: Method A (``normalise: train_stats``) with the raw
maps of the class's training images (:meth:`Predictor.fit`), Method B with a fusion scale (max D_f / max
D_p) taken over the scored set. A fixed threshold needs a fixed scale, so by default (``fusion_scale:
"normal"``) Method B takes it over all the normal images (:meth:`Predictor.calibrate`, in place of
``map.fusion_norm``) and applies it to every image; ``"folder"`` fuses each scored set (the normal images,
then ``--images``) by ``map.fusion_norm`` as the benchmark fuses its test set, so a score then depends on
the other images of its folder.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from texad.data.layout import Sample
from texad.data.mvtec import MVTecDataset

__all__ = [
    "METHODS",
    "FUSION_SCALES",
    "ModelRef",
    "Predictor",
    "resolve_model",
    "load_predictor",
    "load_images",
]

METHODS = ("method_a", "method_b", "simplenet", "draem")
FUSION_SCALES = ("normal", "folder")


# ------------------------------------------------------------------------------------------- images
class _FolderImages(MVTecDataset):
    """Image files outside the MVTec layout, read by ``MVTecDataset.__getitem__`` itself (same decoding,
    RGB conversion, antialiased bilinear resize and clamp as every method's evaluation)."""

    def __init__(self, paths: Sequence[Path], image_size: int):
        self.class_dir = None
        self.split = "predict"
        self.samples = [Sample(Path(p), 0, "good", None) for p in paths]
        self.image_size = (int(image_size), int(image_size))
        self.mask_size = "native"  # no mask to resample: an all-zero one at the image's own size


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]; an unreadable file raises DatasetError naming it."""
    data = _FolderImages(paths, size)
    return torch.stack([data[i]["image"] for i in range(len(data))])


# ------------------------------------------------------------------------------------- model lookup
@dataclass(frozen=True)
class ModelRef:
    """What ``--model`` points at: the method, the model file and, for a result JSON, the result."""

    method: str
    model_path: Path
    dataset: str
    class_name: str
    seed: int
    model_hash: str
    result: dict | None = None
    result_path: Path | None = None

    @property
    def settings_source(self) -> str:
        return "result" if self.result is not None else "defaults"


def _model_prefix(result: dict) -> str:
    method = result["method"]
    if method == "method_a":
        return "score" if result["extra"]["settings"]["model"] == "own" else "ddpm"
    return {"method_b": "ddpm", "simplenet": "simplenet", "draem": "draem"}[method]


def _from_result(path: Path) -> ModelRef:
    from texad.results.record import read_result

    result = read_result(path)
    if result["method"] not in METHODS:
        raise ValueError(f"result {path} is of method {result['method']!r}; texad predict knows {METHODS}")
    seed_dir = f"seed{result['seed']}"
    parts = path.resolve().parts
    expected = (result["dataset"], result["class"], result["method"], result["variant"], f"{seed_dir}.json")
    if len(parts) < 7 or parts[-6] != "runs" or tuple(parts[-5:]) != expected:
        raise ValueError(
            f"result {path} records its model only by hash ({result['model_hash']}), not by path, so it must "
            f"stay in its results tree: <results>/runs/{'/'.join(expected)} beside "
            f"<results>/models/{result['dataset']}/{result['class']}/{seed_dir}/"
        )
    root = Path(*parts[:-6])
    model = (
        root
        / "models"
        / result["dataset"]
        / result["class"]
        / seed_dir
        / (f"{_model_prefix(result)}-{result['model_hash']}.pt")
    )
    if not model.is_file():
        raise FileNotFoundError(
            f"result {path} was made with model {result['model_hash']}, expected at {model}"
        )
    return ModelRef(
        method=result["method"], model_path=model, dataset=result["dataset"], class_name=result["class"],
        seed=result["seed"], model_hash=result["model_hash"], result=result, result_path=path,
    )  # fmt: skip


def _from_model_file(path: Path) -> ModelRef:
    from texad.diffusion.training import FORMAT as DDPM_FORMAT
    from texad.diffusion.training import SCORE_KIND
    from texad.methods.draem.settings import FORMAT as DRAEM_FORMAT
    from texad.methods.simplenet.settings import FORMAT as SIMPLENET_FORMAT

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model file {path} is unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a texad model file")
    fmt = data.get("format")
    if data.get("kind") == SCORE_KIND:
        s = data["settings"]
        return ModelRef(method="method_a", model_path=path, dataset=s["dataset"], class_name=s["class_name"],
                        seed=s["seed"], model_hash=data["model_hash"])  # fmt: skip
    if fmt == DDPM_FORMAT:
        s = data["settings"]
        return ModelRef(method="method_b", model_path=path, dataset=s["dataset"], class_name=s["class_name"],
                        seed=s["seed"], model_hash=data["model_hash"])  # fmt: skip
    if fmt == SIMPLENET_FORMAT:
        ident = data["identity"]
        return ModelRef(method="simplenet", model_path=path, dataset=ident["dataset"],
                        class_name=ident["class_name"], seed=ident["seed"], model_hash=data["model_hash"])  # fmt: skip
    if fmt == DRAEM_FORMAT:
        return ModelRef(method="draem", model_path=path, dataset=data["dataset"], class_name=data["class"],
                        seed=data["seed"], model_hash=data["model_hash"])  # fmt: skip
    raise ValueError(
        f"{path} is not a trained texad model (format {fmt!r}); pass a ddpm-, score-, simplenet- or draem-*.pt "
        "file or a result JSON"
    )


def resolve_model(path: str | Path) -> ModelRef:
    """A result JSON (by suffix ``.json``) or a model file, checked to exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist (pass a result JSON or a *.pt model file)")
    return _from_result(path) if path.suffix.lower() == ".json" else _from_model_file(path)


# ----------------------------------------------------------------------------------------- settings
def _merge(base: dict, override: Mapping, where: str = "") -> dict:
    """``base`` with ``override``'s values; a key ``base`` lacks is refused (it would be silently ignored)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        name = f"{where}{key}"
        if key not in out:
            known = ", ".join(f"{where}{k}" for k in out) or "(none)"
            raise ValueError(f"unknown inference setting {name!r}; this model takes: {known}")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"inference setting {name!r} must be a JSON object")
            out[key] = _merge(out[key], value, f"{name}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_hash(ref: ModelRef, got: str) -> None:
    if got != ref.model_hash:
        raise ValueError(
            f"{ref.model_path} holds model {got}, but {ref.result_path} was made with {ref.model_hash}"
        )


# ---------------------------------------------------------------------------------------- adapters
class Predictor:
    """Scores images with one trained model. Subclasses set the attributes below and implement :meth:`maps`."""

    method: str
    load_size: int  # side the images are resized to before the model sees them
    settings: dict  # the inference settings in effect (JSON)
    model_settings: dict  # what shaped the trained model (informative, from its file)
    needs_train_images: bool = False
    #: the part of the original image the maps cover: (top, left, height, width) as fractions
    view: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    def __init__(self, ref: ModelRef, device: str, batch_size: int | None):
        self.ref = ref
        self.device = torch.device(device)
        self.batch_size = int(batch_size or 16)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images at :attr:`load_size` -> the model's input (SimpleNet's optional centre crop)."""
        return images

    def fit(self, train_images: torch.Tensor, seeds: Sequence[int]) -> None:
        """Statistics of the class's training images, for the methods that normalise with them."""

    def calibrate(self, images: torch.Tensor, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Maps and scores of the normal images; fixes whatever the maps of other images are scaled by."""
        return self.maps(images, seeds)

    def maps(self, images: torch.Tensor, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S) float32 maps and (N,) scores of ``images``; ``seeds[i]`` seeds image i's noise."""
        raise NotImplementedError

    def record(self) -> dict:
        """Method-specific facts for ``threshold.json`` (e.g. a fusion scale)."""
        return {}

    def _batches(self, images: torch.Tensor, seeds: Sequence[int]):
        for i in range(0, images.shape[0], self.batch_size):
            yield images[i : i + self.batch_size].to(self.device), list(seeds[i : i + self.batch_size])


class SimpleNetPredictor(Predictor):
    """``texad.methods.simplenet``: :func:`load_simplenet` + :func:`predict` (maps at the input size)."""

    method = "simplenet"

    def __init__(self, ref, device, batch_size, overrides, weights_cache):
        from texad.methods.simplenet import SimpleNetSettings, load_simplenet

        super().__init__(ref, device, batch_size)
        self.model, trained, meta = load_simplenet(ref.model_path, weights_cache=weights_cache, device=device)
        if ref.result is not None:
            _check_hash(ref, meta["model_hash"])
            trained = SimpleNetSettings(**ref.result["extra"]["settings"])
        self.trained = trained
        self.settings = _merge({"smoothing_sigma": float(trained.smoothing_sigma)}, overrides)
        self.model_settings = trained.as_dict()
        self.load_size = trained.load_size
        if trained.center_crop:
            side = trained.load_size
            top = int(round((side - trained.image_size) / 2.0))
            self.view = (top / side, top / side, trained.image_size / side, trained.image_size / side)

    def prepare(self, images):
        from texad.methods.simplenet.data import center_crop

        if not self.trained.center_crop:
            return images
        return center_crop(images, (self.trained.image_size,) * 2).contiguous()

    def maps(self, images, seeds):
        from texad.methods.simplenet import predict

        maps, scores, _ = predict(
            self.model, images, sigma=float(self.settings["smoothing_sigma"]), batch_size=self.batch_size,
            device=self.device,
        )  # fmt: skip
        return maps, scores


class DraemPredictor(Predictor):
    """``texad.methods.draem``: :func:`load_draem_model` + :func:`predict` / :func:`image_scores`."""

    method = "draem"

    def __init__(self, ref, device, batch_size, overrides, weights_cache):
        from texad.methods.draem import load_draem_model

        super().__init__(ref, device, batch_size)
        self.recon, self.disc, meta = load_draem_model(ref.model_path, self.device)
        trained = meta["settings"]
        pool = trained.score_pool
        if ref.result is not None:
            _check_hash(ref, meta["model_hash"])
            pool = ref.result["extra"]["settings"]["score_pool"]
        self.settings = _merge({"score_pool": int(pool)}, overrides)
        self.model_settings = asdict(trained)
        self.load_size = trained.image_size

    def maps(self, images, seeds):
        from texad.methods.draem import image_scores, predict

        maps, scores = [], []
        for x, _ in self._batches(images, seeds):
            m, _ = predict(self.recon, self.disc, x)
            maps.append(m.float().cpu())
            scores.append(image_scores(m, int(self.settings["score_pool"])).float().cpu())
        return torch.cat(maps).numpy(), torch.cat(scores).numpy().astype(np.float64)


class MethodAPredictor(Predictor):
    """``texad.methods.score_tscales``: :func:`load_score_model_any` + :func:`raw_maps`, normalised by
    :func:`train_statistics` of the training images and post-processed by :func:`anomaly_maps`."""

    method = "method_a"

    def __init__(self, ref, device, batch_size, overrides, weights_cache):
        from texad.methods.score_tscales.infer import InferenceSettings
        from texad.methods.score_tscales.run import MethodASettings, load_score_model_any

        super().__init__(ref, device, batch_size)
        if ref.result is not None:
            rec = ref.result["extra"]["settings"]
            kind = rec["model"]
            base = {
                "mode": rec["mode"],
                "sde": {"sigma_min": rec["sde"]["sigma_min"], "n_steps": rec["sde"]["n_steps"]},
                "inference": dict(rec["inference"]),
            }
        else:
            defaults = MethodASettings()
            kind = "own"
            base = {
                "mode": "t_scales",
                "sde": {"sigma_min": None, "n_steps": defaults.sde.n_steps},  # None: the model's own
                "inference": defaults.inference.as_dict(),
            }
        if batch_size is not None:
            base["inference"]["batch_size"] = int(batch_size)
        settings = _merge(base, overrides)
        self.model, meta, self.load_size = load_score_model_any(
            ref.model_path, kind, str(self.device), int(settings["sde"]["n_steps"])
        )
        if ref.result is not None:
            _check_hash(ref, meta["model_hash"])
        if settings["sde"]["sigma_min"] is None:
            settings["sde"]["sigma_min"] = float(meta["settings"]["sigma_min"])
        if settings["mode"] not in ("t_scales", "full_chain"):
            raise ValueError(f"mode must be t_scales or full_chain, got {settings['mode']!r}")
        self.inf = InferenceSettings(**settings["inference"])
        self.batch_size = self.inf.batch_size
        self.settings = {**settings, "model": kind}
        self.model_settings = dict(meta["settings"])
        self.needs_train_images = self.inf.normalise == "train_stats"
        self.stats = None
        self._fitted: tuple | None = None

    def _raw(self, images, seeds) -> torch.Tensor:
        from texad.methods.score_tscales.infer import raw_maps

        out = []
        for x, s in self._batches(images, seeds):
            m, _ = raw_maps(self.model, x, self.inf, seeds=s, sigma_end=float(self.settings["sde"]["sigma_min"]),
                            full_chain=self.settings["mode"] == "full_chain")  # fmt: skip
            out.append(m.float().cpu())
        return torch.cat(out)

    def fit(self, train_images, seeds):
        from texad.methods.score_tscales.anomaly_map import train_statistics

        if self.needs_train_images:
            raw = self._raw(train_images, seeds)
            self._fitted = (train_images, list(seeds), raw)  # the threshold may be set on these same images
            self.stats = train_statistics(raw)

    def maps(self, images, seeds):
        from texad.methods.score_tscales.anomaly_map import anomaly_maps

        if self.needs_train_images and self.stats is None:
            raise RuntimeError("Method A normalises with training statistics: call fit() first")
        fitted = self._fitted
        if fitted is not None and fitted[0] is images and fitted[1] == list(seeds):
            raw = fitted[2]
        else:
            raw = self._raw(images, seeds)
        return anomaly_maps(raw, self.stats, self.inf.smoothing_sigma)


class MethodBPredictor(Predictor):
    """``texad.methods.conditioned_blur``: :func:`load_diffusion_model`, :func:`reconstruct`,
    :func:`pixel_distance`, :func:`feature_distance` on a :func:`load_backbone` extractor, then
    :func:`anomaly_maps` (``fusion_scale: folder``) or the same fusion at the normal images' scale."""

    method = "method_b"

    def __init__(self, ref, device, batch_size, overrides, weights_cache):
        from texad.backbones.features import BACKBONES, load_backbone
        from texad.diffusion.training import load_diffusion_model, require_trained_level
        from texad.methods.conditioned_blur.anomaly_map import MapSettings
        from texad.methods.conditioned_blur.domain_adaptation import load_adapted_state
        from texad.methods.conditioned_blur.infer import ReconstructionSettings

        super().__init__(ref, device, batch_size)
        adapted_record = None
        if ref.result is not None:
            rec, bb = ref.result["extra"]["settings"], ref.result["backbone"]
            adapted_record = bb.get("adapted")
            adapted = None if adapted_record is None else str(ref.model_path.parent / adapted_record["file"])
            base = {
                "reconstruction": dict(rec["reconstruction"]),
                "map": dict(rec["map"]),
                "backbone": {"name": bb["name"], "weights": bb["weights"]},
                "adapted_features": adapted,
            }
        else:
            name = "wide_resnet101_2"  # the CLI's and config's default feature backbone
            base = {
                "reconstruction": ReconstructionSettings().as_dict(),
                "map": MapSettings().as_dict(),
                "backbone": {"name": name, "weights": BACKBONES[name]},
                "adapted_features": None,
            }
        base["fusion_scale"] = "normal"
        self.settings = _merge(base, overrides)
        if self.settings["fusion_scale"] not in FUSION_SCALES:
            raise ValueError(
                f"fusion_scale must be one of {FUSION_SCALES}, got {self.settings['fusion_scale']!r}"
            )
        self.recon = ReconstructionSettings(**self.settings["reconstruction"])
        self.map_cfg = MapSettings(
            **{**self.settings["map"], "layers": tuple(self.settings["map"]["layers"])}
        )

        self.model, schedule, meta = load_diffusion_model(ref.model_path, device=self.device)
        require_trained_level(meta, self.recon.t_start, "Method B's reconstruction")
        if ref.result is not None:
            _check_hash(ref, meta["model_hash"])
        self.schedule = schedule.to(self.device)
        self.load_size = int(meta["settings"]["image_size"])
        self.model_settings = dict(meta["settings"])

        bb = self.settings["backbone"]
        extractor = load_backbone(bb["name"], weights=bb["weights"], cache_dir=weights_cache,
                                  layers=self.map_cfg.layers)  # fmt: skip
        recorded = None if ref.result is None else ref.result["backbone"]
        if recorded is not None and bb == {"name": recorded["name"], "weights": recorded["weights"]}:
            want = recorded["sha256"]
            if extractor.describe()["sha256"] != want:
                raise ValueError(f"backbone {bb['name']} weights have sha256 {extractor.describe()['sha256']}, but "
                                 f"{ref.result_path} was made with {want}")  # fmt: skip
        path = self.settings["adapted_features"]
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"adapted feature extractor {path} does not exist")
            state, record = load_adapted_state(Path(path))
            if (
                adapted_record is not None
                and path == base["adapted_features"]
                and (record["sha256"] != adapted_record["sha256"])
            ):
                raise ValueError(f"{path} has sha256 {record['sha256']}, but {ref.result_path} used "
                                 f"{adapted_record['sha256']}")  # fmt: skip
            extractor.load_adapted(state, record)
        self.extractor = extractor.to(self.device)
        self.backbone = extractor.describe()
        self.scale: float | None = None
        self._scale_t: torch.Tensor | None = None
        self.needs_train_images = self.map_cfg.normalise == "train_stats"
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None

    def _distances(self, images, seeds) -> tuple[torch.Tensor, torch.Tensor]:
        from texad.methods.conditioned_blur.anomaly_map import feature_distance, pixel_distance
        from texad.methods.conditioned_blur.infer import reconstruct

        size, cfg = self.load_size, self.map_cfg
        d_pixel, d_feature = [], []
        with torch.no_grad():
            for x01, s in self._batches(images, seeds):
                x = x01 * 2.0 - 1.0
                x_rec, _ = reconstruct(
                    lambda x_t, t: self.model(x_t, t), self.schedule, x, self.recon, seeds=s
                )
                d_pixel.append(pixel_distance(x, x_rec).float().cpu())
                d_feature.append(
                    feature_distance(self.extractor, x, x_rec, cfg.layers, (size, size), cfg.feature_size)
                    .float()
                    .cpu()
                )
        return torch.cat(d_pixel), torch.cat(d_feature)

    def fit(self, train_images, seeds):
        if self.needs_train_images:
            n = self.map_cfg.normalise_images
            if n is not None:  # the first n training images, as the benchmark run took them
                train_images, seeds = train_images[:n], list(seeds)[:n]
            self._train = self._distances(train_images, seeds)

    def _anomaly_maps(self, d_pixel, d_feature, scale):
        from texad.methods.conditioned_blur.anomaly_map import anomaly_maps

        if self.needs_train_images and self._train is None:
            raise RuntimeError("Method B normalises with training statistics: call fit() first")
        return anomaly_maps(d_pixel, d_feature, self.map_cfg, scale=scale, train=self._train)

    def calibrate(self, images, seeds):
        from texad.methods.conditioned_blur.anomaly_map import fusion_scale

        d_pixel, d_feature = self._distances(images, seeds)
        if self.settings["fusion_scale"] == "folder":
            return self._anomaly_maps(d_pixel, d_feature, None)
        scale = fusion_scale(d_pixel, d_feature, self.map_cfg.v)
        self._scale_t = torch.zeros(()) if scale is None else scale
        self.scale = float(self._scale_t)
        return self._anomaly_maps(d_pixel, d_feature, self._scale_t)

    def maps(self, images, seeds):
        d_pixel, d_feature = self._distances(images, seeds)
        if self.settings["fusion_scale"] == "folder":
            return self._anomaly_maps(d_pixel, d_feature, None)
        if self.scale is None:
            raise RuntimeError("Method B fuses at the normal images' scale: call calibrate() first")
        return self._anomaly_maps(d_pixel, d_feature, self._scale_t)

    def record(self):
        return {"fusion_scale_value": self.scale, "backbone": self.backbone}


_ADAPTERS = {
    "simplenet": SimpleNetPredictor,
    "draem": DraemPredictor,
    "method_a": MethodAPredictor,
    "method_b": MethodBPredictor,
}


def load_predictor(
    ref: ModelRef,
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    weights_cache: str | Path | None = None,
) -> Predictor:
    """The adapter of ``ref.method`` with its model loaded on ``device``. ``batch_size``: inference batch
    (default: the recorded one, else 16; noise is drawn per image, so it changes scores only by float
    rounding); ``overrides``: ``--settings``."""
    cache = Path(weights_cache) if weights_cache else None
    return _ADAPTERS[ref.method](ref, device, batch_size, dict(overrides or {}), cache)
