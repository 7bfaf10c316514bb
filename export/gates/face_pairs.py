"""The user's face-verification data for the face embedder (``--data face_embedder=PATH``).

Two forms:

- a **pairs CSV** with the header ``file_a,file_b,same`` and optionally ``person_a,person_b``
  (no other column). Image paths are relative to the CSV's folder; ``same`` is 1/0, true/false,
  yes/no or same/different. ``person_a``/``person_b`` name each image's person; without them a
  person is a group of images joined by genuine (``same``) pairs, an image in no genuine pair
  being a person of its own. Only the listed pairs are measured.
- a **folder of person folders** (``<person>/<image>``): every two images of one person are a
  genuine pair, every two images of different people an impostor pair (as the built-in LFW).

People, never images, are split three ways by a salted hash of the person's name
(:func:`export.quant.calibration.split_three`, 30 / 30 / 40 %): calibration (quantiser ranges),
selection (the threshold is derived there) and report (the threshold is checked there, on other
people). A pair is kept only when both images are in one split, so impostor pairs between people
of different splits are dropped. The selection and the report splits must each keep at least one
genuine and one impostor pair.

Every check runs before any model is built and raises :class:`export.build.user_inputs.UserInputError`
naming the file, line and field: an unknown or missing column, an empty or unreadable ``same``,
an image that does not exist, an image given two persons, a genuine pair of two persons or an
impostor pair of one person, a split without genuine or impostor pairs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edge.imageio import IMAGE_SUFFIXES
from export.variants import UserInputError

__all__ = ["FacePairs", "read_face_pairs", "split_face_pairs", "PAIR_COLUMNS", "PERSON_COLUMNS"]

PAIR_COLUMNS = ("file_a", "file_b", "same")
PERSON_COLUMNS = ("person_a", "person_b")
_TRUE = {"1", "true", "yes", "same"}
_FALSE = {"0", "false", "no", "different"}


@dataclass(frozen=True)
class FacePairs:
    """Images with their person, and the labelled pairs (``None``: every pair of images).

    Attributes:
        source: the CSV or folder given.
        person: image path → person name.
        pairs: ``(file_a, file_b, same, where)`` with ``where`` the CSV line (``"file.csv:7"``).
    """

    source: Path
    person: dict
    pairs: tuple | None

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(sorted(self.person))


def _from_folder(root: Path) -> FacePairs:
    files = sorted(p for p in root.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserInputError(f"--data face_embedder={root}: expected a pairs CSV (columns {','.join(PAIR_COLUMNS)}) or a "
                     "folder of person folders (<person>/<image>); found no <person>/<image> file")
    return FacePairs(root, {p: p.parent.name for p in files}, None)


def _same(value: str | None, where: str) -> bool:
    v = (value or "").strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise UserInputError(f"{where}: field 'same' must be 1/0, true/false, yes/no or same/different, got {value!r}")


def _from_csv(csv_path: Path) -> FacePairs:
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in reader.fieldnames or ()]
            unknown = [c for c in cols if c not in PAIR_COLUMNS + PERSON_COLUMNS]
            if unknown:
                raise UserInputError(f"{csv_path}:1: unknown column {unknown[0]!r} (expected {','.join(PAIR_COLUMNS)} "
                             f"and optionally {','.join(PERSON_COLUMNS)})")
            missing = [c for c in PAIR_COLUMNS if c not in cols]
            if missing:
                raise UserInputError(f"{csv_path}:1: missing column {missing[0]!r} (the header must hold "
                             f"{','.join(PAIR_COLUMNS)}; got {','.join(cols) or 'nothing'})")
            has_person = [c for c in PERSON_COLUMNS if c in cols]
            if len(has_person) == 1:
                raise UserInputError(f"{csv_path}:1: column {has_person[0]!r} without its partner (give both "
                             f"{' and '.join(PERSON_COLUMNS)}, or neither)")
            rows = [(n, {(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None})
                    for n, r in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserInputError(f"--data face_embedder={csv_path}: cannot read the pairs CSV ({e})") from e
    if not rows:
        raise UserInputError(f"{csv_path}: no pairs (expected rows of {','.join(PAIR_COLUMNS)})")
    pairs = []
    person: dict[Path, str] = {}
    named_at: dict[Path, str] = {}
    for n, r in rows:
        where = f"{csv_path}:{n}"
        ab = []
        for side in ("a", "b"):
            name = r.get(f"file_{side}", "")
            if not name:
                raise UserInputError(f"{where}: field 'file_{side}' is empty (an image path relative to {base})")
            p = (base / name).resolve()
            if not p.is_file():
                raise UserInputError(f"{where}: field 'file_{side}': image {name!r} not found ({p})")
            ab.append(p)
        same = _same(r.get("same"), where)
        if ab[0] == ab[1]:
            raise UserInputError(f"{where}: file_a and file_b are the same image {r['file_a']!r}")
        if has_person:
            for side, p in zip(("a", "b"), ab):
                who = r.get(f"person_{side}", "")
                if not who:
                    raise UserInputError(f"{where}: field 'person_{side}' is empty")
                if person.setdefault(p, who) != who:
                    raise UserInputError(f"{where}: field 'person_{side}': image {p.name} is {who!r} here but "
                                 f"{person[p]!r} at {named_at[p]}")
                named_at.setdefault(p, where)
            if same != (person[ab[0]] == person[ab[1]]):
                raise UserInputError(f"{where}: field 'same' is {r['same']!r} but person_a {person[ab[0]]!r} and person_b "
                             f"{person[ab[1]]!r} are {'different people' if same else 'the same person'}")
        pairs.append((ab[0], ab[1], same, where))
    if not has_person:
        person = _people_from_genuine_pairs(pairs, base)
        for a, b, same, where in pairs:
            if not same and person[a] == person[b]:
                raise UserInputError(f"{where}: an impostor pair (same=0) of two images that genuine pairs of this CSV join "
                             f"into one person ({person[a]}); fix the row or give person_a,person_b")
    return FacePairs(csv_path, person, tuple(pairs))


def _people_from_genuine_pairs(pairs, base: Path) -> dict[Path, str]:
    """Person of each image: connected groups of genuine pairs, named after their first image."""
    parent: dict[Path, Path] = {}

    def find(x: Path) -> Path:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, same, _ in pairs:
        ra, rb = find(a), find(b)
        if same and ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[Path, list[Path]] = {}
    for p in list(parent):
        groups.setdefault(find(p), []).append(p)
    out = {}
    for members in groups.values():
        first = min(members)
        name = str(first.relative_to(base)) if first.is_relative_to(base) else str(first)
        for m in members:
            out[m] = name
    return out


def read_face_pairs(path: str | Path) -> FacePairs:
    """The user's pairs: a CSV file or a folder of person folders (see the module docstring).

    Raises:
        UserInputError: anything unusable, naming the file, line and field.
    """
    p = Path(path)
    if p.is_dir():
        return _from_folder(p)
    if p.suffix.lower() != ".csv":
        raise UserInputError(f"--data face_embedder={p}: expected a pairs CSV (.csv, columns {','.join(PAIR_COLUMNS)}) or a "
                     "folder of person folders")
    return _from_csv(p)


@dataclass(frozen=True)
class FaceSplits:
    """Images per split and the pairs kept (each within one split), JSON-ready counts in :meth:`counts`."""

    calibration: tuple[Path, ...]
    selection: tuple[Path, ...]
    report: tuple[Path, ...]
    pairs: tuple[tuple[Path, Path, bool], ...]
    people: dict

    def counts(self, split: str) -> tuple[int, int]:
        files = set(getattr(self, split))
        kept = [s for a, b, s in self.pairs if a in files and b in files]
        return sum(kept), len(kept) - sum(kept)


def split_face_pairs(fp: FacePairs) -> FaceSplits:
    """Split ``fp``'s people three ways and keep the pairs within a split.

    Raises:
        UserInputError: too few people for three splits, or a selection / report split without a
            genuine or an impostor pair.
    """
    from itertools import combinations

    from export.quant.calibration import split_three

    person = fp.person
    try:
        s3 = split_three(fp.files, key=lambda p: person[p])
    except ValueError as e:
        raise UserInputError(f"--data face_embedder={fp.source}: {len(set(person.values()))} people cannot be split by person "
                     f"into calibration / selection / report ({e}); give more people") from None
    side = {p: name for name in ("calibration", "selection", "report") for p in getattr(s3, name)}
    if fp.pairs is None:
        pairs = tuple((a, b, person[a] == person[b]) for name in ("calibration", "selection", "report")
                      for a, b in combinations(getattr(s3, name), 2))
    else:
        pairs = tuple((a, b, same) for a, b, same, _ in fp.pairs if side[a] == side[b])
    out = FaceSplits(s3.calibration, s3.selection, s3.report, pairs,
                     {n: len({person[p] for p in getattr(s3, n)}) for n in ("calibration", "selection", "report")})
    for name in ("selection", "report"):
        genuine, impostor = out.counts(name)
        if not genuine or not impostor:
            raise UserInputError(f"--data face_embedder={fp.source}: the {name} split ({out.people[name]} people) has "
                         f"{genuine} genuine and {impostor} impostor pair(s); each of selection and report needs "
                         "both (pairs between people of different splits are dropped): give more people and pairs")
    return out
