"""Memory layout of the network's convolutions: same results either way, declared, kept on resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.engine.runs import with_engine
from volsr import io
from volsr.cli import main
from volsr.engine import EngineOptions, upsample, upsample_to_store
from volsr.engine.layout import apply_layout, time_layouts
from volsr.engine.manifest import finished_header
from volsr.engine.plan import make_plan
from volsr.errors import VolsrError
from volsr.geometry import output_coordinates
from volsr.volume import Volume

from .nets import HRNet, LRNet


def _volume(shape=(12, 10, 6)):
    return Volume(np.random.default_rng(3).random(shape, dtype=np.float32), np.eye(4), ("i", "j", "k"))


@pytest.mark.parametrize("net", [LRNet(layers=3), HRNet(layers=3)], ids=["lr", "hr"])
def test_channels_last_forward_matches_channels_first(net):
    x = torch.rand(1, 1, 9, 8, 7)
    positions = tuple(output_coordinates(n, m) for n, m in zip((9, 8, 7), (9, 16, 14)))
    with torch.inference_mode():
        expected = net(x, positions)
        apply_layout(net, "channels_last")
        assert net.body[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        got = net(x, positions)
        apply_layout(net, "contiguous")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_time_layouts_times_both_and_leaves_channels_first():
    net = HRNet(layers=3)
    plan = make_plan(net.card, (8, 8, 8), (8, 8, 16), chunks=(8, 8, 8), tile=(8, 8, 8))
    seconds = time_layouts(net, plan, 1, torch.device("cpu"), repeats=1)
    assert sorted(seconds) == ["channels_last", "contiguous"] and min(seconds.values()) > 0
    assert net.body[0].weight.is_contiguous()
    with pytest.raises(ValueError, match="layout must be one of"):
        apply_layout(net, "nhwc")


def test_layouts_agree_through_the_engine(tmp_path):
    volume, net = _volume(), HRNet(layers=3)
    kwargs = dict(scale=(1, 2, 2.5), model=net, options=EngineOptions(chunks=(4, 8, 8), quiet=True))
    first = io.load(upsample_to_store(volume, tmp_path / "c.zarr", **with_engine(kwargs, layout="contiguous"))).numpy()
    last = io.load(upsample_to_store(volume, tmp_path / "l.zarr", **with_engine(kwargs, layout="channels_last"))).numpy()
    np.testing.assert_allclose(last, first, rtol=0, atol=1e-5)
    lazy = upsample(volume, scale=(1, 2, 2.5), model=net, options=EngineOptions(layout="channels_last")).numpy()
    np.testing.assert_allclose(lazy, first, rtol=0, atol=1e-5)
    assert net.body[0].weight.is_contiguous()  # the caller's module is left as it was
    with pytest.raises(ValueError, match="layout must be one of"):
        upsample_to_store(volume, tmp_path / "x.zarr", **with_engine(kwargs, layout="nhwc"))
    assert not (tmp_path / "x.zarr").exists()


def test_the_card_declares_the_layout_and_a_resume_must_keep_it(tmp_path):
    volume, net = _volume(), LRNet(layers=3)
    net.card = dataclasses.replace(net.card, layout="channels_last")
    kwargs = dict(scale=(1, 1, 2), options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True))
    upsample_to_store(volume, tmp_path / "a.zarr", model=net, **kwargs)
    header = finished_header(tmp_path / "a.zarr")
    assert header["options"]["layout"] == "channels_last"
    with pytest.raises(VolsrError, match=r"options differs .*layout"):
        upsample_to_store(volume, tmp_path / "a.zarr", model=net, resume=True, **with_engine(kwargs, layout="contiguous"))


def test_cli_layout_option(tmp_path, capsys):
    source = tmp_path / "in.nii.gz"
    io.save(_volume(), source)
    args = ["upsample", str(source), str(tmp_path / "o.zarr"), "--scale", "1,1,2", "--model", "linear",
            "--chunks", "4,4,4", "--quiet"]  # fmt: skip
    assert main([*args, "--layout", "channels_last"]) == 0
    assert finished_header(tmp_path / "o.zarr")["options"]["layout"] == "channels_last"
    with pytest.raises(SystemExit) as stop:
        main([*args[:2], str(tmp_path / "p.zarr"), *args[3:], "--layout", "nhwc"])
    assert stop.value.code == 2 and "invalid choice: 'nhwc'" in capsys.readouterr().err
    assert not (tmp_path / "p.zarr").exists()
