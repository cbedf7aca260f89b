"""The helper that recomputes a run's metrics from its saved outputs (tests/saved_outputs.py), on a hand-built class
folder and maps file: it accepts the run as written and refuses shuffled labels, a flipped map, masks on a wrong
grid, images out of the folder's order and maps that are not the ones the metrics were computed on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from saved_outputs import check_saved_run, class_listing, dataset_masks_on_grid

from texad.evaluation.metrics import evaluate

# two good and two scratched 8 x 8 images; each mask covers whole 2 x 2 blocks of the 4 x 4 grid, and one block
# of the second holds a single anomalous pixel (a quarter: normal on the grid, where nearest sampling says anomalous)
MASK_BLOCKS = {"000": [(0, 0), (0, 1), (1, 0)], "001": [(2, 2), (3, 2)]}
LONE_PIXEL = ("001", (0, 6))  # block (0, 3)


def _make_class(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    cls = root / "cls"
    for folder in ("test/good", "test/scratch", "ground_truth/scratch"):
        (cls / folder).mkdir(parents=True)
    for folder, stem in (("good", "000"), ("good", "001"), ("scratch", "000"), ("scratch", "001")):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(cls / "test" / folder / f"{stem}.png")
    for stem, blocks in MASK_BLOCKS.items():
        mask = np.zeros((8, 8), dtype=np.uint8)
        for r, c in blocks:
            mask[2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = 255
        if stem == LONE_PIXEL[0]:
            mask[LONE_PIXEL[1]] = 255
        Image.fromarray(mask).save(cls / "ground_truth" / "scratch" / f"{stem}_mask.png")
    return cls


def _grid_masks() -> np.ndarray:
    """The masks on the 4 x 4 grid, by hand: the listed blocks (the lone pixel's block stays normal)."""
    masks = np.zeros((4, 4, 4), dtype=bool)
    for i, stem in ((2, "000"), (3, "001")):
        for r, c in MASK_BLOCKS[stem]:
            masks[i, r, c] = True
    return masks


def _write_run(
    root, cls, maps32, masks, scores, labels, paths=None, saved_labels=None, dtype=np.float32
) -> tuple:
    """A result (the metrics of the float32 maps, as texad run computes them) and its maps file (float32 maps, as
    texad run writes them, or another dtype)."""
    evaluation = {"resolution": 4, "fpr_limit": 0.3, "grid": [4, 4],
                  "protocol": {"name": "texad", "masks": "area, >= 0.5", "crop": None}}  # fmt: skip
    metrics = evaluate(scores, maps32, masks, labels=labels, fpr_limit=0.3)
    result = {"method": "m", "variant": "v", "class": "cls", "evaluation": evaluation, "metrics": metrics}
    if paths is None:
        paths = [str(p.relative_to(root)) for p, _, _ in class_listing(cls)]
    file = root / "maps.npz"
    np.savez(file, maps=maps32.astype(dtype), scores=scores.astype(np.float32),
             labels=labels if saved_labels is None else saved_labels, masks=masks, paths=np.array(paths))  # fmt: skip
    return result, file


def _maps(rng, masks) -> np.ndarray:
    """float32 maps that rank the anomalous pixels high, with values close enough for float16 to tie some."""
    return (1.0 + 0.01 * masks + 0.005 * rng.standard_normal(masks.shape)).astype(np.float32)


def test_a_run_as_written_passes_and_every_break_of_it_is_caught(tmp_path):
    """The helper accepts a maps file and result written as texad run writes them, and fails on each way they can
    part from the class folder: labels, one map, the mask rule, the images' order or content."""
    rng = np.random.default_rng(1)
    cls = _make_class(tmp_path)
    listing = class_listing(cls)
    assert [(p.parent.name, p.name, label) for p, label, _ in listing] == [
        ("good", "000.png", 0), ("good", "001.png", 0), ("scratch", "000.png", 1), ("scratch", "001.png", 1)]  # fmt: skip
    masks = _grid_masks()
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.3, 0.2, 0.9])
    maps = _maps(rng, masks)
    out = check_saved_run(*_write_run(tmp_path, cls, maps, masks, scores, labels), cls, root=tmp_path)
    assert out["image_auroc"] == 0.75  # 3 of the 4 (normal, anomalous) pairs in order
    assert out["pixel_auroc"] == pytest.approx(
        evaluate(scores, maps, masks, labels=labels)["pixel_auroc"], abs=1e-12
    )

    def refused(**changes):
        result, file = _write_run(tmp_path, cls, **{"maps32": maps, "masks": masks, "scores": scores,
                                                    "labels": labels, **changes})  # fmt: skip
        with pytest.raises(AssertionError):
            check_saved_run(result, file, cls, root=tmp_path)

    refused(
        dtype=np.float16
    )  # maps rounded after scoring (float16 ties some of these pixels): not what was scored
    refused(saved_labels=np.array([0, 1, 0, 1]))  # labels shuffled in the file
    refused(labels=np.array([1, 0, 0, 1]), saved_labels=np.array([1, 0, 0, 1]))  # ...and in the metrics too
    flipped = maps.copy()
    flipped[2] = flipped[2][:, ::-1]  # one map flipped after the metrics were computed
    result, file = _write_run(tmp_path, cls, flipped, masks, scores, labels)
    result["metrics"] = evaluate(scores, maps, masks, labels=labels)
    with pytest.raises(AssertionError, match="pixel_auroc"):
        check_saved_run(result, file, cls, root=tmp_path)
    # masks sampled at each block's top-left pixel (nearest) instead of the area rule: the lone pixel's block
    nearest = np.stack([np.zeros((4, 4), bool) if m is None else np.asarray(Image.open(m))[::2, ::2] > 0
                        for _, _, m in listing])  # fmt: skip
    assert (nearest != masks).sum() == 1
    refused(masks=nearest)
    paths = [str(p.relative_to(tmp_path)) for p, _, _ in listing]
    refused(paths=[paths[1], paths[0], *paths[2:]])  # two images in the other order
    refused(paths=[p.replace("001.png", "000.png") for p in paths])  # another image of the folder
    _make_class(tmp_path / "other", seed=1)  # the same names, other pixels
    refused(paths=[str(Path("other") / p) for p in paths])


def test_masks_come_to_the_grid_by_the_protocol_the_result_records(tmp_path):
    cls = _make_class(tmp_path)
    listing = class_listing(cls)
    native = np.stack([np.zeros((8, 8), bool) if m is None else np.asarray(Image.open(m)) > 0
                       for _, _, m in listing])  # fmt: skip
    grid = {"resolution": 4, "grid": [4, 4], "protocol": {"name": "texad", "crop": None}}
    assert np.array_equal(dataset_masks_on_grid(listing, grid), _grid_masks())
    # SimpleNet's official input: the centre 4 of 8 (resolution 4 is the cropped grid: masks loaded at 8, cropped)
    crop = {"resolution": 4, "grid": [4, 4], "protocol": {"name": "texad", "crop": {"from": 8, "to": 4}}}
    assert np.array_equal(dataset_masks_on_grid(listing, crop), native[:, 2:6, 2:6])
