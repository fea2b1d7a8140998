"""SelfEnsemble: the mean over flips and axis swaps, against analytic cases and the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.engine.runs import with_engine
from volsr import io
from volsr.engine import EngineOptions, upsample_to_store
from volsr.engine.resolve import with_self_ensemble
from volsr.errors import VolsrError
from volsr.geometry import output_coordinates
from volsr.models import ModelCard, create_model, get_card, list_models
from volsr.models.attn1d2d import Attn1D2D
from volsr.models.ensemble import SelfEnsemble, symmetries
from volsr.volume import Volume


class Ramp(nn.Module):
    """Linear interpolation plus the output coordinate along the first spatial axis."""

    card = ModelCard(name="ramp", kind="network", grid="lr", halo=2, scales="real",
                     scale_range=(1.0, 4.0), modality="any", description="test")  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.interpolate = create_model("linear")

    def forward(self, x, positions):
        ramp = torch.as_tensor(np.asarray(positions[0]), dtype=x.dtype)
        return self.interpolate(x, positions) + ramp.view(-1, *([1] * (len(positions) - 1)))


def _grid(shape_in, factors):
    return tuple(output_coordinates(n, round(n * f)) for n, f in zip(shape_in, factors))


def test_symmetries_are_flips_times_the_orders_that_keep_the_factors():
    assert len(symmetries((4, 4))) == 8 and len(set(symmetries((4, 4)))) == 8
    assert len(symmetries((1, 1, 4))) == 16  # rows and columns swap, slices stay
    assert len(symmetries((2, 2, 2))) == 48
    assert all(order == (0, 1, 2) or order == (1, 0, 2) for _, order in symmetries((1, 1, 4)))
    with pytest.raises(ValueError, match="at least one"):
        symmetries(())


@pytest.mark.parametrize(("name", "shape", "factors"), [
    ("bicubic", (1, 3, 7, 5), (2.0, 2.0)),
    ("linear", (2, 1, 5, 6, 4), (1.0, 1.0, 2.5)),
])  # fmt: skip
def test_an_equivariant_interpolator_is_its_own_ensemble(name, shape, factors):
    # Cubic convolution and linear interpolation with symmetric borders commute with flips
    # and axis swaps, so the mean over the symmetries is the interpolator itself.
    x = torch.from_numpy(np.random.default_rng(0).random(shape, dtype=np.float32))
    grid = _grid(shape[2:], factors)
    model = create_model(name)
    expected = model(x, grid)
    np.testing.assert_allclose(SelfEnsemble(model, factors)(x, grid), expected, atol=2e-6)


@pytest.mark.parametrize(("factors", "mean_ramp"), [
    ((2.0, 2.0), lambda n0, n1: ((n0 - 1) + (n1 - 1)) / 4),  # half the time along columns
    ((2.0, 3.0), lambda n0, n1: (n0 - 1) / 2),                # never swapped
])  # fmt: skip
def test_a_coordinate_ramp_averages_to_the_mean_of_its_mirrors(factors, mean_ramp):
    # Flipping an axis of n voxels maps output coordinate p to n - 1 - p: the ramp's mean
    # over both is (n - 1) / 2 everywhere, and a swap puts the ramp on the other axis.
    shape = (1, 2, 4, 6)
    x = torch.from_numpy(np.random.default_rng(1).random(shape, dtype=np.float32))
    grid = _grid(shape[2:], factors)
    out = SelfEnsemble(Ramp(), factors)(x, grid)
    expected = create_model("linear")(x, grid) + mean_ramp(*shape[2:])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_a_tile_of_the_ensemble_equals_the_whole_cube_ensemble(tmp_path):
    torch.manual_seed(0)
    net = Attn1D2D(scale=2, features=4, stages=1).eval()
    with torch.no_grad():
        net.residual_scale.fill_(0.7)  # not the bicubic identity of an untrained network
    net.card = ModelCard(name="tiny", kind="network", grid="lr", halo=net.halo, scales="integer",
                         scale_range=(2.0, 2.0), modality="hsi", description="test")  # fmt: skip
    cube = np.random.default_rng(2).random((14, 11, 5), dtype=np.float32) - np.float32(0.5)  # signed: no floor
    volume = Volume(cube, np.eye(4), ("i", "j", "band"))
    x = torch.from_numpy(cube.transpose(2, 0, 1).copy())[None]
    grid = _grid((14, 11), (2, 2))
    with torch.no_grad():
        whole = SelfEnsemble(net, (2, 2))(x, grid)[0].numpy().transpose(1, 2, 0)
        alone = net(x, grid)[0].numpy().transpose(1, 2, 0)
    kwargs = dict(scale=2, model=net, options=EngineOptions(chunks=(8, 8), tile=(8, 8), quiet=True))
    tiled = upsample_to_store(volume, tmp_path / "se.zarr", **with_engine(kwargs, self_ensemble=True))
    plain = upsample_to_store(volume, tmp_path / "one.zarr", **kwargs)  # card: off
    np.testing.assert_allclose(io.load(tiled).numpy(), whole, atol=1e-5)
    np.testing.assert_allclose(io.load(plain).numpy(), alone, atol=1e-5)
    assert np.abs(whole - alone).max() > 1e-3  # the ensemble changed something
    with pytest.raises(VolsrError, match="the model differs"):
        upsample_to_store(volume, tmp_path / "se.zarr", resume=True, **with_engine(kwargs, self_ensemble=False))
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:  # fmt: skip
        workers = upsample_to_store(volume, tmp_path / "dask.zarr", **with_engine(kwargs, self_ensemble=True, scheduler=cluster.scheduler_address))  # fmt: skip
    np.testing.assert_allclose(io.load(workers).numpy(), whole, atol=1e-5)


def test_the_shipped_hsi_cards_turn_it_on_and_the_caller_can_turn_it_off():
    shipped = [card.name for card in list_models() if card.name.startswith("attn1d2d.")]
    assert shipped and all(get_card(name).self_ensemble for name in shipped)
    assert not any(card.self_ensemble for card in list_models() if card.modality == "mri")
    net = create_model(shipped[0])
    assert isinstance(with_self_ensemble(net, (2, 2), None), SelfEnsemble)
    assert with_self_ensemble(net, (2, 2), False) is net
    with pytest.raises(TypeError, match="self_ensemble must be"):
        with_self_ensemble(net, (2, 2), "yes")
