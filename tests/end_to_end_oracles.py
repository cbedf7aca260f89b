"""Oracles for the end-to-end method tests (tests/test_methods_end_to_end.py).

A small synthetic class whose answer is known: :func:`make_oracle_class` writes it in the MVTec layout and beside it
a copy in which every defective test image is replaced by its defect-free render (the generator draws the clean
image first from the image's own random stream, then paints the defect on it, so the clean image is that stream's
first render). Every pixel of a defect's mask differs from the clean image and no other pixel does
(:mod:`texad.data.synth`), which the helper checks.

The stand-ins below replace only what a method would have learned (a network's output) with what a perfect network
would give on this class; they look each image's clean version up by the image's noise seed (the diffusion
methods' detectors are given the seeds) or by its exact content (DRAEM's and SimpleNet's networks see the images
only). Everything downstream of them is the methods' own code.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from texad.data.mvtec import MVTecDataset
from texad.data.synth import DEFECT_TYPES, generate_class, render_normal, sample_rng
from texad.methods.base import RunKey
from texad.methods.run import image_seeds

__all__ = ["OracleClass", "make_oracle_class", "CleanLookup"]


@dataclass(frozen=True)
class OracleClass:
    """The class (``class_dir``, under the dataset root ``root``) and its defect-free twin ``clean_dir`` (the same
    file names; test images defect-free, masks and training images unchanged)."""

    root: Path
    class_dir: Path
    clean_dir: Path
    name: str
    size: int
    n_test: int
    n_anomalous: int


def make_oracle_class(
    tmp: Path, name: str = "wood", *, size: int = 64, n_train: int = 8, n_test_good: int = 6,
    n_test_per_defect: int = 3, seed: int = 0,
) -> OracleClass:  # fmt: skip
    """Generate ``name`` under ``tmp/data`` and its defect-free twin under ``tmp/clean``."""
    root = Path(tmp) / "data"
    generate_class(root, name, image_size=size, n_train=n_train, n_test_good=n_test_good,
                   n_test_per_defect=n_test_per_defect, seed=seed)  # fmt: skip
    class_dir, clean_dir = root / name, Path(tmp) / "clean" / name
    shutil.copytree(class_dir, clean_dir)
    for defect in DEFECT_TYPES:
        for path in sorted((class_dir / "test" / defect).glob("*.png")):
            clean = render_normal(name, size, sample_rng(seed, name, f"test/{defect}", int(path.stem)))
            Image.fromarray(clean).save(clean_dir / "test" / defect / path.name)
            # the twin is right: the defect is exactly where the image differs from its clean render
            defective = np.asarray(Image.open(path))
            mask = np.asarray(Image.open(class_dir / "ground_truth" / defect / f"{path.stem}_mask.png")) > 0
            differs = (defective != clean).reshape(size, size, -1).any(axis=-1)
            assert mask.any() and np.array_equal(mask, differs), path
    n_anomalous = n_test_per_defect * len(DEFECT_TYPES)
    return OracleClass(root, class_dir, clean_dir, name, size, n_test_good + n_anomalous, n_anomalous)


def _key(image: torch.Tensor) -> bytes:
    return hashlib.sha256(image.detach().cpu().contiguous().numpy().tobytes()).digest()


class CleanLookup:
    """Each image of the class (train and test, read at ``load_size`` as the runs read them) -> its clean version
    (N, 3, S, S) in [0, 1], by noise seed (:func:`texad.methods.run.image_seeds` of ``run``) or by content."""

    def __init__(self, oc: OracleClass, run: RunKey, load_size: int):
        self.oc = oc
        self.by_seed: dict[int, torch.Tensor] = {}
        self.by_content: dict[bytes, torch.Tensor] = {}
        for split in ("train", "test"):
            data = MVTecDataset(oc.class_dir, split, image_size=load_size)
            twin = MVTecDataset(oc.clean_dir, split, image_size=load_size)
            assert [s.path.relative_to(oc.class_dir) for s in data.samples] == [
                s.path.relative_to(oc.clean_dir) for s in twin.samples
            ]
            seeds = image_seeds(run, [s.path for s in data.samples])
            for i, seed in enumerate(seeds):
                clean = twin[i]["image"]
                self.by_seed[seed] = clean
                self.by_content[_key(data[i]["image"])] = clean
        assert len(self.by_seed) == len(self.by_content), "two images share a noise seed or their content"

    def seeds(self, seeds) -> torch.Tensor:
        return torch.stack([self.by_seed[int(s)] for s in seeds])

    def content(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.by_content[_key(x)] for x in images]).to(images.device, images.dtype)

    def clean_images(self, split: str, load_size: int) -> torch.Tensor:
        """The clean versions of a split's images in file order (N, 3, S, S)."""
        twin = MVTecDataset(self.oc.clean_dir, split, image_size=load_size)
        return torch.stack([twin[i]["image"] for i in range(len(twin))])
