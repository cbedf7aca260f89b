"""The rehearsal's workspace: a small data set in the datasets' own layouts, random torchvision weights, the switches.

Everything the paper config needs from outside is made here, offline:

* MVTec AD and DTD-Synthetic classes in the MVTec layout at 256 px, drawn by the embedded synthetic generator
  (a class of the paper config takes the generator's texture of the same kind, or ``woven``);
* DTD (DRAEM's anomaly source) as a few jpgs per category;
* ``wide_resnet50_2`` / ``wide_resnet101_2`` weight files with torchvision's random initialisation, served to the
  workflow's ``stage_weights`` rule by a ``file://`` URL under the test-only weights switch.

The data and weights live under ``<workdir>/rehearsal-data``, where the overlay ``config/rehearsal*.yaml`` points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from texad.atomic import atomic_write_text
from texad.data.download import file_digest
from texad.data.synth import SYNTH_CLASSES, generate_class
from texad.rehearsal.switches import LAYOUT_ENV, WEIGHTS_ENV

__all__ = ["DATA_DIR", "Sizes", "build_workspace"]

DATA_DIR = "rehearsal-data"
#: torchvision backbones the paper config loads (SimpleNet: WRN-50; Method B: WRN-101)
_BACKBONES = ("wide_resnet50_2", "wide_resnet101_2")


@dataclass(frozen=True)
class Sizes:
    """The counts of the generated set (the rehearsal's only shrunk data); images are 256 px as the papers'."""

    n_train: int
    n_test_good: int
    n_test_per_defect: int
    defects: tuple[str, ...]
    dtd_categories: int
    dtd_per_category: int
    image_size: int = 256


def _texture(cls: str) -> str:
    """The generator texture drawn for a class of the paper config (its namesake, else the periodic weave)."""
    return cls if cls in SYNTH_CLASSES else "woven"


def _write_class(root: Path, cls: str, sizes: Sizes, seed: int) -> None:
    if (root / cls / "train" / "good").is_dir():
        return
    scratch = root / f".{cls}.generating"
    generate_class(scratch, _texture(cls), image_size=sizes.image_size, n_train=sizes.n_train,
                   n_test_good=sizes.n_test_good, n_test_per_defect=sizes.n_test_per_defect, seed=seed,
                   defects=sizes.defects)  # fmt: skip
    (scratch / _texture(cls)).rename(root / cls)
    scratch.rmdir()


def _write_dtd(root: Path, sizes: Sizes, seed: int) -> None:
    images = root / "images"
    if images.is_dir():
        return
    rng = np.random.default_rng(seed)
    for c in range(sizes.dtd_categories):
        folder = images / f"category{c:02d}"
        folder.mkdir(parents=True)
        for i in range(sizes.dtd_per_category):
            pixels = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"category{c:02d}_{i:04d}.jpg", quality=90)


def _write_weights(folder: Path, seed: int) -> dict[str, dict[str, str]]:
    """Random-initialised torchvision weight files and the table the weights switch reads."""
    import torch
    import torchvision

    from texad.backbones.weights import KNOWN_WEIGHTS

    table = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in _BACKBONES:
        path = folder / KNOWN_WEIGHTS[name].file
        if not path.is_file():
            torch.manual_seed(seed)
            state = getattr(torchvision.models, name)(weights=None).state_dict()
            partial = path.with_suffix(".partial")
            torch.save(state, partial)
            partial.replace(path)
        table[name] = {"sha256": file_digest(path, "sha256"), "url": path.resolve().as_uri()}
    return table


def build_workspace(
    workdir: Path, classes: dict[str, list[str]], sizes: Sizes, seed: int = 0
) -> dict[str, str]:
    """Write the data and weights under ``workdir/rehearsal-data``; return the environment of the test switches.

    ``classes``: the classes per dataset (``mvtec_ad``, ``dtd_synthetic``) that the overlay enables. Existing
    files are kept, so a second rehearsal in the same folder reuses them.
    """
    data = Path(workdir) / DATA_DIR
    for dataset, names in classes.items():
        (data / dataset).mkdir(parents=True, exist_ok=True)
        for i, cls in enumerate(names):
            _write_class(data / dataset, cls, sizes, seed + i)
    _write_dtd(data / "dtd", sizes, seed)
    table = _write_weights(data / "weights", seed)
    switch = data / "weights.json"
    atomic_write_text(switch, json.dumps(table, indent=2, sort_keys=True) + "\n")
    return {WEIGHTS_ENV: str(switch.resolve()), LAYOUT_ENV: "first-run"}
