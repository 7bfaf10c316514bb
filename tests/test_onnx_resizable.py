"""Freeing an image model's ONNX input size (export.onnx.resizable): YuNet's fixed 640×640 file
takes any size once its dimensions are declared symbolic; a graph with a size inside is left alone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.engines import load_engine
from edge.registry import resolve
from export.onnx.resizable import free_image_size, image_axes, probe_size


def test_yunet_fixed_file_is_freed_and_runs_at_a_region_size(tmp_path):
    src = resolve("yunet_s_640x640").path
    path = tmp_path / "yunet.onnx"
    shutil.copyfile(src, path)
    assert free_image_size(path, "yunet") is None
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 640, 640)).astype(np.float32)
    with load_engine(src, backend="onnxruntime", threads=1) as fixed, \
            load_engine(path, backend="onnxruntime", threads=1) as free:
        assert free.inputs[0].shape[2:] == (None, None)
        want, got = fixed.run({"input": x}), free.run({"input": x})
        assert all(np.array_equal(want[k], got[k]) for k in want)
        small = free.run({"input": np.ascontiguousarray(x[:, :, :288, :384])})
    assert small["cls_8"].shape == (1, 36 * 48, 1)
    assert free_image_size(path, "yunet") is None  # already free: nothing to do


def test_a_graph_with_a_size_inside_is_left_as_it_was(tmp_path):
    torch = pytest.importorskip("torch")
    from export.onnx.from_torch import export_onnx

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 64 * 64, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))

    path = export_onnx(Head().eval(), tmp_path / "head.onnx", input_shape=(1, 3, 64, 64))
    before = path.read_bytes()
    why = free_image_size(path, "head")
    assert why is not None and "head" in why and "does not run at" in why
    assert path.read_bytes() == before


def test_probe_size_is_another_size_on_the_grid():
    assert image_axes((1, 3, 640, 640)) == (2, 3) and image_axes((1, 224, 224, 3)) == (1, 2)
    h, w = probe_size((1, 3, 640, 480))
    assert (h, w) != (640, 480) and h % 32 == 0 and w % 32 == 0
    with pytest.raises(ValueError, match="4-D"):
        image_axes((1, 128))
