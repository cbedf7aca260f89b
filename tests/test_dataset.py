"""The MVTec-layout Dataset and layout checks, on the synthetic set and on hand-made broken folders."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from texad.data.catalog import ClassLayout
from texad.data.layout import LayoutError, check_class, list_samples, scan_class
from texad.data.mvtec import DatasetError, MVTecDataset
from texad.data.synth import generate_class


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    for name in ("woven", "carpet"):
        generate_class(root, name, image_size=64, n_train=4, n_test_good=2, n_test_per_defect=2, seed=3)
    return root


def copy_class(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_grayscale_becomes_three_channels_and_values_in_unit_range(synth_root):
    ds = MVTecDataset(synth_root / "woven", "train", image_size=48)
    item = ds[0]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][1], item["image"][2])
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["label"] == 0 and item["mask"].sum() == 0


def test_test_split_labels_masks_and_alignment(synth_root):
    ds = MVTecDataset(synth_root / "carpet", "test", image_size=64)
    assert len(ds) == 2 + 4 * 2
    assert ds.labels.tolist() == [0, 0] + [1] * 8
    for item in (ds[i] for i in range(len(ds))):
        assert item["mask"].shape == (1, 64, 64)
        if item["label"] == 0:
            assert item["mask"].sum() == 0 and item["defect"] == "good"
        else:
            mask_png = np.asarray(Image.open(ds.samples[item["index"]].mask)) > 0
            # at native size the returned mask is exactly the PNG mask
            assert np.array_equal(item["mask"][0].numpy().astype(bool), mask_png)


def test_masks_follow_images_when_resized(synth_root):
    ds = MVTecDataset(synth_root / "carpet", "test", image_size=32, mask_size=32)
    item = ds[5]
    full = np.asarray(Image.open(ds.samples[5].mask)) > 0
    # area interpolation then >= 0.5: a 2x2 block is positive when at least two of its pixels are
    expected = full.reshape(32, 2, 32, 2).mean(axis=(1, 3)) >= 0.5
    assert np.array_equal(item["mask"][0].numpy().astype(bool), expected)


def test_truncated_image_is_an_error_naming_the_file(synth_root, tmp_path):
    cls = copy_class(synth_root / "carpet", tmp_path / "carpet")
    victim = cls / "train" / "good" / "001.png"
    victim.write_bytes(victim.read_bytes()[:200])
    ds = MVTecDataset(cls, "train", image_size=64)
    with pytest.raises(DatasetError, match=r"001\.png"):
        ds[1]
    with pytest.raises(LayoutError, match=r"cannot read image .*001\.png"):
        scan_class(cls)


def test_missing_mask_is_an_error_naming_the_expected_file(synth_root, tmp_path):
    cls = copy_class(synth_root / "carpet", tmp_path / "carpet")
    (cls / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(
        LayoutError, match=r"no mask for .*hole/001\.png: expected .*ground_truth/hole/001_mask\.png"
    ):
        list_samples(cls, "test")


def test_orphan_mask_and_size_mismatch_are_errors(synth_root, tmp_path):
    cls = copy_class(synth_root / "carpet", tmp_path / "carpet")
    (cls / "test" / "stain" / "000.png").unlink()
    with pytest.raises(LayoutError, match=r"have no test image, e\.g\. 000_mask\.png"):
        list_samples(cls, "test")
    cls2 = copy_class(synth_root / "carpet", tmp_path / "carpet2")
    Image.new("L", (32, 32)).save(cls2 / "ground_truth" / "fold" / "000_mask.png")
    with pytest.raises(LayoutError, match=r"000_mask\.png is 32x32 but its image .* is 64x64"):
        scan_class(cls2)


def test_empty_class_folder_is_an_error(tmp_path):
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(LayoutError, match=r"train/good holds no images"):
        MVTecDataset(tmp_path / "empty", "train")
    with pytest.raises(LayoutError, match=r"test/good is missing"):
        list_samples(tmp_path / "empty", "test")


def test_dtd_synthetic_style_masks_pair_by_stem(synth_root, tmp_path):
    cls = copy_class(synth_root / "woven", tmp_path / "Mesh_114")
    for mask in (cls / "ground_truth").rglob("*_mask.png"):
        mask.rename(mask.with_name(mask.name.replace("_mask", "")))
    samples = list_samples(cls, "test")
    assert all(s.mask is not None and s.mask.stem == s.path.stem for s in samples if s.label)


def test_check_class_reports_every_difference(synth_root):
    report = scan_class(synth_root / "carpet")
    assert report["counts"] == {"test/fold": 2, "test/good": 2, "test/hole": 2, "test/scratch": 2,
                                "test/stain": 2, "train/good": 4}  # fmt: skip
    expected = ClassLayout(5, 2, {"fold": 2, "hole": 2, "scratch": 2, "stain": 2, "color": 1}, (64, 64), "L")
    with pytest.raises(LayoutError) as err:
        check_class(synth_root / "carpet", expected)
    text = str(err.value)
    assert "train/good: 4 images, expected 5" in text
    assert "test/color: 0 images, expected 1" in text
    assert "image modes: found ['RGB'], expected ['L']" in text
    ok = ClassLayout(4, 2, {"fold": 2, "hole": 2, "scratch": 2, "stain": 2}, (64, 64), "RGB")
    assert check_class(synth_root / "carpet", ok)["n_defective"] == 8
