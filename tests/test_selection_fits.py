"""texad select takes each candidate's fit (training-image statistics) from the candidate's test-set run instead of
fitting again, where that run fitted on the validation split's own training images: Method A and Method B, whose
``train_stats`` normalisation fits, choose exactly as when every candidate fits in the select job; a fit of other
training images is not taken; and the taken state is the one used (another candidate's moves the metrics)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_independence import METHOD_B_TRAIN_STATS, RUN, _config, folders, trained  # noqa: F401 - fixtures
from test_predict import METHOD_A

from texad.data.synth import generate_class
from texad.methods import get
from texad.methods.base import RunKey, candidates, fit_state_path
from texad.methods.jobs import method_settings, run_method
from texad.methods.selection import score_candidates

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = {
    "method_a": ("score", {**METHOD_A, "select": {"n_scales": [2]}}),
    "method_b": ("ddpm", {**METHOD_B_TRAIN_STATS, "select": {"w": [0]}}),
}


def _validation_split(class_dir: Path, out: Path) -> Path:
    """A validation folder holding ``class_dir``'s training images (the images its runs fit on)."""
    shutil.copytree(class_dir, out)
    (out / "split.json").write_text(json.dumps({"holdout": 0, "n_normal": 4, "n_anomalous": 4, "seed": 0,
                                                "anomalies": ["perlin"], "validates_on_training_images": True}))  # fmt: skip
    return out


@pytest.mark.parametrize("method", sorted(CASES))
def test_select_takes_the_candidates_fits_and_chooses_as_when_it_fits(method, folders, trained, tmp_path):  # noqa: F811
    kind, block = CASES[method]
    config = _config(folders, method, block, image_size=32, selection={"criterion": "mean_auroc"})
    model = trained(kind, method, config)
    found = candidates(get(method), method_settings(config, method, RUN.class_name))
    assert len(found) == 2
    fits = {}
    for v in found:  # each candidate's test-set run, as the workflow runs it
        out = tmp_path / "runs" / v.name / "seed0.json"
        run_method(method, config, RunKey(RUN.dataset, RUN.class_name, 0, v.name), class_dir=folders.first,
                   models={"model": model}, out_result=out, out_maps=out.with_suffix(".npz"))  # fmt: skip
        fits[v.name] = fit_state_path(out)
    val = _validation_split(folders.first, tmp_path / "val" / RUN.class_name)

    def select(name, **kw):
        return score_candidates(method, config, RUN, validation_dir=val, models={"model": model},
                                out=tmp_path / f"{name}.json", **kw)  # fmt: skip

    fitted = select("fitted")
    taken = select("taken", fit_states=fits, fit_class_dir=folders.first)
    assert [r["fit"] for r in taken["candidates"]] == [str(fits[v.name]) for v in found]
    assert all(r["fit"].startswith("fitted") for r in fitted["candidates"])
    assert [r["validation"] for r in taken["candidates"]] == [r["validation"] for r in fitted["candidates"]]
    assert taken["chosen"] == fitted["chosen"]

    # a run that fitted on other training images: each candidate fits here
    other = tmp_path / "other"
    generate_class(
        other, RUN.class_name, image_size=64, n_train=8, n_test_good=1, n_test_per_defect=1, seed=5
    )
    refused = select("refused", fit_states=fits, fit_class_dir=other / RUN.class_name)
    assert [r["validation"] for r in refused["candidates"]] == [r["validation"] for r in fitted["candidates"]]
    assert all(r["fit"].startswith("fitted") for r in refused["candidates"])

    # the state taken is the one scored with: the candidates' files swapped move the validation metrics
    a, b = (v.name for v in found)
    swapped = select("swapped", fit_states={a: fits[b], b: fits[a]}, fit_class_dir=folders.first)
    assert [r["validation"] for r in swapped["candidates"]] != [r["validation"] for r in fitted["candidates"]]
