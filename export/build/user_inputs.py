"""Bring your own model and data to ``edge-export build``.

Per role, a user may give:

- a **source** (``--source ROLE=PATH``): an ONNX file with its card (``model.json`` /
  ``model.onnx.json`` beside it, or the card JSON itself), an Ultralytics ``.pt`` / ``.yaml``
  (detector; exported with its class names at ``--imgsz``, nothing downloaded), or a known
  network's PyTorch state dict, ``[NET:]weights.pth`` (MobileNetV2/V3 classifier, MiniFASNet
  liveness; :mod:`export.sources.state_dict`: the network recognised from the keys unless named, the
  classes from its last layer, the labels from ``weights.labels.txt``, the user's class folders
  or ImageNet). One user model replaces all of the role's built-in models;
- **data** (``--data ROLE=PATH``), split three ways like the built-in data (calibration /
  selection / report, by name hash, :func:`export.quant.calibration.split_three`):
  classifier: a labelled CSV (``file`` + ``class_index`` or ``label``), a folder holding
  ``labels.csv``, or a folder of class folders; detector: a YOLO folder (``images/`` +
  ``labels/``) or a COCO JSON (converted to YOLO labels in the work directory); face embedder:
  a pairs CSV (``file_a,file_b,same`` and optionally ``person_a,person_b``, paths relative to
  the CSV) or a folder of person folders, split **by person** so the match threshold derived on
  the selection people is checked on other people (:mod:`export.gates.face_pairs`);
- a **calibration** image folder (``--calibration ROLE=DIR``) that replaces the calibration split.

The data is checked first, then the sources are prepared, all before any variant is made: a bad
input raises :class:`UserInputError` naming the option, file, line and field, and nothing is
written to the output.

A small TOML build file holds the same choices so a build is one command::

    profile = "firmware_configs/rpi5.toml"
    only = ["detector"]
    imgsz = 320
    [source]
    detector = "runs/best.pt"
    classifier = "mobilenet_v2:weights/cls.pth"
    [data]
    detector = "datasets/fruit"          # images/ + labels/
    face_embedder = "faces/pairs.csv"
    [calibration]
    detector = "datasets/unlabelled"

Relative paths in a build file are relative to the file.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edge import paths
from export.gates.roles import Role, RoleData
from export.quant.calibration import CalibrationError, list_images, split_three
from export.variants import UserInputError

__all__ = ["UserInputs", "UserInputError", "parse_role_paths", "load_build_file", "user_role_data",
           "prepare_user_source", "USER_ROLES", "coco_json_to_yolo"]

#: Roles that take user data today (the face detector and liveness keep the built-in data).
USER_ROLES = ("classifier", "detector", "face_embedder")
_BUILD_KEYS = {"profile", "out", "key", "only", "formats", "imgsz", "max_calibration", "source", "data", "calibration",
               "accept_licence", "embedder", "board_timings"}


@dataclass(frozen=True)
class UserInputs:
    sources: dict = field(default_factory=dict)  # role -> Path
    data: dict = field(default_factory=dict)  # role -> Path
    calibration: dict = field(default_factory=dict)  # role -> Path
    imgsz: int = 640

    def __post_init__(self) -> None:
        from edge.bundle import ROLES

        for opt, table in (("--source", self.sources), ("--data", self.data), ("--calibration", self.calibration)):
            for role, p in table.items():
                if role not in ROLES:
                    raise UserInputError(f"{opt} {role}=…: unknown role {role!r} (valid: {', '.join(ROLES)})")
                if opt != "--source" and role not in USER_ROLES:
                    raise UserInputError(f"{opt} {role}=…: user data is supported for {', '.join(USER_ROLES)}")
                if opt == "--source":
                    from export.sources.state_dict import split_net_spec

                    p = split_net_spec(p)[1]  # NET:WEIGHTS names a network (export.sources.state_dict)
                if not (opt == "--source" and _packaged_config("source", str(p))) and not Path(p).exists():  # a packaged Ultralytics config is found by name
                    raise UserInputError(f"{opt} {role}={p}: no such file or folder")
        if self.imgsz <= 0 or self.imgsz % 32:
            raise UserInputError(f"--imgsz must be a positive multiple of 32, got {self.imgsz}")

    def __bool__(self) -> bool:
        return bool(self.sources or self.data or self.calibration)


def parse_role_paths(items, option: str) -> dict[str, Path]:
    """``["role=path", ...]`` → ``{role: Path}``."""
    out: dict[str, Path] = {}
    for item in items or ():
        role, sep, path = str(item).partition("=")
        if not sep or not role.strip() or not path.strip():
            raise UserInputError(f"{option} {item!r}: expected ROLE=PATH (e.g. {option} detector=best.pt)")
        out[role.strip()] = Path(path.strip()).expanduser()
    return out


def load_build_file(path: str | Path) -> dict:
    """A build file's settings (see the module docstring), paths made absolute.

    Raises:
        UserInputError: unreadable TOML, an unknown key, or a wrongly typed value.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserInputError(f"build file {p}: {e}") from e
    unknown = sorted(set(raw) - _BUILD_KEYS)
    if unknown:
        raise UserInputError(f"build file {p}: unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(_BUILD_KEYS))})")
    base = p.resolve().parent
    out = dict(raw)
    for k in ("profile", "out", "key", "board_timings"):
        if k in out:
            if not isinstance(out[k], str):
                raise UserInputError(f"build file {p}: {k} must be a path string")
            out[k] = base / out[k]
    for k in ("source", "data", "calibration"):
        if k in out:
            if not isinstance(out[k], dict) or not all(isinstance(v, str) for v in out[k].values()):
                raise UserInputError(f"build file {p}: [{k}] must map roles to path strings")
            out[k] = {role: _build_file_path(k, v, base) for role, v in out[k].items()}
    for k in ("only", "formats"):
        if k in out and (not isinstance(out[k], list) or not all(isinstance(v, str) for v in out[k])):
            raise UserInputError(f"build file {p}: {k} must be a list of strings")
    for k in ("imgsz", "max_calibration"):
        if k in out and not isinstance(out[k], int):
            raise UserInputError(f"build file {p}: {k} must be an integer")
    return out


def _build_file_path(table: str, value: str, base: Path) -> Path:
    """A build file's path, relative to the file (a packaged Ultralytics config by name; ``NET:`` kept)."""
    if _packaged_config(table, value):
        return Path(value)
    if table == "source":
        from export.sources.state_dict import split_net_spec

        net, rest = split_net_spec(value)
        if net is not None:
            return Path(f"{net}:{base / rest}")
    return base / value


def _packaged_config(table: str, value: str) -> bool:
    """A bare Ultralytics config name (``yolo11n.yaml``): found inside the package, not beside the file."""
    return table == "source" and Path(value).suffix.lower() in (".yaml", ".yml") and Path(value).parent == Path(".")


# -- data ------------------------------------------------------------------------------------------

def coco_json_to_yolo(json_path: Path, images_dir: Path | None, out: Path) -> Path:
    """Write a YOLO folder (``images/`` links + ``labels/``, ``classes.txt``) from a COCO JSON.

    Category ids are mapped to contiguous class ids in id order; ``classes.txt`` holds their names.

    Raises:
        UserInputError: unreadable JSON, missing fields, or images that cannot be found.
    """
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        images = {im["id"]: im for im in doc["images"]}
        anns = doc["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"COCO JSON {json_path}: {type(e).__name__}: {e} (expected images, annotations, "
                             "categories)") from e
    cid = {c["id"]: i for i, c in enumerate(cats)}
    src_dir = images_dir or json_path.parent / "images"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{c['name']}\n" for c in cats), encoding="utf-8")
    lines: dict[int, list[str]] = {i: [] for i in images}
    for a in anns:
        im = images.get(a.get("image_id"))
        if im is None or a.get("category_id") not in cid or a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        W, H = float(im["width"]), float(im["height"])
        lines[im["id"]].append(f"{cid[a['category_id']]} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} {h / H:.6f}")
    for i, im in images.items():
        src = src_dir / im["file_name"]
        if not src.is_file():
            raise UserInputError(f"COCO JSON {json_path}: image {im['file_name']!r} not found in {src_dir}")
        dst = out / "images" / Path(im["file_name"]).name
        if not dst.exists():
            shutil.copyfile(src, dst)
        (out / "labels" / f"{dst.stem}.txt").write_text("\n".join(lines[i]) + ("\n" if lines[i] else ""),
                                                       encoding="utf-8")
    return out


def _classifier_files(src: Path, name: str) -> tuple[list[Path], Path]:
    """The labelled images of a CSV (its ``file`` column), a folder with ``labels.csv``, or class folders."""
    import csv as _csv

    csv = src / "labels.csv" if src.is_dir() and (src / "labels.csv").is_file() else src
    if csv.is_file():
        try:
            with open(csv, newline="", encoding="utf-8") as f:
                files = [csv.parent / r["file"] for r in _csv.DictReader(f) if r.get("file")]
        except (OSError, UnicodeDecodeError, KeyError, _csv.Error) as e:
            raise UserInputError(f"--data classifier={src}: cannot read the labelled CSV ({e}); expected "
                                 "columns file and class_index or label") from e
        missing = [str(f) for f in files if not f.is_file()]
        if missing or not files:
            raise UserInputError(f"--data classifier={src}: {len(missing)} listed image(s) missing, e.g. "
                                 f"{missing[:1]}" if missing else f"--data classifier={src}: the CSV lists no image")
        return files, csv
    return list_images(src, name, recursive=True), src


def user_role_data(role: str, data: Path | None, calibration: Path | None, *, work: Path,
                   default: RoleData, model_name: str = "model") -> RoleData:
    """The role's data from the user's folder/CSV/JSON (split three ways), calibration folder optional.

    Raises:
        UserInputError / CalibrationError: unusable data, naming the path and what was expected.
    """
    r = Role(role)
    try:
        if data is None:
            base = default
        elif r is Role.CLASSIFIER:
            files, labelled = _classifier_files(Path(data), model_name)
            s3 = split_three(files)
            base = RoleData(r, s3.calibration, s3.report, f"user labelled data {data}: {len(s3.calibration)} "
                            f"calibration / {len(s3.selection)} selection / {len(s3.report)} report",
                            selection=s3.selection, labelled=labelled)
        elif r is Role.DETECTOR:
            root = Path(data)
            if root.suffix.lower() == ".json":
                root = coco_json_to_yolo(root, None, work / "coco_as_yolo")
            if not (root / "images").is_dir() or not (root / "labels").is_dir():
                raise UserInputError(f"--data detector={data}: expected a YOLO folder with images/ and labels/, "
                                     "or a COCO JSON file")
            s3 = split_three(list_images(root / "images", model_name))
            base = RoleData(r, s3.calibration, s3.report, f"user detection data {data}: {len(s3.calibration)} "
                            f"calibration / {len(s3.selection)} selection / {len(s3.report)} report images",
                            selection=s3.selection)
        elif r is Role.FACE_EMBEDDER:
            from export.gates.face_pairs import read_face_pairs, split_face_pairs

            sp = split_face_pairs(read_face_pairs(Path(data)))
            counts = {n: sp.counts(n) for n in ("selection", "report")}
            base = RoleData(r, sp.calibration, sp.report, f"user face pairs {data} split by person: "
                            f"{sp.people['calibration']} people ({len(sp.calibration)} images) calibration / "
                            f"{sp.people['selection']} selection ({counts['selection'][0]} genuine, "
                            f"{counts['selection'][1]} impostor pairs) / {sp.people['report']} report "
                            f"({counts['report'][0]} genuine, {counts['report'][1]} impostor pairs)",
                            selection=sp.selection, pairs=sp.pairs)
        else:
            raise UserInputError(f"--data {role}: user data is supported for {', '.join(USER_ROLES)}")
    except ValueError as e:
        if isinstance(e, (UserInputError, CalibrationError)):
            raise
        raise UserInputError(f"--data {role}={data}: {e}") from e
    if calibration is None:
        return base
    cal = tuple(p for p in list_images(calibration, model_name, recursive=True)
                if p not in set(base.selection) | set(base.evaluation))
    if not cal:
        raise UserInputError(f"--calibration {role}={calibration}: no image outside the selection/report splits")
    return RoleData(base.role, cal, base.evaluation, f"{base.note}; calibration replaced by {len(cal)} images "
                    f"of {calibration}", selection=base.selection, labelled=base.labelled, pairs=base.pairs)


# -- sources ---------------------------------------------------------------------------------------

def _register_labels(card_path: Path) -> None:
    """Put a user card's labels file where the registry looks (the cache), checked by sha256."""
    from edge.cards import load_card

    card = load_card(card_path)
    if card.labels is None:
        return
    src = card_path.parent / card.labels.file
    if src.is_file():
        dst = paths.cache_dir() / card.labels.file
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file():
            shutil.copyfile(src, dst)


def data_classes(data: Path | None) -> list[str] | None:
    """Class names of the user's classifier data: sorted class folders (as torchvision's
    ``ImageFolder``) or the sorted ``label`` values of its CSV; ``None`` when it names none."""
    import csv as _csv

    if data is None:
        return None
    src = Path(data)
    csv = src / "labels.csv" if src.is_dir() and (src / "labels.csv").is_file() else src
    if csv.is_file():
        try:
            with open(csv, newline="", encoding="utf-8") as f:
                labels = {r["label"].strip() for r in _csv.DictReader(f) if (r.get("label") or "").strip()}
        except (OSError, UnicodeDecodeError, KeyError, _csv.Error):
            return None
        return sorted(labels) or None
    if src.is_dir():
        return sorted(d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")) or None
    return None


def prepare_user_source(role: str, path: Path, work: Path, imgsz: int, data: Path | None = None) -> Path:
    """A model file with a card the build can use: ONNX + card as given, Ultralytics and state dicts exported.

    ``data`` is the user's data of the role (the class names of a state dict classifier).

    Returns:
        the ``.onnx`` path (its card beside it).

    Raises:
        UserInputError: an unsupported file, a missing card, a role mismatch.
    """
    from edge.registry import find_card
    from export.gates.roles import role_of

    from export.sources.state_dict import is_state_dict_source

    if is_state_dict_source(path):
        from export.sources.state_dict import export_state_dict_onnx

        onnx_path, card_path = export_state_dict_onnx(role, path, work / "user_sources",
                                                      data_classes=data_classes(data) if role == "classifier" else None)
        _register_labels(card_path)
        return Path(onnx_path)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".pt", ".yaml", ".yml"):
        if role != "detector":
            raise UserInputError(f"--source {role}={p}: Ultralytics sources are detectors")
        from export.sources.ultralytics import export_ultralytics_onnx

        onnx_path, card_path = export_ultralytics_onnx(p, work / "user_sources", imgsz, name=f"{p.stem}_{imgsz}")
        _register_labels(card_path)
        return Path(onnx_path)
    if suffix == ".json":
        from edge.cards import load_card

        card = load_card(p)
        onnx_path = p.parent / card.file
    elif suffix == ".onnx":
        onnx_path = p
        card = find_card(p)
        if card is None:
            raise UserInputError(f"--source {role}={p}: no card beside it ({p.stem}.json or {p.name}.json); "
                                 "an ONNX source needs one (preprocessing, task, labels)")
    else:
        raise UserInputError(f"--source {role}={p}: expected an .onnx with its card, a card .json, an "
                             "Ultralytics .pt/.yaml, or a state dict of a known network ([NET:]weights.pth)")
    if not onnx_path.is_file():
        raise UserInputError(f"--source {role}={p}: the card's model file {onnx_path} does not exist")
    if role_of(card).value != role:
        raise UserInputError(f"--source {role}={p}: the card's task {card.task!r} is a {role_of(card).value}, "
                             f"not a {role}")
    for side in (onnx_path.with_suffix(".json"), onnx_path.with_name(onnx_path.name + ".json"), p):
        if side.suffix == ".json" and side.is_file():
            _register_labels(side)
            break
    return onnx_path


def apply_user_inputs(sources: list, user: UserInputs, work: Path, progress=lambda m: None) -> tuple[list, dict]:
    """Replace the built-in sources of the roles the user gave, and make their data.

    Returns:
        ``(sources, {role: RoleData})``.

    Raises:
        UserInputError: a role given but not being built (see ``--only``), or unusable inputs.
    """
    from export.build.model import SourceModel
    from export.gates.roles import role_data

    built = {s.role for s in sources}
    for opt, table in (("--source", user.sources), ("--data", user.data), ("--calibration", user.calibration)):
        extra = sorted(set(table) - built)
        if extra:
            raise UserInputError(f"{opt} {extra[0]}=…: that role is not being built (check --only)")
    # the data first: its checks are cheap, a source may take a minute to export
    # (one source per role with user data: liveness has two built-in models, user data is not for it)
    data = {}
    for role in sorted(set(user.data) | set(user.calibration)):
        name = next(s.name for s in sources if s.role == role)
        default = None if role in user.data else role_data(role, model_name=name)
        data[role] = user_role_data(role, user.data.get(role), user.calibration.get(role), work=work / "user_data",
                                    default=default, model_name=name)
        progress(f"{role}: {data[role].note}")
    out = []
    for s in sources:
        if s.role not in user.sources:
            out.append(s)
        elif not any(o.role == s.role for o in out):  # one user model replaces all the role's built-in ones
            progress(f"{s.role}: preparing the user's model {user.sources[s.role]}")
            onnx_path = prepare_user_source(s.role, user.sources[s.role], work, user.imgsz, user.data.get(s.role))
            out.append(SourceModel(s.role, onnx_path.stem, path=onnx_path))
    return out, data
