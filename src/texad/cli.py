"""The ``texad`` command: argument parsing only; the work is done by the package modules.

Snakemake rules call these subcommands. A command that trains or runs a method takes its settings as one
validated block (``--settings``: a config, or the part of one the job reads, as JSON or a file; the schema fills in
every key left out) plus the run's identity (dataset, class, seed, variant) and its files. Every error that a user
can fix is reported as one ``texad: error: ...`` message naming the file or key, with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from texad import __version__
from texad.cost.cli import add_parsers as add_cost_parsers
from texad.data.validation_cli import add_parsers as add_validation_parsers
from texad.evaluation.bootstrap_cli import add_parsers as add_bootstrap_parsers
from texad.evaluation.thresholds_cli import add_parsers as add_threshold_parsers
from texad.methods.selection_cli import add_parsers as add_selection_parsers
from texad.predict.cli import add_parsers as add_predict_parsers
from texad.rehearsal.cli import add_parsers as add_rehearsal_parsers
from texad.report.figures_cli import add_parsers as add_figure_parsers
from texad.results.paper_tables_cli import add_parsers as add_paper_table_parsers

MODEL_KINDS = ("ddpm", "score", "simplenet", "draem", "features")
METHOD_NAMES = ("method_a", "method_b", "simplenet", "draem")


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
    manifest = read_marker(Path(args.manifest)) if args.manifest else None
    if args.manifest and manifest is None:
        raise FileNotFoundError(
            f"class manifest {args.manifest} is missing: run `texad synth` / `texad index-folder`"
        )
    if manifest is not None and "report" in manifest:  # a user's folder: its view against its index
        indexed = manifest["report"]
        report = {**indexed, **check_class(class_dir, {"counts": indexed["counts"]})}
    elif args.dataset == "synthetic":
        if manifest is None:
            raise FileNotFoundError(
                "the synthetic set needs --manifest (the generator's): run `texad synth` first"
            )
        report = check_class(class_dir, {"counts": {k: v for k, v in manifest["counts"].items() if v},
                                         "modes": {manifest["mode"]: None}})  # fmt: skip
    else:
        from texad.rehearsal.switches import published_counts_checked

        expected = (
            get_dataset(args.dataset).expected.get(class_dir.name) if published_counts_checked() else None
        )
        report = check_class(class_dir, expected) if expected else scan_class(class_dir)
    report["dataset"] = args.dataset
    _write_json(Path(args.out), report)
    print(f"{args.dataset}/{class_dir.name}: {report['n_train']} train, {report['n_test']} test "
          f"({report['n_defective']} defective) - layout ok")  # fmt: skip
    return 0


def cmd_index_folder(args) -> int:
    from texad.config import validate_config
    from texad.data.folder import FolderSpec, index_class, safe_name

    block = json.loads(args.settings)
    entry = validate_config({"datasets": {"folder": [block]}}, partial=True)["datasets"]["folder"][0]
    spec = FolderSpec.from_config(entry, args.index)
    manifest = index_class(spec, safe_name(args.class_name), args.class_name, view=Path(args.view),
                           marker=Path(args.marker))  # fmt: skip
    r = manifest["report"]
    print(f"{spec.name}/{r['class']}: {r['n_train']} train, {r['n_test']} test ({r['n_defective']} defective), "
          f"{r['skipped']['n']} file(s) not used; view in {args.view}")  # fmt: skip
    for note in r["notes"]:
        print(f"  note: {note}")
    return 0


def cmd_contact_sheet(args) -> int:
    from texad.report.contact_sheet import make_contact_sheet

    make_contact_sheet(Path(args.class_dir), Path(args.out), n_normal=args.n_normal, per_defect=args.per_defect,
                       title=args.title, normals=args.normals)  # fmt: skip
    return 0


def cmd_aggregate(args) -> int:
    from texad.results.aggregate import collect, with_class_titles, write_tables
    from texad.results.intervals import Bootstraps, interval_table

    titles = json.loads(args.class_titles) if args.class_titles else None
    df = with_class_titles(collect([Path(p) for p in args.results]), titles)
    boot = Bootstraps(args.bootstrap or [])
    intervals = with_class_titles(interval_table(boot), titles) if boot else None
    written = write_tables(df, Path(args.out_dir), metrics=tuple(args.metrics), intervals=intervals)
    for path in written:
        print(path)
    return 0


def cmd_ablation_table(args) -> int:
    from texad.results.ablation import write_ablation_tables
    from texad.results.aggregate import collect
    from texad.results.intervals import Bootstraps

    df, boot = collect([Path(p) for p in args.results]), Bootstraps(args.bootstrap or [])
    for path in write_ablation_tables(df, args.method, Path(args.out_dir), boot=boot or None):
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


def _run_key(args, config: dict, variant: str = "default"):
    """The job's run key: its flags, and the held-out share its settings name (``validation``)."""
    from texad.methods.base import RunKey

    return RunKey.of(config, args.dataset, args.class_name, args.seed, variant)


def cmd_train(args) -> int:
    from texad.config import load_settings
    from texad.methods.jobs import train_model

    config = load_settings(args.settings)
    summary = train_model(
        args.kind, config, _run_key(args, config), class_dir=Path(args.class_dir),
        out=Path(args.out), ckpt_dir=Path(args.ckpt_dir), expect_hash=args.expect_hash, workers=args.workers,
        model=Path(args.model) if args.model else None,
        anomaly_root=Path(args.anomaly_root) if args.anomaly_root else None, source_classes=args.source_classes,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, list | dict)}))
    return 0


def cmd_run(args) -> int:
    from texad.config import load_settings
    from texad.methods.jobs import run_method

    models = {"model": Path(args.model), **({"features": Path(args.features)} if args.features else {})}
    config = load_settings(args.settings)
    result = run_method(
        args.method, config, _run_key(args, config, args.variant), class_dir=Path(args.class_dir),
        models=models, out_result=Path(args.out), out_maps=Path(args.maps),
    )  # fmt: skip
    m, t = result["metrics"], result["timings"]

    def shown(key: str) -> str:  # pixel metrics are null for a class without masks
        return "n/a" if m[key] is None else f"{m[key]:.4f}"

    print(
        f"{args.method} {args.dataset}/{args.class_name} {args.variant} seed {args.seed}: image AUROC "
        f"{shown('image_auroc')}, pixel AUROC {shown('pixel_auroc')}, AUPRO {shown('aupro')}, pixel AP "
        f"{shown('pixel_ap')}; inference {t['inference_s']:.1f} s, {t['nfe_per_image']} network evaluations per image"
    )
    return 0


def _job_args(p: argparse.ArgumentParser) -> None:
    """What every train and run job takes: its settings, the run's key and its class folder."""
    p.add_argument("--settings", required=True,
                   help="a config, or the part a job reads, as JSON or a YAML/JSON file (missing keys: schema defaults)")  # fmt: skip
    p.add_argument("--dataset", required=True)
    p.add_argument("--class", dest="class_name", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--class-dir", required=True, help="the class folder (MVTec layout)")


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
    p.add_argument(
        "--dataset", required=True, help="mvtec_ad, dtd_synthetic, synthetic or a datasets.folder name"
    )
    p.add_argument("--class-dir", required=True)
    p.add_argument(
        "--manifest", help="the class's manifest (the synthetic set's generator, a user folder's index)"
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_check_class)

    p = sub.add_parser(
        "index-folder",
        help="check one class of a user's image folder (datasets.folder) and build its view in the MVTec layout",
    )
    p.add_argument("--settings", required=True, help="the dataset's datasets.folder entry as JSON")
    p.add_argument("--index", required=True, type=int, help="the entry's position in datasets.folder")
    p.add_argument("--class-name", required=True, help="the class folder's name")
    p.add_argument("--view", required=True, help="where the view (symbolic links) goes")
    p.add_argument("--marker", required=True, help="the manifest, written last")
    p.set_defaults(func=cmd_index_folder)

    p = sub.add_parser("contact-sheet", help="PNG of normal images, defects and masks of one class")
    p.add_argument("--class-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--n-normal", type=int, default=4)
    p.add_argument("--per-defect", type=int, default=2)
    p.add_argument("--title")
    p.add_argument("--normals", choices=["train", "test"], default="train",
                   help="the first row's normal images: train/good, or test/good (a validation split's held-out ones)")  # fmt: skip
    p.set_defaults(func=cmd_contact_sheet)

    p = sub.add_parser(
        "train",
        help="train one model: ddpm (Method B, shared by Method A), score (Method A), simplenet, draem, or features "
        "(Method B's adapted extractor); resumes from --ckpt-dir",
    )
    p.add_argument("kind", choices=MODEL_KINDS)
    _job_args(p)
    p.add_argument("--out", required=True, help="the model file (written atomically)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints, outside the rule's outputs")
    p.add_argument("--expect-hash", help="fail if the settings do not hash to this model identity")
    p.add_argument("--workers", type=int, default=0, help="data-loader processes")
    p.add_argument("--model", help="features: the class's trained DDPM")
    p.add_argument(
        "--anomaly-root", help="draem: DTD's folder holding images/, or the root of the class folders"
    )
    p.add_argument(
        "--source-classes", nargs="+", help="draem, synthetic source: these classes (default: all others)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "run", help="run one method's variant on one class: maps, metrics, result JSON (texad.methods.run)"
    )
    p.add_argument("method", choices=METHOD_NAMES)
    _job_args(p)
    p.add_argument("--variant", default="default", help="default, or an ablation point the settings define")
    p.add_argument("--model", required=True, help="the trained model file (Method A's shared_ddpm: the DDPM)")
    p.add_argument("--features", help="Method B: the adapted feature extractor (texad train features)")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--maps", required=True, help="anomaly maps, scores and reconstructions (.npz)")
    p.set_defaults(func=cmd_run)

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
    p.add_argument(
        "--class-titles", help='JSON {"dataset/class": "title"}: how tables name renamed user classes'
    )
    p.add_argument(
        "--bootstrap",
        nargs="*",
        help="the classes' bootstrap files (texad bootstrap): every cell gets its interval, and intervals.csv",
    )
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser(
        "ablation-table",
        help="one method's ablation: cost (NFE, s/image, speed-up) beside the scores, per variant",
    )
    p.add_argument("--method", required=True, help="e.g. method_a")
    p.add_argument("--results", nargs="+", required=True, help="result JSONs or folders of them")
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--bootstrap",
        nargs="*",
        help="the classes' bootstrap files: intervals, and paired ones for Δ vs ref.",
    )
    p.set_defaults(func=cmd_ablation_table)

    p = sub.add_parser("table-html", help="Markdown tables -> HTML pages (for the Snakemake report)")
    p.add_argument("--markdown", nargs="+", required=True, help="texad Markdown table files")
    p.add_argument("--out", nargs="+", required=True, help="one HTML file per Markdown file, same order")
    p.set_defaults(func=cmd_table_html)

    add_figure_parsers(sub)
    add_paper_table_parsers(sub)
    add_cost_parsers(sub)
    add_threshold_parsers(sub)
    add_bootstrap_parsers(sub)
    add_validation_parsers(sub)
    add_predict_parsers(sub)
    add_rehearsal_parsers(sub)
    add_selection_parsers(sub)
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
