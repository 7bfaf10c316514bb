"""A known network's PyTorch state dict as the user's source (``--source ROLE=[NET:]WEIGHTS``).

The networks are the project's own re-declarations (:mod:`export.sources.nets`), so no model zoo is needed:

==================  ==========  =====================================================================
``NET``             role        recognised by
==================  ==========  =====================================================================
mobilenet_v2        classifier  ``features.18.0.weight`` + ``classifier.1.weight`` (torchvision names)
mobilenet_v3_small  classifier  ``classifier.3.weight``, last features 576 wide
mobilenet_v3_large  classifier  ``classifier.3.weight``, last features 960 wide
minifasnet          liveness    ``conv_23.*`` (MiniFASNetV2 / V1SE, widths read off the weights)
==================  ==========  =====================================================================

``--source classifier=mobilenet_v2:weights.pth`` names the network; ``--source
classifier=weights.pth`` recognises it from the keys. A file may hold the state dict itself or
a checkpoint with it under ``state_dict`` or ``model``; a ``module.`` prefix (DataParallel) is
dropped. The number of classes is read off the last linear layer. A state dict that does not fit
the named network is refused, naming the file and the first missing, unexpected or mismatching
key (with both shapes).

The card keeps the preprocessing of the network's built-in card (torchvision ImageNet
mean/std, RGB, 224 centre crop; MiniFASNet BGR 0–255 80×80). Its labels, for a classifier, come
from (first found): ``<weights stem>.labels.txt`` or ``labels.txt`` beside the weights (one class
per line, in output order); the classes of the user's ``--data classifier`` (class folders in
sorted order, as torchvision's ``ImageFolder``, or the sorted ``label`` values of a CSV); the
ImageNet labels when there are 1000 classes. A MiniFASNet's face crop scale is read from the
file name as upstream names it (``2.7_80x80_MiniFASNetV2.pth``, ``…scale2.7…``). The licence is
``NOASSERTION``: the weights are the user's. The network is exported to ONNX, checked against torch,
and then built like any ONNX source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from export.variants import UserInputError

__all__ = ["NETS", "split_net_spec", "is_state_dict_source", "export_state_dict_onnx", "load_state",
           "detect_net", "STATE_DICT_SUFFIXES"]

#: File suffixes taken as a state dict (``.pt`` only when the network is named: it is
#: Ultralytics' suffix too).
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


#: Outputs of an ImageNet classifier: its labels are the built-in ImageNet list.
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Net:
    role: str
    card: str  # built-in card whose preprocessing the user's card keeps
    head: str  # state-dict key of the last linear weight (rows = classes)
    classes: int  # the built-in number of classes


NETS: dict[str, Net] = {
    "mobilenet_v2": Net("classifier", "mobilenet_v2_torchvision", "classifier.1.weight", 1000),
    "mobilenet_v3_small": Net("classifier", "mobilenet_v2_torchvision", "classifier.3.weight", 1000),
    "mobilenet_v3_large": Net("classifier", "mobilenet_v2_torchvision", "classifier.3.weight", 1000),
    "minifasnet": Net("liveness", "minifasnet_v2_scale2.7", "prob.weight", 3),
}


def split_net_spec(value: str | Path) -> tuple[str | None, Path]:
    """``"mobilenet_v2:w.pth"`` → ``("mobilenet_v2", Path("w.pth"))``; anything else → ``(None, Path(value))``."""
    text = str(value)
    net, sep, rest = text.partition(":")
    if sep and net in NETS:
        return net, Path(rest).expanduser()
    return None, Path(text)


def is_state_dict_source(value: str | Path) -> bool:
    """A named network (``NET:PATH``) or a ``.pth`` / ``.bin`` / ``.ckpt`` file."""
    net, p = split_net_spec(value)
    return net is not None or p.suffix.lower() in (".pth", ".bin", ".ckpt")


def load_state(path: Path, option: str) -> dict:
    """The state dict in ``path`` (unwrapped from ``state_dict`` / ``model``; ``module.`` dropped).

    Raises:
        UserInputError: not a readable torch file, or no tensor dict in it.
    """
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many unrelated types for a bad file
        raise UserInputError(f"{option}: {path} cannot be read as a PyTorch state dict ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserInputError(f"{option}: {path} holds a {type(obj).__name__}, not a state dict (name → tensor)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def detect_net(state: dict, path: Path, option: str) -> str:
    """The :data:`NETS` name whose keys ``state`` has (see the module table).

    Raises:
        UserInputError: no known network has these keys.
    """
    if any(k.startswith("conv_23.") for k in state):
        return "minifasnet"
    if "classifier.1.weight" in state and "features.18.0.weight" in state:
        return "mobilenet_v2"
    w = state.get("classifier.0.weight")
    if "classifier.3.weight" in state and w is not None and w.ndim == 2:
        net = {576: "mobilenet_v3_small", 960: "mobilenet_v3_large"}.get(int(w.shape[1]))
        if net is not None:
            return net
    return _unknown(path, option)


def _unknown(path: Path, option: str) -> str:
    raise UserInputError(f"{option}: {path}: the state dict's keys are not those of a known network "
                 f"({', '.join(NETS)}); name the network as NET:{path.name} if it is one of them")


def _build(net: str, state: dict, num_classes: int):
    from export.sources.nets import MobileNetV2, mobilenet_v3_large, mobilenet_v3_small

    if net == "mobilenet_v2":
        return MobileNetV2(num_classes)
    if net == "mobilenet_v3_small":
        return mobilenet_v3_small(num_classes)
    if net == "mobilenet_v3_large":
        return mobilenet_v3_large(num_classes)
    from export.sources.nets.minifasnet import MiniFASNet, spec_from_state_dict

    try:
        spec = spec_from_state_dict(state)
    except ValueError as e:
        raise UserInputError(str(e)) from None
    return MiniFASNet(spec, num_classes)


def _fit(model, state: dict, path: Path, net: str, option: str):
    """Load ``state`` strictly, or refuse naming the first key that does not fit."""
    want = model.state_dict()
    for k, v in want.items():
        if k not in state:
            raise UserInputError(f"{option}: {path} does not fit {net}: missing key {k!r} (shape {tuple(v.shape)})")
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserInputError(f"{option}: {path} does not fit {net}: key {k!r} has shape {tuple(state[k].shape)}, "
                         f"{net} expects {tuple(v.shape)}")
    extra = [k for k in state if k not in want]
    if extra:
        raise UserInputError(f"{option}: {path} does not fit {net}: unexpected key {extra[0]!r} "
                     f"({len(extra)} key(s) {net} does not have)")
    model.load_state_dict(state, strict=True)
    return model.eval()


def _crop_scale(path: Path, option: str) -> float:
    m = re.search(r"scale(\d+(?:\.\d+)?)", path.name) or re.match(r"(\d+(?:\.\d+)?)_\d+x\d+_", path.name) \
        or re.match(r"(\d+)_\d+_\d+_\d+x\d+_", path.name)
    if m is None:
        raise UserInputError(f"{option}: {path}: a MiniFASNet's face crop scale is read from its file name, as upstream "
                     "names it (2.7_80x80_MiniFASNetV2.pth or …scale2.7…); rename the file")
    return float(m.group(1))


def _labels(path: Path, num_classes: int, data_classes: list[str] | None, option: str):
    """(labels reference or None, class names or None) for a classifier (see the module docstring)."""
    for side in (path.with_name(f"{path.stem}.labels.txt"), path.with_name("labels.txt")):
        if side.is_file():
            names = [ln.strip() for ln in side.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if len(names) != num_classes:
                raise UserInputError(f"{option}: {side} lists {len(names)} class(es), the weights have {num_classes} outputs")
            return None, names
    if data_classes is not None and len(data_classes) == num_classes:
        return None, list(data_classes)
    if num_classes == IMAGENET_CLASSES:  # the user's data may hold a subset of the ImageNet classes
        from edge.registry import get_card

        return get_card("mobilenet_v2_torchvision").labels, None
    seen = (f"; the user's classifier data has {len(data_classes)} class(es)" if data_classes is not None else "")
    raise UserInputError(f"{option}: {path} has {num_classes} classes{seen}: give their names in {path.stem}.labels.txt "
                 "beside it (one per line, in output order) or labelled data with that many classes "
                 "(--data classifier=…)")


def export_state_dict_onnx(role: str, value: str | Path, out_dir: Path, *,
                           data_classes: list[str] | None = None) -> tuple[Path, Path]:
    """Export the user's state dict ``value`` (``[NET:]PATH``) for ``role``: ``(onnx_path, card_path)``.

    Raises:
        UserInputError: unreadable weights, an unknown network, a role mismatch, a state dict that
            does not fit, labels that do not match the outputs.
    """
    from edge.cards import FaceCrop, Licence, Source
    from edge.registry import get_card, sha256_file
    from export.onnx.from_torch import ExportError, export_onnx, write_card
    from export.sources.ultralytics import write_labels

    option = f"--source {role}={value}"
    net, path = split_net_spec(value)
    if not path.is_file():
        raise UserInputError(f"{option}: no such file {path}")
    state = load_state(path, option)
    net = net or detect_net(state, path, option)
    spec = NETS[net]
    if spec.role != role:
        raise UserInputError(f"{option}: {net} is a {spec.role} network, not a {role}")
    head = state.get(spec.head)  # without it, _fit names the first key that does not fit
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else spec.classes
    model = _fit(_build(net, state, num_classes), state, path, net, option)
    base = get_card(spec.card)
    sha = sha256_file(path)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem if path.stem.startswith(net) else f"{net}_{path.stem}")
    out = Path(out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    provenance = {"state_dict": {"file": path.name, "sha256": sha, "net": f"export.sources.nets:{net}",
                                 "num_classes": num_classes},
                  "derived_from": {"name": path.name, "sha256": sha}}
    changes: dict = {}
    if spec.role == "classifier":
        ref, names = _labels(path, num_classes, data_classes, option)
        if names is not None:
            ref = write_labels(names, out / f"{name}_labels_{sha[:8]}.txt")
        changes["labels"] = ref
        meaning = f"{num_classes} class logits"
    else:
        if num_classes != 3:
            raise UserInputError(f"{option}: a MiniFASNet has 3 outputs (class 1 = live), {path} has {num_classes}")
        changes["face_crop"] = FaceCrop(crop_scale=_crop_scale(path, option), live_class=1)
        meaning = base.outputs[0].meaning
    tpl = replace(base, outputs=(replace(base.outputs[0], meaning=meaning),))
    in_spec, out_spec = tpl.inputs[0], tpl.outputs[0]
    try:
        onnx_path = export_onnx(model, out / f"{name}.onnx", input_shape=tuple(in_spec.shape), input_name=in_spec.name,
                                output_name=out_spec.name)
    except ExportError as e:
        raise UserInputError(f"{option}: {e}") from None
    card_path = write_card(tpl, onnx_path, out / f"{name}.json", name=name,
                           licence=Licence("NOASSERTION", note=f"the user's weights {path.name}: licence not stated"),
                           source=Source(note=f"user state dict {path} (sha256 {sha[:16]}…) in export.sources.nets {net}"),
                           description=f"{net} with the user's weights {path.name} ({num_classes} outputs).",
                           provenance=provenance, **changes)
    _check_parity(net, model, onnx_path, card_path)
    return onnx_path, card_path


def _check_parity(net: str, model, onnx_path: Path, card_path: Path) -> None:
    """torch vs onnxruntime on a real image (classifiers) or random crops (MiniFASNet)."""
    from edge.cards import load_card

    if net == "minifasnet":
        from export.sources.liveness import check_parity

        check_parity(model, onnx_path)
        return
    from export.sources.classifier import check_onnx_parity

    check_onnx_parity(model, onnx_path, load_card(card_path))
