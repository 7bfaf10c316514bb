"""edge-export build with the user's face pairs for the embedder (export/gates/face_pairs.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from export.build.user_inputs import UserInputError  # noqa: E402
from export.bundle.keys import generate_keypair  # noqa: E402
from export.cli import main as export_main  # noqa: E402
from export.gates.face_pairs import read_face_pairs, split_face_pairs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: Impostor partners per person in the test CSV (the next people in name order).
IMPOSTORS_PER_PERSON = 5


def _write_csv(path: Path, rows, header=("file_a", "file_b", "same")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def faces(tmp_path_factory, data_dir):
    """The 200 LFW crops copied under ``faces/``, a pairs CSV beside them (paths relative to it):
    each person's genuine pair and 5 impostor pairs with the next people; and a signing key."""
    root = tmp_path_factory.mktemp("byo_faces")
    shutil.copytree(data_dir / "faces" / "lfw100_aligned", root / "faces" / "lfw")
    people = sorted((root / "faces" / "lfw").iterdir())
    rows = []
    for i, p in enumerate(people):
        a, b = sorted(p.iterdir())
        rows.append((f"lfw/{p.name}/{a.name}", f"lfw/{p.name}/{b.name}", 1))
        for k in range(1, IMPOSTORS_PER_PERSON + 1):
            q = people[(i + k) % len(people)]
            rows.append((f"lfw/{p.name}/{a.name}", f"lfw/{q.name}/{sorted(q.iterdir())[1].name}", 0))
    csv_path = _write_csv(root / "faces" / "pairs.csv", rows)
    priv, _ = generate_keypair(root / "keys")
    return csv_path, priv


def test_user_face_pairs_build_end_to_end(faces, tmp_path, capsys):
    csv_path, key = faces
    code = export_main(["build", "--profile", str(ROOT / "firmware_configs/x86_dev.toml"), "--out", str(tmp_path),
                        "--key", str(key), "--only", "face_embedder", "--formats", "onnx_fp32", "--max-calibration",
                        "16", "--data", f"face_embedder={csv_path}", "-q"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "x86_dev" / "report.json").read_text())
    (model,) = report["models"]
    assert model["splits"]["note"].startswith(f"user face pairs {csv_path} split by person")
    sp = split_face_pairs(read_face_pairs(csv_path))
    people = {n: {p.parent.name for p in getattr(sp, n)} for n in ("calibration", "selection", "report")}
    assert not people["selection"] & people["report"] and not people["calibration"] & people["report"]
    for n in ("calibration", "selection", "report"):
        assert model["splits"][n]["files"] == len(getattr(sp, n))
    (v,) = model["variants"]
    for split, res in (("selection", v["gate"]), ("report", v["report"])):
        genuine, impostor = sp.counts(split)
        m = res["metrics"]
        # the user's pairs of that split (an image whose face YuNet misses drops its pairs)
        assert 0 < m["genuine_pairs"] <= genuine and 0 < m["impostor_pairs"] <= impostor
        assert m["images_without_face"] <= 2 and m["roc_auc_float"] > 0.9
    check = v["report"]["metrics"]["threshold_check"]  # derived on selection people, checked on report people
    assert check["impostor_pairs"] == v["report"]["metrics"]["impostor_pairs"] and 0 <= check["far"] <= 1
    card = json.loads(next((tmp_path / "x86_dev").rglob("sface*.json")).read_text())
    assert card["thresholds"]["derived_on"].startswith("the user's face pairs")


def test_person_folders_give_all_pairs_split_by_person(data_dir):
    sp = split_face_pairs(read_face_pairs(data_dir / "faces" / "lfw100_aligned"))
    for n in ("selection", "report"):
        files = getattr(sp, n)
        k = len(files)
        genuine, impostor = sp.counts(n)
        assert genuine == len({p.parent.name for p in files}) and genuine + impostor == k * (k - 1) // 2
    assert not {p.parent.name for p in sp.selection} & {p.parent.name for p in sp.report}


def _lfw_rows(data_dir, people: int, impostors: int = 3):
    lfw = sorted((data_dir / "faces" / "lfw100_aligned").iterdir())[:people]
    rows = []
    for i, p in enumerate(lfw):
        a, b = sorted(p.iterdir())
        rows.append([str(a), str(b), "1"])
        rows += [[str(a), str(sorted(lfw[(i + k) % len(lfw)].iterdir())[0]), "0"] for k in range(1, impostors + 1)]
    return rows


@pytest.mark.parametrize("case, message", [
    ("unknown column", ":1: unknown column 'score'"),
    ("missing column", ":1: missing column 'same'"),
    ("missing file", ":3: field 'file_b': image 'nobody/x.jpg' not found"),
    ("bad same", ":2: field 'same' must be 1/0"),
    ("two persons", ":3: field 'person_a': image"),
    ("same but two persons", ":2: field 'same' is '1' but person_a"),
    ("impostor of one person", ":3: an impostor pair (same=0) of two images"),
    ("no impostor pair", "impostor pair(s); each of selection and report needs both"),
])
def test_bad_pairs_are_refused_naming_file_line_and_field(case, message, data_dir, tmp_path):
    rows = _lfw_rows(data_dir, 30)
    header = ["file_a", "file_b", "same"]
    if case == "unknown column":
        header, rows = header + ["score"], [r + ["0.5"] for r in rows]
    elif case == "missing column":
        header, rows = header[:2], [r[:2] for r in rows]
    elif case == "missing file":
        rows[1][1] = "nobody/x.jpg"
    elif case == "bad same":
        rows[0][2] = "maybe"
    elif case in ("two persons", "same but two persons"):
        header = header + ["person_a", "person_b"]
        rows = [r + [Path(r[0]).parent.name, Path(r[1]).parent.name] for r in rows]
        if case == "two persons":
            rows[1][3] = "Someone_Else"
        else:
            rows[0][4] = "Someone_Else"
    elif case == "impostor of one person":
        rows[1][1] = rows[0][1]  # the genuine pair's second image, marked as another person's
    elif case == "no impostor pair":
        rows = [r for r in rows if r[2] == "1"]
    path = _write_csv(tmp_path / "pairs.csv", rows, header)
    with pytest.raises(UserInputError) as e:
        split_face_pairs(read_face_pairs(path))
    assert message in str(e.value) and str(path) in str(e.value)


def test_bad_pairs_from_the_cli_write_nothing(faces, tmp_path, capsys):
    _, key = faces
    (tmp_path / "in").mkdir()
    bad = _write_csv(tmp_path / "in" / "pairs.csv", [["a.jpg", "b.jpg", "1"]])
    out = tmp_path / "out"
    out.mkdir()
    code = export_main(["build", "--profile", str(ROOT / "firmware_configs/x86_dev.toml"), "--out", str(out), "--key",
                        str(key), "--only", "face_embedder", "--formats", "onnx_fp32", "--data",
                        f"face_embedder={bad}"])
    err = capsys.readouterr().err
    assert code != 0 and f"{bad}:2: field 'file_a': image 'a.jpg' not found" in err and "Traceback" not in err
    assert not any(out.iterdir())
