"""Test-set independence of every method's default protocol: a test image's score and map depend on the image and
the trained model only, never on the other test images, their number, their names or their order.

Each method is trained tiny (seconds, the blocks of ``test_predict``) on a synthetic class and run twice through
:func:`texad.methods.jobs.run_method` (:func:`texad.methods.run.run_class`): on the class folder, then on a second
folder of the same class name holding the same training images, the same test images under other names that sort
in another order, and extra test images among them. Every original image must keep its score and map. The
tolerance is float rounding only: the two runs batch the images differently, and the maps file stores float16.
Method B's labelled ``official`` variant, which fuses each test batch of 16 at its own scale (DDAD's protocol), is
the control: its scores do move, so the comparison can tell.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_predict import DRAEM, METHOD_A, METHOD_B, SIMPLENET

from texad.config import validate_config
from texad.data.synth import generate_class
from texad.methods import get
from texad.methods.base import RunKey
from texad.methods.jobs import method_settings, run_method, train_model

DATASET, CLASS, SEED = "synthetic", "wood", 0
RUN = RunKey(DATASET, CLASS, SEED, "default")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass(frozen=True)
class Folders:
    root: Path  # the first class folder's dataset root (carpet beside it: DRAEM's anomaly source)
    first: Path  # <root>/wood
    second: (
        Path  # the same class name: the same training images, the test images renamed and reordered, extras
    )
    n_extra: int
    weights: Path


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _copy_test_image(src_class: Path, image: Path, dst_class: Path, name: str) -> None:
    """A test image (and its mask, for a defect) under ``name`` in ``dst_class``, MVTec layout."""
    defect = image.parent.name
    (dst_class / "test" / defect).mkdir(parents=True, exist_ok=True)
    shutil.copy(image, dst_class / "test" / defect / f"{name}.png")
    if defect != "good":
        (dst_class / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        mask = src_class / "ground_truth" / defect / f"{image.stem}_mask.png"
        shutil.copy(mask, dst_class / "ground_truth" / defect / f"{name}_mask.png")


def _reordered(first: Path, extra: Path, second: Path) -> int:
    """``second``: ``first``'s training images as they are; in each test folder its images renamed in reverse
    order, and ``extra``'s images of that folder sorting between them. Returns the number of extra images."""
    shutil.copytree(first / "train", second / "train")
    n_extra = 0
    for folder in sorted(p for p in (first / "test").iterdir() if p.is_dir()):
        originals = sorted(folder.glob("*.png"))
        for i, image in enumerate(originals):  # the last sorts first now
            _copy_test_image(first, image, second, f"{len(originals) - i:03d}_b")
        for i, image in enumerate(sorted((extra / "test" / folder.name).glob("*.png"))):
            _copy_test_image(extra, image, second, f"{len(originals) - i:03d}_a")  # just before an original
            n_extra += 1
    return n_extra


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Folders:
    base = tmp_path_factory.mktemp("independence")
    generate_class(base / "a", CLASS, image_size=64, n_train=8, n_test_good=4, n_test_per_defect=2, seed=0)
    generate_class(base / "a", "carpet", image_size=64, n_train=4, n_test_good=1, n_test_per_defect=1, seed=0)
    generate_class(
        base / "extra", CLASS, image_size=64, n_train=1, n_test_good=3, n_test_per_defect=1, seed=1
    )
    n_extra = _reordered(base / "a" / CLASS, base / "extra" / CLASS, base / "b" / CLASS)
    return Folders(base / "a", base / "a" / CLASS, base / "b" / CLASS, n_extra, base / "weights")


def _config(folders: Folders, method: str, block: dict, **top) -> dict:
    runtime = {"run_name": "t", "device": "cpu", "evaluation": {"resolution": 64},
               "backbone": {"cache": str(folders.weights)}}  # fmt: skip
    return validate_config({**runtime, **top, "methods": {method: block}}, partial=True)


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    """The model file of a (kind, method, config), trained once on the first folder (as ``texad train``)."""
    out_dir, done = tmp_path_factory.mktemp("models"), {}

    def model(kind: str, method: str, config: dict) -> Path:
        module = get(method)
        settings = method_settings(config, method, CLASS)
        out = out_dir / module.model_file(kind, settings, RUN)
        if out not in done:
            inputs = {"anomaly_root": folders.root} if method == "draem" else {}
            train_model(kind, config, RUN, class_dir=folders.first, out=out, ckpt_dir=out_dir / "ckpt" / kind,
                        expect_hash=module.identity(kind, settings, RUN), **inputs)  # fmt: skip
            done[out] = True
        return out

    return model


def _run(
    method: str, config: dict, class_dir: Path, model: Path, out: Path, variant: str = "default"
) -> dict:
    """One run of ``method`` on ``class_dir``: the maps file's paths, scores and maps."""
    run = RunKey(DATASET, CLASS, SEED, variant)
    run_method(method, config, run, class_dir=class_dir, models={"model": model}, out_result=out / "seed0.json",
               out_maps=out / "maps.npz")  # fmt: skip
    with np.load(out / "maps.npz") as z:
        return {"paths": list(z["paths"]), "scores": z["scores"].astype(np.float64),
                "maps": z["maps"].astype(np.float32)}  # fmt: skip


def _matched(folders: Folders, first: dict, second: dict) -> list[int]:
    """For each image of the first run, its index in the second (by content), checked to have moved."""
    by_content = {_digest(p): i for i, p in enumerate(second["paths"])}
    assert len(by_content) == len(second["paths"]) == len(first["paths"]) + folders.n_extra
    index = [by_content[_digest(p)] for p in first["paths"]]
    assert index != sorted(index)  # another order...
    assert not {Path(p).name for p in first["paths"]} & {
        Path(second["paths"][i]).name for i in index
    }  # ...names
    return index


def _assert_same(first: dict, second: dict, index: list[int]) -> None:
    """Scores equal to float32 rounding across batchings; maps to one float16 step of the largest value."""
    np.testing.assert_allclose(second["scores"][index], first["scores"], rtol=1e-5, atol=1e-6)
    scale = float(np.abs(first["maps"]).max())
    assert float(first["maps"].std()) > 0  # maps that vary, or equality would prove little
    np.testing.assert_allclose(second["maps"][index], first["maps"], rtol=0, atol=1e-3 * scale)


METHOD_B_TRAIN_STATS = {**METHOD_B, "inference": {**METHOD_B["inference"], "normalise": "train_stats",
                                                  "normalise_images": 4}}  # fmt: skip
CASES = [
    pytest.param("method_a", "score", METHOD_A, {"image_size": 32}, id="method_a"),
    pytest.param("method_b", "ddpm", METHOD_B, {"image_size": 32}, id="method_b"),
    pytest.param("method_b", "ddpm", METHOD_B_TRAIN_STATS, {"image_size": 32}, id="method_b-train_stats"),
    pytest.param("simplenet", "simplenet", SIMPLENET, {}, id="simplenet"),
    pytest.param("draem", "draem", DRAEM, {}, id="draem"),
]


@pytest.mark.parametrize(("method", "kind", "block", "top"), CASES)
def test_no_other_test_image_moves_a_score(folders, trained, tmp_path, method, kind, block, top):
    config = _config(folders, method, block, **top)
    model = trained(kind, method, config)
    first = _run(method, config, folders.first, model, tmp_path / "first")
    second = _run(method, config, folders.second, model, tmp_path / "second")
    _assert_same(first, second, _matched(folders, first, second))


def test_the_official_transductive_fusion_is_what_the_comparison_catches(folders, trained, tmp_path):
    """Method B's official variant fuses each test batch of 16 at its own scale: the extra and reordered images
    change the batches, and with them the original images' scores."""
    config = _config(folders, "method_b", METHOD_B, image_size=32)
    model = trained("ddpm", "method_b", config)
    first = _run("method_b", config, folders.first, model, tmp_path / "first", "official")
    second = _run("method_b", config, folders.second, model, tmp_path / "second", "official")
    index = _matched(folders, first, second)
    assert len(first["paths"]) <= 16 < len(second["paths"])  # one batch, then two
    assert not np.allclose(second["scores"][index], first["scores"], rtol=1e-3, atol=1e-4)
