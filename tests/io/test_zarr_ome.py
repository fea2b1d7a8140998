"""OME-Zarr (NGFF v0.5) reader/writer: round trips, metadata structure, foreign stores, laziness."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from volsr.errors import FormatError
from volsr.io import load, missing_chunks, save
from volsr.io.zarr_ome import default_chunks
from volsr.volume import Volume

OBLIQUE = np.array(
    [[0.9, 0.2, 0.0, 10.5], [-0.2, 0.9, 0.3, -4.0], [0.0, -0.3, 2.5, 3.25], [0, 0, 0, 1]]
)


def attributes(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, np.uint16])
def test_round_trip_data_affine_and_dtype(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = (rng.random((21, 17, 9)) * 200).astype(dtype)
    volume = Volume(data, OBLIQUE, ("i", "j", "k"))
    back = load(save(volume, tmp_path / "v.zarr", chunks=(8, 8, 4)))
    assert back.axes == ("i", "j", "k") and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.affine, OBLIQUE)
    np.testing.assert_array_equal(back.numpy(), data)
    assert zarr.open_array(tmp_path / "v.zarr" / "0", mode="r").chunks == (8, 8, 4)


def test_cube_keeps_band_axis_and_spectra_and_puts_channel_first_on_disk(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.random((12, 10, 5), dtype=np.float32)
    volume = Volume(data, np.diag([2.0, 3.0, 1.0, 1.0]), ("i", "j", "band"),
                    wavelengths=[400.5, 500, 600, 700, 800], fwhm=[5, 5, 6, 6, 7])  # fmt: skip
    path = save(volume, tmp_path / "cube.zarr", chunks=(4, 4, 5))
    back = load(path)
    assert back.axes == ("i", "j", "band")
    np.testing.assert_array_equal(back.numpy(), data)
    np.testing.assert_array_equal(back.wavelengths, [400.5, 500, 600, 700, 800])
    np.testing.assert_array_equal(back.fwhm, [5, 5, 6, 6, 7])
    on_disk = zarr.open_array(path / "0", mode="r")
    assert on_disk.shape == (5, 12, 10) and on_disk.chunks == (5, 4, 4)
    np.testing.assert_array_equal(on_disk[:], data.transpose(2, 0, 1))
    ome = attributes(path)["ome"]
    assert ome["multiscales"][0]["axes"] == [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "millimeter"},
        {"name": "x", "type": "space", "unit": "millimeter"},
    ]
    assert on_disk.metadata.dimension_names == ("c", "y", "x")


def test_ngff_metadata_matches_an_axis_aligned_affine(tmp_path):
    affine = np.array([[0.5, 0, 0, -12.0], [0, 0.75, 0, 30.5], [0, 0, 3.3, 7.0], [0, 0, 0, 1]])
    path = save(
        Volume(np.zeros((6, 5, 4), np.float32), affine, ("i", "j", "k")), tmp_path / "a.zarr"
    )
    ome = attributes(path)["ome"]
    assert ome["version"] == "0.5"
    (multiscale,) = ome["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "millimeter" for a in multiscale["axes"])
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    scale, translation = dataset["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [0.5, 0.75, 3.3]}
    assert translation == {"type": "translation", "translation": [-12.0, 30.5, 7.0]}
    array_meta = json.loads((path / "0" / "zarr.json").read_text())
    assert array_meta["zarr_format"] == 3
    assert "zstd" in [codec["name"] for codec in array_meta["codecs"]]
    # Without the volsr record, a reader of NGFF alone recovers the same affine.
    group = zarr.open_group(LocalStore(path), mode="r+")
    del group.attrs["volsr"]
    np.testing.assert_array_equal(load(path).affine, affine)


def test_foreign_ngff_with_time_axis_micrometres_and_multiscale_transform(tmp_path):
    path = tmp_path / "foreign.zarr"
    group = zarr.open_group(LocalStore(path), mode="w", zarr_format=3)
    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(1, 2, 3, 4, 5)
    group.create_array("s0", data=data, chunks=(1, 1, 3, 2, 5))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    dataset = {"path": "s0", "coordinateTransformations": [
        {"type": "scale", "scale": [1, 1, 2.0, 0.5, 0.5]},
        {"type": "translation", "translation": [0, 0, 10.0, 20.0, 30.0]}]}  # fmt: skip
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset],
        "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 2, 2, 2]}]}]}  # fmt: skip
    volume = load(path)
    assert volume.axes == ("i", "j", "k", "channel")
    np.testing.assert_array_equal(volume.numpy(), data[0].transpose(1, 2, 3, 0))
    # world(um) = 2 * (scale * index + translation); in mm divide by 1000.
    expected = np.diag([4e-3, 1e-3, 1e-3, 1.0])
    expected[:3, 3] = [20e-3, 40e-3, 60e-3]
    np.testing.assert_allclose(volume.affine, expected, rtol=1e-12)


def test_ngff_v04_layout_from_zarr_v2(tmp_path):
    path = tmp_path / "old.zarr"
    group = zarr.open_group(LocalStore(path), mode="w", zarr_format=2)
    group.create_array("0", data=np.ones((3, 4), np.float32))
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2, 3]}]}]}]  # fmt: skip
    volume = load(path)
    assert volume.axes == ("i", "j")
    np.testing.assert_array_equal(volume.affine, np.diag([2.0, 3.0, 1.0, 1.0]))


def test_plain_zarr_array_gets_identity_affine(tmp_path):
    path = tmp_path / "plain.zarr"
    zarr.create_array(LocalStore(path), data=np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    volume = load(path)
    assert volume.axes == ("i", "j", "k")
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    np.testing.assert_array_equal(volume.numpy(), np.arange(24).reshape(2, 3, 4))


def test_load_reads_no_chunk_and_a_voxel_reads_one(tmp_path, monkeypatch):
    data = np.arange(16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16)
    path = save(Volume(data, OBLIQUE, ("i", "j", "k")), tmp_path / "lazy.zarr", chunks=(4, 4, 4))
    keys: list[str] = []
    original = LocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    volume = load(path)
    assert volume.shape == (16, 16, 16)
    np.testing.assert_array_equal(volume.affine, OBLIQUE)
    assert [k for k in keys if "/c/" in k] == []
    assert float(volume.data[5, 9, 14].compute()) == data[5, 9, 14]
    assert [k for k in keys if "/c/" in k] == ["0/c/1/2/3"]


def test_default_chunks_are_bounded():
    assert default_chunks((500, 30, 64, 3)) == (64, 30, 64, 3)


@pytest.mark.parametrize(
    ("setup", "message"),
    [(lambda p: None, "no such file"),
     (lambda p: p.mkdir(), "not a readable zarr store"),
     (lambda p: (p.mkdir(), (p / "zarr.json").write_text("{broken")), "not a readable zarr store"),
     (lambda p: zarr.open_group(LocalStore(p), mode="w"), "without OME-Zarr 'multiscales'"),
     (lambda p: zarr.create_array(LocalStore(p), data=np.zeros((2, 2, 2, 2, 2))), "2 or 3 dimensions")],
)  # fmt: skip
def test_missing_or_broken_stores_raise_format_error(tmp_path, setup, message):
    path = tmp_path / "bad.zarr"
    setup(path)
    with pytest.raises(FormatError, match=message):
        load(path)


def test_unsupported_transform_and_bad_chunks(tmp_path):
    volume = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), ("i", "j", "k"))
    path = save(volume, tmp_path / "t.zarr")
    group = zarr.open_group(LocalStore(path), mode="r+")
    del group.attrs["volsr"]
    ome = group.attrs["ome"]
    ome["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [{"type": "affine"}]
    group.attrs["ome"] = ome
    with pytest.raises(FormatError, match="unsupported NGFF coordinate transformation 'affine'"):
        load(path)
    with pytest.raises(ValueError, match="chunks must give one positive size per array axis"):
        save(volume, tmp_path / "c.zarr", chunks=(4, 4))
    assert not (tmp_path / "c.zarr").exists()


# ------------------------------------------------------------------- hostile stores


def _foreign(path: Path, attrs: dict | None, *, shape=(8, 8, 4), chunks=(4, 4, 4), zarr_format=3,
             dtype="f4", data: np.ndarray | None = None) -> Path:  # fmt: skip
    group = zarr.open_group(LocalStore(path), mode="w", zarr_format=zarr_format)
    array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    if data is not None:
        array[...] = data
    if attrs is not None:
        group.attrs.update(attrs)
    return path


def _ngff(axes: list, datasets: list | None = None) -> dict:
    scale = [{"type": "scale", "scale": [1.0] * len(axes)}]
    multiscale = {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]
                  if datasets is None else datasets}  # fmt: skip
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}


def _axes(unit: str | None = "millimeter") -> list[dict]:
    return [{"name": n, "type": "space", **({"unit": unit} if unit else {})} for n in "zyx"]


RAMP = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [({"ome": {"version": "0.5", "multiscales": []}}, "OME-Zarr 'multiscales' is empty"),
     (_ngff(_axes(), datasets=[]), "the OME-Zarr multiscale has no 'datasets'"),
     (_ngff(_axes(), datasets=[{"path": "../elsewhere"}]), "dataset path '../elsewhere' is not a path inside"),
     (_ngff(_axes(), datasets=[{"path": "1"}]), "dataset '1' is not an array in the store"),
     ({"ome": {"multiscales": {"axes": []}}}, "'multiscales' is empty or not a list"),
     (_ngff(_axes("parsec")), "unknown NGFF space unit 'parsec'")],
    ids=["empty-multiscales", "empty-datasets", "dotdot-path", "missing-array", "dict", "unknown-unit"],
)  # fmt: skip
def test_malformed_ngff_metadata_is_refused(tmp_path, attrs, message):
    path = _foreign(tmp_path / "in.zarr", attrs)
    with pytest.raises(FormatError, match=f"{tmp_path / 'in.zarr'}.*{re.escape(message)}"):
        load(path)


def test_ngff_03_string_axes_are_read(tmp_path):
    attrs = {"multiscales": [{"version": "0.3", "axes": ["z", "y", "x"], "datasets": [{"path": "0"}]}]}
    volume = load(_foreign(tmp_path / "v03.zarr", attrs, zarr_format=2, data=RAMP))
    assert volume.axes == ("i", "j", "k")
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    np.testing.assert_array_equal(volume.numpy(), RAMP)
    attrs["multiscales"][0]["axes"] = ["c", "y", "x"]
    assert load(_foreign(tmp_path / "c03.zarr", attrs, zarr_format=2)).axes == ("i", "j", "channel")


@pytest.mark.parametrize(("unit", "mm"), [("micrometer", 1e-3), ("nanometer", 1e-6), ("um", 1e-3)])
def test_small_units_are_accepted_converted_and_kept(tmp_path, unit, mm):
    path = _foreign(tmp_path / "micro.zarr", _ngff(_axes(unit)), data=RAMP)
    volume = load(path)
    np.testing.assert_allclose(volume.spacing, [mm] * 3, rtol=1e-12)
    canonical = {"um": "micrometer"}.get(unit, unit)
    assert volume.meta["ngff_unit"] == canonical
    save(volume.replace(affine=volume.affine @ np.diag([0.5, 0.5, 0.5, 1.0])), tmp_path / "out.zarr")
    multiscale = attributes(tmp_path / "out.zarr")["ome"]["multiscales"][0]
    assert {axis["unit"] for axis in multiscale["axes"]} == {canonical}
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    np.testing.assert_allclose(scale, [0.5] * 3, rtol=1e-12)  # in the store's unit, not mm


def test_absurd_declared_shape_is_refused_at_once(tmp_path):
    path = _foreign(tmp_path / "huge.zarr", _ngff(_axes()), shape=(10**6,) * 3, chunks=(64, 64, 64))
    with pytest.raises(FormatError, match=r"declares shape \(1000000, 1000000, 1000000\) = 1e\+18 voxels"):
        load(path)


def test_many_chunks_get_coarse_dask_blocks(tmp_path):
    path = _foreign(tmp_path / "sparse.zarr", _ngff(_axes()), shape=(2048, 2048, 64), chunks=(4, 8, 64))
    volume = load(path)
    assert volume.data.npartitions < 2**12  # 131072 zarr chunks, grouped
    assert all(c % 4 == 0 for c in volume.data.chunks[0]) and all(c % 8 == 0 for c in volume.data.chunks[1])
    assert missing_chunks(path) == (131072, 131072)


def test_missing_chunks_are_counted_without_reading_any(tmp_path, monkeypatch):
    path = _foreign(tmp_path / "gap.zarr", _ngff(_axes()), data=RAMP)
    chunk_files = sorted(p for p in (path / "0").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunk_files) == 4
    chunk_files[-1].unlink()
    (path / "0" / "c" / "notes.txt").write_text("not a chunk")

    original = LocalStore.get

    async def metadata_only(self, key, *args, **kwargs):
        assert "/c/" not in key, f"chunk {key} was read"
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", metadata_only)
    assert missing_chunks(path) == (1, 4)
    assert missing_chunks(tmp_path / "scan.nii.gz") is None


def test_missing_chunks_of_zarr_v2_and_sharded_arrays(tmp_path):
    v2 = zarr.create_array(LocalStore(tmp_path / "v2.zarr"), shape=(4, 4), chunks=(2, 2), dtype="f4",
                           zarr_format=2)  # fmt: skip
    v2[:2, :] = 1
    assert missing_chunks(tmp_path / "v2.zarr") == (2, 4)
    sharded = zarr.create_array(LocalStore(tmp_path / "sh.zarr"), shape=(8, 8), chunks=(2, 2),
                                shards=(4, 4), dtype="f4")  # fmt: skip
    sharded[:4, :4] = 1
    assert missing_chunks(tmp_path / "sh.zarr") == (3, 4)


def test_corrupt_chunk_is_a_format_error_naming_it(tmp_path):
    path = _foreign(tmp_path / "bad.zarr", _ngff(_axes()), data=RAMP)
    (path / "0" / "c" / "1" / "0" / "0").write_bytes(b"\x28\xb5\x2f\xfd garbage, not zstd" * 4)
    volume = load(path)
    np.testing.assert_array_equal(volume.data[:4].compute(), RAMP[:4])  # other chunks still read
    with pytest.raises(FormatError, match=f"cannot decode chunk 'c/1/0/0' of zarr store {path}/0"):
        volume.numpy()


@pytest.mark.parametrize(
    ("dtype", "message"),
    [("c8", r"complex data \(complex64\) in zarr store .*take the magnitude first"),
     ("S3", r"holds dtype \|S3, not numbers")],
)  # fmt: skip
def test_complex_and_string_arrays_are_refused(tmp_path, dtype, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: fixed-length bytes have no v3 specification
        path = _foreign(tmp_path / "x.zarr", _ngff(_axes()), dtype=dtype)
    with pytest.raises(FormatError, match=message):
        load(path)


@pytest.mark.parametrize(("stored", "expected"), [(">f4", np.float32), ("f2", np.float16), ("bool", np.uint8)])
def test_big_endian_float16_and_bool_arrays_are_read_natively(tmp_path, stored, expected):
    values = (RAMP % 3).astype(stored)
    path = _foreign(tmp_path / "x.zarr", _ngff(_axes()), dtype=stored, data=values)
    volume = load(path)
    assert volume.dtype == np.dtype(expected)
    read = volume.numpy()
    assert read.dtype == np.dtype(expected)
    np.testing.assert_array_equal(read, values.astype(expected))


def _transforms(path: Path) -> list[tuple[list[float], list[float]]]:
    datasets = attributes(path)["ome"]["multiscales"][0]["datasets"]
    return [tuple(t[t["type"]] for t in d["coordinateTransformations"]) for d in datasets]


def test_an_envi_cube_gets_the_northing_on_lines_and_the_easting_on_samples(tmp_path):
    from volsr.io._envi_map import map_affine

    affine = map_affine("{UTM, 1, 1, 500000, 4100000, 30, 30, 13, North, units=Meters}")
    cube = Volume(np.zeros((4, 6, 3), np.float32), affine, ("i", "j", "band"))
    ((scale, translation),) = _transforms(save(cube, tmp_path / "c.zarr"))
    # Disk order (c, y = lines, x = samples); mm. Pixel (1, 1)'s corner is at (500000 m E,
    # 4100000 m N), so pixel 0's centre is 15 m east and 15 m south of it.
    assert scale == [1.0, 30e3, 30e3]
    assert translation == [0.0, 4099985e3, 500015e3]


def test_permuted_axes_get_the_world_coordinate_along_their_own_column(tmp_path):
    # i -> world y, j -> world z, k -> world x (4 mm): a sagittal-like acquisition.
    affine = np.array([[0, 0, 4.0, 10.0], [1.0, 0, 0, 20.0], [0, 1.0, 0, 30.0], [0, 0, 0, 1]])
    ((scale, translation),) = _transforms(save(Volume(np.zeros((5, 6, 7), np.float32), affine,
                                                      ("i", "j", "k")), tmp_path / "p.zarr"))  # fmt: skip
    assert scale == [1.0, 1.0, 4.0]
    assert translation == [20.0, 30.0, 10.0]


def test_ome_attributes_put_each_level_at_its_block_centre_on_flipped_and_permuted_axes():
    from volsr.io.zarr_ome import ome_attributes

    permuted = np.array([[0, 0, 4.0, 10.0], [1.0, 0, 0, 20.0], [0, 1.0, 0, 30.0], [0, 0, 0, 1]])
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[:3, 3] = [10.5, 19.5, 29.5]
    for affine, t0 in ((permuted, [20.0, 30.0, 10.0]), (flipped, [10.5, 19.5, 29.5])):
        volume = Volume(np.zeros((8, 8, 8), np.float32), affine, ("i", "j", "k"))
        s0 = np.linalg.norm(affine[:3, :3], axis=0)
        datasets = ome_attributes(volume, levels=3)["ome"]["multiscales"][0]["datasets"]
        for level, dataset in enumerate(datasets):
            scale, translation = (t[t["type"]] for t in dataset["coordinateTransformations"])
            # Level k's voxel 0 is the mean of level-0 voxels 0 .. 2**k - 1 (NGFF frame: t0 + s0 n).
            block = np.mean([t0 + s0 * n for n in range(2**level)], axis=0)
            np.testing.assert_allclose(translation, block)
            np.testing.assert_allclose(scale, s0 * 2**level)
    level_1 = ome_attributes(Volume(np.zeros((8, 8, 8), np.float32), permuted, ("i", "j", "k")), levels=2)
    # World position of level-1 voxel 0: permuted @ (0.5, 0.5, 0.5) = (12, 20.5, 30.5) in (x, y, z).
    assert level_1["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][1]["translation"] == [
        20.5, 30.5, 12.0]  # fmt: skip


@pytest.mark.parametrize(("value", "stored"), [(-9999.0, -9999.0), (0, 0.0), (float("nan"), "NaN"),
                                               (float("-inf"), "-Infinity")])  # fmt: skip
def test_the_nodata_value_is_recorded_and_read_back(tmp_path, value, stored):
    volume = Volume(np.zeros((3, 4, 2), np.float32), np.eye(4), ("i", "j", "band"), meta={"nodata": value})
    path = save(volume, tmp_path / "n.zarr")
    assert attributes(path)["volsr"]["nodata"] == stored
    back = load(path).meta["nodata"]
    assert back == value or (np.isnan(back) and np.isnan(value))
    assert "nodata" not in load(save(volume.replace(meta={}), tmp_path / "none.zarr")).meta
    attrs = zarr.open_group(LocalStore(path), mode="r+").attrs
    attrs["volsr"] = {**attrs["volsr"], "nodata": "lots"}
    with pytest.raises(FormatError, match="no-data value 'lots' is not a number"):
        load(path)
