"""Markdown summary of the ``make bench`` records: one table per benchmark, every ratio, and for each figure
the machine (CPU model, cores, torch threads), device, batch size and image size.

    python benchmarks/bench_summary.py [--dir benchmarks] [--out benchmarks/summary.md]

Reads ``metrics.json``, ``tscales.json``, ``overhead.json``, ``throughput.json``, ``memory.json`` and
``snakemake.json`` from ``--dir`` (a missing one is reported as not run) and writes the summary atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import atomic_write_text  # noqa: E402

__all__ = ["RECORDS", "load_records", "render", "main"]

RECORDS = ("metrics", "tscales", "overhead", "throughput", "memory", "snakemake")


def load_records(folder: Path) -> dict[str, dict]:
    out = {}
    for name in RECORDS:
        path = Path(folder) / f"{name}.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


# ------------------------------------------------------------------------------------------ format
def num(x, digits: int = 3) -> str:
    """``digits`` significant digits, or ``n/a``."""
    if x is None:
        return "n/a"
    x = float(x)
    if x == 0:
        return "0"
    if 1000 <= abs(x) < 1e9:
        return f"{x:.0f}"
    return f"{x:.{digits}g}" if 1e-4 <= abs(x) < 1e6 else f"{x:.{digits - 1}e}"


def spread(st: dict, digits: int = 3) -> str:
    """``median [min-max]`` of a stats dict."""
    if not st or st.get("median") is None:
        return "n/a"
    if st["n"] == 1:
        return f"{num(st['median'], digits)} (1 rep)"
    return f"{num(st['median'], digits)} [{num(st['min'], digits)}-{num(st['max'], digits)}]"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def machine_line(m: dict, *, torch_threads: bool = True) -> str:
    cores = f"{m.get('cpu_count')} cores"
    if m.get("cpu_affinity") is not None and m.get("cpu_affinity") != m.get("cpu_count"):
        cores += f" ({m['cpu_affinity']} usable)"
    parts = [f"CPU {m.get('cpu_model')}", cores]
    if torch_threads and "torch_threads" in m:
        parts.append(f"torch threads {m['torch_threads']} (torch {m.get('torch')})")
    if m.get("omp_num_threads"):
        parts.append(f"OMP_NUM_THREADS={m['omp_num_threads']}")
    if m.get("cuda_device"):
        parts.append(f"GPU {m['cuda_device']}")
    if m.get("loadavg_1_5_15"):
        load = f"load average at start {m['loadavg_1_5_15'][0]:.2f}"
        if m.get("loadavg_end_1_5_15"):
            load += f", at end {m['loadavg_end_1_5_15'][0]:.2f}"
        parts.append(load)
    return "Machine: " + ", ".join(parts) + "."


def _reps(d: dict) -> str:
    """How many repetitions ran and the 1-minute load average at the start of each."""
    loads = ", ".join(f"{v:.2f}" for v in d.get("loadavg_1min_per_rep", []))
    return f"{d['reps_done']} repetitions (1-min load average at their starts: {loads})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _method_b_line(b: dict) -> tuple[object, object]:
    """(DDPM epochs, feature size) of ``method_settings.method_b``: its config block (per-class epochs as
    ``{default: n}``), or the older record's ``ddpm``/``map`` parts."""
    if "ddpm" in b:
        return b["ddpm"]["epochs"], b["map"]["feature_size"]
    epochs = b["train"]["epochs"]
    return (epochs.get("default") if isinstance(epochs, dict) else epochs), b["inference"]["feature_size"]


def _settings_line(rec: dict) -> str:
    s, ms = rec["settings"], rec["method_settings"]
    a = ms["method_a"]
    b_epochs, b_features = _method_b_line(ms["method_b"])
    return (
        f"Setup: synthetic class `wood` rendered at {s['class_image_size']} px, {s['n_train']} train / "
        f"{s['n_test']} test images; models at {s['image_size']} px; up to {s['reps']} repetitions (at least "
        f"{s['min_reps']}, fewer than {s['reps']} only when a busy machine hits the {s['rep_budget_s']:.0f}-s time "
        "guard), in alternating order. "
        f"Method A: tiny NCSN++ (nf {a['network']['nf']}), {a['train']['iterations']} training iterations, VE SDE "
        f"sigma {a['sde']['sigma_min']}-{a['sde']['sigma_max']}, grid n_steps {a['sde']['n_steps']}. "
        f"Method B: tiny DDPM U-Net, {b_epochs} epochs, EfficientNet-Lite0 features at "
        f"{b_features} px. SimpleNet: EfficientNet-Lite0, "
        f"{ms['simplenet']['meta_epochs']} meta epochs. DRAEM: base widths {ms['draem']['recon_base_width']}/"
        f"{ms['draem']['disc_base_width']}, {ms['draem']['epochs']} epochs. Training seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in rec["setup"]["train_s"].items())
        + "."
    )


# ----------------------------------------------------------------------------------------- sections
def section_setup(records: dict[str, dict]) -> list[str]:
    rec = next((records[k] for k in ("tscales", "overhead", "throughput", "memory") if k in records), None)
    if rec is None:
        return []
    return ["## Setup of (a)-(d)", "", _settings_line(rec), ""]


def section_metrics(rec: dict | None) -> list[str]:
    out = ["## Evaluation metrics (`bench_metrics.py`)", ""]
    if rec is None:
        return out + ["Not run (no `metrics.json`).", ""]
    out += [
        machine_line(rec["machine"], torch_threads=False) + " NumPy/scikit-learn, no torch.",
        f"Device: cpu. Batch size: all {rec['n_images']} maps at once. Image size: {rec['size'][0]} x "
        f"{rec['size'][1]} ({rec['n_anomalous_images']} anomalous images, {rec['n_regions']} defect regions). "
        f"Statistic: {rec['statistic']} of {rec['repeats']} runs.",
        "",
    ]
    rows = [[f"`{k}`", num(v)] for k, v in rec["seconds"].items()]
    out += _table(["metric", "seconds"], rows) + [""]
    return out


def section_tscales(rec: dict | None) -> list[str]:
    out = ["## (a) Method A: T scales against the full-length reverse SDE", ""]
    if rec is None:
        return out + ["Not run (no `tscales.json`).", ""]
    inf = rec["method_settings"]["method_a"]["inference"]
    out += [
        machine_line(rec["machine"]),
        f"T scales (`default`): {inf['n_scales']} scales {inf['sigma_lo']}-{inf['sigma_hi']}, "
        f"{inf['steps_per_scale']} steps each, {inf['draws']} draw(s), metric `{inf['metric']}`, predictor "
        f"`{inf['predictor']}`. Full chain (`full_chain`): every level of the n_steps grid from sigma_hi "
        f"{inf['sigma_hi']} down to sigma_min, same metric and draws. Seconds per image = the test pass "
        "(`extra.timing.test_s`: loading + chains) / test images; AUROC from the same runs.",
        "",
    ]
    for dev, d in rec["devices"].items():
        rows = []
        for v in ("default", "full_chain"):
            e = d[v]
            rows.append([f"`{v}`", str(e["nfe_per_image"]), spread(e["s_per_image"]),
                         spread(e["image_auroc"]), spread(e["pixel_auroc"])])  # fmt: skip
        out += [f"Device **{dev}**, batch size {d['batch_size']}, image size {d['image_size']}, "
                f"{d['n_images']} test images each; {_reps(d)}:", ""]  # fmt: skip
        out += _table(
            ["variant", "NFE / image", "s / image, median [min-max]", "image AUROC", "pixel AUROC"], rows
        )
        pp = d["speedup_per_pair"]
        out += [
            "",
            f"- Speed-up of T scales over the full chain ({dev}): **{num(d['speedup'])}x** "
            f"(median full-chain s/img / median T-scales s/img; per adjacent pair: {spread(pp)}); "
            f"fastest repetition of each: {num(d['speedup_best'])}x; NFE ratio {num(d['nfe_ratio'])}x.",
            "",
        ]
    return out


PIPE_NAMES = {"method_a_default": "Method A, T scales", "method_a_full_chain": "Method A, full chain",
              "method_b": "Method B"}  # fmt: skip
PART_NAMES = {"network_bare": "network (bare)", "data_loading": "data loading",
              "sampler_without_network": "sampler without network", "feature_extractor": "feature extractor",
              "rest": "rest (unexplained)"}  # fmt: skip


def section_overhead(rec: dict | None) -> list[str]:
    out = ["## (b) Diffusion pipeline overhead", ""]
    if rec is None:
        return out + ["Not run (no `overhead.json`).", ""]
    out += [machine_line(rec["machine"]), "", f"Definition: {rec['definition']}", ""]
    for dev, d in rec["devices"].items():
        out += [f"Device **{dev}**, batch size {d['batch_size']} (batches {d['batch_sizes']}), image size "
                f"{d['image_size']}, {d['n_images']} test images; {_reps(d)}:", ""]  # fmt: skip
        rows = []
        for key, e in d["methods"].items():
            rows.append([
                PIPE_NAMES.get(key, key), str(e["nfe_per_image"]), spread(e["pipeline_s_per_image"]),
                spread(e["bare_s_per_image"]),
                f"**{num(e['overhead_ratio'], 4)}** (per rep {spread(e['overhead_ratio_per_rep'], 4)}; "
                f"fastest/fastest {num(e['overhead_ratio_best'], 4)})",
                "yes" if e["meets_target"] else "**no**",
            ])  # fmt: skip
        out += _table(["pipeline", "NFE / image", "pipeline s / image", "bare s / image (NFE x forward)",
                       "overhead ratio", f"<= {next(iter(d['methods'].values()))['target']}?"],
                      rows)  # fmt: skip
        out += ["", "Where the time goes (median seconds per image, share of the pipeline):", ""]
        part_keys = [k for k in PART_NAMES if any(k in e["breakdown"] for e in d["methods"].values())]
        rows = []
        for key, e in d["methods"].items():
            b = e["breakdown"]
            rows.append([PIPE_NAMES.get(key, key)] + [
                f"{num(b[k]['s_per_image'])} ({pct(b[k]['share_of_pipeline'])})" if k in b else "-"
                for k in part_keys
            ])  # fmt: skip
        out += _table(["pipeline"] + [PART_NAMES[k] for k in part_keys], rows) + [""]
        for key, e in d["methods"].items():
            name = PIPE_NAMES.get(key, key)
            big = e["biggest_non_network_part"]
            verdict = "meets" if e["meets_target"] else "does **not** meet"
            out.append(
                f"- {name} ({dev}) {verdict} the <= {e['target']} target (ratio {num(e['overhead_ratio'], 4)}); "
                f"the network takes {pct(e['breakdown']['network_bare']['share_of_pipeline'])} of its time, the "
                f"largest other part is {PART_NAMES[big]} ({pct(e['breakdown'][big]['share_of_pipeline'])})."
            )
        out.append("")
    return out


def section_throughput(rec: dict | None) -> list[str]:
    out = ["## (c) Inference throughput", ""]
    if rec is None:
        return out + ["Not run (no `throughput.json`).", ""]
    out += [machine_line(rec["machine"]), ""]
    for dev, d in rec["devices"].items():
        out += [f"Device **{dev}**, batch size {d['batch_size']}, image size {d['image_size']}, "
                f"{d['n_images']} test images; {_reps(d)}:", ""]  # fmt: skip
        rows = []
        for name, e in d["methods"].items():
            rows.append([f"`{name}`", spread(e["images_per_s"]), spread(e["s_per_image"]),
                         "-" if e["nfe_per_image"] is None else str(e["nfe_per_image"]), spread(e["image_auroc"]),
                         rec["definition"][name]])  # fmt: skip
        out += _table(
            ["method", "images / s", "s / image", "NFE / image", "image AUROC", "what is timed"], rows
        )
        out.append("")
    return out


def section_memory(rec: dict | None) -> list[str]:
    out = ["## (d) Peak memory", ""]
    if rec is None:
        return out + ["Not run (no `memory.json`).", ""]
    out += [
        machine_line(rec["machine"]),
        f"Batch size {rec['batch_size']}, image size {rec['image_size']}, {rec['settings']['n_test']} test images.",
        "",
        f"Definition: {rec['definition']}.",
        "",
    ]
    rows = []
    for r in rec["runs"]:
        cuda = r.get("cuda_max_allocated_mb")
        rows.append([f"`{r['method']}`", r["device"], f"**{num(r['rss_peak_delta_mb'])}**",
                     num(r["rss_baseline_mb"]), num(r["ru_maxrss_after_mb"]),
                     "-" if cuda is None else f"**{num(cuda)}**"])  # fmt: skip
    out += _table(["method", "device", "peak RSS - baseline (MB)", "RSS baseline after imports (MB)",
                   "process peak RSS incl. imports (ru_maxrss, MB)", "CUDA max allocated (MB)"], rows)  # fmt: skip
    return out + [""]


def section_snakemake(rec: dict | None) -> list[str]:
    out = ["## (e) Workflow planning: `snakemake -n`", ""]
    if rec is None:
        return out + ["Not run (no `snakemake.json`).", ""]
    cfg = Path(rec["configfile"]).name
    out += [
        machine_line(rec["machine"], torch_threads=False) + f" Snakemake {rec['snakemake']}.",
        f"Device: cpu (single process). Batch size / image size: not applicable. Each repetition plans in a fresh "
        f"empty `--directory`; statistic: median of {rec['reps']}.",
        "",
    ]
    rows = [[f"`{cfg}`", str(rec["n_jobs"]), spread(rec["wall_s"]),
             ", ".join(num(r["wall_s"]) for r in rec["runs"])]]  # fmt: skip
    out += _table(["config", "jobs planned", "wall s, median [min-max]", "all runs (s)"], rows)
    return out + [""]


def render(records: dict[str, dict]) -> str:
    lines = [
        "# texad benchmarks (`make bench`)",
        "",
        "Written by `benchmarks/bench_summary.py` from the JSON records beside it (raw repetitions, settings and "
        "machine in each); `benchmarks/README.md` says what every figure means. Tiny CPU-sized models: the "
        "AUROC values only show that each run did its job, they are not results of the methods.",
        "",
    ]
    lines += section_setup(records)
    lines += section_metrics(records.get("metrics"))
    lines += section_tscales(records.get("tscales"))
    lines += section_overhead(records.get("overhead"))
    lines += section_throughput(records.get("throughput"))
    lines += section_memory(records.get("memory"))
    lines += section_snakemake(records.get("snakemake"))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    ap.add_argument("--dir", type=Path, default=here)
    ap.add_argument("--out", type=Path, default=here / "summary.md")
    args = ap.parse_args(argv)
    text = render(load_records(args.dir))
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
