"""DRAEM (Zavrtanik et al., ICCV 2021) re-implemented from the spec ``baselines_simplenet_draem.md`` §2.

Pipeline for one class (what the CLI / Snakemake rule passes):

1. ``settings = DraemSettings.from_config(config["methods"]["draem"])``;
2. ``paths = source_paths(settings.anomaly_source, class_name=cls, dtd_root=<folder holding DTD's images/>,
   dataset_root=<folder of the class folders>)`` (``synthetic``: the other classes' ``train/good`` images,
   so the rule must depend on those classes being staged too);
3. ``train_draem(class_dir, paths, settings, out=<model file named by settings.model_hash(dataset, cls,
   seed)>, ckpt_dir=<folder outside the rule outputs>, seed=seed, device=device, dataset=dataset,
   class_name=cls)``;
4. ``run_draem(model_file, class_dir, RunSpec(run_name, dataset, cls, seed, resolution=...,
   fpr_limit=..., device=..., score_pool=settings.score_pool), out_result=..., out_maps=...)``.
"""

from .anomaly_generator import AnomalyRecipe, SimulatedSample, perlin_mask, recipe_for, simulate_anomaly
from .infer import image_scores, predict
from .loss import draem_loss, focal_loss, ssim_loss, ssim_map
from .model import DiscriminativeNet, ReconstructiveNet, build_networks
from .perlin import perlin_noise_2d
from .run import RunSpec, run_draem
from .settings import FORMAT, DraemSettings
from .sources import SourceBank, describe_sources, source_paths
from .train import TrainingStopped, load_draem_model, train_draem

__all__ = [
    "FORMAT",
    "AnomalyRecipe",
    "DiscriminativeNet",
    "DraemSettings",
    "ReconstructiveNet",
    "RunSpec",
    "SimulatedSample",
    "SourceBank",
    "TrainingStopped",
    "build_networks",
    "describe_sources",
    "draem_loss",
    "focal_loss",
    "image_scores",
    "load_draem_model",
    "perlin_mask",
    "perlin_noise_2d",
    "predict",
    "recipe_for",
    "run_draem",
    "simulate_anomaly",
    "source_paths",
    "ssim_loss",
    "ssim_map",
    "train_draem",
]
