"""volsr.bids: a BIDS dataset's anatomical images into a BIDS derivative dataset.

The toy dataset: sub-01 (no session) with a T1w (sidecar beside it) and an acq-fast T2w (no
sidecar), sub-02/ses-1 with a T1w (inherits the top-level T1w.json) and a rec-norm FLAIR
(inherits a subject-level sidecar); 12 x 10 x 4 volumes of 1 x 1 x 4 mm voxels.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import volsr
from volsr import io
from volsr.bids import (
    BIDSError,
    derivative_path,
    find_anatomical,
    run_bids,
    run_participant,
    sidecar_metadata,
)
from volsr.bids import run as run_module
from volsr.bids.layout import ENTITY_ORDER, AnatImage
from volsr.bids.run import pending_path
from volsr.engine import EngineOptions, sizing, upsample_to_store
from volsr.engine import store as store_module
from volsr.engine.manifest import content_digest, model_identity
from volsr.errors import OutputExistsError, VolsrError
from volsr.models import create_model


def _engine_run(arguments: dict) -> dict:
    """``run_participant``'s arguments as ``upsample_to_store`` takes them (its engine options)."""
    return {**{k: v for k, v in arguments.items() if k != "quiet"}, "options": EngineOptions(quiet=arguments["quiet"])}


LINEAR = {"scale": (1, 1, 4), "model": "linear", "quiet": True}  # run_participant's arguments
OUTPUTS = [
    "sub-01/anat/sub-01_res-volsr_T1w.nii.gz",
    "sub-01/anat/sub-01_acq-fast_res-volsr_T2w.nii.gz",
    "sub-02/ses-1/anat/sub-02_ses-1_res-volsr_T1w.nii.gz",
    "sub-02/ses-1/anat/sub-02_ses-1_rec-norm_res-volsr_FLAIR.nii.gz",
]


def _nifti(path: Path, shape=(12, 10, 4), seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).random(shape, dtype=np.float32) * 100
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 4.0, 1.0])), path)


def _json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    _json(root / "dataset_description.json", {"Name": "toy", "BIDSVersion": "1.10.0"})
    _json(root / "T1w.json", {"SliceThickness": 4.0, "EchoTime": 0.003})
    _nifti(root / "sub-01/anat/sub-01_T1w.nii.gz", seed=1)
    _json(root / "sub-01/anat/sub-01_T1w.json", {"SliceThickness": 3.0, "SpacingBetweenSlices": 4.0})
    _nifti(root / "sub-01/anat/sub-01_acq-fast_T2w.nii.gz", seed=2)
    _nifti(root / "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz", seed=3)
    _nifti(root / "sub-02/ses-1/anat/sub-02_ses-1_rec-norm_FLAIR.nii.gz", seed=4)
    _json(root / "sub-02/sub-02_FLAIR.json", {"SliceThickness": 3.5})
    _nifti(root / "derivatives/other/sub-01/anat/sub-01_T1w.nii.gz")  # never an input
    _nifti(root / "sub-01/anat/.sub-01_T2w.nii.gz")  # hidden
    return root


def _tree(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts))


def _sidecar(out: Path, relpath: str) -> dict:
    return json.loads((out / relpath.replace(".nii.gz", ".json")).read_text())


def test_names_sidecars_and_dataset_description(raw):
    out = raw / "derivatives" / "volsr"
    lines = []
    results = run_participant(raw, out, progress=lines.append, **LINEAR)
    assert [r.status for r in results] == ["written"] * 4
    expected = sorted([*OUTPUTS, *(o.replace(".nii.gz", ".json") for o in OUTPUTS), "dataset_description.json"])
    assert _tree(out) == expected
    assert lines[0] == "sub-01 T1w: 1 of 4, upsampling with linear"
    assert lines[3].startswith("sub-02 ses-1 rec-norm FLAIR: 4 of 4")

    t1 = _sidecar(out, OUTPUTS[0])
    assert t1["Sources"] == ["bids:raw:sub-01/anat/sub-01_T1w.nii.gz"]
    assert t1["SkullStripped"] is False and "1 x 1 x 1 mm" in t1["Resolution"]
    record = t1["SuperResolution"]
    assert record["ScaleFactors"] == [1.0, 1.0, 4.0]
    assert record["InputVoxelSize"] == [1.0, 1.0, 4.0] and record["OutputVoxelSize"] == [1.0, 1.0, 1.0]
    assert record["InputShape"] == [12, 10, 4] and record["OutputShape"] == [12, 10, 16]
    assert record["GeneratedBy"] == {
        "Name": "volsr", "Version": volsr.__version__, "Model": "linear", "ModelKind": "interpolation",
        "WeightsSHA256": model_identity(create_model("linear"))["weights_sha256"],
    }  # fmt: skip
    assert record["AcquisitionModel"] == {"SliceAxis": 2, "SliceThickness": [1.0, 1.0, 3.0],
                                          "SliceGap": [0.0, 0.0, 1.0], "ThicknessFrom": "sidecar",
                                          "SpacingFrom": "sidecar"}  # fmt: skip
    # No sidecar at all: thickness = header spacing, no gap.
    t2 = _sidecar(out, OUTPUTS[1])["SuperResolution"]["AcquisitionModel"]
    assert (t2["SliceThickness"], t2["SliceGap"], t2["ThicknessFrom"]) == ([1.0, 1.0, 4.0], [0.0, 0.0, 0.0], "contiguous")
    # Top-level T1w.json (4 mm) and subject-level sub-02_FLAIR.json (3.5 mm) are inherited.
    t1_ses = _sidecar(out, OUTPUTS[2])["SuperResolution"]["AcquisitionModel"]
    assert (t1_ses["SliceThickness"][2], t1_ses["SliceGap"][2]) == (4.0, 0.0)
    flair = _sidecar(out, OUTPUTS[3])["SuperResolution"]["AcquisitionModel"]
    assert (flair["SliceThickness"][2], flair["SliceGap"][2], flair["SpacingFrom"]) == (3.5, 0.5, "header")

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "volsr"
    assert description["GeneratedBy"][0]["Version"] == volsr.__version__
    assert description["SourceDatasets"] == [{"URL": raw.resolve().as_uri()}]
    assert description["DatasetLinks"] == {"raw": "../.."}  # bids:raw: URIs resolve from OUT_DIR


def test_each_output_equals_upsample_to_store_on_its_source(raw, tmp_path):
    out = tmp_path / "out"
    run_participant(raw, out, **LINEAR)
    sources = {"sub-01/anat/sub-01_T1w.nii.gz": OUTPUTS[0],
               "sub-02/ses-1/anat/sub-02_ses-1_rec-norm_FLAIR.nii.gz": OUTPUTS[3]}  # fmt: skip
    for relpath, output in sources.items():
        reference = upsample_to_store(raw / relpath, tmp_path / "reference.nii.gz", overwrite=True, **_engine_run(LINEAR))
        got, want = io.load(out / output), io.load(reference)
        assert got.shape == (12, 10, 16)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
        np.testing.assert_allclose(got.affine, want.affine)
    # DatasetLinks: an output outside BIDS_DIR points to the raw dataset by a file URI.
    assert json.loads((out / "dataset_description.json").read_text())["DatasetLinks"] == {"raw": raw.resolve().as_uri()}


def test_output_tree_passes_the_bids_schema(raw, tmp_path):
    import bidsschematools.rules as rules  # declared in the test extra
    import bidsschematools.schema as schema_module
    schema = schema_module.load_schema()
    schema_order = [schema.objects.entities[e].name for e in schema.rules.entities]
    assert [e for e in schema_order if e in ENTITY_ORDER] == list(ENTITY_ORDER)  # same relative order
    patterns = [entry["regex"] for group in (schema.rules.files.common, schema.rules.files.deriv)
                for entry in rules.regexify_filename_rules(group, schema, level=2)]  # fmt: skip
    out = tmp_path / "out"
    run_participant(raw, out, **LINEAR)
    for relpath in _tree(out):
        assert any(re.match(r"(?:.*/)?" + p, "/" + relpath) for p in patterns), relpath
    # Sidecar fields the derivative rules require: SkullStripped (images), Resolution (res-).
    for relpath in OUTPUTS:
        sidecar = _sidecar(out, relpath)
        assert isinstance(sidecar["SkullStripped"], bool) and isinstance(sidecar["Resolution"], str)
        assert all(uri.startswith("bids:raw:") and (raw / uri[9:]).is_file() for uri in sidecar["Sources"])


def test_the_raw_tree_is_valid_for_the_validator(raw):
    import bids_validator

    validator = bids_validator.BIDSValidator()
    for image in find_anatomical(raw):
        assert validator.is_bids("/" + image.relpath), image.relpath


def test_a_second_run_skips_finished_files(raw, tmp_path):
    out = tmp_path / "out"
    run_participant(raw, out, **LINEAR)
    times = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    lines = []
    results = run_participant(raw, out, progress=lines.append, **LINEAR)
    assert [r.status for r in results] == ["skipped"] * 4
    assert all(line.endswith("finished, skipped") for line in lines)
    assert times == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def _failing_at(write_number, original):
    calls = []

    def failing(array, region, result):
        calls.append(region)
        if len(calls) == write_number:
            raise OSError(28, "No space left on device")
        original(array, region, result)

    return failing, calls


def test_a_killed_file_continues_with_the_engine_resume(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    _json(raw / "dataset_description.json", {"Name": "toy", "BIDSVersion": "1.10.0"})
    _nifti(raw / "sub-01/anat/sub-01_T1w.nii.gz", shape=(8, 8, 40))  # output 8 x 8 x 160: 3 chunks
    monkeypatch.setattr(sizing, "MAX_TILE_EDGE", 16)  # tiles of one 64-voxel chunk: 3 tasks
    out, original = tmp_path / "out", store_module.write_result
    failing, _ = _failing_at(2, original)
    monkeypatch.setattr(store_module, "write_result", failing)
    with pytest.raises(OSError, match="No space left"):
        run_participant(raw, out, **LINEAR)
    output = out / "sub-01/anat/sub-01_res-volsr_T1w.nii.gz"
    sidecar = output.with_name("sub-01_res-volsr_T1w.json")
    assert not output.exists() and not sidecar.exists() and pending_path(sidecar).exists()
    assert store_module.unfinished_run(output) is not None
    counting, calls = _failing_at(0, original)
    monkeypatch.setattr(store_module, "write_result", counting)
    assert [r.status for r in run_participant(raw, out, **LINEAR)] == ["resumed"]
    assert len(calls) == 2  # only the tasks the killed run had not finished
    assert sidecar.exists() and not pending_path(sidecar).exists()
    reference = upsample_to_store(raw / "sub-01/anat/sub-01_T1w.nii.gz", tmp_path / "ref.nii.gz", **_engine_run(LINEAR))
    np.testing.assert_array_equal(io.load(output).numpy(), io.load(reference).numpy())


def test_a_run_killed_before_its_sidecar_completes_it(raw, tmp_path):
    out = tmp_path / "out"
    run_participant(raw, out, **LINEAR)
    sidecar = out / OUTPUTS[0].replace(".nii.gz", ".json")
    pending_path(sidecar).write_text(sidecar.read_text())  # as left between NIfTI and sidecar
    nifti = out / OUTPUTS[0]
    os.utime(pending_path(sidecar), ns=(nifti.stat().st_mtime_ns - 10**9,) * 2)  # recorded before
    text = sidecar.read_text()
    sidecar.unlink()
    assert [r.status for r in run_participant(raw, out, **LINEAR)][:2] == ["completed", "skipped"]
    assert sidecar.read_text() == text and not pending_path(sidecar).exists()
    sidecar.unlink()  # a NIfTI nobody vouches for is never adopted
    with pytest.raises(OutputExistsError, match="without a complete sidecar .*pass --overwrite"):
        run_participant(raw, out, **LINEAR)


def test_an_old_output_whose_replacement_failed_is_not_adopted(raw, tmp_path, monkeypatch):
    out, labels = tmp_path / "out", ["01"]
    run_participant(raw, out, participant_labels=labels, **LINEAR)
    other = {**LINEAR, "scale": (1, 1, 2)}
    failing, _ = _failing_at(1, store_module.write_result)
    monkeypatch.setattr(store_module, "write_result", failing)
    with pytest.raises(OSError, match="No space left"):  # fails before any task: no work store left
        run_participant(raw, out, participant_labels=labels, overwrite=True, **other)
    monkeypatch.undo()
    assert io.load(out / OUTPUTS[0]).shape == (12, 10, 16)  # the old output is kept
    with pytest.raises(OutputExistsError, match="without a complete sidecar"):
        run_participant(raw, out, participant_labels=labels, **other)
    assert [r.status for r in run_participant(raw, out, participant_labels=labels, overwrite=True, **other)] == [
        "written", "written"]


def test_other_options_are_refused_then_overwrite_replaces(raw, tmp_path):
    out = tmp_path / "out"
    run_participant(raw, out, participant_labels=["01"], **LINEAR)
    other = {**LINEAR, "scale": (1, 1, 2)}
    with pytest.raises(OutputExistsError, match="made with model linear at factors 1 x 1 x 4, this run asks "
                                                "for model linear at factors 1 x 1 x 2"):
        run_participant(raw, out, participant_labels=["01"], **other)
    results = run_participant(raw, out, participant_labels=["01"], overwrite=True, **other)
    assert [r.status for r in results] == ["written"] * 2
    assert io.load(results[0].output).shape == (12, 10, 8)
    assert _sidecar(out, OUTPUTS[0])["SuperResolution"]["ScaleFactors"] == [1.0, 1.0, 2.0]


@pytest.mark.parametrize(("labels", "subjects"), [(["01"], {"sub-01"}), (["sub-02"], {"sub-02"}),
                                                  (["02", "sub-01"], {"sub-01", "sub-02"})])
def test_participant_labels_filter(raw, tmp_path, labels, subjects):
    images = find_anatomical(raw, participant_labels=labels)
    assert {f"sub-{image.subject}" for image in images} == subjects
    results = run_participant(raw, tmp_path / "out", participant_labels=labels, **LINEAR)
    assert {r.output.relative_to(tmp_path / "out").parts[0] for r in results} == subjects


def test_default_grid_is_isotropic_at_the_finest_voxel_size(raw, tmp_path):
    results = run_participant(raw, tmp_path / "out", participant_labels=["01"], model="linear", quiet=True)
    assert io.load(results[0].output).spacing.tolist() == [1.0, 1.0, 1.0]


def test_sidecar_inheritance_nearest_and_most_specific_win(raw):
    _json(raw / "acq-fast_T2w.json", {"EchoTime": 0.1, "RepetitionTime": 3})
    _json(raw / "T2w.json", {"EchoTime": 0.2, "FlipAngle": 90})
    _json(raw / "sub-01/anat/sub-01_acq-slow_T2w.json", {"EchoTime": 9})  # other entities
    _json(raw / "sub-01/sub-01_T2w.json", {"RepetitionTime": 4})
    image = next(i for i in find_anatomical(raw) if i.suffix == "T2w")
    assert sidecar_metadata(raw, image) == {"EchoTime": 0.1, "RepetitionTime": 4, "FlipAngle": 90}


def test_derivative_names_keep_source_entities_in_schema_order():
    image = AnatImage(Path("/r/x"), "sub-1/ses-a/anat/x.nii", (("sub", "1"), ("ses", "a"), ("acq", "b"),
                      ("rec", "c"), ("run", "2"), ("echo", "1"), ("part", "mag")), "T2starw")  # fmt: skip
    assert derivative_path("/o", image).name == "sub-1_ses-a_acq-b_rec-c_run-2_echo-1_part-mag_res-volsr_T2starw.nii.gz"
    assert derivative_path("/o", image, extension=".json").parent.as_posix() == "/o/sub-1/ses-a/anat"


def test_misnamed_and_mask_files_are_skipped(raw):
    _nifti(raw / "sub-01/anat/sub-02_T1w.nii.gz")
    _nifti(raw / "sub-01/anat/sub-01_defacemask.nii.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = find_anatomical(raw)
    assert len(images) == 4
    assert any("do not match its folder sub-01" in str(w.message) for w in caught)


@pytest.mark.parametrize(("case", "message"), [
    ("no_description", "is not a BIDS dataset: it has no dataset_description.json"),
    ("out_is_raw", "is inside BIDS_DIR"),
    ("out_in_subject", "is inside BIDS_DIR"),
    ("out_is_derivatives", "is inside BIDS_DIR"),
    ("missing_label", r"no anatomical images in .* for sub-03 \(subjects with some: sub-01, sub-02\)"),
    ("bad_label", "--participant-label must be alphanumeric"),
    ("foreign_out", "holds another dataset"),
    ("bad_thickness", "SliceThickness of sub-01/anat/sub-01_T1w.nii.gz .*must be a number of mm > 0, got 'thick'"),
    ("no_images", "no anatomical images in"),
])  # fmt: skip
def test_refusals_are_one_line_volsr_errors(raw, tmp_path, case, message):
    out, labels = tmp_path / "out", None
    if case == "no_description":
        (raw / "dataset_description.json").unlink()
    out = {"out_is_raw": raw, "out_in_subject": raw / "sub-01" / "x",
           "out_is_derivatives": raw / "derivatives"}.get(case, out)  # fmt: skip
    labels = {"missing_label": ["03"], "bad_label": ["0 1"]}.get(case)
    if case == "foreign_out":
        _json(out / "dataset_description.json", {"Name": "x", "BIDSVersion": "1.10.0"})
    if case == "bad_thickness":
        _json(raw / "sub-01/anat/sub-01_T1w.json", {"SliceThickness": "thick"})
    if case == "no_images":
        for path in raw.glob("sub-*/**/*.nii.gz"):
            path.unlink()
    with pytest.raises(VolsrError, match=message) as caught:
        run_participant(raw, out, participant_labels=labels, **LINEAR)
    assert isinstance(caught.value, (BIDSError, ValueError)) and "\n" not in str(caught.value)
    if case != "foreign_out":
        assert not (tmp_path / "out").exists()  # refused before any output


def test_run_bids_on_parsed_arguments(raw, tmp_path):
    args = argparse.Namespace(
        bids_dir=str(raw), output_dir=str(tmp_path / "out"), analysis_level="participant",
        participant_label=["sub-01"], scale=(1.0, 1.0, 4.0), target_spacing=None, model="linear",
        device="cpu", overwrite=False, quiet=True,
    )  # fmt: skip
    assert run_bids(args).startswith("2 anatomical images of 1 participants: 2 written; outputs in ")
    assert "2 skipped" in run_bids(args)


def test_cli_bids(raw, tmp_path, capsys):
    from volsr.cli import main

    out = tmp_path / "out"
    assert main(["bids", str(raw), str(out), "participant", "--participant-label", "02",
                 "--scale", "1,1,4", "--model", "linear"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "sub-02 ses-1 T1w: 1 of 2, upsampling with linear" in captured.err
    assert "2 written" in captured.out
    assert main(["bids", str(raw), str(raw / "sub-01"), "participant"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _three_images(tmp_path: Path) -> Path:
    """sub-01 with three images of 8 x 8 x 40 voxels: outputs of 3 tasks each (with 16-voxel tiles)."""
    raw = tmp_path / "raw"
    _json(raw / "dataset_description.json", {"Name": "toy", "BIDSVersion": "1.10.0"})
    for seed, suffix in enumerate(("FLAIR", "T1w", "T2w")):
        _nifti(raw / f"sub-01/anat/sub-01_{suffix}.nii.gz", shape=(8, 8, 40), seed=seed)
    return raw


def test_a_killed_overwrite_run_continues_with_overwrite(tmp_path, monkeypatch):
    raw, out = _three_images(tmp_path), tmp_path / "out"
    monkeypatch.setattr(sizing, "MAX_TILE_EDGE", 16)
    run_participant(raw, out, **LINEAR)
    nearest, original = {**LINEAR, "model": "nearest"}, store_module.write_result
    failing, _ = _failing_at(5, original)  # the first image's 3 tasks, then 1 of the second's
    monkeypatch.setattr(store_module, "write_result", failing)
    with pytest.raises(OSError, match="No space left"):
        run_participant(raw, out, overwrite=True, **nearest)
    first, second, third = (out / f"sub-01/anat/sub-01_res-volsr_{s}.nii.gz" for s in ("FLAIR", "T1w", "T2w"))
    assert store_module.unfinished_run(second) is not None
    # Without --overwrite: refused (the third image is still linear) before anything changes.
    counting, calls = _failing_at(0, original)
    monkeypatch.setattr(store_module, "write_result", counting)
    with pytest.raises(OutputExistsError, match="made with model linear .*pass --overwrite"):
        run_participant(raw, out, **nearest)
    assert store_module.unfinished_run(second) is not None and not calls
    # With --overwrite: the finished image is kept, the unfinished one continued, the old one replaced.
    lines = []
    results = run_participant(raw, out, overwrite=True, progress=lines.append, **nearest)
    assert [r.status for r in results] == ["skipped", "resumed", "written"]
    assert lines[1].endswith("resuming an unfinished run")
    assert len(calls) == 2 + 3  # the second image's 2 remaining tasks, the third image's 3
    for image, output in zip(find_anatomical(raw), (first, second, third), strict=True):
        reference = upsample_to_store(image.path, tmp_path / "ref.nii.gz", overwrite=True, **_engine_run(nearest))
        np.testing.assert_array_equal(io.load(output).numpy(), io.load(reference).numpy())
        sidecar = output.with_name(output.name.replace(".nii.gz", ".json"))
        assert json.loads(sidecar.read_text())["SuperResolution"]["GeneratedBy"]["Model"] == "nearest"
        assert not pending_path(sidecar).exists() and store_module.unfinished_run(output) is None
    # --overwrite with the same options again: nothing redone.
    assert [r.status for r in run_participant(raw, out, overwrite=True, **nearest)] == ["skipped"] * 3


def test_overwrite_restarts_an_unfinished_run_the_engine_cannot_continue(tmp_path, monkeypatch):
    raw, out = _three_images(tmp_path), tmp_path / "out"
    monkeypatch.setattr(sizing, "MAX_TILE_EDGE", 16)
    failing, _ = _failing_at(2, store_module.write_result)
    monkeypatch.setattr(store_module, "write_result", failing)
    with pytest.raises(OSError, match="No space left"):  # a linear work store of the first image
        run_participant(raw, out, **LINEAR)
    monkeypatch.undo()
    monkeypatch.setattr(sizing, "MAX_TILE_EDGE", 16)
    nearest = {**LINEAR, "model": "nearest"}
    first = out / "sub-01/anat/sub-01_res-volsr_FLAIR.nii.gz"
    with pytest.raises(OutputExistsError, match="unfinished run .* model linear .*pass --overwrite"):
        run_participant(raw, out, **nearest)

    def failing_early(*args, **kwargs):  # as an engine refusal before it touches the work store
        raise VolsrError("no such device")

    monkeypatch.setattr(run_module, "upsample_to_store", failing_early)
    with pytest.raises(VolsrError, match="no such device"):
        run_participant(raw, out, overwrite=True, **nearest)
    monkeypatch.setattr(run_module, "upsample_to_store", upsample_to_store)
    # The pending record says nearest, the work store is linear's: the engine refuses to
    # continue it, and --overwrite starts it again.
    with pytest.raises(VolsrError, match="cannot resume"):
        run_participant(raw, out, **nearest)
    assert [r.status for r in run_participant(raw, out, overwrite=True, **nearest)] == ["written"] * 3
    reference = upsample_to_store(find_anatomical(raw)[0].path, tmp_path / "ref.nii.gz", **_engine_run(nearest))
    np.testing.assert_array_equal(io.load(first).numpy(), io.load(reference).numpy())


def test_a_changed_source_is_not_skipped(raw, tmp_path):
    out = tmp_path / "out"
    run_participant(raw, out, **LINEAR)
    source = raw / "sub-01/anat/sub-01_T1w.nii.gz"
    stat = source.stat()
    _nifti(source, seed=99)  # re-converted: same path, shape and size, new voxels
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size
    with pytest.raises(OutputExistsError, match=r"made from other contents of sub-01/anat/sub-01_T1w\.nii\.gz"):
        run_participant(raw, out, **LINEAR)
    assert [r.status for r in run_participant(raw, out, overwrite=True, **LINEAR)] == [
        "written", "skipped", "skipped", "skipped"]
    reference = upsample_to_store(source, tmp_path / "ref.nii.gz", **_engine_run(LINEAR))
    np.testing.assert_array_equal(io.load(out / OUTPUTS[0]).numpy(), io.load(reference).numpy())
    sidecar = out / OUTPUTS[0].replace(".nii.gz", ".json")
    digest = content_digest([source])[0]
    assert json.loads(sidecar.read_text())["SuperResolution"]["SourceSHA256"] == digest
    # A sidecar that does not record its source's content (an older volsr) is not trusted.
    record = json.loads(sidecar.read_text())
    del record["SuperResolution"]["SourceSHA256"]
    sidecar.write_text(json.dumps(record))
    with pytest.raises(OutputExistsError, match="not recorded"):
        run_participant(raw, out, **LINEAR)
