# texad: `make demo` runs the pipeline on the embedded synthetic set; `make test` runs the test suite.
# Both install everything first (a fresh .venv from the exact pins); `make install` is a no-op when up to date.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CORES ?= 2
export PATH := $(BIN):$(PATH)

.PHONY: install demo test bench lint clean rehearse

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	snakemake --cores $(CORES) --configfile config/demo.yaml
	snakemake --cores $(CORES) --configfile config/demo.yaml --report results/report.html
	@for m in image_auroc pixel_auroc aupro; do echo; echo "== $$m =="; cat results/tables/$$m.md; done
	@for m in method_a method_b; do echo; echo "== $$m ablation =="; cat results/tables/ablation_$$m.md; done
	@echo "demo done: tables in results/tables/, contact sheets in results/data/synthetic/*/contact_sheet.png, report in results/report.html"

# Two to four xdist workers (one per core): most tests run one torch thread; the longest start first (conftest.py).
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist load

# The paper config (config.yaml) at paper size on the CPU, every count shrunk (config/rehearsal-full.yaml), after its
# cost: random torchvision weights and a generated set, so it checks code paths and sizes, not accuracy.
rehearse: install
	$(BIN)/python -m texad cost --configfile config.yaml config/paper-quick.yaml
	$(BIN)/python -m texad rehearse --profile full --workdir results/rehearsal --cores $(CORES) --root .

bench: install
	$(BIN)/python benchmarks/bench_metrics.py --out benchmarks/.metrics.json.tmp > /dev/null
	mv -f benchmarks/.metrics.json.tmp benchmarks/metrics.json
	$(BIN)/python benchmarks/bench_pipeline.py --out-dir benchmarks
	$(BIN)/python benchmarks/bench_snakemake.py --out benchmarks/snakemake.json --reps 3
	$(BIN)/python benchmarks/bench_summary.py --dir benchmarks --out benchmarks/summary.md
	@cat benchmarks/summary.md

lint: install
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks
	snakefmt --check Snakefile workflow
	snakemake --lint
	snakemake --lint --configfile config/demo.yaml

clean:
	rm -rf results resources .snakemake

# On a lent GPU (under 8 minutes): every paper-size network in fp32, bf16, channels_last and torch.compile; images/s,
# peak memory and error against fp32 to benchmarks/gpu.json, whose utilisation `texad cost` then uses.
.PHONY: gpu-check
gpu-check: install
	$(BIN)/python -m texad gpu-check --out benchmarks/gpu.json --budget-s 420
	$(BIN)/python -m texad cost --configfile config.yaml config/paper-quick.yaml
