"""``edge unlock``: enrol faces, verify them (for PAM), and manage the encrypted template store.

Exit codes of ``edge unlock verify``: 0 accepted, 1 rejected / timed out / refused by policy /
not enrolled, 2 error (models, key, store, source …), 3 locked out, 4 retry (a face was seen but
no frame passed the quality checks — too small, blurred, clipped …: not matched, not counted
towards the lockout). The other sub-commands
return 0 on success and 2 on error.

Every state path takes an option or an environment variable (see :mod:`edge.unlock.config`):
``--store`` / ``EDGE_UNLOCK_STORE``, ``--key`` / ``EDGE_UNLOCK_KEY``, ``--audit`` /
``EDGE_UNLOCK_AUDIT``, ``--state`` / ``EDGE_UNLOCK_STATE``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from edge.errors import LockedOutError, UnknownUserError, UnlockRefused
from edge.cli.argtypes import integer, number, threads
from edge.face.liveness_modes import LIVENESS_MODES
#: Exit codes of ``edge unlock verify`` (the warm service's protocol uses the same).
from edge.unlock.client import EXIT_ACCEPT, EXIT_ERROR, EXIT_LOCKED, EXIT_REJECT, EXIT_RETRY

#: Environment variables for options that are not state paths.
ENV_SOURCE, ENV_LIVENESS_DIR, ENV_PROFILE, ENV_PASSPHRASE = (
    "EDGE_UNLOCK_SOURCE", "EDGE_UNLOCK_LIVENESS_DIR", "EDGE_UNLOCK_PROFILE", "EDGE_UNLOCK_PASSPHRASE")
DEFAULT_SOURCE = "0"
#: Registry models used when no release is installed or given (development).
DEFAULT_DETECTOR, DEFAULT_EMBEDDER = "yunet", "sface_2021dec_fp32"


def _state_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("state locations (option, else environment variable, else default: "
                             "root's path, or for other users under $XDG_STATE_HOME / $XDG_CONFIG_HOME)")
    g.add_argument("--store", metavar="DIR", help="template store (EDGE_UNLOCK_STORE; /var/lib/edgesight/templates, "
                                                  "user: $XDG_STATE_HOME/edgesight/templates)")
    g.add_argument("--key", metavar="FILE", help="template key file (EDGE_UNLOCK_KEY; /etc/edgesight/unlock.key, "
                                                 "user: $XDG_CONFIG_HOME/edgesight/unlock.key)")
    g.add_argument("--audit", metavar="FILE", help="audit log (EDGE_UNLOCK_AUDIT; /var/log/edgesight/audit.jsonl, "
                                                   "user: $XDG_STATE_HOME/edgesight/audit.jsonl)")
    g.add_argument("--state", metavar="DIR", help="lockout state (EDGE_UNLOCK_STATE; /var/lib/edgesight/state, "
                                                  "user: $XDG_STATE_HOME/edgesight/state)")
    return p


def _model_options() -> argparse.ArgumentParser:
    from edge.release import add_release_args

    p = argparse.ArgumentParser(add_help=False)
    add_release_args(p)
    g = p.add_argument_group("models (without a release: registry models, for development)")
    g.add_argument("--liveness-dir", metavar="DIR",
                   help=f"MiniFASNet ONNX + cards from `edge-export liveness` ({ENV_LIVENESS_DIR})")
    g.add_argument("--profile", metavar="NAME|TOML",
                   help=f"device profile: target FAR, k of n, lockout, liveness, quality, threads, camera mode "
                        f"({ENV_PROFILE} or EDGE_PROFILE; default: the release's)")
    g.add_argument("--detector", help=f"face detector (default: {DEFAULT_DETECTOR})")
    g.add_argument("--embedder", help=f"face embedder (default: {DEFAULT_EMBEDDER})")
    g.add_argument("--threads", type=threads, help="inference threads per model (default: the profile's, else 1)")
    live = g.add_mutually_exclusive_group()
    live.add_argument("--liveness", choices=LIVENESS_MODES, default=None,
                      help="anti-spoofing: auto (modality decided from the frames: colour → MiniFASNet pair, "
                           "IR/grayscale → IR checks), rgb, ir, challenge (+ head turn), off (INSECURE); "
                           "default: the profile's unlock.liveness, else auto")
    live.add_argument("--no-liveness", action="store_true",
                      help="INSECURE: the same as --liveness off (a photo unlocks); logged and audited")
    return p


def _guarded(func):
    """Map OS errors (permissions on the default /var and /etc paths, a full disk) to exit 2."""
    import functools

    @functools.wraps(func)
    def run(args) -> int:
        try:
            return func(args)
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not e.filename:
                raise
            print(f"edge unlock {args.unlock_command}: error: {e}", file=sys.stderr)
            return EXIT_ERROR

    return run


def add_parser(sub) -> None:
    state, models = _state_options(), _model_options()
    p = sub.add_parser("unlock", help="face unlock: enrol, verify (PAM), manage templates")
    usub = p.add_subparsers(dest="unlock_command", metavar="ACTION")
    usub.required = True

    e = usub.add_parser("enroll", parents=[state, models], help="enrol a user from a camera or photos")
    e.add_argument("user")
    e.add_argument("--source", help=f"camera, video, image or folder of photos ({ENV_SOURCE}; default 0)")
    e.add_argument("-k", "--samples", type=integer(1, 100), default=None,
                   help="the best good samples to keep (default: the profile's unlock.enroll_samples, else 5)")
    e.add_argument("--min-samples", type=integer(1, 100), default=None,
                   help="refuse with fewer good samples (default: the profile's unlock.enroll_min, else 3; "
                        "at most -k)")
    e.add_argument("--timeout", type=number(0, low_open=True), default=60.0, help="seconds before giving up (default: 60)")
    how = e.add_mutually_exclusive_group()
    how.add_argument("--replace", action="store_true", help="re-enrol an enrolled user")
    how.add_argument("--add", action="store_true", help="add samples to an enrolled user")
    e.add_argument("--allow-duplicate", action="store_true", help="enrol a face that matches another user")
    e.add_argument("--keep-images", action="store_true", help="also store the face crops (encrypted)")
    e.add_argument("--explain", action="store_true", help="print why each frame was kept or skipped")
    e.set_defaults(func=_guarded(cmd_enroll))

    v = usub.add_parser("verify", parents=[state, models],
                        help="verify a face (exit 0 accept, 1 reject, 2 error, 3 locked out, 4 retry)")
    v.add_argument("user", nargs="?", help="the claimed user (omit to identify among all)")
    v.add_argument("--source", help=f"camera, video or image ({ENV_SOURCE}; default 0)")
    v.add_argument("--timeout", type=number(0, low_open=True), default=4.0, help="seconds before rejecting (default: 4)")
    v.add_argument("--frames-needed", type=integer(1, 100), default=None, metavar="K",
                   help="passing frames needed (default: the profile's unlock.k, else 3) …")
    v.add_argument("--window", type=integer(1, 100), default=None, metavar="N",
                   help="… among the last N (default: the profile's unlock.n, else 5)")
    v.add_argument("--explain", action="store_true", help="print per-frame scores and per-stage latency")
    v.add_argument("--json", action="store_true", help="print the decision as JSON")
    v.add_argument("--allow-ssh", action="store_true", help="do not refuse in an SSH session")
    v.add_argument("--allow-lid-closed", action="store_true", help="do not refuse with the lid closed")
    v.set_defaults(func=_guarded(cmd_verify))

    ls = usub.add_parser("list", parents=[state, models], help="list enrolled users (stale ones marked)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_guarded(cmd_list))
    rm = usub.add_parser("remove", parents=[state], help="delete a user's templates")
    rm.add_argument("user")
    rm.set_defaults(func=_guarded(cmd_remove))
    rn = usub.add_parser("rename", parents=[state], help="rename an enrolled user")
    rn.add_argument("old")
    rn.add_argument("new")
    rn.set_defaults(func=_guarded(cmd_rename))
    for name, helptext, func in (("export", "write the whole store to a passphrase-encrypted file", cmd_export),
                                 ("import", "add the users of an exported store", cmd_import)):
        x = usub.add_parser(name, parents=[state], help=helptext)
        x.add_argument("file", type=Path)
        x.add_argument("--passphrase-file", type=Path, help=f"read the passphrase from a file ({ENV_PASSPHRASE})")
        if name == "import":
            x.add_argument("--replace", action="store_true", help="overwrite users that are already enrolled")
        x.set_defaults(func=_guarded(func))
    r = usub.add_parser("reset", parents=[state], help="clear a user's lockout")
    r.add_argument("user")
    r.set_defaults(func=_guarded(cmd_reset))
    from edge.cli.unlock_serve import add_serve_parser

    add_serve_parser(usub, [state, models], _guarded)


# -- helpers -----------------------------------------------------------------------------------

def _app(args, *, with_models: bool = False):
    from edge.unlock.app import PipelineOptions, UnlockApp
    from edge.unlock.config import UnlockConfig

    config = UnlockConfig.resolve(
        {"store_dir": args.store, "key_file": args.key, "audit_file": args.audit, "state_dir": args.state},
        refuse_ssh=not getattr(args, "allow_ssh", False),
        refuse_lid_closed=not getattr(args, "allow_lid_closed", False))
    options = PipelineOptions()
    if with_models:
        options = _pipeline_options(args)
        if options.liveness_mode == "off":
            print("edge unlock: WARNING: liveness is DISABLED (--liveness off / --no-liveness): a photo of "
                  "the user can unlock; this is recorded in the audit log", file=sys.stderr)
    return UnlockApp(config, options)


def _pipeline_options(args):
    """The release's models when one is given or installed; registry models otherwise (development).

    A release that is given or installed but fails verification raises: never a fall-back.
    """
    from edge.release import release_from_args
    from edge.unlock.app import PipelineOptions

    from edge import paths
    from edge.profile import load_profile

    env = os.environ
    from edge.profile_use import ENV_PROFILE as ENV_ANY_PROFILE

    profile = args.profile or env.get(ENV_PROFILE) or env.get(ENV_ANY_PROFILE) or None
    if profile is not None:
        load_profile(profile)  # every sub-command refuses a missing or invalid profile, naming it
    release = release_from_args(args, required=False)
    if profile is None and release is not None:
        from edge.roles import profile_for_release

        found = profile_for_release(release)  # the profile the release was built for, when installed here
        profile = found.path if found is not None else None
    mode = "off" if args.no_liveness else args.liveness  # None: the profile's unlock.liveness, else auto
    if release is not None:
        mixed = [o for o, v in (("--detector", args.detector), ("--embedder", args.embedder),
                                ("--liveness-dir", args.liveness_dir)) if v]
        if mixed:
            raise ValueError(f"{', '.join(mixed)} choose registry models, but {release.source} is used: a release "
                             "brings its own models (drop the option, or build a release with the model you want)")
        return PipelineOptions(release=release, profile=profile, threads=args.threads,
                               liveness_mode=mode)
    return PipelineOptions(detector=args.detector or DEFAULT_DETECTOR, embedder=args.embedder or DEFAULT_EMBEDDER,
                           liveness_dir=args.liveness_dir or env.get(ENV_LIVENESS_DIR) or paths.liveness_dir(),
                           profile=profile, threads=1 if args.threads is None else args.threads,
                           liveness_mode=mode)


def _models_or_help(func, options):
    """Run ``func``; without a release, a registry model or liveness model that is not available
    locally becomes an error saying exactly how to provide a release."""
    from edge.errors import LivenessError, ModelNotFoundError, ReleaseNotFoundError
    from edge.release import no_release_help

    try:
        return func()
    except (ModelNotFoundError, LivenessError) as e:
        if options.release is not None or (isinstance(e, LivenessError) and options.liveness_dir):
            raise
        raise ReleaseNotFoundError(f"{no_release_help()}\n(without a release, registry models were looked for "
                                   f"and are not usable here: {e})") from e


def _models_used(app) -> str:
    """Which models the loaded pipeline runs and where they come from (for --explain)."""
    pipe = app._pipeline
    if pipe is None:
        return "models: not loaded"
    origin = (app.options.release.describe() if app.options.release is not None
              else "registry models (no release given or installed)")
    live = getattr(pipe.liveness, "models", None) or []
    names = "+".join(getattr(m[1], "name", "?") for m in live if isinstance(m, tuple)) or "none"
    det = getattr(getattr(pipe.detector, "engine", None), "path", None) or type(pipe.detector).__name__
    return (f"models from {origin}: face detector {Path(str(det)).name}, embedder {pipe.embedder.model_id} "
            f"(sha256 {pipe.embedder.model_sha256[:12]}…, threshold {pipe.threshold():.4f} at FAR "
            f"{pipe.target_far:g}), liveness {names}")


def _source(args) -> str:
    if args.source:
        return args.source
    env = os.environ.get(ENV_SOURCE)
    if env:
        return env
    from edge.profile_use import ENV_PROFILE as ENV_ANY_PROFILE

    profile = getattr(args, "profile", None) or os.environ.get(ENV_PROFILE) or os.environ.get(ENV_ANY_PROFILE)
    if profile:
        from edge.profile import load_profile
        from edge.unlock.app import resolve_profile

        return load_profile(resolve_profile(profile)).camera.source
    return DEFAULT_SOURCE


def _passphrase(args, confirm: bool) -> str:
    if args.passphrase_file is not None:
        return args.passphrase_file.read_text(encoding="utf-8").rstrip("\n")
    env = os.environ.get(ENV_PASSPHRASE)
    if env:
        return env
    if not sys.stdin.isatty():
        raise ValueError(f"no passphrase: use --passphrase-file or {ENV_PASSPHRASE}")
    first = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("repeat passphrase: ") != first:
        raise ValueError("the passphrases differ")
    return first


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- commands ----------------------------------------------------------------------------------

def cmd_verify(args) -> int:
    from edge.unlock.verify import REASON_RETRY

    app = _app(args, with_models=True)
    try:
        policy = app.policy().verify_policy(k=args.frames_needed, n=args.window, timeout_s=args.timeout)
        outcome = _models_or_help(lambda: app.verify(args.user, _source(args), policy), app.options)
        used = _models_used(app)
    except LockedOutError as e:
        print(f"edge unlock: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except (UnlockRefused, UnknownUserError) as e:
        print(f"edge unlock: rejected: {e}", file=sys.stderr)
        return EXIT_REJECT
    finally:
        app.close()
    d = outcome.decision
    if args.json:
        print(json.dumps({"accepted": d.accepted, "user": d.user, "reason": d.reason,
                          "threshold": d.threshold, "k": d.k, "n": d.n, "elapsed_ms": d.elapsed_ms,
                          "load_ms": outcome.load_ms, "latency_ms": d.latency_ms(),
                          "frames": [{"index": f.index, "faces": f.faces, "similarity": f.similarity,
                                      "live": f.live, "liveness_score": f.liveness_score,
                                      "passed": f.passed, "reason": f.reason} for f in d.frames]}))
    elif args.explain:
        print(d.explain())
        print(f"models loaded in {outcome.load_ms:.0f} ms")
        print(used)
    else:
        best = max((f.similarity for f in d.frames if f.similarity is not None), default=None)
        sim = "" if best is None else f", best similarity {best:.3f} vs {d.threshold:.3f}"
        print(f"{'accepted' if d.accepted else 'rejected'}: {d.user or '-'} ({d.reason}{sim}, "
              f"{len(d.frames)} frames, {d.elapsed_ms:.0f} ms)")
    if outcome.lock is not None and outcome.lock.locked:
        print(f"edge unlock: {outcome.lock.failures} consecutive failures: locked out for "
              f"{outcome.lock.remaining_s:.0f} s", file=sys.stderr)
    if d.accepted:
        return EXIT_ACCEPT
    return EXIT_RETRY if d.reason == REASON_RETRY else EXIT_REJECT


def cmd_enroll(args) -> int:
    from edge.unlock.enroll import EnrollPolicy

    from edge.errors import EnrollmentError
    app = _app(args, with_models=True)
    spec = app.policy()
    samples = args.samples or spec.enroll_samples
    policy = EnrollPolicy(samples=samples, min_samples=min(args.min_samples or spec.enroll_min, samples),
                          allow_duplicate=args.allow_duplicate, keep_images=args.keep_images, timeout_s=args.timeout)
    try:
        result = _models_or_help(lambda: app.enroll(args.user, _source(args), policy, replace=args.replace,
                                                    add=args.add), app.options)
        used = _models_used(app)
    except EnrollmentError as e:
        if args.explain:
            for v in getattr(e, "verdicts", ()):
                print(f"  {v.explain()}")
        raise
    finally:
        app.close()
    if args.explain:
        print(used)
        for v in result.verdicts:
            print(f"  {v.explain()}")
            if v.liveness_detail and v.liveness_detail != "-":
                print(f"      liveness {v.liveness_detail}")
    r = result.record
    print(f"enrolled {r.user}: {r.vectors.shape[0]} templates from {len(result.verdicts)} frames "
          f"({r.model_id}{', face crops stored' if r.images else ''})")
    if result.duplicate_of is not None:
        print(f"warning: this face also matches {result.duplicate_of.user!r} (--allow-duplicate)", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    app = _app(args, with_models=True)
    listing = app.listing()
    current = _embedder_identity(app.options)
    rows = []
    for r in listing.records:
        stale = None if current is None else r.is_stale(*current)
        rows.append({"user": r.user, "templates": int(r.vectors.shape[0]), "model_id": r.model_id,
                     "model_sha256": r.model_sha256, "stale": stale, "images": len(r.images),
                     "updated": r.updated})
    problems = [{"file": str(p.path), "error": str(p.error)} for p in listing.problems]
    if args.json:
        print(json.dumps({"users": rows, "problems": problems}))
    else:
        for row in rows:
            flag = "  STALE: re-enrol" if row["stale"] else ""
            print(f"{row['user']:20s} {row['templates']:3d} templates  {row['model_id']} "
                  f"({row['model_sha256'][:12]}…)  updated {_when(row['updated'])}{flag}")
        for p in problems:
            print(f"unreadable: {p['file']}: {p['error']}", file=sys.stderr)
        if not rows and not problems:
            print("no users enrolled")
    return EXIT_ERROR if problems else 0


def _embedder_identity(options) -> tuple[str, str] | None:
    """(model id, sha256) of the configured embedder from its card, without loading it."""
    from edge.cards import load_card
    from edge.registry import get_card

    if options.release is not None:
        from edge.roles import role_model

        card = role_model(options.release, "face_embedder").card
        return card.name, card.sha256
    try:
        if options.embedder.endswith(".json"):
            card = load_card(options.embedder)
        else:
            card = get_card(options.embedder)
    except (KeyError, ValueError, OSError):
        return None
    return card.name, card.sha256


def cmd_remove(args) -> int:
    _app(args).remove(args.user)
    print(f"removed {args.user}")
    return 0


def cmd_rename(args) -> int:
    _app(args).rename(args.old, args.new)
    print(f"renamed {args.old} to {args.new}")
    return 0


def cmd_export(args) -> int:
    from edge.unlock.transfer import export_store

    app = _app(args)
    summary = export_store(app.store(), args.file, _passphrase(args, confirm=True))
    app.audit("export", "", "exported", extra={"users": list(summary.users), "file": str(args.file)})
    print(f"exported {len(summary.users)} users to {args.file}")
    for s in summary.skipped:
        print(f"skipped unreadable record {s}", file=sys.stderr)
    return EXIT_ERROR if summary.skipped else 0


def cmd_import(args) -> int:
    from edge.unlock.transfer import import_store

    app = _app(args)
    summary = import_store(app.store(create_key=True), args.file, _passphrase(args, confirm=False),
                           replace=args.replace)
    app.audit("import", "", "imported", extra={"users": list(summary.users), "file": str(args.file)})
    print(f"imported {len(summary.users)} users: {', '.join(summary.users)}")
    return 0


def cmd_reset(args) -> int:
    app = _app(args)
    aside = app.lockout.reset(args.user)
    app.audit("reset", args.user, "lockout_reset", extra={} if aside is None else {"corrupt_state_moved_to": aside})
    if aside is not None:
        print(f"the lockout state was corrupt: moved to {aside}; every lockout is cleared")
    print(f"lockout of {args.user} cleared")
    return 0
