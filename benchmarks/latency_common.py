"""Shared plumbing of the latency benchmarks (int8_vs_fp32.py, ort_vs_litert.py).

Every figure comes from :mod:`edge.bench`: each variant is timed in a fresh worker process on
the same real sample images, so two variants of one script are measured the same way, in the
same run. Float models that the shared mirror lacks are made at run time into a temporary
directory (ONNX with torch's exporter, TFLite fp32 with litert-torch) and never kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import json
import re
import sys
import tempfile
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.bench import device  # noqa: E402
from edge.bench.runner import BenchConfig, BenchRunner, ModelVariant, variants_from_models  # noqa: E402
from edge.cards import ModelCard, load_card  # noqa: E402
from edge.profile import load_profile, profiles_dir  # noqa: E402
from edge.registry import get_card, sha256_file  # noqa: E402

#: Card-name tokens that mark a quantised / half-precision variant when the card does not say.
INT8_TOKENS = ("int8", "uint8", "quant", "qdq", "int8bq")
FP16_TOKENS = ("fp16", "float16")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iters", type=int, default=50, help="timed runs per variant (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: the profile's)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measure every variant this many times, round-robin, and take the median p50 "
                        "(evens out load drifting on a shared machine; default 3)")
    p.add_argument("--json", metavar="OUT", help="also write the ratios and the raw results as JSON")


def machine_line() -> str:
    fp = device.fingerprint()
    v = fp.get("versions", {})
    return (f"{fp.get('board') or 'unknown board'}, {fp.get('cpu_model')}, {fp.get('cores')} cores, {fp.get('os')}, "
            f"Python {fp.get('python')}, onnxruntime {v.get('onnxruntime', '-')}, "
            f"ai-edge-litert {v.get('ai-edge-litert', '-')}")


def _profile():
    name = device.guess_profile_name(device.fingerprint())
    path = profiles_dir() / f"{name}.toml" if name else None
    return load_profile(path) if path is not None and path.is_file() else None


def thread_counts(text: str | None) -> tuple:
    if text:
        return tuple(int(x) for x in text.split(","))
    prof = _profile()
    return (prof.runtime.threads,) if prof else (None,)


def measure(variants: list[ModelVariant], args, backends: tuple | None = None) -> list[dict]:
    """Time every variant (each backend that runs it × each thread count) with :mod:`edge.bench`.

    Variants are measured ``args.rounds`` times in round-robin order, each time in a fresh
    process; a result's ``latency_ms["p50"]`` is then the median of the rounds' p50s (the
    rounds' values are kept in ``rounds_p50_ms``), so a load spike during one variant's turn
    does not decide a ratio.
    """
    prof = _profile()
    config = BenchConfig(warmup=args.warmup, iters=args.iters, threads=thread_counts(args.threads),
                         backends=backends)

    def show(ev: dict) -> None:
        if ev.get("event") == "job_done":
            r = ev["result"]
            lat = r.get("latency_ms") or {}
            print(f"  measured {r['variant']} on {r['backend']} threads={r['threads']}: "
                  f"{'p50 %.2f ms' % lat['p50'] if lat else r.get('error')}", file=sys.stderr)

    runner = BenchRunner(config, compute=prof.compute if prof else None,
                         cores=prof.cpu.cores if prof else (device.fingerprint().get("cores") or 1), on_event=show)
    rounds = [runner.run(variants) for _ in range(max(1, args.rounds))]
    merged = []
    for k, first in enumerate(rounds[0]):
        same = [rs[k] for rs in rounds if rs[k].get("status") == "ok"]
        if not same:
            merged.append(first)
            continue
        p50s = [r["latency_ms"]["p50"] for r in same]
        best = dict(same[0])
        best["latency_ms"] = {**same[0]["latency_ms"], "p50": statistics.median(p50s)}
        best["rounds_p50_ms"] = p50s
        merged.append(best)
    return merged


def find(results: list[dict], variant: str, backend: str | None = None, threads=None) -> dict | None:
    for r in results:
        if (r["variant"] == variant and r.get("status") == "ok" and (backend is None or r["backend"] == backend)
                and r.get("threads") == threads):
            return r
    return None


def precision_of(card: ModelCard) -> str:
    """``int8`` / ``fp16`` / ``fp32`` from the card's ``provenance.precision``, its tensors, else its name."""
    p = card.provenance.precision
    if p in ("int8", "fp16", "fp32"):
        return p
    if any(s.quantization is not None or s.dtype in ("uint8", "int8") for s in card.inputs):
        return "int8"
    name = card.name.lower()
    if any(t in name for t in INT8_TOKENS):
        return "int8"
    return "fp16" if any(t in name for t in FP16_TOKENS) else "fp32"


def source_of(card: ModelCard) -> str:
    """The float model a variant was derived from (``provenance.derived_from``, else its name minus precision tokens)."""
    derived = card.provenance.derived_from
    if derived is not None and derived.name:
        return derived.name
    return re.sub(r"_(fp32|fp16|float16|int8bq|int8|uint8|quant|qdq)(?=_|$)", "", card.name)


def bundle_variants(directory: str | Path) -> list[ModelVariant]:
    """Every card + model of an export output directory (cards that do not load are skipped)."""
    out = []
    for card_path in sorted(Path(directory).glob("*.json")):
        try:
            load_card(card_path)
        except ValueError:
            continue
        out.extend(variants_from_models([str(card_path)]))
    return out


def export_mobilenet(arch: str, out_dir: Path) -> tuple[Path, Path, object]:
    """(onnx path, card path, torch model) of a MobileNet: V2 with torchvision weights, V3 random (timing only)."""
    import torch

    from export.onnx.from_torch import export_onnx, write_card

    if arch == "mobilenet_v2":
        from export.sources.classifier import export_mobilenet_v2_onnx
        from export.sources.nets.mobilenet_v2 import load_mobilenet_v2
        from edge.registry import resolve

        onnx_path, card_path = export_mobilenet_v2_onnx(out_dir)
        return onnx_path, card_path, load_mobilenet_v2(resolve("mobilenet_v2_torchvision").path).eval()
    from export.sources.nets import mobilenet_v2 as nets

    torch.manual_seed(0)
    model = getattr(nets, arch)().eval()
    tpl = get_card("mobilenet_v2_torchvision")
    onnx_path = export_onnx(model, out_dir / f"{arch}_fp32.onnx", input_shape=tuple(tpl.inputs[0].shape),
                            input_name=tpl.inputs[0].name, output_name=tpl.outputs[0].name)
    card_path = write_card(tpl, onnx_path, out_dir / f"{arch}_fp32.json", name=f"{arch}_fp32",
                           description=f"{arch} with random weights (timing only).")
    return onnx_path, card_path, model


def convert_tflite_fp32(model, onnx_card_path: Path, out_dir: Path) -> Path:
    """Convert a torch model to TFLite fp32 with litert-torch; returns the card path (card beside the file).

    litert-torch keeps the torch signature, so the TFLite input is NCHW like the ONNX one and
    the ONNX card's preprocessing applies unchanged.
    """
    import torch
    import litert_torch

    onnx_card = load_card(onnx_card_path)
    name = onnx_card.name.replace("_fp32", "") + "_litert_fp32"
    path = out_dir / f"{name}.tflite"
    example = (torch.zeros(*onnx_card.inputs[0].shape),)
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints its progress on stdout
        litert_torch.convert(model, example).export(str(path))
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    ins, outs = it.get_input_details(), it.get_output_details()
    card = dataclasses.replace(
        onnx_card, name=name, format="tflite", file=path.name, sha256=sha256_file(path), size=path.stat().st_size,
        inputs=tuple(dataclasses.replace(s, name=d["name"]) for s, d in zip(onnx_card.inputs, ins)),
        outputs=tuple(dataclasses.replace(s, name=d["name"]) for s, d in zip(onnx_card.outputs, outs)),
        provenance=msgspec.structs.replace(onnx_card.provenance, precision="fp32",
                                           converter=f"litert-torch {getattr(litert_torch, '__version__', '?')}"),
        description=f"{onnx_card.description} Converted to TFLite fp32 with litert-torch.")
    card_path = out_dir / f"{name}.json"
    card_path.write_text(card.to_json(), encoding="utf-8")
    return card_path


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def print_table(rows: list[tuple], head: tuple) -> None:
    table = [head] + [tuple("-" if c is None else (f"{c:.2f}" if isinstance(c, float) else str(c)) for c in r)
                      for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for k, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
