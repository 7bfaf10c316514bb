"""The release the web service runs, and what ``GET /api/release`` shows about it.

Uses :mod:`edge.release` (one loader for verified releases) when it is installed; until then a
tiny adapter over :func:`edge.bundle.verify_bundle` / :func:`edge.bundle.load_bundle` that also
verifies before anything is read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_release_args", "open_release_or_none", "describe_release"]


def add_release_args(parser: argparse.ArgumentParser) -> None:
    try:
        from edge.release import add_release_args as add
    except ImportError:
        g = parser.add_argument_group("release (the signed bundle of models)")
        g.add_argument("--bundle", metavar="DIR", help="bundle directory written by edge-export build")
        g.add_argument("--trust", metavar="PUBKEY", help="Ed25519 public key the bundle must be signed with")
        return
    add(parser)


def open_release_or_none(args):
    """The verified release named by ``--bundle``/``--trust`` (or installed), else None."""
    try:
        from edge.release import release_from_args
    except ImportError:
        if getattr(args, "bundle", None) is None:
            return None
        if not Path(args.bundle).exists():
            raise FileNotFoundError(f"bundle not found: {args.bundle} (a bundle directory written by "
                                    "`edge-export build` was expected)")
        if getattr(args, "trust", None) is None:
            raise ValueError("--bundle needs --trust PUBKEY: a release is verified before it is used")
        from edge.bundle import load_bundle, verify_bundle

        info = verify_bundle(Path(args.bundle), Path(args.trust))
        return {"info": info, "bundle": load_bundle(Path(args.bundle)), "source": str(args.bundle)}
    return release_from_args(args, required=False)


def describe_release(release) -> dict:
    """What ``edge info`` shows about the release (the same function when it is installed)."""
    if release is None:
        return {"release": None, "note": "no release given or installed: registry models are used"}
    try:
        from edge.cli.info_cmd import release_info
    except ImportError:
        info, bundle = release["info"], release["bundle"]
        return {"release": {"source": release["source"], "profile": info.profile, "created": info.created,
                            "key_id": info.key_id, "files": info.files, "bytes": info.total_bytes,
                            "roles": {r: [{"name": m.card.name, "file": m.model_path.name, "format": m.card.format,
                                           "licence": m.card.licence.spdx, "sha256": m.card.sha256}
                                          for m in ms] for r, ms in bundle.roles.items()}}}
    doc = {"release": release_info(release)}
    try:
        from edge.cli.info_cmd import runtime_info
        from edge.roles import profile_for_release

        doc["runtime"] = runtime_info(profile_for_release(release))
    except Exception:  # noqa: BLE001 - the release part alone is still worth showing
        pass
    return doc
