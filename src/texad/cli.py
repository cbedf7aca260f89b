"""The ``texad`` command: argument parsing only; the work is done by the package modules.

Snakemake rules call these subcommands with explicit arguments. Every error that a user can fix is
reported as one ``texad: error: ...`` message naming the file or key, with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from texad import __version__
from texad.accel import accel_from_args, add_accel_args
from texad.predict.cli import add_parsers as add_predict_parsers
from texad.report.figures_cli import add_parsers as add_figure_parsers
from texad.results.paper_tables_cli import add_parsers as add_paper_table_parsers


def _write_json(path: Path, payload: dict) -> None:
    from texad.data.download import write_marker  # atomic JSON writer

    write_marker(path, payload)


def _fill_from_config(values: dict, config_path: Path | None, dataset: str) -> tuple[dict, dict]:
    """Explicit flags (not None) win; unset ones come from ``datasets.<dataset>`` of a validated config.

    Returns the filled values and the dataset's config block (empty without a config).
    """
    if not config_path:
        return values, {}
    from texad.config import load_config

    block = load_config(config_path)["datasets"].get(dataset, {})
    return {k: block.get(k) if v is None else v for k, v in values.items()}, block


def cmd_validate_config(args) -> int:
    from texad.config import load_config

    for path in args.configs:
        config = load_config(path)
        if args.print_defaults:
            json.dump(config, sys.stdout, indent=2)
            print()
        else:
            print(f"{path}: valid")
    return 0


def cmd_synth(args) -> int:
    from texad.data.synth import stage_class

    settings = {
        "image_size": args.image_size,
        "n_train": args.n_train,
        "n_test_good": args.n_test_good,
        "n_test_per_defect": args.n_test_per_defect,
        "seed": args.seed,
    }
    settings, _ = _fill_from_config(settings, args.config, "synthetic")
    settings = {k: v for k, v in settings.items() if v is not None}
    marker = args.marker or Path(args.out) / f"{args.class_name}.manifest.json"
    manifest = stage_class(Path(args.out), args.class_name, marker=marker, **settings)
    print(f"synthetic class {args.class_name}: {manifest['counts']} -> {Path(args.out) / args.class_name}")
    return 0


def cmd_download(args) -> int:
    from texad.data.stage import stage_dataset

    # Explicit flags win; unset ones come from datasets.<dataset> of --config, then from the defaults.
    source = {
        "url": args.url,
        "archive": args.archive,
        "path": args.path,
        "accept_license": True if args.accept_license else None,
        "keep_archive": False if args.no_keep_archive else None,
    }
    source, ds_cfg = _fill_from_config(source, args.config, args.dataset)
    if args.classes is None:
        args.classes = ds_cfg.get("classes")
    if source["keep_archive"] is None:
        source["keep_archive"] = True
    stage_dataset(
        args.dataset,
        root=Path(args.root),
        cache=Path(args.cache),
        marker=Path(args.marker),
        classes=args.classes,
        url=source["url"],
        archive=Path(source["archive"]) if source["archive"] else None,
        path=Path(source["path"]) if source["path"] else None,
        accept_license=bool(source["accept_license"]),
        keep_archive=bool(source["keep_archive"]),
    )
    print(f"{args.dataset}: staged, marker {args.marker}")
    return 0


def cmd_check_class(args) -> int:
    from texad.data.catalog import get_dataset
    from texad.data.download import read_marker
    from texad.data.layout import check_class, scan_class

    class_dir = Path(args.class_dir)
    if args.dataset == "synthetic":
        manifest = read_marker(Path(args.manifest)) if args.manifest else None
        if manifest is None:
            raise FileNotFoundError(f"synthetic manifest {args.manifest} is missing: run `texad synth` first")
        report = check_class(class_dir, {"counts": {k: v for k, v in manifest["counts"].items() if v},
                                         "modes": {manifest["mode"]: None}})  # fmt: skip
    else:
        expected = get_dataset(args.dataset).expected.get(class_dir.name)
        report = check_class(class_dir, expected) if expected else scan_class(class_dir)
    report["dataset"] = args.dataset
    _write_json(Path(args.out), report)
    print(f"{args.dataset}/{class_dir.name}: {report['n_train']} train, {report['n_test']} test "
          f"({report['n_defective']} defective) - layout ok")  # fmt: skip
    return 0


def cmd_contact_sheet(args) -> int:
    from texad.report.contact_sheet import make_contact_sheet

    make_contact_sheet(Path(args.class_dir), Path(args.out), n_normal=args.n_normal, per_defect=args.per_defect,
                       title=args.title)  # fmt: skip
    return 0


def cmd_aggregate(args) -> int:
    from texad.results.aggregate import collect, write_tables

    df = collect([Path(p) for p in args.results])
    written = write_tables(df, Path(args.out_dir), metrics=tuple(args.metrics))
    for path in written:
        print(path)
    return 0


def cmd_ablation_table(args) -> int:
    from texad.results.ablation import write_ablation_tables
    from texad.results.aggregate import collect

    for path in write_ablation_tables(
        collect([Path(p) for p in args.results]), args.method, Path(args.out_dir)
    ):
        print(path)
    return 0


def cmd_table_html(args) -> int:
    from texad.report.html_tables import write_html_table

    if len(args.markdown) != len(args.out):
        raise ValueError(f"table-html: {len(args.markdown)} --markdown files but {len(args.out)} --out files")
    for md, out in zip(args.markdown, args.out, strict=True):
        write_html_table(md, out)
    print(f"wrote {len(args.out)} HTML table(s)")
    return 0


def cmd_stage_weights(args) -> int:
    from texad.backbones.weights import stage_weights

    path = stage_weights(args.name, Path(args.cache), source=args.source, url=args.url)
    print(f"{args.name}: verified weights at {path}")
    return 0


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when present; asking for CUDA on a machine without it is a clear error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but torch sees no CUDA device; set device: cpu (or auto)"
        )
    return requested


def _diffusion_train_settings(args):
    """The model identity to train: Method B's DDPM from the explicit flags, or (``--kind score``) Method A's
    score model from the ``methods.method_a`` block in ``--settings``."""
    from texad.diffusion.training import DiffusionTrainSettings

    if args.kind == "score":
        from texad.methods.score_tscales.run import MethodASettings

        if not args.settings:
            raise ValueError(
                "train-diffusion --kind score needs --settings (the methods.method_a block as JSON)"
            )
        block = MethodASettings.from_config(_settings_json(args.settings, "method_a"))
        return block.train_settings(args.dataset, args.class_name, args.image_size, args.seed)
    if args.epochs is None:
        raise ValueError("train-diffusion --kind ddpm needs --epochs")
    return DiffusionTrainSettings(
        dataset=args.dataset,
        class_name=args.class_name,
        preset=args.preset,
        image_size=args.image_size,
        timesteps=args.timesteps,
        beta_start=args.beta_start,
        beta_end=args.beta_end,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        ema=args.ema,
        grad_clip=args.grad_clip,
        seed=args.seed,
        t_max=args.t_max,
    )


def cmd_train_diffusion(args) -> int:
    from texad.diffusion.training import train_diffusion

    settings = _diffusion_train_settings(args)
    _check_expected_hash(settings.model_hash(), args.expect_hash)
    summary = train_diffusion(
        Path(args.class_dir),
        Path(args.out),
        Path(args.ckpt_dir),
        settings,
        device=resolve_device(args.device),
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        num_workers=args.workers,
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "epoch_losses"}))
    return 0


def _pretrained_weights(backbone: str) -> str:
    from texad.backbones.features import BACKBONES

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[backbone]


def cmd_adapt_features(args) -> int:
    import torch

    from texad.backbones.features import load_backbone
    from texad.diffusion.training import load_diffusion_model, load_train_images, require_trained_level
    from texad.methods.conditioned_blur.domain_adaptation import (
        ADAPTATION_LAYERS,
        AdaptationSettings,
        adapt_features,
    )

    device = resolve_device(args.device)
    torch.set_num_threads(max(1, args.threads))
    model, schedule, meta = load_diffusion_model(Path(args.model), device=device)
    require_trained_level(meta, args.t_start, f"the feature adaptation of {Path(args.class_dir).name}")
    schedule = schedule.to(device)
    images = load_train_images(Path(args.class_dir), int(meta["settings"]["image_size"])).to(device)
    extractor = load_backbone(
        args.backbone,
        weights=_pretrained_weights(args.backbone),
        cache_dir=Path(args.weights_cache) if args.weights_cache else None,
        layers=ADAPTATION_LAYERS,
    ).to(device)
    settings = AdaptationSettings(
        epochs=args.epochs, w=args.w, lam=args.lam, lr=args.lr, batch_size=args.batch_size,
        t_start=args.t_start, skip=args.skip, eta=args.eta, seed=args.seed, feature_size=args.feature_size,
    )  # fmt: skip
    got = settings.identity_hash(meta["model_hash"], args.backbone, _pretrained_weights(args.backbone))
    if args.expect_hash and got != args.expect_hash:
        raise ValueError(
            f"the adaptation settings hash to {got}, but the requested file is for {args.expect_hash}: "
            "the config changed while the workflow was planned; run snakemake again"
        )
    summary = adapt_features(
        lambda x_t, t: model(x_t, t),
        schedule,
        extractor,
        images,
        settings,
        model_hash=meta["model_hash"],
        out_path=Path(args.out),
        ckpt_dir=Path(args.ckpt_dir),
        class_tag=f"{meta['settings']['dataset']}/{meta['settings']['class_name']}",
    )
    print(json.dumps(summary))
    return 0


def _settings_json(text: str, what: str) -> dict:
    try:
        block = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--settings for {what} is not JSON ({exc}); pass the methods.{what} block") from exc
    if not isinstance(block, dict):
        raise ValueError(f"--settings for {what} must be a JSON object (the methods.{what} block)")
    return block


def _simplenet_run(args):
    from texad.methods.simplenet import RunSpec, SimpleNetSettings

    settings = SimpleNetSettings.from_config(_settings_json(args.settings, "simplenet"))
    spec = RunSpec(
        run_name=args.run_name,
        dataset=args.dataset,
        class_name=args.class_name,
        seed=args.seed,
        backbone_weights=_pretrained_weights(settings.backbone),
        weights_cache=Path(args.weights_cache) if args.weights_cache else None,
        variant=args.variant,
        resolution=args.resolution if args.resolution == "native" else int(args.resolution),
        fpr_limit=args.fpr_limit,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
    )
    return spec, settings


def _check_expected_hash(got: str, expected: str | None) -> None:
    if expected and got != expected:
        raise ValueError(
            f"the settings hash to {got}, but the requested model file is for {expected}: "
            "the config changed while the workflow was planned; run snakemake again"
        )


def cmd_train_simplenet(args) -> int:
    from texad.methods.simplenet import run_model_hash, train_model

    spec, settings = _simplenet_run(args)
    _check_expected_hash(run_model_hash(spec, settings), args.expect_hash)
    summary = train_model(
        Path(args.class_dir), spec, settings, model_path=Path(args.out), ckpt_dir=Path(args.ckpt_dir)
    )
    print(json.dumps({k: summary[k] for k in ("seconds", "final_loss", "selection") if k in summary}))
    return 0


def cmd_simplenet(args) -> int:
    from texad.methods.simplenet import evaluate_model

    spec, settings = _simplenet_run(args)
    result = evaluate_model(
        Path(args.class_dir), spec, settings, model_path=Path(args.model), out_result=Path(args.out),
        out_maps=Path(args.maps), accel=accel_from_args(args),
    )  # fmt: skip
    _print_metrics("simplenet", args, result)
    return 0


def cmd_train_draem(args) -> int:
    from texad.methods.draem import DraemSettings, source_paths, train_draem

    settings = DraemSettings.from_config(_settings_json(args.settings, "draem"))
    _check_expected_hash(settings.model_hash(args.dataset, args.class_name, args.seed), args.expect_hash)
    sources = source_paths(
        settings.anomaly_source,
        class_name=args.class_name,
        dtd_root=args.anomaly_root if settings.anomaly_source == "dtd" else None,
        dataset_root=args.anomaly_root if settings.anomaly_source == "synthetic" else None,
        classes=args.source_classes,
    )
    summary = train_draem(
        Path(args.class_dir), sources, settings, out=Path(args.out), ckpt_dir=Path(args.ckpt_dir),
        seed=args.seed, device=resolve_device(args.device), dataset=args.dataset, class_name=args.class_name,
        num_workers=args.workers,
    )  # fmt: skip
    print(json.dumps({k: summary[k] for k in ("seconds", "final_loss") if k in summary}))
    return 0


def cmd_draem(args) -> int:
    from texad.methods.draem import RunSpec, run_draem

    spec = RunSpec(
        run_name=args.run_name, dataset=args.dataset, class_name=args.class_name, seed=args.seed,
        variant=args.variant, resolution=args.resolution if args.resolution == "native" else int(args.resolution),
        fpr_limit=args.fpr_limit, batch_size=args.batch_size, device=resolve_device(args.device),
        score_pool=_settings_json(args.settings, "draem").get("score_pool"),
    )  # fmt: skip
    result = run_draem(
        Path(args.model), Path(args.class_dir), spec, out_result=Path(args.out), out_maps=Path(args.maps),
        accel=accel_from_args(args),
    )  # fmt: skip
    _print_metrics("draem", args, result)
    return 0


def cmd_method_a(args) -> int:
    from dataclasses import replace

    from texad.methods.score_tscales.run import (
        MethodASettings,
        RunSpec,
        resolve_variant,
        run_method_a,
        variant_from_json,
    )

    settings = MethodASettings.from_config(_settings_json(args.settings, "method_a"))
    spec = RunSpec(
        run_name=args.run_name, dataset=args.dataset, class_name=args.class_name, variant=args.variant,
        seed=args.seed, resolution=args.resolution if args.resolution == "native" else int(args.resolution),
        fpr_limit=args.fpr_limit, device=resolve_device(args.device),
    )  # fmt: skip
    if args.point:
        variant = variant_from_json(args.variant, _settings_json(args.point, "method_a point"))
    else:
        variant = resolve_variant(settings, args.variant)
    variant = replace(variant, inference=replace(variant.inference, batch_size=args.batch_size))
    result = run_method_a(
        Path(args.model), Path(args.class_dir), spec, settings, variant=variant,
        speed_batches=tuple(args.speed_batches), out_result=Path(args.out), out_maps=Path(args.maps),
        accel=accel_from_args(args),
    )  # fmt: skip
    _print_metrics("method_a", args, result)
    t = result["timings"]
    print(f"  {t['nfe_per_image']} network evaluations per image, inference {t['inference_s']:.1f} s")
    return 0


def _print_metrics(method: str, args, result: dict) -> None:
    m = result["metrics"]
    print(
        f"{method} {args.dataset}/{args.class_name} seed {args.seed}: image AUROC {m['image_auroc']:.4f}, "
        f"pixel AUROC {m['pixel_auroc']:.4f}, AUPRO {m['aupro']:.4f}, pixel AP {m['pixel_ap']:.4f}"
    )


def cmd_method_b(args) -> int:
    from texad.methods.conditioned_blur.anomaly_map import MapSettings
    from texad.methods.conditioned_blur.infer import ReconstructionSettings
    from texad.methods.conditioned_blur.run import RunSpec, run_method_b

    recon = ReconstructionSettings(
        t_start=args.t_start,
        skip=args.skip,
        eta=args.eta,
        w=args.w,
        s=args.s,
        blur_sigma=args.blur_sigma,
        blur_kernel=args.blur_kernel,
        clip_x0=args.clip_x0,
        first_call_at_ts=args.first_call_at_ts,
        draws=args.draws,
    )
    maps_cfg = MapSettings(
        v=args.v,
        smoothing_sigma=args.smoothing_sigma,
        layers=tuple(args.layers),
        fusion_norm=args.fusion_norm,
        feature_size=args.feature_size,
        normalise=args.normalise,
        normalise_images=args.normalise_images,
    )
    spec = RunSpec(
        run_name=args.run_name,
        dataset=args.dataset,
        class_name=args.class_name,
        variant=args.variant,
        seed=args.seed,
        backbone=args.backbone,
        backbone_weights=_pretrained_weights(args.backbone),
        weights_cache=Path(args.weights_cache) if args.weights_cache else None,
        adapted_features=Path(args.adapted_features) if args.adapted_features else None,
        resolution=args.resolution if args.resolution == "native" else int(args.resolution),
        fpr_limit=args.fpr_limit,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
    )
    result = run_method_b(
        Path(args.model),
        Path(args.class_dir),
        spec,
        recon,
        maps_cfg,
        out_result=Path(args.out),
        out_maps=Path(args.maps),
        accel=accel_from_args(args),
    )
    _print_metrics("method_b", args, result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="texad", description="Texture anomaly detection benchmark (diffusion methods and baselines)."
    )
    parser.add_argument("--version", action="version", version=f"texad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate-config", help="check configs against the schema (names every wrong key)")
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument(
        "--print-defaults", action="store_true", help="print the config with schema defaults filled in"
    )
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser("synth", help="generate one class of the embedded synthetic texture-defect set")
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--out", required=True, help="dataset root; the class is written to OUT/<class>")
    p.add_argument("--marker", type=Path, help="completion marker (default OUT/<class>.manifest.json)")
    p.add_argument("--config", type=Path, help="take unset sizes from datasets.synthetic of this config")
    p.add_argument("--image-size", type=int)
    p.add_argument("--n-train", type=int)
    p.add_argument("--n-test-good", type=int)
    p.add_argument("--n-test-per-defect", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "download", help="fetch, verify, safely extract and check a dataset (MVTec AD, DTD-Synthetic, DTD)"
    )
    p.add_argument("dataset", choices=["mvtec_ad", "dtd_synthetic", "dtd"])
    p.add_argument("--root", required=True, help="where the class folders end up")
    p.add_argument("--cache", required=True, help="archive cache (partial downloads resume from here)")
    p.add_argument("--marker", required=True, help="completion marker, written last")
    p.add_argument("--classes", nargs="+")
    p.add_argument(
        "--config", type=Path, help="read url/archive/path/licence from datasets.<dataset> of this config"
    )
    p.add_argument("--url")
    p.add_argument("--archive", help="a local archive you downloaded by hand")
    p.add_argument("--path", help="an extracted copy you already have (no download)")
    p.add_argument("--accept-license", action="store_true")
    p.add_argument("--no-keep-archive", action="store_true")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser(
        "check-class", help="count a class folder against the expected layout; write a JSON report"
    )
    p.add_argument("--dataset", required=True, choices=["mvtec_ad", "dtd_synthetic", "synthetic"])
    p.add_argument("--class-dir", required=True)
    p.add_argument("--manifest", help="the synthetic generator's manifest (dataset synthetic)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_check_class)

    p = sub.add_parser("contact-sheet", help="PNG of normal images, defects and masks of one class")
    p.add_argument("--class-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-normal", type=int, default=4)
    p.add_argument("--per-defect", type=int, default=2)
    p.add_argument("--title")
    p.set_defaults(func=cmd_contact_sheet)

    p = sub.add_parser(
        "train-diffusion",
        help="train one class's DDPM (Method B) or score model (Method A, --kind score); resumes from --ckpt-dir",
    )
    p.add_argument("--kind", choices=["ddpm", "score"], default="ddpm")
    p.add_argument("--settings", help="--kind score: the config's methods.method_a block as JSON")
    p.add_argument("--class-dir", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--out", required=True, help="final model file (written atomically)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints, outside the rule's outputs")
    p.add_argument("--expect-hash", help="fail if the settings do not hash to this model identity")
    p.add_argument("--preset", default="paper")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--beta-start", type=float, default=1e-4)
    p.add_argument("--beta-end", type=float, default=0.02)
    p.add_argument("--epochs", type=int, help="--kind ddpm: training epochs")
    p.add_argument("--t-max", type=int, help="--kind ddpm: train on t < T_MAX only (default: every level)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--optimizer", choices=["adam", "adamw"], default="adam")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_train_diffusion)

    p = sub.add_parser(
        "method-b", help="Method B (conditioned, blur-guided DDPM) on one class: maps, metrics, result"
    )
    p.add_argument("--model", required=True, help="the class's trained DDPM (texad train-diffusion)")
    p.add_argument("--class-dir", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--variant", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-name", default="texad")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--maps", required=True, help="anomaly maps, scores and reconstructions (.npz)")
    p.add_argument("--t-start", type=int, default=250)
    p.add_argument("--skip", type=int, default=25)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--w", type=float, default=4.0, help="conditioning weight")
    p.add_argument("--s", type=float, default=0.5, help="blur-guidance scale")
    p.add_argument("--blur-sigma", type=float, default=3.0)
    p.add_argument("--blur-kernel", type=int, default=31)
    p.add_argument("--clip-x0", action="store_true")
    p.add_argument("--first-call-at-ts", action="store_true")
    p.add_argument("--draws", type=int, default=1, help="reconstructions averaged per image (1 = DDAD)")
    p.add_argument("--v", type=float, default=1.0, help="weight of the pixel term in the fused map")
    add_accel_args(p)
    p.add_argument("--smoothing-sigma", type=float, default=4.0)
    p.add_argument("--layers", nargs="+", default=["layer2", "layer3"])
    p.add_argument("--fusion-norm", choices=["test_set", "batch16"], default="test_set")
    p.add_argument("--feature-size", type=int, help="resize both images to this side before the extractor")
    p.add_argument(
        "--normalise",
        choices=["none", "train_stats"],
        default="none",
        help="standardise the maps per pixel by those of the training images (default: none, DDAD)",
    )
    p.add_argument("--normalise-images", type=int, help="training images of the statistics (default: all)")
    p.add_argument("--backbone", default="wide_resnet101_2")
    p.add_argument("--weights-cache", help="torchvision weight cache (TORCH_HOME), staged by stage_weights")
    p.add_argument("--adapted-features", help="fine-tuned extractor weights (texad adapt-features)")
    p.add_argument("--resolution", default="256", help="evaluation grid N, or native")
    p.add_argument("--fpr-limit", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=cmd_method_b)

    def run_args(p, *, evaluation: bool) -> None:
        """Arguments every baseline run shares: the class, its settings block as JSON, device, protocol."""
        p.add_argument("--class-dir", required=True)
        p.add_argument("--dataset", required=True)
        p.add_argument("--class", dest="class_name", required=True)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--settings", required=True, help="the config's methods.<method> block as JSON")
        p.add_argument(
            "--weights-cache", help="torchvision weight cache (TORCH_HOME), staged by stage_weights"
        )
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        p.add_argument("--run-name", default="texad")
        p.add_argument("--variant", default="default")
        p.add_argument("--resolution", default="256", help="evaluation grid N, or native")
        p.add_argument("--fpr-limit", type=float, default=0.3)
        p.add_argument("--batch-size", type=int, default=16, help="inference batch")
        if evaluation:
            add_accel_args(p)
            p.add_argument("--model", required=True, help="the trained model file")
            p.add_argument("--out", required=True, help="result JSON")
            p.add_argument("--maps", required=True, help="anomaly maps and scores (.npz)")
        else:
            p.add_argument("--out", required=True, help="model file (written atomically)")
            p.add_argument(
                "--ckpt-dir", required=True, help="resumable checkpoints, outside the rule's outputs"
            )
            p.add_argument("--expect-hash", help="fail if the settings do not hash to this model identity")

    p = sub.add_parser("train-simplenet", help="train SimpleNet on one class (resumes from --ckpt-dir)")
    run_args(p, evaluation=False)
    p.set_defaults(func=cmd_train_simplenet)

    p = sub.add_parser("simplenet", help="evaluate a trained SimpleNet on one class: maps, metrics, result")
    run_args(p, evaluation=True)
    p.set_defaults(func=cmd_simplenet)

    p = sub.add_parser("train-draem", help="train DRAEM on one class (resumes from --ckpt-dir)")
    run_args(p, evaluation=False)
    p.add_argument(
        "--anomaly-root",
        required=True,
        help="DTD's folder holding images/ (dtd), or the dataset root of the class folders (synthetic)",
    )
    p.add_argument(
        "--source-classes", nargs="+", help="synthetic source: these classes (default: all others)"
    )
    p.add_argument("--workers", type=int, default=0, help="data-loader processes simulating anomalies")
    p.set_defaults(func=cmd_train_draem)

    p = sub.add_parser("draem", help="evaluate a trained DRAEM on one class: maps, metrics, result")
    run_args(p, evaluation=True)
    p.set_defaults(func=cmd_draem)

    p = sub.add_parser(
        "method-a",
        help="Method A (score SDE + T scales) on one class: one variant (default, an ablation point or full_chain)",
    )
    run_args(p, evaluation=True)
    p.add_argument(
        "--point", help="the variant's own settings as JSON (inference, mode, model); default: --variant resolved "
        "in the --settings ablation grid",
    )  # fmt: skip
    p.add_argument(
        "--speed-batches", type=int, nargs="*", default=[],
        help="also time the maps at these batch sizes (s/image after 5 warm-up images)",
    )  # fmt: skip
    p.set_defaults(func=cmd_method_a)

    p = sub.add_parser(
        "adapt-features", help="DDAD's feature-extractor domain adaptation for one class (resumable)"
    )
    p.add_argument("--model", required=True, help="the class's trained DDPM (texad train-diffusion)")
    p.add_argument("--class-dir", required=True)
    p.add_argument("--out", required=True, help="adapted extractor weights (written atomically)")
    p.add_argument("--ckpt-dir", required=True, help="per-epoch checkpoints, outside the rule's outputs")
    p.add_argument("--expect-hash", help="fail if the settings do not hash to this identity")
    p.add_argument("--backbone", default="wide_resnet101_2")
    p.add_argument("--weights-cache", help="torchvision weight cache (TORCH_HOME), staged by stage_weights")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--w", type=float, default=3.0, help="conditioning weight of the reconstructions")
    p.add_argument("--lam", type=float, default=0.1, help="weight of the stay-close-to-ImageNet terms")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--t-start", type=int, default=250)
    p.add_argument("--skip", type=int, default=25)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--feature-size",
        type=int,
        help="side the extractor sees (Method B's feature_size; default: model size)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_adapt_features)

    p = sub.add_parser(
        "stage-weights", help="copy or download pretrained weights into the cache and verify them"
    )
    p.add_argument("name", help="backbone, e.g. wide_resnet50_2, wide_resnet101_2, resnet18")
    p.add_argument("--cache", required=True, help="the weight cache (TORCH_HOME), e.g. results/weights")
    p.add_argument("--source", type=Path, help="a weight file you already have (no download)")
    p.add_argument("--url", help="download from here instead of torchvision's URL")
    p.set_defaults(func=cmd_stage_weights)

    p = sub.add_parser("aggregate", help="turn result JSONs into tables (CSV, Markdown, LaTeX)")
    p.add_argument("--results", nargs="+", required=True, help="result JSON files or folders holding them")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--metrics", nargs="+", default=["image_auroc", "pixel_auroc", "aupro", "pixel_ap"])
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser(
        "ablation-table",
        help="one method's ablation: cost (NFE, s/image, speed-up) beside the scores, per variant",
    )
    p.add_argument("--method", required=True, help="e.g. method_a")
    p.add_argument("--results", nargs="+", required=True, help="result JSONs or folders of them")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_ablation_table)

    p = sub.add_parser("table-html", help="Markdown tables -> HTML pages (for the Snakemake report)")
    p.add_argument("--markdown", nargs="+", required=True, help="texad Markdown table files")
    p.add_argument("--out", nargs="+", required=True, help="one HTML file per Markdown file, same order")
    p.set_defaults(func=cmd_table_html)

    add_figure_parsers(sub)
    add_paper_table_parsers(sub)
    add_predict_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from texad.config import ConfigError
    from texad.data.download import DownloadError
    from texad.data.layout import DatasetError, LayoutError
    from texad.data.stage import LicenceNotAccepted

    expected_errors = (ConfigError, FileNotFoundError, FileExistsError, ValueError, DownloadError, LayoutError,
                       DatasetError, LicenceNotAccepted)  # fmt: skip
    try:
        return args.func(args)
    except expected_errors as exc:
        print(f"texad: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # full disk, unwritable folder: say which path
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(
            f"texad: error: {exc.strerror or exc}{where}; check free space and permissions", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
