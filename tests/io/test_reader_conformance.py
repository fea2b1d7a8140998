"""Every registered format honours the reader/writer contract (STYLE R6).

For each format in :data:`volsr.io.FORMATS`: a random float32 volume (and a cube with
wavelengths, where the format has a spectral axis) with a non-trivial affine is saved and
loaded back through :func:`volsr.io.save` / :func:`volsr.io.load`; the voxels must be
identical, the affine equal to 1e-6 mm, and ``shape`` / ``affine`` known right after
``load`` while the voxels are still on disk (no dask task ran, and the lazy array pickles to
a few kB: it holds a path, not the voxels).
"""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
from dask.callbacks import Callback

from volsr.io import FORMATS, Format, load, save
from volsr.volume import Volume

#: ``:key`` used for formats that hold named arrays.
KEYS = {"hdf5": "/group/volume", "matlab": "cube"}
#: Formats whose files hold a spectral axis with wavelengths.
CUBE_FORMATS = {"zarr", "envi", "hdf5", "matlab"}
#: Formats that cannot hold a cube, with the reason (each format must be in one of the two).
NO_CUBE = {
    "nifti": "NIfTI has no spectral axis: bands become a 'channel' axis, wavelengths are lost"
}
#: Formats that cannot hold a general (oblique) affine, with the reason.
NO_GENERAL_AFFINE: dict[str, str] = {}
#: Documented axis conventions that rename axes on reading.
AXES_READ_AS = {("matlab", ("i", "j", "k")): ("i", "j", "band")}  # MATLAB 3-D arrays are cubes


def oblique_affine(rng: np.random.Generator) -> np.ndarray:
    """A rotated, anisotropic, shifted affine whose entries are float32-exact (NIfTI sform)."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.8, 1.1, 2.5])
    affine[:3, 3] = rng.uniform(-90, 90, 3)
    return affine.astype(np.float32).astype(np.float64)


def in_plane_affine(rng: np.random.Generator) -> np.ndarray:
    """For two spatial axes: rotated, anisotropic pixels in the first two columns."""
    angle = rng.uniform(0, np.pi)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]] @ np.diag(
        [0.5, 2.0]
    )
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    return affine.astype(np.float32).astype(np.float64)


def spec_for(fmt: Format, folder, stem: str) -> str:
    path = folder / f"{stem}{fmt.suffixes[0]}"
    return f"{path}:{KEYS[fmt.name]}" if fmt.takes_key else str(path)


class TaskCounter(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dsk, state) -> None:
        self.tasks += 1


def load_lazily(spec: str) -> Volume:
    """Load, proving that no voxel was computed or copied into the returned volume."""
    with TaskCounter() as counter:
        volume = load(spec)
        shape, affine = volume.shape, volume.affine
    assert counter.tasks == 0, "load() computed dask tasks"
    assert len(shape) == volume.data.ndim and affine.shape == (4, 4)
    nbytes = int(np.prod(shape)) * volume.dtype.itemsize
    assert len(pickle.dumps(volume.data)) < nbytes / 4, "the lazy array holds the voxels"
    return volume


def check_round_trip(fmt: Format, original: Volume, spec: str) -> Volume:
    save(original, spec)
    volume = load_lazily(spec)
    assert volume.shape == original.shape
    expected_axes = AXES_READ_AS.get((fmt.name, original.axes), original.axes)
    assert volume.axes == expected_axes
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(volume.numpy(), original.numpy())
    assert volume.dtype == original.dtype
    if fmt.name in NO_GENERAL_AFFINE:
        pytest.skip(f"{fmt.name}: {NO_GENERAL_AFFINE[fmt.name]}")
    np.testing.assert_allclose(volume.affine, original.affine, rtol=0, atol=1e-6)
    return volume


def test_every_format_declares_its_cube_support():
    assert {fmt.name for fmt in FORMATS} == CUBE_FORMATS | set(NO_CUBE)
    assert len(FORMATS) == 5


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_volume_round_trip(tmp_path, fmt):
    rng = np.random.default_rng(sum(map(ord, fmt.name)))
    original = Volume(
        rng.random((24, 20, 16), dtype=np.float32), oblique_affine(rng), ("i", "j", "k")
    )
    check_round_trip(fmt, original, spec_for(fmt, tmp_path, "volume"))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_cube_round_trip_with_wavelengths(tmp_path, fmt):
    if fmt.name in NO_CUBE:
        pytest.skip(f"{fmt.name}: {NO_CUBE[fmt.name]}")
    rng = np.random.default_rng(sum(map(ord, fmt.name)) + 1)
    wavelengths = np.linspace(400.0, 1000.0, 30)
    original = Volume(rng.random((18, 22, 30), dtype=np.float32), in_plane_affine(rng),
                      ("i", "j", "band"), wavelengths=wavelengths, fwhm=np.full(30, 12.5))  # fmt: skip
    volume = check_round_trip(fmt, original, spec_for(fmt, tmp_path, "cube"))
    np.testing.assert_allclose(volume.wavelengths, wavelengths, rtol=1e-9)
    np.testing.assert_allclose(volume.fwhm, 12.5, rtol=1e-9)
