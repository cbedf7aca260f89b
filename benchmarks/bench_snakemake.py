"""Wall time of planning the paper workflow: ``snakemake -n`` on ``config.yaml`` in an empty folder.

    python benchmarks/bench_snakemake.py [--out benchmarks/snakemake.json] [--reps 3] [--configfile config.yaml]

Each repetition runs ``snakemake -n --configfile <config> --directory <fresh empty temp dir> --snakefile
<repo>/Snakefile`` (so no repetition profits from another's ``.snakemake`` folder) and records its wall time,
exit status and the job count of the plan (the ``total`` row). Writes the JSON record atomically.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import ROOT, machine_info, stats, write_json  # noqa: E402

__all__ = ["snakemake_command", "bench_snakemake", "main"]

_TOTAL = re.compile(r"^\s*total\s+(\d+)\s*$", re.MULTILINE)


def snakemake_command(configfile: Path, snakefile: Path) -> list[str]:
    """The dry-run command; ``{dir}`` stands for the empty working folder of one repetition."""
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
    if exe is None:
        raise FileNotFoundError("snakemake is not installed in this environment (run `make install`)")
    return [exe, "-n", "--configfile", str(configfile), "--directory", "{dir}", "--snakefile", str(snakefile)]


def bench_snakemake(
    reps: int = 3,
    *,
    configfile: Path = ROOT / "config.yaml",
    snakefile: Path = ROOT / "Snakefile",
    command: list[str] | None = None,
) -> dict:
    """Time ``reps`` dry runs (``command`` replaces the snakemake command line, e.g. in tests)."""
    configfile, snakefile = Path(configfile).resolve(), Path(snakefile).resolve()
    cmd = command if command is not None else snakemake_command(configfile, snakefile)
    runs = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="texad_dryrun_") as tmp:
            argv = [a.replace("{dir}", tmp) for a in cmd]
            t = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp)
            wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        found = _TOTAL.findall(proc.stdout + proc.stderr)
        runs.append(
            {"wall_s": wall, "returncode": proc.returncode, "n_jobs": int(found[-1]) if found else None}
        )
    try:
        version = metadata.version("snakemake")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = None
    return {
        "benchmark": "snakemake_dry_run",
        "machine": machine_info(),
        "snakemake": version,
        "configfile": str(configfile),
        "snakefile": str(snakefile),
        "command": cmd,
        "device": "cpu",
        "reps": reps,
        "statistic": "median over repetitions; spread = (max - min) / median; every repetition kept",
        "n_jobs": runs[-1]["n_jobs"] if runs else None,
        "wall_s": stats([r["wall_s"] for r in runs]),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "snakemake.json")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--configfile", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--snakefile", type=Path, default=ROOT / "Snakefile")
    args = ap.parse_args(argv)
    record = bench_snakemake(args.reps, configfile=args.configfile, snakefile=args.snakefile)
    write_json(args.out, record)
    w = record["wall_s"]
    print(
        f"snakemake -n: {record['n_jobs']} jobs, median {w['median']:.2f}s over {w['n']} runs -> {args.out}"
    )
    return record


if __name__ == "__main__":
    main()
