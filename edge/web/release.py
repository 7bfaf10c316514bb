"""The release the web service runs, and what ``GET /api/release`` shows about it.

Both go through :mod:`edge.release` (the one loader: verified before anything is read) and
``edge info``'s description of a release.
"""

from __future__ import annotations

from edge.release import add_release_args, release_from_args

__all__ = ["add_release_args", "open_release_or_none", "describe_release"]


def open_release_or_none(args):
    """The verified release named by ``--bundle``/``--trust`` (or installed), else None."""
    return release_from_args(args, required=False)


def describe_release(release) -> dict:
    """What ``edge info`` shows about the release."""
    if release is None:
        return {"release": None, "note": "no release given or installed: registry models are used"}
    from edge.cli.info_cmd import release_info

    doc = {"release": release_info(release)}
    try:
        from edge.cli.info_cmd import runtime_info
        from edge.roles import profile_for_release

        doc["runtime"] = runtime_info(profile_for_release(release))
    except Exception:  # noqa: BLE001 - the release part alone is still worth showing
        pass
    return doc
