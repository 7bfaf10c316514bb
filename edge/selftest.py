"""The release self-test: golden inputs carried in the bundle, run on the device's own runtime.

At build time (:func:`record`, called by ``edge-export build`` before the manifest is signed)
every shipped model is run on a few real images of its role's report split. What is stored is
the **prepared input tensor** (after resize, colour order, layout and normalisation) and the raw
outputs, so the device test exercises the model file and the runtime, not OpenCV's resize
(which is not bit-identical between x86 and arm64). The files go under ``selftest/`` and are
covered by the manifest and its signature like every other file.

On the device (:func:`run`, ``edge selftest``) each stored input is fed to the model through the
runtime the device uses, and each output is compared with the recorded one **with a tolerance,
never bytes**: the largest absolute difference divided by the largest magnitude of the recorded
output must stay within the tolerance of the variant's precision (:data:`TOLERANCE`). A model
replaced by another one, a runtime that returns zeros (seen with ``tflite-runtime`` 2.14 on newer
quantised models) or a corrupted delegate all land far above it; an arm64 CPU's different
rounding stays far below it.

Example:
    >>> report = run(open_release("bundles/rpi5", "keys/bundle_signing.pub").path)   # doctest: +SKIP
    >>> report.passed                                                                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge.errors import BundleError

__all__ = ["SELFTEST_DIR", "INDEX", "TOLERANCE", "Check", "SelftestReport", "record", "run", "precision_of",
           "compare_outputs", "SelftestMissingError"]

SELFTEST_DIR = "selftest"
INDEX = f"{SELFTEST_DIR}/selftest.json"
INDEX_SCHEMA = 1
#: Largest ``max|actual − expected| / max|expected|`` per output, by the variant's precision.
#: fp32: different CPUs and kernels (x86 AVX-512 vs arm64 NEON/XNNPACK) differ by ~1e-5 relative;
#: fp16 arithmetic by ~1e-3; int8 kernels by one or two quantisation steps of a ~256-step range.
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 6e-2}
#: Prepared inputs recorded per model (real images of the role's report split).
IMAGES_PER_MODEL = 2
#: Size used for models whose input has dynamic height/width.
DYNAMIC_SIZE = (320, 320)


class SelftestMissingError(BundleError):
    """The release carries no self-test data (built before self-tests existed)."""


@dataclass(frozen=True)
class Check:
    """One output of one golden input compared on this device."""

    role: str
    model: str
    input: str
    output: str
    metric: str
    value: float
    limit: float
    passed: bool
    cosine: float | None = None
    note: str = ""


@dataclass
class SelftestReport:
    """Every check of a release's self-test."""

    release: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "release": self.release, "checks": [asdict(c) for c in self.checks]}


def precision_of(card) -> str:
    """``"int8"``, ``"fp16"`` or ``"fp32"`` from the card's variant (integer inputs mean int8)."""
    variant = (card.provenance.variant or "").lower()
    if any(k in variant for k in ("int8", "uint8", "dynamic", "quant")):
        return "int8"
    if "fp16" in variant:
        return "fp16"
    if any(str(spec.dtype) in ("uint8", "int8") for spec in card.inputs) and card.format == "tflite":
        return "int8"
    return "fp32"


def compare_outputs(actual: np.ndarray, expected: np.ndarray, tolerance: float) -> tuple[float, float | None, bool]:
    """``(relative max error, cosine similarity, passed)`` of one output against its record."""
    a = np.asarray(actual, np.float64).ravel()
    e = np.asarray(expected, np.float64).ravel()
    if a.shape != e.shape:
        return float("inf"), None, False
    if not np.all(np.isfinite(a)):
        return float("inf"), None, False
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-6)
    err = float(np.max(np.abs(a - e))) / scale if e.size else 0.0
    na, ne = float(np.linalg.norm(a)), float(np.linalg.norm(e))
    cosine = float(a @ e / (na * ne)) if na > 0 and ne > 0 else None
    return err, cosine, err <= tolerance


def _prepare(card, image_path: Path) -> np.ndarray:
    from edge.imageio import load_image
    from edge.preprocess import prepare

    spec = card.inputs[0]
    size = None if None not in spec.size else DYNAMIC_SIZE
    x, _ = prepare(load_image(image_path), spec, size)
    return x


def _engine(model_path: Path, threads: int | None):
    from edge.engines import load_engine

    return load_engine(model_path, threads=threads)


def _run_model(engine, x: np.ndarray) -> list[np.ndarray]:
    out = engine.run({engine.inputs[0].name: x})
    return [np.asarray(out[t.name]) for t in engine.outputs]


def record(root: Path, roles: dict, images: dict[str, Sequence[Path]], *, threads: int | None = 1,
           progress: Callable[[str], None] = lambda m: None) -> dict:
    """Run every model of a bundle being written on its role's golden images; store under ``selftest/``.

    Args:
        root: the bundle directory (before its manifest is written).
        roles: ``role -> [{"card": rel, "model": rel, ...}]`` as the manifest will record them.
        images: ``role -> real images`` (the first :data:`IMAGES_PER_MODEL` readable ones are used).
        threads: engine threads.

    Returns:
        The index written to ``selftest/selftest.json``.
    """
    from edge.cards import load_card

    entries, skipped = [], []
    for role, models in roles.items():
        for m in models:
            card = load_card(root / m["card"])
            if len(card.inputs) != 1:
                skipped.append({"role": role, "model": m["card"], "why": f"{len(card.inputs)} inputs"})
                continue
            inputs, names = [], []
            for p in images.get(role, ()):
                try:
                    inputs.append(_prepare(card, Path(p)))
                except (ValueError, OSError) as exc:
                    progress(f"self-test: {role}: {Path(p).name} not usable ({exc})")
                    continue
                names.append(Path(p).name)
                if len(inputs) == IMAGES_PER_MODEL:
                    break
            if not inputs:
                skipped.append({"role": role, "model": m["card"], "why": "no readable golden image"})
                continue
            arrays = {}
            with _engine(root / m["model"], threads) as eng:
                for i, x in enumerate(inputs):
                    arrays[f"in_{i}"] = x
                    for k, y in enumerate(_run_model(eng, x)):
                        arrays[f"out_{i}_{k}"] = y
                output_names = [t.name for t in eng.outputs]
            rel = f"{SELFTEST_DIR}/{role}/{Path(m['model']).stem}.npz"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / rel, **arrays)
            precision = precision_of(card)
            entries.append({"role": role, "card": m["card"], "model": m["model"], "data": rel, "inputs": names,
                            "outputs": output_names, "precision": precision, "tolerance": TOLERANCE[precision]})
            progress(f"self-test: {role}: {Path(m['model']).name} recorded on {len(names)} image(s)")
    index = {"schema": INDEX_SCHEMA, "metric": "max|actual-expected| / max|expected| per output",
             "models": entries, "skipped": skipped}
    (root / INDEX).parent.mkdir(parents=True, exist_ok=True)
    (root / INDEX).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return index


def _load_index(root: Path) -> dict:
    path = root / INDEX
    if not path.is_file():
        raise SelftestMissingError(f"{root}: the release carries no self-test ({INDEX} is missing); rebuild it "
                                   "with this edgesight's `edge-export build`, which records one")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        models = index["models"]
        if index.get("schema") != INDEX_SCHEMA or not isinstance(models, list):
            raise ValueError(f"schema {index.get('schema')!r}")
        for e in models:
            for key in ("role", "card", "model", "data", "inputs", "outputs", "tolerance"):
                if key not in e:
                    raise ValueError(f"a model entry lacks {key!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not a self-test index this edgesight reads ({exc})") from None
    return index


def _inside(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if not p.is_relative_to(root.resolve()):
        raise BundleError(f"{root / INDEX}: path {rel!r} leaves the release")
    return p


def run(root: str | Path, *, threads: int | None = 1, roles: Sequence[str] | None = None) -> SelftestReport:
    """Run the self-test of a **verified** release directory (see :func:`edge.release.open_release`).

    Raises:
        SelftestMissingError: the release has no self-test data.
        BundleError: the index is malformed or points outside the release.
    """
    from edge.cards import load_card

    root = Path(root)
    index = _load_index(root)
    report = SelftestReport(release=str(root))
    for e in index["models"]:
        if roles and e["role"] not in roles:
            continue
        model = Path(e["model"]).name
        try:
            card = load_card(_inside(root, e["card"]))
            with np.load(_inside(root, e["data"]), allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            with _engine(_inside(root, e["model"]), threads) as eng:
                for i, name in enumerate(e["inputs"]):
                    outs = _run_model(eng, data[f"in_{i}"])
                    for k, out_name in enumerate(e["outputs"]):
                        expected = data[f"out_{i}_{k}"]
                        actual = outs[k] if k < len(outs) else np.zeros(0)
                        err, cos, ok = compare_outputs(actual, expected, float(e["tolerance"]))
                        report.checks.append(Check(e["role"], model, name, out_name, "rel_max_err", err,
                                                   float(e["tolerance"]), ok, cos, f"{card.format} {e.get('precision', '')}".strip()))
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the model fails the test, named
            report.checks.append(Check(e["role"], model, "-", "-", "error", float("inf"), float(e["tolerance"]),
                                       False, None, f"{type(exc).__name__}: {exc}"))
    return report
