"""Tests of texad.results.published: the papers' published numbers as data (workflow/report/published.yaml)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from texad.config.schema import ConfigError, load_schema
from texad.results.published import COLUMNS, load_published, published_lookup

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "workflow" / "report" / "published.yaml"
#: The spec, where the developers' guide and CI lay it: ``../shared/spec`` from the repository root.
SPEC = ROOT.parent / "shared" / "spec"

MVTEC = ("carpet", "grid", "leather", "tile", "wood")


@pytest.fixture(scope="module")
def df():
    return load_published(PUBLISHED)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- the file
def test_schema_is_valid_and_file_loads(df):
    load_schema("published")  # raises if the schema itself is not a valid JSON schema
    assert list(df.columns) == list(COLUMNS)
    assert len(df) > 100
    assert set(df["source_id"]) == {
        "amirian2024",
        "ddad_readme",
        "simplenet_paper",
        "draem_paper",
        "draem_readme",
        "teng2022",
    }
    assert set(df["dataset"]) == {"mvtec_ad", "dtd_synthetic"}
    assert set(df["method"]) == {"method_a", "method_b", "simplenet", "draem", "ddad"}
    assert df["source"].str.len().min() > 0


# Transcribed by hand from shared/spec (percent): (source_id, dataset, class, method, metric) -> value.
SPOT = {
    # method_b_conditioned_blur_ddpm.md §4 (Method B's paper, Ours)
    ("amirian2024", "mvtec_ad", "carpet", "method_b", "image_auroc"): 99.2,
    ("amirian2024", "mvtec_ad", "wood", "method_b", "pixel_auroc"): 98.2,
    ("amirian2024", "dtd_synthetic", "Mesh_114", "method_b", "image_auroc"): 99.8,
    ("amirian2024", "dtd_synthetic", "Blotchy_099", "method_b", "pixel_auroc"): 99.4,
    # baselines_simplenet_draem.md §3.1 (seed paper's quotes)
    ("amirian2024", "mvtec_ad", "grid", "simplenet", "image_auroc"): 97.2,
    ("amirian2024", "dtd_synthetic", "Stratified_154", "simplenet", "pixel_auroc"): 98.6,
    ("amirian2024", "dtd_synthetic", "Mesh_114", "draem", "image_auroc"): 97.1,
    ("amirian2024", "mvtec_ad", "tile", "draem", "pixel_auroc"): 99.2,
    # method_b_conditioned_blur_ddpm.md §1.5 (DDAD README)
    ("ddad_readme", "mvtec_ad", "wood", "ddad", "pixel_auroc"): 95.0,
    ("ddad_readme", "mvtec_ad", "wood", "ddad", "aupro"): 82.9,
    ("ddad_readme", "mvtec_ad", "mean_all15", "ddad", "image_auroc"): 99.8,
    # baselines_simplenet_draem.md §3.1 (own papers)
    ("simplenet_paper", "mvtec_ad", "carpet", "simplenet", "image_auroc"): 99.7,
    ("simplenet_paper", "mvtec_ad", "mean", "simplenet", "pixel_auroc"): 97.5,
    ("simplenet_paper", "mvtec_ad", "mean_all15", "simplenet", "image_auroc"): 99.6,
    ("draem_paper", "mvtec_ad", "carpet", "draem", "pixel_ap"): 53.5,
    ("draem_paper", "mvtec_ad", "mean", "draem", "pixel_auroc"): 97.9,
    ("draem_paper", "mvtec_ad", "mean_all15", "draem", "image_auroc"): 98.0,
    ("draem_readme", "mvtec_ad", "mean_all15", "draem", "pixel_ap"): 68.9,
}


@pytest.mark.parametrize("key", list(SPOT), ids=["/".join(k) for k in SPOT])
def test_spot_values_are_fractions(df, key):
    assert published_lookup(df, *key) == pytest.approx(SPOT[key] / 100, abs=1e-12)


def test_values_are_fractions_of_the_percent_in_the_file(df, raw):
    assert len(df) == len(raw["entries"])
    for (_, row), entry in zip(df.iterrows(), raw["entries"], strict=True):
        if entry["value"] is None:
            assert math.isnan(row["value"])
        else:
            assert row["value"] == pytest.approx(entry["value"] / 100, abs=1e-12)
            assert 0 <= row["value"] <= 1
    # the conversion gives the float nearest the decimal fraction, not 82.9 / 100 = 0.8290000000000001
    assert published_lookup(df, "ddad_readme", "mvtec_ad", "wood", "ddad", "aupro") == 0.829


def test_not_found_values_are_nan(df):
    method_a = df[df["method"] == "method_a"]
    assert len(method_a) == 36  # MVTec: 5 textures + mean, x 5 metrics; DTD-Synthetic: 3 classes x 2 AUROCs
    assert method_a["value"].isna().all()
    assert set(method_a["status"]) == {"not_found"}
    assert math.isnan(published_lookup(df, "teng2022", "mvtec_ad", "carpet", "method_a", "image_auroc"))
    missing = df[df["status"].isin(["not_found", "not_reported"])]
    assert missing["value"].isna().all()
    assert df.loc[df["status"].isin(["published", "unverified"]), "value"].notna().all()
    ddad_dtd = df[(df["method"] == "ddad") & (df["dataset"] == "dtd_synthetic")]
    assert len(ddad_dtd) == 6 and set(ddad_dtd["status"]) == {"not_reported"}


def test_lookup_of_an_absent_cell_is_nan(df):
    assert math.isnan(published_lookup(df, "ddad_readme", "mvtec_ad", "mean", "ddad", "image_auroc"))
    assert math.isnan(published_lookup(df, "nope", "mvtec_ad", "carpet", "ddad", "image_auroc"))


def test_source_and_note_columns(df):
    row = df[(df["source_id"] == "ddad_readme") & (df["class"] == "carpet")].iloc[0]
    assert row["source"].startswith("https://github.com/arimousa/DDAD, README")
    seed = df[(df["source_id"] == "amirian2024") & (df["method"] == "draem") & (df["status"] == "published")]
    assert seed["note"].str.contains("as quoted by the seed paper").all()
    draem_i = df[
        (df["source_id"] == "draem_paper") & (df["metric"] == "image_auroc") & (df["class"] == "carpet")
    ]
    assert "Table 1" in draem_i.iloc[0]["source"] and "verify" in draem_i.iloc[0]["note"]


# ------------------------------------------------------------------------------------------ bad input
def test_unknown_metric_is_refused_naming_the_entry(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["entries"][3]["metric"] = "f1_score"
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_published(path)
    msg = str(info.value)
    assert str(path) in msg and "entries[3].metric" in msg and "'f1_score'" in msg and "image_auroc" in msg


def test_value_out_of_range_is_refused_naming_the_entry(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["entries"][5]["value"] = 120
    path = write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"entries\[5\]\.value: 120 is out of range") as info:
        load_published(path)
    assert str(path) in str(info.value)


def test_value_and_status_must_agree(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["entries"][0]["value"] = None  # status published
    data["entries"][-1]["value"] = 50.0  # status not_found
    with pytest.raises(ConfigError) as info:
        load_published(write(tmp_path, data))
    msg = str(info.value)
    assert "entries[0].value" in msg and f"entries[{len(data['entries']) - 1}].value" in msg


def test_class_must_belong_to_the_dataset(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["entries"][0]["class"] = "Mesh_114"  # an mvtec_ad entry
    with pytest.raises(ConfigError, match=r"entries\[0\]\.class: 'Mesh_114' is not allowed"):
        load_published(write(tmp_path, data))


def test_duplicate_is_refused_naming_both(tmp_path, raw):
    data = copy.deepcopy(raw)
    dup = copy.deepcopy(data["entries"][2])
    dup["value"] = 99.0
    data["entries"].append(dup)
    last = len(data["entries"]) - 1
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_published(path)
    msg = str(info.value)
    assert f"entries[{last}] repeats entries[2]" in msg and "mvtec_ad/grid/method_b/image_auroc" in msg
    assert str(path) in msg


def test_unknown_source_id_is_refused(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["entries"][1]["source_id"] = "someone2099"
    with pytest.raises(
        ConfigError, match=r"entries\[1\]\.source_id: 'someone2099' is not listed under sources"
    ):
        load_published(write(tmp_path, data))


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_published(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("entries: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_published(bad)
    bad.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_published(bad)


# ----------------------------------------------------------------------- every number against the spec
_NUMBER = re.compile(r"^\s*\**\s*(\d+(?:\.\d+)?)\b")


def _number(cell: str) -> float | None:
    """Leading number of a spec cell (``99.7 (confirmed)`` -> 99.7); None for ``–``, ``**unverified**``..."""
    m = _NUMBER.match(cell)
    return float(m.group(1)) if m else None


def _numbers(cell: str) -> list[float | None]:
    return [_number(part) for part in cell.split("/")]


def _tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of ``text`` as rows of stripped cells (the separator row dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _table(text: str, header_start: list[str]) -> list[list[str]]:
    found = [t for t in _tables(text) if t[0][: len(header_start)] == header_start]
    assert len(found) == 1, f"expected one spec table with header {header_start}, found {len(found)}"
    return found[0]


def _dataset(cls: str) -> str:
    return "mvtec_ad" if cls in MVTEC or cls.startswith("mean") else "dtd_synthetic"


def _spec_cells() -> dict[tuple, float | None]:
    """(source_id, dataset, class, method, metric) -> the spec's number (None where the spec has none)."""
    cells: dict[tuple, float | None] = {}

    def put(source_id, cls, method, metrics, values):
        assert len(values) == len(metrics), f"{source_id}/{cls}/{method}: {values} for {metrics}"
        for metric, value in zip(metrics, values, strict=True):
            key = (source_id, _dataset(cls), cls, method, metric)
            assert cells.get(key, value) == value, f"the spec gives two numbers for {key}"
            cells[key] = value

    ia_pa = ("image_auroc", "pixel_auroc")
    method_b = (SPEC / "method_b_conditioned_blur_ddpm.md").read_text(encoding="utf-8")
    # §4: Method B's paper table and the DDAD README row beside it
    table = _table(method_b, ["", "carpet", "grid", "leather", "tile", "wood", "Mesh_114"])
    rows = {"Method B (paper)": ("amirian2024", "method_b"), "DDAD (README)": ("ddad_readme", "ddad")}
    for row in table[1:]:
        source_id, method = rows[row[0]]
        for cls, cell in zip(table[0][1:], row[1:], strict=True):
            values = _numbers(cell)
            put(source_id, cls, method, ia_pa, values if len(values) == 2 else [None, None])
    # §1.5: DDAD README, image AUROC / pixel AUROC / PRO
    table = _table(method_b, ["", "carpet", "grid", "leather", "tile", "wood", "MVTec mean (15)"])
    (row,) = [r for r in table[1:] if r[0] == "DDAD"]
    for cls, cell in zip([*MVTEC, "mean_all15"], row[1:], strict=True):
        put("ddad_readme", cls, "ddad", (*ia_pa, "aupro"), _numbers(cell))

    baselines = (SPEC / "baselines_simplenet_draem.md").read_text(encoding="utf-8")
    # §3.1: own papers vs. the seed paper's quotes
    table = _table(baselines, ["Class", "SimpleNet own paper I / P-AUROC"])
    columns = [
        ("simplenet_paper", "simplenet", ia_pa),
        ("amirian2024", "simplenet", ia_pa),
        ("draem_paper", "draem", ("image_auroc",)),
        ("draem_paper", "draem", ("pixel_auroc", "pixel_ap")),
        ("amirian2024", "draem", ia_pa),
    ]
    row_class = {**{c: c for c in MVTEC}, "texture mean": "mean", "all-15 mean": "mean_all15"}
    for row in table[1:]:
        cls = row_class[row[0]]
        for (source_id, method, metrics), cell in zip(columns, row[1:], strict=True):
            values = _numbers(cell)
            if values == [None] and len(metrics) > 1:  # a bare "–"
                values = [None] * len(metrics)
            put(source_id, cls, method, metrics, values)
    flat = " ".join(baselines.split())
    # §3.1 caveats: the seed paper's DTD-Synthetic quotes
    m = re.search(r"DTD-Synthetic \(([^)]*)\): neither original paper reports it; only the seed paper "
                  r"\(SimpleNet ([^;]*); DRAEM ([^)]*)\)", flat)  # fmt: skip
    assert m, "the spec's DTD-Synthetic quote sentence was not found"
    classes = [c.strip() for c in m.group(1).split(",")]
    for method, text in (("simplenet", m.group(2)), ("draem", m.group(3))):
        pairs = [_numbers(p) for p in text.split(",")]
        for cls, values in zip(classes, pairs, strict=True):
            put("amirian2024", cls, method, ia_pa, values)
    # §3.1 caveats: the DRAEM README
    m = re.search(
        r"released checkpoints give ([\d.]+) image AUROC, ([\d.]+) pixel AUROC, ([\d.]+) pixel AP", flat
    )
    assert m, "the spec's DRAEM README sentence was not found"
    put("draem_readme", "mean_all15", "draem", (*ia_pa, "pixel_ap"), [float(g) for g in m.groups()])

    # method_a_score_tscales.md §4: Method A's numbers are "not found"
    method_a = (SPEC / "method_a_score_tscales.md").read_text(encoding="utf-8")
    table = _table(method_a, ["Quantity", "Value", "Source"])
    status = {row[0]: row[1] for row in table[1:]}
    first = "MVTec AD per-class image AUROC (carpet, grid, leather, tile, wood, mean)"
    classes = [c.strip() for c in re.search(r"\(([^)]*)\)", first).group(1).split(",")]
    for quantity, metrics in (
        (first, ("image_auroc",)),
        ("MVTec AD per-class pixel AUROC", ("pixel_auroc",)),
        ("PRO / AP", ("aupro", "image_ap", "pixel_ap")),
    ):
        assert status[quantity] == "not found", f"method_a_score_tscales.md §4 now gives {quantity}"
        for cls in classes:
            put("teng2022", cls, "method_a", metrics, [None] * len(metrics))
    return cells


@pytest.fixture(scope="module")
def spec_cells():
    return _spec_cells()


def test_the_spec_is_read_beside_the_repository():
    """CI lays the spec at ../shared/spec of the checkout; a missing spec fails here instead of skipping the
    comparison."""
    assert SPEC.resolve() == (ROOT / ".." / "shared" / "spec").resolve()
    assert (SPEC / "method_b_conditioned_blur_ddpm.md").is_file(), f"the spec is not at {SPEC}"


def test_every_number_equals_the_spec(raw, spec_cells):
    for i, entry in enumerate(raw["entries"]):
        key = tuple(entry[k] for k in ("source_id", "dataset", "class", "method", "metric"))
        if key not in spec_cells:  # a cell a paper table asks for and no source gives: no number at all
            assert entry["value"] is None and entry["status"] in ("not_found", "not_reported"), (
                f"entries[{i}] {key} has no cell in the spec's tables"
            )
            continue
        assert entry["value"] == spec_cells[key], (
            f"entries[{i}] {key}: {entry['value']} in published.yaml, {spec_cells[key]} in the spec"
        )


def test_every_spec_number_is_in_the_file(raw, spec_cells):
    have = {
        tuple(e[k] for k in ("source_id", "dataset", "class", "method", "metric")) for e in raw["entries"]
    }
    missing = [key for key, value in spec_cells.items() if value is not None and key not in have]
    assert not missing, f"spec numbers missing from published.yaml: {missing}"
