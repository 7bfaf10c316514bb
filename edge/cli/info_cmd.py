"""``edge info [--bundle B] [--trust K] [--json]``: the release in force and what the device runs.

Shows the active release (verified first: source, profile, build date, signing key fingerprint,
per role the model, variant, size, sha256, licence, gate figures and the embedder's thresholds),
the profile in force, the runtimes and execution providers actually available, and which embedder
the enrolled face templates are bound to (stale when it is not the release's).

Exit codes: 0 shown; 1 no release is given or installed (the rest is still shown); 2 the release
was refused (verification failed) or another error.
"""

from __future__ import annotations

import json
import sys

import msgspec

from edge.errors import EdgeError, ReleaseNotFoundError


def add_parser(sub) -> None:
    from edge.release import add_release_args

    p = sub.add_parser("info", help="show the active release, profile, runtimes and template binding",
                       description=__doc__.split("\n\n")[0])
    add_release_args(p)
    p.add_argument("--profile", metavar="NAME|TOML", help="profile override (default: the release's)")
    p.add_argument("--store", metavar="DIR", help="face template store (EDGE_UNLOCK_STORE; default "
                                                  "/var/lib/edgesight/templates)")
    p.add_argument("--key", metavar="FILE", help="template key file (EDGE_UNLOCK_KEY; default /etc/edgesight/unlock.key)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)


def _model_row(role: str, m) -> dict:
    card = m.card
    gate = card.gate
    row = {"role": role, "name": card.name, "file": m.model_path.name, "format": card.format,
           "variant": card.provenance.variant, "size": card.size, "sha256": card.sha256,
           "licence": card.licence.spdx, "non_commercial": card.non_commercial,
           "gate": {"passed": gate.passed, "metrics": dict(gate.metrics)} if gate is not None else None}
    thresholds = msgspec.to_builtins(card.thresholds)
    if thresholds:
        row["thresholds"] = thresholds
    if card.provenance.rewrites:
        row["rewrites"] = msgspec.to_builtins(card.provenance.rewrites)
    return row


def release_info(release) -> dict:
    """The release part of ``edge info`` (also used by the web service)."""
    i = release.info
    return {"source": str(release.source), "path": str(release.path), "profile": i.profile, "created": i.created,
            "key_id": release.key_id, "trust": str(release.trust) if release.trust else None, "files": i.files,
            "bytes": i.total_bytes,
            "roles": {r: [_model_row(r, m) for m in ms] for r, ms in release.bundle.roles.items()}}


def _profile_info(prof) -> dict | None:
    if prof is None:
        return None
    from edge.profile_use import camera_settings, detector_defaults, engine_options, thermal_check, unlock_policy

    rt = prof.runtime
    eng, cam, det, pol = engine_options(prof), camera_settings(prof), detector_defaults(prof), unlock_policy(prof)
    return {"name": prof.name, "board": prof.board, "backend": rt.backend, "threads": rt.threads,
            "providers": list(getattr(rt, "providers", []) or []),
            "in_force": {"threads": eng.threads, "provider_options": {k: dict(v) for k, v in eng.provider_options.items()},
                         "camera": {"source": cam.source, "width": cam.width, "height": cam.height, "fps": cam.fps,
                                    "fourcc": cam.fourcc, "ir": cam.ir},
                         "detection": {"score": det.score, "nms_iou": det.nms_iou},
                         "unlock": {"k": pol.k, "n": pol.n, "max_failures": pol.max_failures,
                                    "lockout_s": pol.lockout_s, "liveness": pol.liveness_mode,
                                    "target_far": pol.target_far},
                         "thermal": {"throttle_c": thermal_check(prof).throttle_c}}}


def runtime_info(prof=None) -> dict:
    """Installed runtimes and the onnxruntime execution providers requested by the profile and usable here."""
    out: dict = {"python": sys.version.split()[0]}
    try:
        import onnxruntime as ort

        avail = list(ort.get_available_providers())
        want = [p for p in (getattr(prof.runtime, "providers", None) or [] if prof else [])]
        names = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
        wanted = [names.get(str(p).lower(), str(p)) for p in want] or ["CPUExecutionProvider"]
        used = [p for p in wanted if p in avail] or ["CPUExecutionProvider"]
        out["onnxruntime"] = {"version": ort.__version__, "available_providers": avail, "providers_in_use": used,
                              "unavailable_requested": [p for p in wanted if p not in avail]}
    except ImportError:
        out["onnxruntime"] = None
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out["litert"] = {"package": "ai-edge-litert", "version": version("ai-edge-litert")}
        except PackageNotFoundError:
            out["litert"] = {"package": "tflite-runtime", "version": version("tflite-runtime")}
    except Exception:  # noqa: BLE001 - neither LiteRT package is installed
        out["litert"] = None
    import cv2

    out["opencv"] = cv2.__version__
    return out


def templates_info(args, release) -> dict:
    """Which embedder the enrolled templates are bound to; stale when it is not the release's."""
    from edge.unlock.config import UnlockConfig
    from edge.unlock.keys import FileKeyProvider
    from edge.unlock.store import TemplateStore

    current = None
    if release is not None and release.bundle.roles.get("face_embedder"):
        card = release.bundle.roles["face_embedder"][0].card
        current = {"model_id": card.name, "model_sha256": card.sha256}
    try:
        config = UnlockConfig.resolve({"store_dir": args.store, "key_file": args.key})
        listing = TemplateStore(config.store_dir, FileKeyProvider(config.key_file)).load_all()
    except (EdgeError, OSError, ValueError) as e:
        return {"release_embedder": current, "error": f"cannot read the template store: {e}"}
    users = [{"user": r.user, "model_id": r.model_id, "model_sha256": r.model_sha256,
              "stale": None if current is None else r.is_stale(current["model_id"], current["model_sha256"])}
             for r in listing.records]
    return {"store": str(config.store_dir), "release_embedder": current, "users": users,
            "unreadable": [str(p.path) for p in listing.problems]}


def cmd_info(args) -> int:
    from edge.release import no_release_help, open_release
    from edge.roles import profile_for_release

    code = 0
    release = None
    try:
        release = open_release(args.bundle, args.trust)
        rel = release_info(release)
    except ReleaseNotFoundError as e:
        if args.bundle is not None:
            raise
        rel, code = {"error": str(e) or no_release_help()}, 1
    prof = profile_for_release(release, args.profile)
    doc = {"release": rel, "profile": _profile_info(prof), "runtime": runtime_info(prof),
           "templates": templates_info(args, release)}
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(_render(doc))
    return code


def _render(doc: dict) -> str:
    lines = []
    rel = doc["release"]
    if "error" in rel:
        lines.append(f"release: none\n  {rel['error']}")
    else:
        lines += [f"release: {rel['source']}  (verified; signed by key {rel['key_id']} from {rel['trust']})",
                  f"  profile {rel['profile']}, built {rel['created']}, {rel['files']} files, "
                  f"{rel['bytes'] / 1e6:.1f} MB"]
        for role, rows in rel["roles"].items():
            for r in rows:
                gate = r.get("gate") or {}
                ok = {True: "gate passed", False: "gate FAILED", None: "no gate"}[gate.get("passed")]
                lic = r["licence"] + (" (NON-COMMERCIAL)" if r["non_commercial"] else "")
                lines.append(f"  {role:14s} {r['name']}  {r['file']}  [{r.get('variant') or r['format']}] "
                             f"{r['size'] / 1e6:.1f} MB  sha256 {r['sha256'][:12]}…  {lic}  {ok}")
                metrics = gate.get("metrics") or {}
                if metrics:
                    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                      for k, v in list(metrics.items())[:6])
                    lines.append(f"  {'':14s}   gate: {shown}")
                far = (r.get("thresholds") or {}).get("cosine_at_far")
                if far:
                    lines.append(f"  {'':14s}   match threshold at FAR: "
                                 + ", ".join(f"{k}: {v}" for k, v in far.items()))
    p = doc["profile"]
    lines.append("profile: none known here (built-in defaults)" if p is None else
                 f"profile: {p['name']} ({p['board']}): {p['backend']}, {p['threads']} threads "
                 f"({p['in_force']['threads']} in use here), providers {', '.join(p['providers']) or '-'}")
    if p is not None:
        f = p["in_force"]
        c, d, u = f["camera"], f["detection"], f["unlock"]
        lines.append(f"  camera {c['source']} {c['width']}x{c['height']}@{c['fps']:g}"
                     f"{' ' + c['fourcc'] if c['fourcc'] else ''}{' IR' if c['ir'] else ''}; detection score "
                     f"{d['score']:g}, NMS IoU {d['nms_iou']:g}; unlock {u['k']} of {u['n']}, lockout after "
                     f"{u['max_failures']} for {u['lockout_s']:g} s, liveness {u['liveness']}, FAR {u['target_far']:g}; "
                     f"thermal limit {f['thermal']['throttle_c']:g} °C")
    rt = doc["runtime"]
    ort = rt.get("onnxruntime")
    lines.append(f"runtime: python {rt['python']}, opencv {rt['opencv']}, "
                 f"litert {rt['litert']['version'] if rt.get('litert') else 'not installed'}, "
                 f"onnxruntime {ort['version'] if ort else 'not installed'}")
    if ort:
        lines.append(f"  onnxruntime providers in use: {', '.join(ort['providers_in_use'])} "
                     f"(available: {', '.join(ort['available_providers'])})"
                     + (f"; requested but unavailable: {', '.join(ort['unavailable_requested'])}"
                        if ort["unavailable_requested"] else ""))
    t = doc["templates"]
    emb = t.get("release_embedder")
    lines.append(f"templates: {t.get('store', '')}" + (f" — release embedder {emb['model_id']} "
                                                       f"({emb['model_sha256'][:12]}…)" if emb else ""))
    if "error" in t:
        lines.append(f"  {t['error']}")
    for u in t.get("users", []):
        flag = {True: "STALE (re-enrol)", False: "current", None: "?"}[u["stale"]]
        lines.append(f"  {u['user']:20s} bound to {u['model_id']} ({u['model_sha256'][:12]}…)  {flag}")
    if not t.get("users") and "error" not in t:
        lines.append("  no users enrolled")
    return "\n".join(lines)
