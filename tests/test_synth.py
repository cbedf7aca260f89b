"""Tests of the embedded synthetic texture-defect generator (texad.data.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from texad.data import synth
from texad.data.synth import (
    DEFECT_TYPES,
    SYNTH_CLASSES,
    generate_class,
    generate_dataset,
    render_defect,
    render_normal,
    sample_rng,
)

SIZE = 64
SMALL = {"image_size": SIZE, "n_train": 3, "n_test_good": 2, "n_test_per_defect": 2}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _gray(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) if img.ndim == 2 else img.astype(np.float64).mean(-1)


def _as3(img: np.ndarray) -> np.ndarray:
    return img[..., None] if img.ndim == 2 else img


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for root, seed in ((a, 3), (b, 3), (c, 4)):
        generate_dataset(root, ["woven", "carpet"], seed=seed, **SMALL)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert len(fa) == 2 * (3 + 2 + 4 * 2 * 2)
    assert fa == fb
    assert fa.keys() == fc.keys()
    # every image differs under a different seed
    changed = [k for k in fa if not k.endswith("_mask.png") and fa[k] != fc[k]]
    assert len(changed) == 2 * (3 + 2 + 4 * 2)


def test_images_do_not_depend_on_how_many_are_generated(tmp_path):
    generate_class(tmp_path / "few", "wood", image_size=SIZE, n_train=2, n_test_good=1, n_test_per_defect=1)
    generate_class(tmp_path / "many", "wood", image_size=SIZE, n_train=5, n_test_good=3, n_test_per_defect=3)
    few = _files(tmp_path / "few")
    many = _files(tmp_path / "many")
    assert few and all(many[k] == v for k, v in few.items())


def test_splits_and_classes_get_different_images():
    a = render_normal("carpet", SIZE, sample_rng(0, "carpet", "train/good", 0))
    b = render_normal("carpet", SIZE, sample_rng(0, "carpet", "test/good", 0))
    c = render_normal("carpet", SIZE, sample_rng(0, "carpet", "train/good", 1))
    d = render_normal("carpet", SIZE, sample_rng(0, "carpet", "train/good", 0))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, d)


# --------------------------------------------------------------------------- layout


@pytest.mark.parametrize("name", ["woven", "wood"])
def test_layout_counts_and_masks_match_manifest(tmp_path, name):
    man = generate_class(tmp_path, name, seed=1, **SMALL)
    assert man["class"] == name and man["image_size"] == SIZE and man["seed"] == 1
    assert man["mode"] == ("L" if name == "woven" else "RGB")
    expected = {"train/good": 3, "test/good": 2, **{f"test/{d}": 2 for d in DEFECT_TYPES}}
    assert man["counts"] == expected
    assert man["masks"] == 8
    base = tmp_path / name
    for split, count in expected.items():
        files = sorted((base / split).glob("*.png"))
        assert [f.name for f in files] == [f"{i:03d}.png" for i in range(count)]
        for f in files:
            with Image.open(f) as im:
                assert im.mode == man["mode"] and im.size == (SIZE, SIZE)
                assert not im.info.get("text") and "dpi" not in im.info  # no metadata chunks
    masks = sorted((base / "ground_truth").rglob("*.png"))
    assert len(masks) == man["masks"]
    for d in DEFECT_TYPES:
        for i in range(2):
            m = base / "ground_truth" / d / f"{i:03d}_mask.png"
            with Image.open(m) as im:
                assert im.mode == "L" and im.size == (SIZE, SIZE)
                arr = np.asarray(im)
            assert set(np.unique(arr)) == {0, 255}
    assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *DEFECT_TYPES])


def test_saved_masks_are_exactly_the_changed_pixels(tmp_path):
    generate_class(tmp_path, "carpet", seed=5, **SMALL)
    for d in DEFECT_TYPES:
        for i in range(2):
            clean = render_normal("carpet", SIZE, sample_rng(5, "carpet", f"test/{d}", i))
            img = np.asarray(Image.open(tmp_path / "carpet" / "test" / d / f"{i:03d}.png"))
            mask = np.asarray(Image.open(tmp_path / "carpet" / "ground_truth" / d / f"{i:03d}_mask.png")) > 0
            assert np.array_equal((img != clean).any(-1), mask)


def test_subset_of_defects_and_zero_counts(tmp_path):
    man = generate_class(
        tmp_path, "tile", image_size=SIZE, n_train=1, n_test_good=0, n_test_per_defect=1, defects=["hole"]
    )
    assert man["counts"] == {"train/good": 1, "test/good": 0, "test/hole": 1}
    assert man["masks"] == 1
    assert not (tmp_path / "tile" / "test" / "scratch").exists()
    assert (tmp_path / "tile" / "ground_truth" / "hole" / "000_mask.png").is_file()


# --------------------------------------------------------------------------- defects

N_SAMPLES = 8


def _defect_samples(name: str, defect: str, size: int = SIZE, n: int = N_SAMPLES):
    for i in range(n):
        rng = sample_rng(11, name, f"test/{defect}", i)
        clean = render_normal(name, size, rng)
        bad, mask = render_defect(name, clean, defect, rng)
        yield clean, bad, mask


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defects_are_exact_visible_varied_and_nontrivial(defect):
    for name in SYNTH_CLASSES:
        strengths = []
        for clean, bad, mask in _defect_samples(name, defect):
            assert bad.dtype == np.uint8 and bad.shape == clean.shape
            assert mask.dtype == bool and mask.shape == clean.shape[:2]
            c3, b3 = _as3(clean).astype(np.int16), _as3(bad).astype(np.int16)
            # exact: nothing outside the mask changed, every mask pixel changed
            assert np.array_equal(b3[~mask], c3[~mask])
            assert np.array_equal((b3 != c3).any(-1), mask)
            area = mask.mean()
            assert 0.002 < area < 0.25, (name, defect, area)
            diff = np.abs(b3 - c3).mean(-1)[mask].mean()
            assert diff > 6.0, (name, defect, diff)  # visible, not a 1-grey-level change
            strengths.append(diff)
            # not an axis-aligned filled rectangle, not a constant patch
            ys, xs = np.nonzero(mask)
            bbox = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
            assert mask.sum() / bbox < 0.9, (name, defect)
            assert b3[mask].std() > 3.0, (name, defect)
            # a meaningful region: its largest connected part holds most of the mask
            lab, k = ndi.label(mask, structure=np.ones((3, 3)))
            assert np.bincount(lab.ravel())[1:].max() >= 0.5 * mask.sum()
        strengths = np.array(strengths)
        # contrast is drawn per sample: some subtle, some strong
        assert strengths.std() / strengths.mean() > 0.12, (name, defect, strengths)
        assert strengths.max() > 1.5 * strengths.min(), (name, defect, strengths)


def test_defect_visibility_exceeds_normal_variation():
    """The in-mask change is well above what re-rendering the same image would change (nothing)
    and above the sensor-noise level of normal images (pixel-to-neighbour noise)."""
    for name in SYNTH_CLASSES:
        clean = render_normal(name, SIZE, sample_rng(0, name, "train/good", 0))
        g = _gray(clean)
        noise = np.abs(g - ndi.median_filter(g, 3)).mean()  # fine-scale texture + sensor noise
        for d in DEFECT_TYPES:
            vals = [np.abs(_gray(b) - _gray(c))[m].mean() for c, b, m in _defect_samples(name, d, n=4)]
            assert np.median(vals) > 1.0 * noise, (name, d, vals, noise)


def test_render_defect_accepts_and_returns_grayscale():
    clean = render_normal("woven", SIZE, sample_rng(0, "woven", "x", 0))
    assert clean.ndim == 2
    bad, mask = render_defect("woven", clean, "stain", sample_rng(0, "woven", "x", 1))
    assert bad.ndim == 2 and mask.any()


def test_scratches_are_thin():
    for name in ("woven", "carpet"):
        for _, _, mask in _defect_samples(name, "scratch", n=4):
            # thin: eroding by 2 px removes (almost) everything, unlike a blob
            assert ndi.binary_erosion(mask, iterations=2).sum() < 0.1 * mask.sum()
        for _, _, mask in _defect_samples(name, "hole", n=4):
            assert ndi.binary_erosion(mask, iterations=1).sum() > 0.2 * mask.sum()


# --------------------------------------------------------------------------- texture families


def _fft_peak(img: np.ndarray) -> float:
    g = _gray(img)
    g = g - g.mean()
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    n = g.shape[0]
    yy, xx = np.mgrid[:n, :n] - n // 2
    ring = np.hypot(yy, xx) >= 6  # away from DC / illumination / mottling
    return float(p[ring].max() / np.median(p[ring]))


def _coherence(img: np.ndarray) -> float:
    g = _gray(img)
    gx, gy = ndi.sobel(g, 1), ndi.sobel(g, 0)
    jxx, jyy, jxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    return float(np.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy))


def _normals(name: str, n: int = 5, size: int = SIZE):
    return [render_normal(name, size, sample_rng(0, name, "train/good", i)) for i in range(n)]


def test_class_specs():
    assert set(SYNTH_CLASSES) >= {"woven", "carpet", "wood"}
    assert DEFECT_TYPES == ("scratch", "hole", "stain", "fold")
    assert not SYNTH_CLASSES["woven"].color and SYNTH_CLASSES["woven"].mode == "L"
    assert SYNTH_CLASSES["carpet"].color and SYNTH_CLASSES["wood"].color
    for spec in SYNTH_CLASSES.values():
        assert spec.family and spec.description


def test_woven_is_grayscale_and_periodic():
    woven = _normals("woven", size=96)
    carpet = _normals("carpet", size=96)
    assert all(w.ndim == 2 for w in woven)
    # a strong spectral line (the weave period) far above the median power, unlike carpet
    pw = min(_fft_peak(w) for w in woven)
    pc = max(_fft_peak(c) for c in carpet)
    assert pw > 5 * pc, (pw, pc)
    # the peak sits at the weave frequency (about 11 periods per image, whatever the size)
    g = _gray(woven[0]) - _gray(woven[0]).mean()
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    yy, xx = np.mgrid[:96, :96] - 48
    p[np.hypot(yy, xx) < 6] = 0
    py, px = np.unravel_index(np.argmax(p), p.shape)
    assert 8 <= np.hypot(py - 48, px - 48) <= 15


def test_wood_is_anisotropic():
    cw = min(_coherence(w) for w in _normals("wood"))
    cc = max(_coherence(c) for c in _normals("carpet"))
    assert cw > 0.5 and cw > 4 * cc, (cw, cc)


@pytest.mark.parametrize("name", [n for n, s in SYNTH_CLASSES.items() if s.color])
def test_colour_classes_have_colour(name):
    for img in _normals(name, 3):
        assert img.ndim == 3 and img.shape[-1] == 3
        f = img.astype(np.float64)
        assert np.abs(f[..., 0] - f[..., 2]).mean() > 5
        # chroma varies spatially (not a gray image times a constant colour)
        ratio = (f[..., 0] + 1) / (f[..., 2] + 1)
        assert ratio.std() > 0.02


@pytest.mark.parametrize("name", list(SYNTH_CLASSES))
def test_normals_vary_but_share_statistics(name):
    imgs = [i.astype(np.float64) for i in _normals(name, 6)]
    for a in range(len(imgs)):
        for b in range(a + 1, len(imgs)):
            assert np.abs(imgs[a] - imgs[b]).mean() > 3
    means = np.array([i.mean() for i in imgs])
    stds = np.array([i.std() for i in imgs])
    assert means.std() / means.mean() < 0.1
    assert stds.max() / stds.min() < 1.6
    # and the classes are different materials
    others = [n for n in SYNTH_CLASSES if n != name]
    own = np.array([means.mean(), stds.mean(), _coherence(imgs[0]), _fft_peak(imgs[0])])
    for o in others:
        img = _normals(o, 1)[0]
        theirs = np.array([img.mean(), img.std(), _coherence(img), _fft_peak(img)])
        assert not np.allclose(own, theirs, rtol=0.1)


def test_larger_size_works():
    for name in SYNTH_CLASSES:
        img = render_normal(name, 256, sample_rng(0, name, "train/good", 0))
        assert img.shape[:2] == (256, 256) and img.dtype == np.uint8
        bad, mask = render_defect(name, img, "fold", sample_rng(0, name, "test/fold", 0))
        assert mask.shape == (256, 256) and 0.002 < mask.mean() < 0.25


def test_seeding_does_not_depend_on_python_hash_randomisation():
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import hashlib; from texad.data.synth import render_normal, sample_rng;"
        "print(hashlib.sha256(render_normal('carpet', 32, sample_rng(7, 'carpet', 'test/good', 2)).tobytes()).hexdigest())"
    )
    src = str(Path(synth.__file__).resolve().parents[2])
    digests = set()
    for hs in ("1", "2"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": hs,
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        }
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    here = hashlib.sha256(
        render_normal("carpet", 32, sample_rng(7, "carpet", "test/good", 2)).tobytes()
    ).hexdigest()
    assert digests == {here}


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"name": "marble"}, "name"),
        ({"image_size": 16}, "image_size"),
        ({"n_train": -1}, "n_train"),
        ({"n_test_good": -2}, "n_test_good"),
        ({"n_test_per_defect": -1}, "n_test_per_defect"),
        ({"defects": ["scratch", "crack"]}, "defects"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, word):
    args = {"name": "woven", "image_size": SIZE, "n_train": 1, "n_test_good": 1, "n_test_per_defect": 1}
    args.update(kwargs)
    name = args.pop("name")
    with pytest.raises(ValueError, match=word):
        generate_class(tmp_path, name, **args)
    assert not (tmp_path / name).exists()  # nothing written


def test_bad_arguments_to_renderers_and_dataset(tmp_path):
    rng = sample_rng(0, "woven", "x", 0)
    with pytest.raises(ValueError, match="name"):
        render_normal("nope", SIZE, rng)
    with pytest.raises(ValueError, match="image_size"):
        render_normal("woven", 31, rng)
    clean = render_normal("woven", SIZE, rng)
    with pytest.raises(ValueError, match="defect"):
        render_defect("woven", clean, "crack", rng)
    with pytest.raises(ValueError, match="name"):
        generate_dataset(tmp_path, ["woven", "nope"], image_size=SIZE)
    assert not any(tmp_path.iterdir())  # validated before anything was written


def test_demo_generation_is_fast(tmp_path):
    import time

    t0 = time.perf_counter()
    generate_class(tmp_path, "wood", image_size=128, n_train=10, n_test_good=2, n_test_per_defect=2)
    elapsed = time.perf_counter() - t0
    # 18 images; the full demo (3 classes x 70 images) is ~4 s on one core
    assert elapsed < 10, elapsed
    assert synth.DEFAULT_CLASSES == ("woven", "carpet", "wood")
