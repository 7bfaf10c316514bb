"""``edge-export build``: every role's model for one device profile, gated, chosen, signed, bundled.

For the profile's runtime (``[runtime] backend``: ``litert`` → TFLite variants, ``onnxruntime``
→ ONNX variants) each role's float source is turned into its variants, each variant is checked
against the float model and gated on real data, and the fastest one that passes is put into a
signed bundle with its card, labels and reports (:mod:`export.build.model`, :mod:`export.bundle.write`).
The variant is chosen for the board (:mod:`export.select.cost_model`): by timings recorded on it
(``board_timings``) or by its cost model, never by the build machine's latency.

Checks that need no computation run first, so a doomed build fails in a second: the profile, the
signing key, the roles, the formats and the licences (a non-commercial licence needs
``accept_licence``).

Example:
    >>> result = build(BuildOptions(profile="firmware_configs/rpi4.toml", out="bundles",
    ...                             key="keys/bundle_signing.key"))               # doctest: +SKIP
    >>> result.bundle.path                                                          # doctest: +SKIP
    PosixPath('bundles/rpi4')
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from edge.bundle import ROLES, BundleInfo
from edge.profile import DeviceProfile, load_profile
from edge.registry import get_card, resolve_file
from export.build.model import BuildContext, ModelBuild, ModelOutcome, SourceModel, default_threads
from export.variants import export_formats, get_target

log = logging.getLogger(__name__)

__all__ = ["BuildOptions", "BuildResult", "LicenceError", "ROLE_MODELS", "EMBEDDERS", "DEFAULT_EMBEDDER",
           "RUNTIME_FORMAT", "DEFAULT_KEYS", "resolve_keys", "role_sources", "check_licences", "build"]

_TORCH_MINIFASNET = "export.sources.nets.minifasnet:load_minifasnet"
#: Face embedders the builder can ship; SFace (Apache-2.0) is the default so a build needs no flag.
EMBEDDERS = {"sface": "sface_2021dec_fp32", "mobilefacenet": "mobilefacenet_128d"}
DEFAULT_EMBEDDER = "sface"
#: Float sources per role (the embedder is filled in from ``EMBEDDERS``).
ROLE_MODELS: dict[str, tuple[SourceModel, ...]] = {
    "classifier": (SourceModel("classifier", "mobilenet_v2_torchvision", "export.sources.nets:load_mobilenet_v2",
                               "export.build.pipeline:_export_mobilenet"),),
    "detector": (SourceModel("detector", "yolox_nano_416"),),
    "face_detector": (SourceModel("face_detector", "yunet_s_640x640"),),
    "liveness": (SourceModel("liveness", "minifasnet_v2_scale2.7", _TORCH_MINIFASNET, "export.build.pipeline:_export_minifasnet_v2"),
                 SourceModel("liveness", "minifasnet_v1se_scale4.0", _TORCH_MINIFASNET,
                             "export.build.pipeline:_export_minifasnet_v1se")),
}
#: The file format each runtime loads.
RUNTIME_FORMAT = {"litert": "tflite", "tflite": "tflite", "onnxruntime": "onnx", "onnx": "onnx", "ort": "onnx"}
#: Variants built by default for each format (uint8-I/O TFLite only on request: on a CPU it is the
#: int8 model plus two requantise ops, useful for accelerators that want uint8 tensors).
DEFAULT_KEYS = {"tflite": ("tflite_fp32", "tflite_fp16", "tflite_int8_dynamic", "tflite_int8"),
                "onnx": ("onnx_fp32", "onnx_fp16", "onnx_int8")}
SPEED_NOTE = ("The variant is chosen for the board (see each model's chosen.basis): by timings recorded on the board "
              "(--board-timings) or by the board's cost model (roofline of its profile's peaks and known runtime "
              "facts). 'ms here' is measured on the build machine with the profile's runtime and threads: it is "
              "informational (a proxy only for the build machine), never used to choose.")


class LicenceError(ValueError):
    """A model with a non-commercial licence was selected without ``--accept-licence``."""


def _export_mobilenet(out_dir: Path):
    from export.sources.classifier import export_mobilenet_v2_onnx

    return export_mobilenet_v2_onnx(out_dir)


def _export_minifasnet_v2(out_dir: Path):
    from export.sources.liveness import export_one

    return export_one("minifasnet_v2_scale2.7", out_dir)


def _export_minifasnet_v1se(out_dir: Path):
    from export.sources.liveness import export_one

    return export_one("minifasnet_v1se_scale4.0", out_dir)


@dataclass(frozen=True)
class BuildOptions:
    """Options of :func:`build` (the CLI flags of ``edge-export build``).

    Attributes:
        profile: device profile TOML.
        out: parent directory; the bundle is ``out/<profile name>``.
        key: Ed25519 private key (``edge-export keygen``).
        only: build only these roles (default: all five).
        accept_licence: allow models whose licence is non-commercial.
        formats: target keys and/or format names (``tflite``, ``onnx``); default: the
            profile runtime's :data:`DEFAULT_KEYS`.
        embedder: ``sface`` (default) or ``mobilefacenet``.
        archive: also write ``out/<profile>.tar.gz``.
        max_calibration: calibration inputs per model.
        fallback: keep badly quantised layers in float when a full-integer variant fails its gate.
        work_dir: keep intermediate files here (default: a temporary directory, removed).
        progress: called with one line per step.
    """

    profile: str | Path
    out: str | Path
    key: str | Path
    only: tuple[str, ...] = ()
    accept_licence: bool = False
    formats: tuple[str, ...] = ()
    embedder: str = DEFAULT_EMBEDDER
    archive: bool = False
    max_calibration: int = 64
    fallback: bool = True
    work_dir: str | Path | None = None
    progress: Callable[[str], None] = field(default=lambda msg: None, compare=False)
    user: object = None  # export.build.user_inputs.UserInputs: the user's models and data per role
    board_timings: str | Path | None = None  # an `edge bench` JSON report made on the profile's board


@dataclass(frozen=True)
class BuildResult:
    bundle: BundleInfo
    report: dict
    seconds: float


def resolve_keys(formats: Sequence[str], runtime_format: str) -> tuple[str, ...]:
    """Target keys from ``--formats`` (keys or format names); the runtime's format must be among them.

    Raises:
        ValueError: an unknown name, or no variant in the runtime's format.
    """
    if not formats:
        return DEFAULT_KEYS[runtime_format]
    keys: list[str] = []
    for f in formats:
        if f in DEFAULT_KEYS:
            keys += [k for k in DEFAULT_KEYS[f] if k not in keys]
        else:
            get_target(f)  # raises ValueError listing the valid keys
            if f not in keys:
                keys.append(f)
    fmts = {get_target(k).format.value for k in keys}
    if runtime_format not in fmts:
        raise ValueError(f"--formats {','.join(formats)} builds no {runtime_format} variant, but the profile's "
                         f"runtime loads {runtime_format} files")
    for fmt in fmts:  # every format needs its fp32 model first (reference and quantisation source)
        fp32 = f"{fmt}_fp32"
        if fp32 not in keys:
            keys.insert(0, fp32)
    order = [t.key for t in export_formats()]
    return tuple(sorted(keys, key=order.index))


def role_sources(only: Sequence[str] = (), embedder: str = DEFAULT_EMBEDDER) -> list[SourceModel]:
    """The source models of the selected roles, in :data:`edge.bundle.ROLES` order.

    Raises:
        ValueError: an unknown role or embedder.
    """
    bad = [r for r in only if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {', '.join(bad)} (valid: {', '.join(ROLES)})")
    if embedder not in EMBEDDERS:
        raise ValueError(f"unknown embedder {embedder!r} (valid: {', '.join(EMBEDDERS)})")
    table = dict(ROLE_MODELS, face_embedder=(SourceModel("face_embedder", EMBEDDERS[embedder]),))
    return [s for role in ROLES if not only or role in only for s in table[role]]


def check_licences(sources: Sequence[SourceModel], accept: bool) -> list[str]:
    """Names (with licence) of the non-commercial models; raises unless ``accept``.

    Raises:
        LicenceError: a non-commercial model without ``accept``, naming it, its licence and the way out.
    """
    flagged = []
    for s in sources:
        card = _source_card(s)
        if card.non_commercial:
            flagged.append(f"{s.name} ({card.licence.spdx}: {card.licence.note or 'non-commercial'})")
    if flagged and not accept:
        raise LicenceError(f"refusing to build: {', '.join(flagged)} may only be used non-commercially. Pass "
                           f"--accept-licence to build a bundle containing it anyway (the report flags it), or "
                           f"choose the default embedder '{DEFAULT_EMBEDDER}' (Apache-2.0).")
    return flagged


def _source_card(s: SourceModel):
    if s.path is not None:  # a user's model (export.build.user_inputs)
        from edge.registry import resolve

        return resolve(str(s.path)).card
    return get_card(s.name)


def _golden_images(source: SourceModel, ctx: BuildContext) -> list[Path]:
    """Real images of the role's report split for the release self-test (the user's data when given)."""
    from export.gates.roles import role_data

    try:
        data = ctx.user_data.get(source.role) or role_data(source.role, model_name=source.name)
    except Exception as exc:  # noqa: BLE001 - no data: the self-test says it skipped the role
        log.warning("self-test: no golden images for %s: %s", source.role, exc)
        return []
    from edge.selftest import IMAGES_PER_MODEL

    return sorted(data.evaluation)[:IMAGES_PER_MODEL * 3]


def _labels(card) -> Path | None:
    if card.labels is None:
        return None
    return resolve_file(card.labels.file, card.labels.sha256, card.labels.source)


def _model_report(o: ModelOutcome) -> dict:
    variants = [v.to_dict() for v in o.variants]
    chosen = o.chosen.to_dict()
    chosen.update(o.choice)  # variant, basis (cost-model | board-timings), board, why, estimates
    chosen["reason"] = o.reason
    rep = {"role": o.source.role, "source": o.source.name, "source_sha256": o.card.sha256,
           "licence": {"spdx": o.card.licence.spdx, "non_commercial": o.card.non_commercial,
                       "note": o.card.licence.note},
           "calibration": {"hash": o.calibration_hash, "note": o.calibration_note,
                           "images": o.calibration_images, "tflite_statistic": o.calibration_stat,
                           "tflite_trials": o.calibration_trials},
           "splits": o.splits,
           "prep": o.prep, "variants": variants, "chosen": chosen, "fallback": o.fallback}
    base = next((v for v in o.variants if v.key == o.chosen.key and not v.keep_float), None)
    if o.chosen.keep_float and base is not None and base.latency_ms and o.chosen.latency_ms:
        rep["fallback_cost"] = {"size_ratio": o.chosen.size / base.size,
                                "latency_ratio": o.chosen.latency_ms / base.latency_ms}
    return rep


def build(options: BuildOptions) -> BuildResult:
    """Build, gate, choose, sign and write the bundle of one profile (see the module docstring).

    Raises:
        ProfileError: a malformed profile.
        SigningKeyError: an unreadable or non-Ed25519 private key.
        LicenceError: a non-commercial model without ``accept_licence``.
        ValueError: unknown role, embedder, format or runtime.
        ExportStepError: a step failed for a model (names the model and the step); no bundle is written.
    """
    from export.bundle.keys import load_private_key
    from export.bundle.report import render_markdown
    from export.bundle.write import write_bundle
    from export.gates.base import GateLimits
    from export.tflite.convert import converter_versions

    t0 = time.perf_counter()
    profile: DeviceProfile = load_profile(options.profile)
    private_key = load_private_key(options.key)
    backend = profile.runtime.backend
    if backend not in RUNTIME_FORMAT:
        raise ValueError(f"{options.profile}: runtime.backend {backend!r} has no bundle format "
                         f"(known: {', '.join(RUNTIME_FORMAT)})")
    fmt = RUNTIME_FORMAT[backend]
    keys = resolve_keys(options.formats, fmt)
    sources = role_sources(options.only, options.embedder)
    flagged = check_licences(sources, options.accept_licence)
    timings = None
    if options.board_timings is not None:
        from export.select.cost_model import load_board_timings

        timings = load_board_timings(options.board_timings, profile)  # refused before any work
    threads = default_threads(profile.runtime.threads)
    say = options.progress

    def progress(msg: str) -> None:
        say(f"[{time.perf_counter() - t0:6.1f}s] {msg}")

    ctx = BuildContext(keys=keys, runtime_format=fmt, runtime_backend="litert" if fmt == "tflite" else "onnxruntime",
                       threads=threads, limits=GateLimits.from_profile(profile),
                       max_calibration=options.max_calibration, fallback=options.fallback, progress=progress,
                       profile=profile, board_timings=timings)
    progress(f"profile {profile.name}: runtime {backend} ({fmt}), variants {', '.join(keys)}, "
             f"roles {', '.join(dict.fromkeys(s.role for s in sources))}")
    work_parent = Path(options.work_dir) if options.work_dir else None
    if work_parent is not None:
        work_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="edgesight-build-", dir=work_parent))
    try:
        if options.user:  # export.build.user_inputs: the user's models and data replace the built-in ones
            from dataclasses import replace as _replace

            from export.build.user_inputs import apply_user_inputs

            sources, user_data = apply_user_inputs(sources, options.user, tmp, progress)
            flagged = check_licences(sources, options.accept_licence)
            ctx = _replace(ctx, user_data=user_data)
        outcomes = [ModelBuild(s, tmp, ctx).run() for s in sources]
        from export.bundle.write import BundleEntry

        from export.bundle.ship import shipped_model  # output-identical rewrites applied to what ships

        entries = [BundleEntry(o.source.role, *shipped_model(o.chosen.path, o.chosen.card, tmp, prep=o.prep),
                               _labels(o.card)) for o in outcomes]
        finished = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        report = {"profile": {"name": profile.name, "board": profile.board, "backend": backend,
                              "threads": profile.runtime.threads, "path": str(options.profile)},
                  "build": {"finished": finished, "seconds": round(time.perf_counter() - t0, 1),
                            "host_cpus": os.cpu_count(), "threads": threads, "keys": list(keys),
                            "only": list(options.only), "accept_licence": options.accept_licence,
                            "board_timings": str(options.board_timings) if options.board_timings else None},
                  "speed_note": SPEED_NOTE, "non_commercial": flagged,
                  "models": [_model_report(o) for o in outcomes], "converters": converter_versions()}
        progress("signing and writing the bundle")
        target = Path(options.out) / profile.name
        golden = {o.source.role: _golden_images(o.source, ctx) for o in outcomes}

        def selftest(root: Path, roles: dict) -> None:
            from edge.selftest import record

            t = time.perf_counter()
            index = record(root, roles, golden, progress=progress)
            size = sum(p.stat().st_size for p in (root / "selftest").rglob("*") if p.is_file())
            report["selftest"] = {"models": len(index["models"]), "skipped": index["skipped"], "bytes": size,
                                  "seconds": round(time.perf_counter() - t, 1),
                                  "images": {r: [p.name for p in ps] for r, ps in golden.items()},
                                  "split": "report (first images by name)"}

        info = write_bundle(target, entries, profile=profile.name, private_key=private_key, report=report,
                            report_md=render_markdown, archive=options.archive, created=finished,
                            selftest=selftest)
    finally:
        if options.work_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    progress(f"bundle {info.path}: {info.files} files, {info.total_bytes / 1e6:.1f} MB, in {seconds:.0f} s")
    return BuildResult(info, report, seconds)
