"""``python -m texad`` (used by Snakemake rules inside conda envs, where no console script exists)."""

import sys

from texad.cli import main

sys.exit(main())
