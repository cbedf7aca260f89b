"""``texad rehearse``: the paper config's workflow at paper size on the CPU, counts shrunk (see texad.rehearsal)."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_rehearse(args) -> int:
    from texad.rehearsal.run import rehearse

    summary = rehearse(Path(args.root), Path(args.workdir), args.profile, args.cores)
    print(json.dumps(summary, indent=2))
    print(f"rehearsal ({args.profile}) passed in {summary['wall_s']:.0f} s: {len(summary['models'])} models trained, "
          f"{len(summary['runs'])} runs scored; workspace {args.workdir}")  # fmt: skip
    return 0


def add_parsers(sub) -> None:
    from texad.rehearsal.run import PROFILES

    p = sub.add_parser("rehearse", help="run config.yaml's workflow at paper size on the CPU, counts shrunk")
    p.add_argument("--workdir", required=True, type=Path, help="where the data, weights and results go")
    p.add_argument("--profile", choices=sorted(PROFILES), required=True,
                   help="test: the test suite's (~6 min on 2 cores); full: make rehearse's")  # fmt: skip
    p.add_argument("--cores", type=int, required=True)
    p.add_argument("--root", type=Path, required=True, help="the texad repository (Snakefile, config.yaml)")
    p.set_defaults(func=cmd_rehearse)
