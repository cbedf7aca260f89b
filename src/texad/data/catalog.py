"""What texad knows about each dataset: sources, checksums, licences and expected layout.

The values come from ../shared/spec/datasets_and_metrics.md. A checksum is pinned only where a source
publishes one; everything else is checked against a trust-on-first-use manifest (see ``stage.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
DTD_SYNTHETIC_CLASSES = (
    "Blotchy_099", "Fibrous_183", "Marbled_078", "Matted_069", "Mesh_114", "Perforated_037",
    "Stratified_154", "Woven_001", "Woven_068", "Woven_104", "Woven_125", "Woven_127",
)  # fmt: skip


@dataclass(frozen=True)
class ClassLayout:
    """Expected counts of one MVTec-layout class. ``defects`` maps defect folder -> number of test images."""

    train_good: int
    test_good: int
    defects: dict[str, int]
    size: tuple[int, int]  # (width, height) of every image and mask
    mode: str  # PIL mode of the images: "RGB" or "L"

    @property
    def n_defective(self) -> int:
        return sum(self.defects.values())


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    url: str | None
    sha256: str | None
    md5: str | None
    licence: str
    licence_needs_acceptance: bool
    layout: str  # "mvtec" (class folders) or "dtd" (images/<category>/*.jpg)
    classes: tuple[str, ...] = ()
    expected: dict[str, ClassLayout] = field(default_factory=dict)
    archive_name: str | None = None
    citation: str = ""


MVTEC_LICENCE = (
    "MVTec AD is (c) 2019 MVTec Software GmbH and licensed under CC BY-NC-SA 4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use only, derived data must carry the "
    "same licence, and texad never redistributes it. Cite Bergmann et al., CVPR 2019 and IJCV 2021."
)

DATASETS: dict[str, Dataset] = {
    "mvtec_ad": Dataset(
        name="mvtec_ad",
        title="MVTec AD (texture classes)",
        url=(
            "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
            "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
        ),
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        md5="eefca59f2cede9c3fc5b6befbfec275e",
        licence=MVTEC_LICENCE,
        licence_needs_acceptance=True,
        layout="mvtec",
        classes=MVTEC_TEXTURES,
        archive_name="mvtec_anomaly_detection.tar.xz",
        citation="Bergmann et al., MVTec AD, CVPR 2019; IJCV 2021 (doi:10.1007/s11263-020-01400-4)",
        expected={
            "carpet": ClassLayout(
                280,
                28,
                {"color": 19, "cut": 17, "hole": 17, "metal_contamination": 17, "thread": 19},
                (1024, 1024),
                "RGB",
            ),
            "grid": ClassLayout(
                264,
                21,
                {"bent": 12, "broken": 12, "glue": 11, "metal_contamination": 11, "thread": 11},
                (1024, 1024),
                "L",
            ),
            "leather": ClassLayout(
                245, 32, {"color": 19, "cut": 19, "fold": 17, "glue": 19, "poke": 18}, (1024, 1024), "RGB"
            ),
            "tile": ClassLayout(
                230,
                33,
                {"crack": 17, "glue_strip": 18, "gray_stroke": 16, "oil": 18, "rough": 15},
                (840, 840),
                "RGB",
            ),
            "wood": ClassLayout(
                247,
                19,
                {"color": 8, "combined": 11, "hole": 10, "liquid": 10, "scratch": 21},
                (1024, 1024),
                "RGB",
            ),
        },  # fmt: skip
    ),
    "dtd_synthetic": Dataset(
        name="dtd_synthetic",
        title="DTD-Synthetic (Aota et al., WACV 2023)",
        # Hosted on Google Drive only (needs a confirmation step): download by hand and set
        # datasets.dtd_synthetic.archive, or give a direct URL in datasets.dtd_synthetic.url.
        url=None,
        sha256=None,
        md5=None,
        licence=(
            "DTD-Synthetic has no published licence; it is built from DTD (research use only). texad treats it as "
            "research-only and non-redistributable. Cite Aota, Tong, Okatani, WACV 2023."
        ),
        licence_needs_acceptance=True,
        layout="mvtec",
        classes=DTD_SYNTHETIC_CLASSES,
        citation="Aota, Tong, Okatani, Zero-shot versus Many-shot, WACV 2023",
    ),
    "dtd": Dataset(
        name="dtd",
        title="Describable Textures Dataset (DRAEM's anomaly source)",
        url="https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        sha256=None,
        md5="fff73e5086ae6bdbea199a49dfb8a4c1",
        licence="DTD is made available for research purposes (site); the first author's dataset card says CC BY 4.0.",
        licence_needs_acceptance=False,
        layout="dtd",
        archive_name="dtd-r1.0.1.tar.gz",
        citation="Cimpoi et al., Describing Textures in the Wild, CVPR 2014",
    ),
}

DTD_EXPECTED_CATEGORIES = 47
DTD_EXPECTED_IMAGES = 5640


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None
