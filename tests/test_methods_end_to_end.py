"""Each method end to end on a class whose answer is known, through its real run path (``texad run``'s
:func:`texad.methods.jobs.run_method`, hence :func:`texad.methods.run.run_class`).

The class (:mod:`end_to_end_oracles`): 8 training and 18 test images of the synthetic ``wood`` at 64 px, 12 of
them defective, with the defect-free version of every test image known. Only what a method learns is replaced,
through the seam where its trained model is loaded: by what a perfect model gives on this class (a reconstruction
equal to the clean image, the score of the clean image, a discriminator that knows the normal features). The rest
is the methods' own code: distances, fusion, normalisation, smoothing, pooling to the image score, the centre crop,
the evaluation grid and the metrics. So the maps must light up exactly where the masks are, and each test states
the image and pixel AUROC this reaches. The computation is deterministic (fixed images, no random weights that
matter), so each bound sits just below the value measured, and above what the same run measures with its map
flipped left-right, transposed or shifted by 4 px, its fusion or normalisation done wrongly, or its labels out
of order (each test's note gives those values; labels shuffled, the image AUROC falls to 0.67-0.82).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from end_to_end_oracles import CleanLookup, make_oracle_class
from scipy import ndimage as ndi
from settings_checks import cpu_runtime

from texad.config import validate_config
from texad.methods.base import RunKey
from texad.methods.jobs import method_settings, run_method
from texad.methods.run import load_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
RUN = RunKey("synthetic", "wood", 0, "default")


@pytest.fixture(scope="module")
def oc(tmp_path_factory):
    return make_oracle_class(tmp_path_factory.mktemp("e2e"), "wood", size=SIZE)


def _config(method: str, block: dict, resolution: int) -> dict:
    return validate_config({"run_name": "e2e", "device": "cpu", "image_size": SIZE,
                            "evaluation": {"resolution": resolution}, "methods": {method: block}},
                           partial=True)  # fmt: skip


def _run(method: str, config: dict, oc, tmp_path, models: dict) -> tuple[dict, dict]:
    """Run ``method`` as ``texad run`` does; (result, the maps file's arrays)."""
    result = run_method(method, config, RUN, class_dir=oc.class_dir, models=models,
                        out_result=tmp_path / "r.json", out_maps=tmp_path / "m.npz")  # fmt: skip
    with np.load(tmp_path / "m.npz") as z:
        saved = {k: z[k] for k in z.files}
    m = result["metrics"]
    assert m["n_images"] == oc.n_test and m["n_anomalous"] == oc.n_anomalous
    return result, saved


def _assert_detects(result: dict, *, image: float, pixel: float) -> None:
    """The run's image and pixel AUROC reach ``image`` and ``pixel``."""
    m = result["metrics"]
    got = (
        f"image AUROC {m['image_auroc']:.4f} (>= {image}?), pixel AUROC {m['pixel_auroc']:.4f} (>= {pixel}?)"
    )
    assert m["image_auroc"] >= image and m["pixel_auroc"] >= pixel, got


class _NoNetwork(torch.nn.Module):
    """The trained network's place: the oracle stands in for everything it computes, so it is never called."""

    def forward(self, *args):
        raise AssertionError("the oracle replaces the network; it must not be evaluated")


# --------------------------------------------------------------------------------------------- Method B
def _imperfect(clean01: torch.Tensor) -> torch.Tensor:
    """A near-perfect model's reconstruction: the clean image at 95% contrast (about 0.5), so that the normal
    training images have distances above 0 too and the fusion scale max D_f / max D_p is defined."""
    return 0.5 + 0.95 * (clean01 - 0.5)


def test_method_b_with_an_oracle_reconstruction(oc, tmp_path, monkeypatch):
    """Method B, its sampler replaced by an oracle reconstruction (the clean image at 95% contrast), with the real
    pretrained EfficientNet-Lite0 features, the default fusion at the training images' scale (``fusion_norm:
    train``), smoothing sigma 4 px and the maps resized to a 32 px grid.

    Values: the saved maps and scores equal the spec's formula computed here, A = D_f + v (max D_f / max D_p) D_p
    with the maxima over the training images' distances, Gaussian-smoothed, the score its maximum, the map resized
    bilinearly to the grid; the recorded fusion scale is that ratio. Detection: image AUROC >= 0.95 and pixel AUROC
    >= 0.9 (measured: 1.0 and 0.933; a map flipped left-right: 0.755, transposed: 0.765). A map shifted by 4 px
    (pixel AUROC 0.924) or fused with the terms swapped, D_p + v s D_f, or at the inverse scale fails the values.
    """
    from texad.backbones import load_backbone
    from texad.diffusion.schedules import NoiseSchedule
    from texad.methods.method_b import detector as mb
    from texad.methods.method_b.anomaly_map import feature_distance, pixel_distance
    from texad.methods.method_b.settings import MAP_LAYERS, ddpm_train_settings

    config = _config("method_b", {"diffusion": {"preset": "tiny"},
                                  "inference": {"feature_backbone": "efficientnet_lite0"}}, 32)  # fmt: skip
    settings = method_settings(config, "method_b", RUN.class_name)
    inf = settings.inference
    lookup = CleanLookup(oc, RUN, SIZE)

    def load_model(path, device):
        ddpm = ddpm_train_settings(settings, RUN.dataset, RUN.class_name, RUN.seed, RUN.holdout)
        meta = {"model_hash": ddpm.model_hash(), "settings": {"image_size": SIZE}, "train": {}, "n_params": 0}
        return _NoNetwork(), NoiseSchedule.linear(), meta

    def reconstruct(eps_model, schedule, x, settings, *, seeds, target=None):
        return _imperfect(lookup.seeds(seeds)).to(x) * 2 - 1, {"nfe_per_image": 1, "timesteps": []}

    monkeypatch.setattr(mb, "load_diffusion_model", load_model)
    monkeypatch.setattr(mb, "reconstruct", reconstruct)
    result, saved = _run("method_b", config, oc, tmp_path, {"model": tmp_path / "ddpm.pt"})
    _assert_detects(result, image=0.95, pixel=0.9)

    # the spec's maps, computed here from the same reconstructions with the (separately tested) distances
    extractor = load_backbone(
        "efficientnet_lite0", weights="efficientnet_lite0", cache_dir=None, layers=MAP_LAYERS
    )

    def distances(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = load_images(oc.class_dir, split, SIZE) * 2 - 1
        rec = _imperfect(lookup.clean_images(split, SIZE)) * 2 - 1
        d_f = feature_distance(extractor, x, rec, MAP_LAYERS, (SIZE, SIZE), inf.feature_size)
        return pixel_distance(x, rec).double(), d_f.double()

    (dp_train, df_train), (dp, df) = distances("train"), distances("test")
    scale = float(df_train.max() / dp_train.max())
    assert float(dp_train.max()) > 0.01  # the pixel term is in the fusion
    fused = (df + inf.v * scale * dp).numpy()
    smooth = ndi.gaussian_filter(fused, sigma=(0, inf.smoothing_sigma, inf.smoothing_sigma), mode="reflect")
    on_grid = F.interpolate(torch.from_numpy(smooth)[:, None], size=(32, 32), mode="bilinear",
                            align_corners=False)[:, 0].numpy()  # fmt: skip
    assert result["extra"]["fusion_scale"] == pytest.approx(scale, rel=1e-4), "fusion scale"
    np.testing.assert_allclose(saved["scores"], smooth.reshape(len(smooth), -1).max(axis=1), rtol=1e-4,
                               err_msg="scores != max of the smoothed D_f + v s D_p")  # fmt: skip
    np.testing.assert_allclose(saved["maps"], on_grid, rtol=0, atol=2e-3 * float(np.abs(on_grid).max()),
                               err_msg="maps != smoothed D_f + v s D_p on the grid")  # fmt: skip


# --------------------------------------------------------------------------------------------- Method A
class _OracleScore:
    """The exact score of a data set holding one image, ``target`` (data units of a VE model: [0, 1]):
    -(x - target) / sigma(t)^2. ``target`` is set per batch: each image's clean version with a model's errors
    added (:func:`_model_error`)."""

    def __init__(self, sde):
        self.sde, self.target = sde, None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        std = self.sde.std(t).to(x.dtype).view(-1, 1, 1, 1)
        return -(x - self.target.to(x)) / std**2


def _model_error(
    seed: int, size: int, frame: float = 0.25, width: int = 4, noise: float = 0.005
) -> torch.Tensor:
    """A model's error on one image (3, S, S): the same ``frame`` on a border ``width`` px wide in every image (a
    fixed-position effect), plus Gaussian noise of std ``noise`` drawn from the image's seed (so that the training
    images' maps vary, as a real model's do, and the normalised maps stay finite)."""
    error = torch.full((3, size, size), frame)
    error[:, width:-width, width:-width] = 0.0
    return error + noise * torch.randn(3, size, size, generator=torch.Generator().manual_seed(int(seed)))


def test_method_a_with_an_oracle_score(oc, tmp_path, monkeypatch):
    """Method A with the defaults (score residual, 4 scales x 5 steps, 2 draws, ancestral steps, ``train_stats``
    normalisation), its score model replaced by the exact score of each image's clean version plus a fixed error
    on a 4 px border, the same for every image (a model's position effect, which the per-pixel training statistics
    must remove: without them the border outscores most defects). The maps go to a 32 px grid.

    The score residual of the exact score is |target - x| / sigma per level, so a normal pixel's map is distributed
    as the training images' are and the normalised map is large at the defects only: image AUROC >= 0.95 and pixel
    AUROC >= 0.99 (measured: 1.0 and 0.9924; the map shifted by 4 px: 0.985, flipped left-right: 0.671,
    transposed: 0.792; without the normalisation: image AUROC 0.528, pixel 0.594)."""
    from texad.diffusion.sde import VESDE
    from texad.methods.method_a import detector as ma
    from texad.methods.method_a.infer import ScoreModel
    from texad.methods.method_a.settings import score_train_settings

    block = {"network": {"preset": "tiny"}, "sde": {"sigma_max": 1.0}, "ablation": {"speed_batches": []}}
    config = _config("method_a", block, 32)
    settings = method_settings(config, "method_a", RUN.class_name)
    assert settings.inference.normalise == "train_stats" and settings.inference.metric == "score_residual"
    lookup = CleanLookup(oc, RUN, SIZE)
    sde = VESDE(settings.sde.sigma_min, settings.sde.sigma_max, settings.sde.n_steps)
    oracle = _OracleScore(sde)

    def load_model(path, kind, device, n_steps, prepare=None):
        assert kind == "own"
        model_hash = score_train_settings(
            settings, RUN.dataset, RUN.class_name, RUN.seed, RUN.holdout
        ).model_hash()
        meta = {"model_hash": model_hash, "settings": {"image_size": SIZE}, "train": {"seconds": None}}
        return ScoreModel(sde, oracle, 1.0, 0.0, "own"), meta

    real_raw_maps = ma.raw_maps

    def raw_maps(model, x01, inference, *, seeds, sigma_end):
        oracle.target = lookup.seeds(seeds) + torch.stack([_model_error(s, SIZE) for s in seeds])
        return real_raw_maps(model, x01, inference, seeds=seeds, sigma_end=sigma_end)

    monkeypatch.setattr(ma, "load_score_model_any", load_model)
    monkeypatch.setattr(ma, "raw_maps", raw_maps)
    result, _ = _run("method_a", config, oc, tmp_path, {"model": tmp_path / "score.pt"})
    _assert_detects(result, image=0.95, pixel=0.99)


# -------------------------------------------------------------------------------------------------- DRAEM
class _OracleReconstruction(torch.nn.Module):
    """DRAEM's reconstructive network, perfect: each image's clean version."""

    def __init__(self, lookup: CleanLookup):
        super().__init__()
        self.lookup = lookup

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.lookup.content(images)


class _DifferenceDiscriminator(torch.nn.Module):
    """DRAEM's discriminative network on (reconstruction, image): logits (normal, anomalous) whose anomalous
    channel grows with |reconstruction - image| (mean over RGB): softmax_1 = sigmoid(8 d - 2)."""

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        d = (pair[:, :3] - pair[:, 3:]).abs().mean(dim=1, keepdim=True)
        return torch.cat([torch.zeros_like(d), 8.0 * d - 2.0], dim=1)


def test_draem_with_an_oracle_reconstruction(oc, tmp_path, monkeypatch):
    """DRAEM as ``texad run draem`` runs it (a model file trained for one epoch, read by its loader), its two
    networks replaced after loading: the reconstruction is the clean image and the discriminator's anomalous
    channel a monotone function of the difference. The map is the softmax's anomalous channel, the image score the
    maximum of its 5 x 5 mean, the map resized to a 32 px grid: image AUROC >= 0.95 and pixel AUROC >= 0.99
    (measured: 1.0 and 0.9998; the map shifted by 4 px: 0.822, flipped left-right: 0.572, transposed: 0.614)."""
    from texad.data.synth import generate_class
    from texad.methods import draem
    from texad.methods.draem import detector as dd

    block = {"epochs": 1, "batch_size": 4, "image_size": SIZE, "recon_base_width": 2, "disc_base_width": 2,
             "anomaly_source": "synthetic", "score_pool": 5}  # fmt: skip
    config = _config("draem", block, 32)
    settings = method_settings(config, "draem", RUN.class_name)
    sources = tmp_path / "sources"  # DRAEM's anomaly sources: another class's normal images
    generate_class(sources, "carpet", image_size=SIZE, n_train=2, n_test_good=1, n_test_per_defect=1)
    draem.train("draem", settings, RUN, cpu_runtime(32), class_dir=oc.class_dir, out=tmp_path / "draem.pt",
                ckpt_dir=tmp_path / "ck", anomaly_root=sources)  # fmt: skip
    lookup = CleanLookup(oc, RUN, SIZE)
    real_load = dd.load_draem_model

    def load_model(path, device):
        _, _, meta = real_load(path, device)
        return _OracleReconstruction(lookup), _DifferenceDiscriminator(), meta

    monkeypatch.setattr(dd, "load_draem_model", load_model)
    result, _ = _run("draem", config, oc, tmp_path, {"model": tmp_path / "draem.pt"})
    _assert_detects(result, image=0.95, pixel=0.99)


# ---------------------------------------------------------------------------------------------- SimpleNet
class _NearestNormalFeature(torch.nn.Module):
    """SimpleNet's discriminator, knowing the normal features: D(f) = -(distance of f to the nearest of
    ``bank``), so the patch score -D is that distance."""

    def __init__(self, bank: torch.Tensor):
        super().__init__()
        self.bank = bank

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(f.double(), self.bank.double()).amin(dim=1).to(f.dtype)


def test_simplenet_with_an_oracle_discriminator(oc, tmp_path, monkeypatch):
    """SimpleNet as ``texad run simplenet`` runs it (a model file trained for one meta epoch, read by its loader,
    with the real EfficientNet-Lite0 features and their aggregation), under the official resize-then-centre-crop
    input (64 -> 56 px; the masks cropped alike on the 32 px grid). After loading, the adaptor is the identity and
    the discriminator scores a feature by its distance to the nearest feature of the class's clean images (the
    training images and the clean versions of the test images): a normal patch scores about 0, a patch that sees a
    defect above it. The map is the patch grid upsampled and smoothed, the score its largest patch: image AUROC
    >= 0.95 and pixel AUROC >= 0.95 (measured: 1.0 and 0.9567: the map is as coarse as the 7 x 7 patch grid;
    the map shifted by 4 px, half a patch: 0.948, the masks cropped at the corner instead of the centre: 0.948,
    the map flipped left-right: 0.763, the patch grid transposed: 0.809)."""
    from texad.evaluation.protocol import center_crop
    from texad.methods import simplenet
    from texad.methods.simplenet import detector as sd

    block = {"backbone": "efficientnet_lite0", "pretrain_embed_dim": 64, "target_embed_dim": 64, "dsc_hidden": 64,
             "meta_epochs": 1, "gan_epochs": 1, "batch_size": 4, "resize": SIZE, "image_size": 56,
             "center_crop": True}  # fmt: skip
    config = _config("simplenet", block, 32)
    settings = method_settings(config, "simplenet", RUN.class_name)
    simplenet.train("simplenet", settings, RUN, cpu_runtime(32), class_dir=oc.class_dir,
                    out=tmp_path / "simplenet.pt", ckpt_dir=tmp_path / "ck")  # fmt: skip
    lookup = CleanLookup(oc, RUN, SIZE)
    clean = torch.cat([lookup.clean_images(split, SIZE) for split in ("train", "test")])
    real_load = sd.load_simplenet

    def load_model(path, **kwargs):
        model, trained, meta = real_load(path, **kwargs)
        with torch.no_grad():
            feats = model.aggregator(center_crop(clean, (56, 56)).contiguous())
        model.adaptor = torch.nn.Identity()
        model.discriminator = _NearestNormalFeature(feats.reshape(-1, feats.shape[-1]))
        return model, trained, meta

    monkeypatch.setattr(sd, "load_simplenet", load_model)
    result, _ = _run("simplenet", config, oc, tmp_path, {"model": tmp_path / "simplenet.pt"})
    assert result["evaluation"]["protocol"]["crop"] == {"from": SIZE, "to": 56}
    _assert_detects(result, image=0.95, pixel=0.95)
