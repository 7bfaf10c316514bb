"""One loader for releases: the signed bundle a device runs, verified before any model is opened.

Every consumer (``edge unlock``, ``edge detect``, ``edge run``, ``edge bench --bundle``, ``edge
info``, the web service) gets its models through :func:`open_release`:

1. the bundle is resolved: the ``bundle`` argument (``--bundle``), else ``$EDGE_BUNDLE``, else the
   active release ``<$EDGE_RELEASES_DIR or /var/lib/edgesight/releases>/current``;
2. the trusted key likewise: ``trust`` (``--trust``), else ``$EDGE_TRUST``, else
   ``/etc/edgesight/bundle_signing.pub``;

   (``$EDGE_DEVICE_ROOT`` prefixes both default paths: a device's ``/`` mounted elsewhere, e.g. a
   test's temporary directory or an SD card's root file system;)
3. a ``.tar.gz`` is extracted, bounded (:func:`edge.bundle.extract_archive`), into a private
   temporary directory (mode 0700, removed at exit);
4. the Ed25519 signature over ``manifest.json``, every file's size and sha256, and the absence of
   any file not in the manifest are checked (:func:`edge.bundle.verify_bundle`);
5. only then are the cards read (:func:`edge.bundle.load_bundle`).

Any failure raises a :class:`edge.errors.BundleError` naming the file; there is never a fall-back
to registry models.

Example:
    >>> rel = open_release("bundles/rpi5.tar.gz", "keys/bundle_signing.pub")   # doctest: +SKIP
    >>> rel.model("face_embedder").model_path                                   # doctest: +SKIP
    PosixPath('/tmp/edgesight-release-…/rpi5/face_embedder/sface_2021dec_fp32.onnx')
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.bundle import (Bundle, BundleInfo, BundleModel, canonical_json, extract_archive, load_bundle,
                         verify_bundle)
from edge.errors import BundleKeyError, ReleaseNotFoundError

__all__ = ["Release", "open_release", "add_release_args", "release_from_args", "default_bundle",
           "default_trust", "releases_dir", "ENV_BUNDLE", "ENV_TRUST", "ENV_RELEASES_DIR",
           "DEFAULT_RELEASES_DIR", "DEFAULT_TRUST", "CURRENT", "no_release_help", "ENV_DEVICE_ROOT", "device_root",
           "device_path", "release_id"]

ENV_BUNDLE = "EDGE_BUNDLE"
ENV_TRUST = "EDGE_TRUST"
ENV_RELEASES_DIR = "EDGE_RELEASES_DIR"
#: The device's ``/`` (default ``/``): every default device path is taken under it.
ENV_DEVICE_ROOT = "EDGE_DEVICE_ROOT"
DEFAULT_RELEASES_DIR = Path("/var/lib/edgesight/releases")
DEFAULT_TRUST = Path("/etc/edgesight/bundle_signing.pub")
#: The active release inside the releases directory (a directory, a symlink to one, or a .tar.gz).
CURRENT = "current"


def no_release_help() -> str:
    """What to do when no release is given or installed (used by every consumer's error)."""
    return (f"no release: nothing given with --bundle, ${ENV_BUNDLE} is not set and nothing is installed at "
            f"{releases_dir() / CURRENT}. To fix: (1) on the workstation, `edge-export keygen --out keys` once, "
            "then `edge-export build --profile PROFILE --key keys/bundle_signing.key --out bundles --archive`; "
            "(2) on the device, either pass `--bundle bundles/PROFILE.tar.gz --trust bundle_signing.pub` "
            f"(or set {ENV_BUNDLE} and {ENV_TRUST}), or unpack the release to {releases_dir() / CURRENT} and put "
            f"its public key at {default_trust()}.")


def device_root() -> Path:
    """``$EDGE_DEVICE_ROOT`` or ``/``."""
    return Path(os.environ.get(ENV_DEVICE_ROOT) or "/")


def device_path(path: str | Path) -> Path:
    """An absolute device path (``/etc/edgesight/…``) under :func:`device_root`."""
    return device_root() / Path(path).relative_to("/")


def releases_dir() -> Path:
    """``$EDGE_RELEASES_DIR`` or ``<device root>/var/lib/edgesight/releases``."""
    env = os.environ.get(ENV_RELEASES_DIR)
    return Path(env) if env else device_path(DEFAULT_RELEASES_DIR)


def default_bundle() -> Path:
    """``$EDGE_BUNDLE`` or ``<releases_dir()>/current``."""
    env = os.environ.get(ENV_BUNDLE)
    return Path(env) if env else releases_dir() / CURRENT


def default_trust() -> Path:
    """``$EDGE_TRUST`` or ``<device root>/etc/edgesight/bundle_signing.pub``."""
    env = os.environ.get(ENV_TRUST)
    return Path(env) if env else device_path(DEFAULT_TRUST)


def release_id(info: BundleInfo) -> str:
    """The name a verified release has on a device: ``<profile>-<created>-<8 hex of the manifest>``.

    Made from the signed manifest alone, so the workstation, the device's release store and the
    service's health endpoint all name a release the same way (e.g. ``rpi5-20261205T181710Z-1a2b3c4d``).
    """
    created = re.sub(r"[^0-9TZ]", "", info.created) or "undated"
    digest = hashlib.sha256(canonical_json(info.manifest)).hexdigest()[:8]
    return f"{info.profile or 'bundle'}-{created}-{digest}"


@dataclass(frozen=True)
class Release:
    """A verified release.

    Attributes:
        source: what was given (directory or archive) after default resolution.
        path: the verified bundle directory (inside a private temporary directory for an archive).
        info: the verified manifest's summary.
        bundle: the roles' models and cards.
        key_id: fingerprint of the public key the signature verified with.
        trust: the public key file used.
    """

    source: Path
    path: Path
    info: BundleInfo
    bundle: Bundle
    key_id: str
    trust: Path | None = None

    @property
    def profile_name(self) -> str:
        """The device profile the bundle was built for (from the signed manifest)."""
        return self.info.profile

    @property
    def id(self) -> str:
        """:func:`release_id` of the verified manifest."""
        return release_id(self.info)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.bundle.roles)

    def has(self, role: str) -> bool:
        return bool(self.bundle.roles.get(role))

    def models(self, role: str) -> tuple[BundleModel, ...]:
        """Every model of ``role``. Raises ``KeyError`` naming the bundle and the roles it has."""
        return self.bundle.models(role)

    def model(self, role: str) -> BundleModel:
        """The first (usually only) model of ``role``."""
        return self.bundle.model(role)

    def describe(self) -> str:
        return (f"release {self.source} (profile {self.profile_name or '?'}, built {self.info.created or '?'}, "
                f"signed by key {self.key_id})")


def _private_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="edgesight-release-"))  # mode 0700
    atexit.register(shutil.rmtree, d, True)
    return d


def _is_archive(p: Path) -> bool:
    return p.is_file()


def open_release(bundle: str | Path | None = None, trust: str | Path | None = None) -> Release:
    """Resolve, extract (bounded), verify and load a release (see the module docstring).

    Raises:
        ReleaseNotFoundError: no bundle at the given or default place (says what to do).
        BundleKeyError: the trusted public key is missing or unreadable.
        BundleSignatureError / BundleIntegrityError: verification failed (``.file`` names the file).
    """
    given = bundle is not None or bool(os.environ.get(ENV_BUNDLE))
    src = Path(bundle) if bundle is not None else default_bundle()
    if not src.exists():
        if given:
            raise ReleaseNotFoundError(f"bundle not found: {src} (a bundle directory or .tar.gz written by "
                                       "`edge-export build` was expected)", file=str(src))
        raise ReleaseNotFoundError(no_release_help(), file=str(src))
    key_path = Path(trust) if trust is not None else default_trust()
    if not key_path.is_file():
        how = "--trust PUBKEY or EDGE_TRUST" if trust is None else "the right path to --trust"
        raise BundleKeyError(f"trusted public key not found: {key_path} (needed to verify {src}; give {how}, "
                             f"e.g. the bundle_signing.pub written by `edge-export keygen`)", file=str(key_path))
    private = _private_dir() if _is_archive(src) else None
    try:
        root = extract_archive(src, private) if private is not None else src.resolve()
        info = verify_bundle(root, key_path)
        loaded = load_bundle(root)
    except BaseException:
        if private is not None:  # nothing of a refused archive stays on disk
            shutil.rmtree(private, ignore_errors=True)
        raise
    return Release(source=src, path=root, info=info, bundle=loaded, key_id=info.key_id, trust=key_path)


def add_release_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--bundle DIR_OR_TAR`` and ``--trust PUBKEY`` to a (sub-)parser."""
    g = parser.add_argument_group("release (the signed bundle of models)")
    g.add_argument("--bundle", metavar="DIR_OR_TAR",
                   help=f"bundle directory or .tar.gz from edge-export build (default: ${ENV_BUNDLE}, else "
                        f"${ENV_RELEASES_DIR}/{CURRENT} = {DEFAULT_RELEASES_DIR}/{CURRENT})")
    g.add_argument("--trust", metavar="PUBKEY",
                   help=f"Ed25519 public key the bundle must be signed with (default: ${ENV_TRUST}, else "
                        f"{DEFAULT_TRUST})")


def release_from_args(args: argparse.Namespace, required: bool = True) -> Release | None:
    """The release named by ``args.bundle`` / ``args.trust`` (or the defaults).

    With ``required=False`` and neither an option, ``$EDGE_BUNDLE`` nor an installed release at the
    default place, returns ``None`` (the caller then uses explicitly named models). A release that
    exists but fails verification always raises.
    """
    bundle = getattr(args, "bundle", None)
    trust = getattr(args, "trust", None)
    if not required and bundle is None and not os.environ.get(ENV_BUNDLE) and not default_bundle().exists():
        if trust is not None:
            raise ValueError(f"--trust verifies a release, but none is given or installed: give --bundle "
                             f"DIR_OR_TAR too (or set {ENV_BUNDLE})")
        return None
    return open_release(bundle, trust)
