"""export/: MobileNetV2 (torchvision weights) → ONNX fp32 + card, run on the edge runtime."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
# Not importorskip: importing onnxruntime writes a device id under $XDG_CACHE_HOME (else ~/.cache),
# so it is first imported inside tests that use the ``no_home_caches`` fixture.
if importlib.util.find_spec("onnxruntime") is None:
    pytest.skip("onnxruntime is not installed", allow_module_level=True)

from edge import paths  # noqa: E402
from edge.cards import load_card  # noqa: E402
from edge.classify import Classifier  # noqa: E402
from edge.engines import load_engine  # noqa: E402
from edge.errors import ModelNotFoundError  # noqa: E402
from edge.imageio import load_image  # noqa: E402
from edge.preprocess import prepare  # noqa: E402
from edge.registry import load_labels, resolve  # noqa: E402

#: ImageNet ids (1000-class indexing) of tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_IDS = range(281, 286)
MACAW_ID = 88
ATOL = 1e-3


def _mnv2_path():
    try:
        return resolve("mobilenet_v2_torchvision", download=False).path
    except ModelNotFoundError as e:
        pytest.skip(f"torchvision MobileNetV2 weights not available offline: {e}")


def _sample(name: str):
    d = paths.data_dir()
    if d is None or not (d / "samples" / name).is_file():
        pytest.skip(f"sample image {name} not found in the data directory")
    return d / "samples" / name


@pytest.fixture(scope="module")
def no_home_caches(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("caches")
    for var in ("TORCH_HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR"):
        mp.setenv(var, str(base / var.lower()))
    yield base
    mp.undo()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, no_home_caches):
    from export.sources.classifier import export_mobilenet_v2_onnx

    _mnv2_path()
    out = tmp_path_factory.mktemp("mnv2")
    t0 = time.perf_counter()
    onnx_path, card_path = export_mobilenet_v2_onnx(out)
    print(f"\nMobileNetV2 export + parity check: {time.perf_counter() - t0:.2f} s")
    return onnx_path, card_path


@pytest.fixture(scope="module")
def torch_model(no_home_caches):
    from export.sources.nets import load_mobilenet_v2

    return load_mobilenet_v2(_mnv2_path())


@pytest.fixture(scope="module")
def classifier(exported):
    onnx_path, card_path = exported
    card = load_card(card_path)
    engine = load_engine(onnx_path, backend="onnxruntime")
    yield Classifier(engine, card, load_labels(card))
    engine.close()


def test_state_dict_loads_strictly(torch_model):
    from export.sources.nets import MobileNetV2

    state = torch.load(_mnv2_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(MobileNetV2().state_dict())
    assert tuple(state["features.1.conv.0.0.weight"].shape) == (32, 1, 3, 3)
    assert tuple(state["classifier.1.weight"].shape) == (1000, 1280)
    assert not torch_model.training
    assert sum(p.numel() for p in torch_model.parameters()) == 3_504_872  # torchvision's count


@pytest.mark.parametrize("image, expected", [("cat.bmp", set(CAT_IDS)), ("parrot.jpg", {MACAW_ID})])
def test_onnx_classifies_samples(classifier, image, expected):
    top = classifier.classify(load_image(_sample(image)), k=5)
    print(f"\n{image}: top-1 {top[0].class_id} {top[0].label!r} p={top[0].score:.3f}")
    assert top[0].class_id in expected, top
    if image == "parrot.jpg":
        assert top[0].label == "macaw"


@pytest.mark.parametrize("image", ["cat.bmp", "parrot.jpg"])
def test_onnx_matches_torch(exported, torch_model, image):
    card = load_card(exported[1])
    x, _ = prepare(load_image(_sample(image)), card.inputs[0])
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    with load_engine(exported[0], backend="onnxruntime") as engine:
        got = engine.run({"input": x})["logits"]
    diff = float(np.abs(got - ref).max())
    print(f"\n{image}: max |torch - onnx| = {diff:.3g}")
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)


def test_card_round_trips(exported):
    onnx_path, card_path = exported
    card = load_card(card_path)
    from edge.cards import ModelCard
    from edge.registry import sha256_file

    assert ModelCard.from_json(card.to_json()) == card
    assert card.format == "onnx" and card.file == onnx_path.name
    assert card.sha256 == sha256_file(onnx_path) and card.size == onnx_path.stat().st_size
    assert card.inputs[0].name == "input" and tuple(card.inputs[0].shape) == (1, 3, 224, 224)
    assert card.outputs[0].name == "logits" and tuple(card.outputs[0].shape) == (1, 1000)
    assert card.labels is not None and card.licence.spdx == "BSD-3-Clause"
    assert card.provenance.derived_from.name == "mobilenet_v2_torchvision"
    assert card.provenance.converter.startswith("torch.onnx ")
    assert card.provenance.parity.max_abs_diff < ATOL
    from export.onnx.macs import count_onnx_macs

    assert card.macs == count_onnx_macs(onnx_path)  # counted at export time, read by the device
    assert card.macs.total == pytest.approx(300e6, rel=0.02)  # MobileNetV2 1.0 224: 300 M MAdds (paper)
    ref = resolve(card_path)  # the card resolves its file beside it, sha256-checked
    assert ref.path.resolve() == onnx_path.resolve()


@pytest.mark.parametrize("factory, params", [("mobilenet_v3_small", 2_542_856), ("mobilenet_v3_large", 5_483_032)])
def test_mobilenet_v3_exports_and_runs(tmp_path, no_home_caches, factory, params):
    from export.onnx.from_torch import export_onnx
    from export.sources import nets

    model = getattr(nets, factory)()
    assert sum(p.numel() for p in model.parameters()) == params  # torchvision's count
    path = export_onnx(model, tmp_path / f"{factory}.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with load_engine(path, backend="onnxruntime") as engine:
        out = engine.run({"input": x})["logits"]
    assert out.shape == (1, 1000)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=ATOL, rtol=0)


def test_dynamic_batch(tmp_path, no_home_caches):
    from export.onnx.from_torch import export_onnx, onnx_io
    from export.sources.nets import mobilenet_v3_small

    path = export_onnx(mobilenet_v3_small(), tmp_path / "v3s_dyn.onnx", dynamic_batch=True)
    (_, in_shape), = onnx_io(path)[0]
    assert in_shape[0] is None and in_shape[1:] == (3, 224, 224)
    with load_engine(path, backend="onnxruntime") as engine:
        out = engine.run({"input": np.zeros((3, 3, 224, 224), np.float32)})["logits"]
    assert out.shape == (3, 1000)


def test_wrong_shape_state_dict_names_the_file(tmp_path, no_home_caches):
    from export.sources.nets import MobileNetV2, StateDictMismatchError, load_mobilenet_v2

    state = MobileNetV2(num_classes=10).state_dict()
    bad = tmp_path / "wrong_head.pth"
    torch.save(state, bad)
    with pytest.raises(StateDictMismatchError, match=r"wrong_head\.pth.*classifier\.1\.weight"):
        load_mobilenet_v2(bad)


def test_missing_keys_state_dict_names_the_file(tmp_path, no_home_caches):
    from export.sources.nets import MobileNetV2, StateDictMismatchError, load_mobilenet_v2

    state = MobileNetV2().state_dict()
    state.pop("features.18.0.weight")
    bad = tmp_path / "truncated.pth"
    torch.save(state, bad)
    with pytest.raises(StateDictMismatchError, match=r"truncated\.pth.*missing.*features\.18\.0\.weight"):
        load_mobilenet_v2(bad)


def test_write_card_rejects_unknown_field(exported, tmp_path):
    from edge.registry import get_card
    from export.onnx.from_torch import write_card

    with pytest.raises(ValueError, match="colour"):
        write_card(get_card("mobilenet_v2_torchvision"), exported[0], tmp_path / "x.json", colour="RGB")


def test_edge_run_classifies_the_cat_on_onnxruntime(exported, data_dir, capsys):
    """`edge run CARD IMAGE` on the exported ONNX classifier, through the CLI."""
    from edge.cli import main as edge_main

    _, card_path = exported
    assert edge_main(["run", str(card_path), str(data_dir / "samples" / "cat.bmp"), "--backend", "onnxruntime", "--json"]) == 0
    import json

    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["backend"] == "onnxruntime" and "cat" in row["top"][0]["label"]
