"""Export a torch module to ONNX and write the edge model card that travels with it.

The legacy TorchScript exporter (``dynamo=False``) is tried first: on torch 2.13 it exports
MobileNets in well under a second, honours ``opset_version`` exactly and emits a flat graph
(Conv/Add/Clip/Gemm). The torch.export-based exporter is the fallback; it takes seconds and
may not reach the requested opset (its onnxscript version converter fails on some graphs and
leaves opset 18), so the card records the opset actually written.

Example:
    >>> path = export_onnx(model, "out/mobilenet_v2.onnx")                    # doctest: +SKIP
    >>> write_card(get_card("mobilenet_v2_torchvision"), path, "out/mobilenet_v2.json")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator

import msgspec
import torch

from edge.cards import DerivedFrom, ModelCard, Source, load_card
from export.onnx.macs import file_macs
from edge.registry import sha256_file

log = logging.getLogger(__name__)

__all__ = ["ExportError", "export_onnx", "write_card", "isolated_caches", "onnx_io"]

#: Cache variables pointed away from $HOME while exporting (torch hub, inductor, XDG users).
CACHE_VARS = ("TORCH_HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


class ExportError(RuntimeError):
    """A model could not be exported, or its export does not match the source."""


@contextlib.contextmanager
def isolated_caches() -> Iterator[Path]:
    """Point every unset cache variable of :data:`CACHE_VARS` at a temporary directory.

    Variables the caller already set are left alone; the environment is restored afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="edgesight-export-cache-") as tmp:
        saved = {k: os.environ.get(k) for k in CACHE_VARS}
        for k in CACHE_VARS:
            if not saved[k]:
                os.environ[k] = str(Path(tmp) / k.lower())
        try:
            yield Path(tmp)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _legacy_available() -> bool:
    import inspect

    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def export_onnx(model: torch.nn.Module, out_path: str | Path, input_shape: tuple[int, ...] = (1, 3, 224, 224),
                input_name: str = "input", output_name: str = "logits", opset: int = 17,
                dynamic_batch: bool = False) -> Path:
    """Export ``model`` (put in eval mode) to a self-contained ONNX file.

    The file is written to a temporary name beside ``out_path`` and renamed, so a failed
    export never leaves a half-written model.

    Args:
        model: the network; its weights are embedded in the file.
        out_path: destination ``.onnx`` file (parent directories are created).
        input_shape: shape of the example input (float32 zeros).
        input_name / output_name: graph tensor names (the card refers to them).
        opset: requested ONNX opset.
        dynamic_batch: make dimension 0 of the input and output symbolic (``batch``).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ExportError: every exporter failed (with each one's error).
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = (torch.zeros(*input_shape, dtype=torch.float32),)
    errors: list[str] = []
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=".onnx.tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    t0 = time.perf_counter()
    try:
        with isolated_caches(), torch.no_grad():
            if _legacy_available():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter is deprecated, still best here
                        torch.onnx.export(
                            model, example, str(tmp), dynamo=False, opset_version=opset,
                            input_names=[input_name], output_names=[output_name], do_constant_folding=True,
                            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None)
                except Exception as e:  # noqa: BLE001 - fall through to the dynamo exporter
                    errors.append(f"TorchScript exporter: {type(e).__name__}: {e}")
            if not tmp.is_file() or tmp.stat().st_size == 0 or errors:
                try:
                    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
                    program = torch.onnx.export(
                        model, example, dynamo=True, opset_version=opset, input_names=[input_name],
                        output_names=[output_name], dynamic_shapes=shapes, external_data=False)
                    program.save(str(tmp), external_data=False)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"torch.export exporter: {type(e).__name__}: {e}")
                    raise ExportError(f"could not export {type(model).__name__} to {out}:\n" + "\n".join(errors)) from e
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise ExportError(f"export of {type(model).__name__} to {out} produced an empty file")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("exported %s to %s in %.2f s (%d bytes)", type(model).__name__, out, time.perf_counter() - t0,
             out.stat().st_size)
    return out


def onnx_io(model_path: str | Path) -> tuple[list[tuple[str, tuple]], list[tuple[str, tuple]], int]:
    """Graph inputs and outputs as ``(name, shape)`` (``None`` for a symbolic dim) and the default-domain opset."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def dims(vi) -> tuple:
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)

    ins = [(v.name, dims(v)) for v in m.graph.input if v.name not in inits]
    outs = [(v.name, dims(v)) for v in m.graph.output]
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ins, outs, opset


def _counting_shapes(template: ModelCard, inputs) -> dict | None:
    """A first input of free size is counted at the template's own size (its MACs' input shape, else
    its input shape); the device scales the count by the pixels it runs at."""
    if not inputs or all(isinstance(d, int) for d in inputs[0].shape[1:]):
        return None
    ref = template.macs.input_shape if template.macs is not None else template.inputs[0].shape
    if not ref or not all(isinstance(d, int) and d > 0 for d in ref):
        return None
    return {inputs[0].name: tuple(ref)}


def derived_card(template: ModelCard, path: str | Path, *, format: str, inputs, outputs, made_by: dict,
                 describe: str, **changes) -> ModelCard:
    """The card of a file ``edge-export`` made from ``template``'s model (an ONNX export, a TFLite
    variant): the file's own facts (name, sha256, size, MACs), the given I/O specs, provenance
    naming the template, and a source note instead of the template's download address (the
    registry must never try to "download" a derived file from its source's address).

    ``made_by`` (provenance fields: converter, variant …) is set over the template's provenance,
    and a ``provenance`` dict in ``changes`` over that; ``describe`` is appended to the template's
    description; other ``changes`` override card fields last.
    """
    p = Path(path)
    prov = msgspec.structs.replace(template.provenance, **{
        "derived_from": DerivedFrom(name=template.name, sha256=template.sha256), **made_by,
        **changes.pop("provenance", {})})
    upstream = template.source.url or template.source.pypi or template.source.homepage
    source = Source(homepage=template.source.homepage,
                    note=f"derived by edge-export from {template.name} (sha256 {template.sha256[:16]}…"
                         f"{f', upstream {upstream}' if upstream else ''}); rebuild it with edge-export")
    fields = dict(name=p.stem, format=format, file=p.name, sha256=sha256_file(p), size=p.stat().st_size,
                  inputs=inputs, outputs=outputs, provenance=prov, source=source,
                  macs=file_macs(p, _counting_shapes(template, inputs)),
                  description=f"{template.description} {describe}".strip())
    fields.update(changes)
    return dataclasses.replace(template, **fields)


def write_card(card_template: ModelCard | str | Path, model_path: str | Path, out_card_path: str | Path,
               **changes) -> Path:
    """Write the edge model card of an exported ONNX file, derived from its source's card.

    Preprocessing (colour, mean/std, resize), labels, licence and source are kept from the
    template; name, format, file, sha256, size and the input/output names and shapes come
    from the exported file. ``provenance`` records what it was derived from and the converter;
    ``macs`` is counted from the file (:mod:`export.onnx.macs`; absent for an input with symbolic
    dims other than the batch).

    Args:
        card_template: the source model's card (or a path to its JSON).
        model_path: the exported ``.onnx`` file; the card's ``file`` is its name, so the
            card must sit in the same directory.
        out_card_path: where to write the JSON.
        **changes: top-level :class:`~edge.cards.ModelCard` fields to override (e.g. ``name``,
            ``description``, ``decoding``, ``face_crop``); a ``provenance`` dict is merged into the
            generated one.

    Returns:
        ``out_card_path`` as a Path; the file loads with :func:`edge.cards.load_card`.

    Raises:
        ValueError: an unknown field in ``changes``, or an input/output count the template
            cannot describe.
    """
    tpl = card_template if isinstance(card_template, ModelCard) else load_card(card_template)
    mp, cp = Path(model_path), Path(out_card_path)
    known = {f.name for f in dataclasses.fields(ModelCard)}
    unknown = set(changes) - known
    if unknown:
        raise ValueError(f"write_card: unknown card field(s) {sorted(unknown)} (valid: {', '.join(sorted(known))})")
    ins, outs, opset = onnx_io(mp)
    if len(ins) != len(tpl.inputs) or len(outs) != len(tpl.outputs):
        raise ValueError(f"{mp}: {len(ins)} input(s)/{len(outs)} output(s), but card {tpl.name!r} describes "
                         f"{len(tpl.inputs)}/{len(tpl.outputs)}")
    inputs = tuple(dataclasses.replace(spec, name=n, shape=s, dtype="float32")
                   for spec, (n, s) in zip(tpl.inputs, ins))
    outputs = tuple(dataclasses.replace(spec, name=n, shape=s, meaning=spec.meaning or n)
                    for spec, (n, s) in zip(tpl.outputs, outs))
    card = derived_card(tpl, mp, format="onnx", inputs=inputs, outputs=outputs,
                        made_by={"converter": f"torch.onnx {torch.__version__}", "opset": opset},
                        describe=f"Exported to ONNX (opset {opset}) from {tpl.name}.", **changes)
    cp.parent.mkdir(parents=True, exist_ok=True)
    tmp = cp.with_name(f".{cp.name}.tmp")
    tmp.write_text(card.to_json(), encoding="utf-8")
    os.replace(tmp, cp)
    return cp
