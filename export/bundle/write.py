"""Write a signed bundle: per role the chosen model, its card and labels; reports; manifest; signature.

Layout (read on the device by :mod:`edge.bundle`)::

    <out>/<profile>/
      manifest.json  manifest.sig  report.md  report.json
      <role>/<model file>  <role>/<model>.json (card)  <role>/<labels file>

Everything is written into a temporary directory beside the target, signed, verified with the
public half of the key, and only then moved into place: a build that fails at any point leaves
no half bundle, and a previous bundle at the target stays intact until the new one is complete.
An optional ``.tar.gz`` of the bundle is written the same way (temporary name, then rename).

Example:
    >>> write_bundle(Path("out/rpi4"), entries, profile="rpi4", private_key=key,
    ...              report=report, report_md=md, archive=True)       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from edge.bundle import (BUNDLE_FORMAT, BUNDLE_SCHEMA, MANIFEST, ROLES, SIGNATURE, BundleInfo, canonical_json,
                         verify_bundle)
from edge.cards import ModelCard
from edge.registry import sha256_file
from export.bundle.keys import sign_manifest

__all__ = ["BundleEntry", "BundleWriteError", "write_bundle", "build_manifest", "REPORT_JSON", "REPORT_MD"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


class BundleWriteError(RuntimeError):
    """The bundle could not be written (bad entry, I/O failure, self-verification failed)."""


@dataclass(frozen=True)
class BundleEntry:
    """One model going into the bundle.

    Attributes:
        role: one of :data:`edge.bundle.ROLES`.
        model: the model file to copy.
        card: its card; ``file``, ``sha256`` and ``size`` are rewritten for the copy.
        labels: a labels file to copy beside it (the card's ``labels.file`` keeps its name).
    """

    role: str
    model: Path
    card: ModelCard
    labels: Path | None = None


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _copy_entry(root: Path, e: BundleEntry) -> dict:
    if e.role not in ROLES:
        raise BundleWriteError(f"unknown role {e.role!r} (valid: {', '.join(ROLES)})")
    if not Path(e.model).is_file():
        raise BundleWriteError(f"{e.role}: model file not found: {e.model}")
    d = root / e.role
    d.mkdir(exist_ok=True)
    model_dst = d / Path(e.model).name
    if model_dst.exists():
        raise BundleWriteError(f"{e.role}: two models named {model_dst.name}")
    shutil.copyfile(e.model, model_dst)
    card = dataclasses.replace(e.card, file=model_dst.name, sha256=sha256_file(model_dst),
                               size=model_dst.stat().st_size)
    card_dst = d / f"{model_dst.stem}.json"
    card_dst.write_text(card.to_json(), encoding="utf-8")
    entry = {"name": card.name, "model": model_dst.relative_to(root).as_posix(),
             "card": card_dst.relative_to(root).as_posix()}
    if e.labels is not None:
        labels_dst = d / Path(e.labels).name
        if not labels_dst.exists():
            shutil.copyfile(e.labels, labels_dst)
        entry["labels"] = labels_dst.relative_to(root).as_posix()
    return entry


def build_manifest(root: Path, *, profile: str, roles: dict, created: str, extra: dict | None = None) -> bytes:
    """The manifest bytes for every file under ``root`` (except the manifest and signature)."""
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in (MANIFEST, SIGNATURE):
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    doc = {"format": BUNDLE_FORMAT, "schema": BUNDLE_SCHEMA, "profile": profile, "created": created,
           "roles": roles, "files": files, **(extra or {})}
    return canonical_json(doc)


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing target is kept until the new one is in place."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_archive(src: Path, archive: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}-", suffix=".tmp", dir=archive.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tf:
            for p in sorted(src.rglob("*")):
                tf.add(p, arcname=f"{src.name}/{p.relative_to(src).as_posix()}", recursive=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, archive)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return archive


def write_bundle(target: str | Path, entries: Sequence[BundleEntry], *, profile: str, private_key,
                 report: dict, report_md: str | Callable[[dict], str], archive: bool = False, created: str | None = None,
                 before_commit: Callable[[Path], None] | None = None,
                 selftest: Callable[[Path, dict], object] | None = None) -> BundleInfo:
    """Write, sign, self-verify and move a bundle into ``target``.

    Args:
        target: the bundle directory to create or replace.
        entries: the models (several per role are allowed, e.g. the liveness pair).
        profile: device profile name (recorded in the manifest).
        private_key: an Ed25519 private key object (:func:`export.bundle.keys.load_private_key`).
        report: the JSON report (written as ``report.json``).
        report_md: the Markdown report, or a function rendering it from ``report`` (called after
            ``selftest``, which may add to the report).
        archive: also write ``<target>.tar.gz``.
        created: UTC timestamp to record (default: now).
        before_commit: called with the finished temporary directory just before it is moved
            into place (tests inject failures here).
        selftest: called with the directory and the manifest's roles once the models are in
            place and before the reports and manifest are written, to record the release self-test
            (:func:`edge.selftest.record`), which the signature then covers.

    Returns:
        The :class:`edge.bundle.BundleInfo` of the verified bundle.

    Raises:
        BundleWriteError: a bad entry or a failed self-verification; nothing is left behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        roles: dict[str, list] = {}
        for e in entries:
            roles.setdefault(e.role, []).append(_copy_entry(tmp, e))
        if selftest is not None:
            selftest(tmp, roles)
        (tmp / REPORT_JSON).write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n",
                                       encoding="utf-8")
        (tmp / REPORT_MD).write_text(report_md(report) if callable(report_md) else report_md, encoding="utf-8")
        manifest = build_manifest(tmp, profile=profile, roles=roles, created=created or _utc_now())
        (tmp / MANIFEST).write_bytes(manifest)
        (tmp / SIGNATURE).write_bytes(sign_manifest(private_key, manifest))
        try:
            info = verify_bundle(tmp, private_key.public_key())
        except Exception as e:  # a bundle that does not verify must never be committed
            raise BundleWriteError(f"the new bundle does not verify: {e}") from e
        if before_commit is not None:
            before_commit(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if archive:
        _write_archive(target, target.with_name(target.name + ".tar.gz"))
    return dataclasses.replace(info, path=target)
