"""What every method shares: the run's key, the runtime settings, variants, and the detector interface.

A method lives in ``texad.methods.<name>`` (``<name>`` is its config key) and exposes the module interface
described by :class:`MethodModule`; :mod:`texad.methods` maps the names to the modules. One run of a method on a
class is :func:`texad.methods.run.run_class` driving the method's :class:`Detector`; ``texad predict`` drives
the same detectors on a user's images.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from texad.data.holdout import Holdout

if TYPE_CHECKING:  # torch is imported where it is used: planning never needs it
    import torch

    from texad.accel import Accel

__all__ = [
    "RunKey",
    "Runtime",
    "Variant",
    "Scored",
    "Detector",
    "MethodModule",
    "image_identity",
    "image_seed",
    "fit_state_path",
    "lazy_detector",
    "require_model",
    "resolve_device",
    "variant_settings",
    "OFFICIAL",
    "official_variant",
    "candidates",
    "no_candidates",
    "candidate_values",
    "run_variants",
    "SELECTED",
    "ORACLE",
]


@dataclass(frozen=True)
class RunKey:
    """Which run: the class it runs on, its seed and its variant (``default`` or an ablation point's name), and the
    share of the class's training images held out for validation (``validation.holdout``), which its models did not
    train on: part of every model identity (:func:`texad.data.holdout.holdout_identity`); None when they trained on
    all of train/good (``holdout: 0``, or a job whose settings name no held-out share)."""

    dataset: str
    class_name: str
    seed: int
    variant: str
    holdout: Holdout | None = None

    @classmethod
    def of(cls, config: dict, dataset: str, class_name: str, seed: int, variant: str = "default") -> RunKey:
        """The key of a job from its validated settings, which name the held-out share its models lack."""
        return cls(dataset, class_name, int(seed), variant, Holdout.from_config(config))


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when present; asking for CUDA on a machine without it is a clear error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but torch sees no CUDA device; set device: cpu (or auto)"
        )
    return requested


@dataclass(frozen=True)
class Runtime:
    """Where and under which protocol a job runs: the config's top-level keys (``run_name``, ``device``,
    ``precision``, ``channels_last``, ``compile``, ``evaluation``, ``backbone.cache``)."""

    run_name: str
    device: str  # as configured: auto, cpu or cuda (see :meth:`torch_device`)
    precision: str
    channels_last: bool
    compile: bool
    resolution: int | str
    fpr_limit: float
    weights_cache: Path | None  # TORCH_HOME of the staged torchvision weights (None: torch's own)

    @classmethod
    def from_config(cls, config: dict) -> Runtime:
        """From a validated config (or the part of one a job reads; the schema filled in the rest)."""
        return cls(
            run_name=config["run_name"],
            device=config["device"],
            precision=config["precision"],
            channels_last=config["channels_last"],
            compile=config["compile"],
            resolution=config["evaluation"]["resolution"],
            fpr_limit=config["evaluation"]["fpr_limit"],
            weights_cache=Path(config["backbone"]["cache"]),
        )

    def torch_device(self) -> str:
        return resolve_device(self.device)

    def accel(self) -> Accel:
        """The GPU fast path of the network evaluations (a CPU runs plain fp32; results record what ran)."""
        from texad.accel import Accel

        return Accel(precision=self.precision, channels_last=self.channels_last, compile=self.compile)


@dataclass(frozen=True)
class Variant:
    """One point a method runs on a class: ``default`` (the configured settings) or an ablation point.

    ``settings``: the method's settings with the point applied (what the run runs). ``grid``: the ablation block
    that generates this point alone, so that a job's settings carry only what the job depends on (a change to
    another point of the grid then leaves the job alone); None for methods without an ablation.
    """

    name: str
    settings: Any
    grid: Any = field(default=None)
    #: a candidate of the ``selected`` variant: the ``select`` block that generates this candidate alone (its own
    #: value in each list); None for the default and the ablation points, whose jobs carry no candidates
    select: Any = field(default=None)


#: The name of the variant that runs a method under its official code's evaluation.
OFFICIAL = "official"
#: The variant whose inference settings were chosen among its candidates on the class's validation split only.
SELECTED = "selected"
#: The labelled diagnostic: the candidate that scores best on the test set itself (never a default).
ORACLE = "oracle"


def official_variant(module: Any, settings: Any) -> Variant | None:
    """The method's labelled ``official`` variant for these settings; None for a method without one (its official
    code evaluates as texad does, or there is no official code: Method A)."""
    make = getattr(module, "official", None)
    return None if make is None else make(settings)


def candidates(module: Any, settings: Any) -> list[Variant]:
    """The candidates of the method's ``selected`` variant for these settings (``default`` first), or [] when its
    ``select`` block names none. Most candidates are inference settings on the default's models; SimpleNet's are
    meta epochs whose weights the default's one training run keeps."""
    make = getattr(module, "candidates", None)
    found = [] if make is None else make(settings)
    return found if len(found) > 1 else []


def no_candidates(select: Any) -> Any:
    """A ``select`` block with every candidate list emptied: what a job that runs no candidate carries, so that a
    change to the candidates leaves it alone."""
    return replace(select, **{f.name: () for f in fields(select)})


def candidate_values(variant: Variant) -> dict:
    """The settings a candidate stands for, by ``select`` key (``{"w": 4.0, "s": 0.5, "t_start": 250}``)."""
    return {f.name: getattr(variant.select, f.name)[0] for f in fields(variant.select)}


def run_variants(module: Any, settings: Any) -> list[Variant]:
    """Every variant a run of the method may name: ``default``, the ablation points, the candidates of its
    ``selected`` variant that are not an ablation point already, and ``official`` if any."""
    official = official_variant(module, settings)
    out = {v.name: v for v in module.variants(settings)}
    for v in candidates(module, settings):
        out.setdefault(v.name, v)
    return list(out.values()) + ([] if official is None else [official])


def variant_settings(variants: list[Variant], name: str, what: str) -> Any:
    """The settings of the variant called ``name``; an unknown name lists the defined ones."""
    for v in variants:
        if v.name == name:
            return v.settings
    raise ValueError(
        f"unknown {what} variant {name!r}; the settings define: {', '.join(v.name for v in variants)}"
    )


def require_model(what: str, path: Path | str, found: str, expected: str | None) -> None:
    """A run loads the model its settings name: a file of another identity means a setting that shapes the model
    differs between the run and the model (``what``: e.g. "DRAEM model")."""
    if found != expected:
        raise ValueError(
            f"{path} holds {what} {found}, but this run's settings give {expected}: a setting that shapes the model "
            "differs; train the model for these settings (or run with the settings it was trained with)"
        )


def lazy_detector(package: str, cls: str) -> Callable[[str], type]:
    """A method package's module ``__getattr__`` that gives its ``Detector`` (``<package>.detector.<cls>``) on first
    use: detectors load torch, and planning a workflow never needs them."""

    def __getattr__(name: str) -> type:
        if name == "Detector":
            return getattr(import_module(f"{package}.detector"), cls)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def fit_state_path(result: str | Path) -> Path:
    """The fit state a run writes beside its result JSON: ``<stem>.fit.npz`` (:meth:`Detector.fit_state`)."""
    result = Path(result)
    return result.with_name(f"{result.stem}.fit.npz")


def image_identity(path: str | Path) -> str:
    """What an image's noise is seeded from (:func:`image_seed`): the SHA-256 (hex) of its file's bytes.

    Its content, not its path or its position in a list: the same image draws the same noise in a benchmark run,
    in its fit and in ``texad predict``, and adding, removing or renaming other images (or this one, or moving
    it to another folder) changes no score."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_seed(seed: int, key: str, identity: str) -> int:
    """The noise seed of one image: the run's ``seed``, ``key`` (the class) and the image's ``identity``
    (:func:`image_identity`); independent of batch size, batch order and the other images."""
    return zlib.crc32(f"{seed}/{key}/{identity}".encode()) & 0x7FFFFFFF


@dataclass
class Scored:
    """A detector's output for a batch of images.

    ``maps``: (N, H, W) float32 anomaly maps at the model's input size; ``scores``: (N,) image scores (higher =
    more anomalous); ``reconstructions``: (N, H, W, 3) uint8 for the reconstruction methods (Figure-1 grids), else
    None; ``nfe_per_image``: network evaluations per image for the diffusion methods. A detector whose maps depend
    on a set of images (a transductive protocol: Method B's official fusion per test batch of 16) leaves ``maps`` and
    ``scores`` None and keeps what it needs in ``pending`` until :meth:`Detector.finalize`.
    """

    maps: np.ndarray | None
    scores: np.ndarray | None
    reconstructions: np.ndarray | None = None
    nfe_per_image: int | None = None
    pending: dict[str, Any] | None = None

    @staticmethod
    def concat(parts: list[Scored]) -> Scored:
        def cat(name: str):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return Scored(
            maps=cat("maps"),
            scores=cat("scores"),
            reconstructions=cat("reconstructions"),
            nfe_per_image=parts[-1].nfe_per_image if parts else None,
        )


class Detector:
    """A trained model of one method, loaded for one run: ``fit`` (statistics of normal training images, for the
    methods that use them; or ``load_fit_state``, a run's), then ``score`` batch by batch, then ``finalize``.

    Subclasses are built from ``(settings, runtime, run, models)``: the method's settings (its variant applied),
    the :class:`Runtime`, the :class:`RunKey` and the trained files by role (``{"model": path, ...}``).
    """

    method: ClassVar[str]
    settings: Any  #: the method's settings, its variant applied (``settings.to_config()`` is recorded)
    load_size: int  #: side the images are read at (antialiased bilinear, as every method's evaluation)
    crop: int | None = None  #: side of the centre crop taken after loading (SimpleNet's official protocol)
    #: the evaluation protocol (``texad.evaluation.protocol.PROTOCOLS``): texad's one protocol, or the official
    #: code's own for a labelled ``official`` variant (``ddad``: Method B; ``draem``: DRAEM)
    protocol: str = "texad"
    batch_size: int
    needs_fit: bool = False  #: whether :meth:`fit` must see the class's training images before scoring
    fit_images: int | None = None  #: how many of them (the first ones in file order; None: all)
    #: whether an image's map depends on the other images scored with it (Method B's official batch16 fusion)
    transductive: bool = False
    speed_batches: tuple[int, ...] = ()  #: batch sizes of the speed probe (s/image, spec §3.4), for this run
    device: torch.device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Images at :attr:`load_size` (N, 3, S, S) in [0, 1] -> the model's input (the optional centre crop)."""
        if self.crop is None:
            return images
        from texad.evaluation.protocol import center_crop

        return center_crop(images, (self.crop, self.crop)).contiguous()

    def fit(self, images: torch.Tensor, seeds: list[int]) -> None:
        """Statistics of normal training images (N, 3, S, S) in [0, 1]; ``seeds[i]`` seeds image i's noise."""

    def score(self, images: torch.Tensor, seeds: list[int]) -> Scored:
        """Maps and scores of one batch (N, 3, S, S) in [0, 1] (on the CPU; the detector moves it)."""
        raise NotImplementedError

    def finalize(self, parts: list[Scored]) -> Scored:
        """The outputs of a whole image set from its batches (a transductive protocol completes the maps here)."""
        return Scored.concat(parts)

    def fit_state(self) -> dict[str, np.ndarray]:
        """What :meth:`fit` computed, as named arrays (a run writes them beside its result, ``<stem>.fit.npz``, so
        that ``texad predict`` scores with the run's own statistics); empty for a detector that fits nothing."""
        return {}

    def load_fit_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Take what a run's :meth:`fit` computed (:meth:`fit_state`) instead of fitting. A detector that fits
        nothing takes an empty state only."""
        if state:
            raise ValueError(
                f"{self.method} fits nothing, but the fit state holds {', '.join(sorted(state))}"
            )

    def record(self) -> dict:
        """What the result JSON records beside the metrics and the settings: ``switches`` (protocol switches),
        ``backbone``, ``model_hash``, ``train_s`` (of the model), ``precision`` (what ran) and ``extra``."""
        raise NotImplementedError


class MethodModule(Protocol):
    """What ``texad.methods.<name>`` exposes (the registry's contract).

    - ``Settings``: the settings type; ``Settings.from_config(config, class_name)`` builds it from a validated
      config (or the part one job reads), ``settings.to_config()`` gives that part back.
    - ``MODELS``: the model kinds it trains (file prefix and ``texad train`` argument), e.g. ``("ddpm", "features")``.
    - ``identity(kind, settings, run)``: the identity hash of a model of that kind (None when the settings need
      none, e.g. no feature adaptation); the one function the plan, ``--expect-hash``, the trainer and the loaders
      call.
    - ``model_file(kind, settings, run)``: the model's file name (``<kind>-<hash>.pt``).
    - ``train(kind, settings, run, runtime, *, class_dir, out, ckpt_dir, workers, **inputs)``: train one model.
    - ``models(settings)``: the model kind of each file a run loads, by role (``{"model": "ddpm", ...}``).
    - ``backbones(settings, kind)``: pretrained backbones whose weights a run (``kind=None``) or a trainer needs.
    - ``variants(settings)``: ``default`` and the ablation points, as :class:`Variant`.
    - ``official(settings)`` (only a method whose official code evaluates differently from texad's protocol): the
      labelled ``official`` :class:`Variant`, that code's evaluation (and model selection) beside the fair
      default; see :func:`official_variant`.
    - ``Detector``: the :class:`Detector` subclass.
    """

    NAME: str
    MODELS: tuple[str, ...]
    Settings: type
    Detector: type

    def identity(self, kind: str, settings: Any, run: RunKey) -> str | None: ...

    def model_file(self, kind: str, settings: Any, run: RunKey) -> str: ...

    def train(self, kind: str, settings: Any, run: RunKey, runtime: Runtime, **kwargs: Any) -> dict: ...

    def models(self, settings: Any) -> dict[str, str]: ...

    def backbones(self, settings: Any, kind: str | None) -> tuple[str, ...]: ...

    def variants(self, settings: Any) -> list[Variant]: ...
