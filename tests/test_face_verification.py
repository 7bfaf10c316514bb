"""Verification figures (pure numpy) against brute-force definitions, pair lists, `edge eval faces`,
and the card thresholds re-derived on the aligned LFW pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.face.datasets import PairsFormatError, embed_lfw, lfw_pairs, pair_scores, read_pairs_csv
from edge.face.verification import (eer, evaluate_scores, rates_at_threshold, roc_auc, roc_curve, tar_at_far,
                                    threshold_at_far)
from edge.registry import get_card

#: Card thresholds are written to 4 decimals.
CARD_DECIMALS_TOL = 1e-4


def _brute_auc(s, y):
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_auc_is_the_mann_whitney_statistic(seed, ties):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(1, 1, 300), rng.normal(0, 1, 500)]
    if ties:
        s = np.round(s, 1)
    y = np.r_[np.ones(300, int), np.zeros(500, int)]
    assert roc_auc(s, y) == pytest.approx(_brute_auc(s, y), abs=1e-12)


@pytest.mark.parametrize("far", [0.0, 0.001, 0.01, 0.05, 0.2, 0.5])
def test_threshold_at_far_meets_the_target_with_the_best_tar(far):
    rng = np.random.default_rng(7)
    s = np.r_[rng.normal(2, 1, 200), rng.normal(0, 1, 1000)]
    y = np.r_[np.ones(200, int), np.zeros(1000, int)]
    t = threshold_at_far(s, y, far)
    r = rates_at_threshold(s, y, t)
    assert r.far <= far
    # exactly k = floor(far·N) impostors pass (no ties here), and t sits halfway between the k-th
    # and the (k+1)-th impostor score
    k = int(np.floor(far * 1000 + 1e-9))
    imp = np.sort(s[y == 0])[::-1]
    assert r.false_accepts == k
    if k:
        assert t == pytest.approx((imp[k - 1] + imp[k]) / 2)
    assert tar_at_far(s, y, far) == (r.tar, t)


@pytest.mark.parametrize("scores,labels,far,expected", [
    ([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], 0.5, 0.2),      # one impostor may pass: midway between the two
    ([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0], 0.0, np.nextafter(0.3, 1)),  # none may pass: just above the top one
    ([0.9, 0.5, 0.5, 0.1], [1, 0, 0, 0], 0.34, np.nextafter(0.5, 1)),  # ties cannot be split
])
def test_threshold_at_far_cases(scores, labels, far, expected):
    assert threshold_at_far(scores, labels, far) == pytest.approx(expected, abs=1e-12)


def test_roc_and_eer_on_a_hand_made_case():
    s = np.array([0.9, 0.7, 0.6, 0.4, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 0, 0])
    far, tar, thr = roc_curve(s, y)
    np.testing.assert_allclose(far, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    assert thr[0] == np.inf
    e, _ = eer(s, y)
    assert e == pytest.approx(1 / 3)
    assert roc_auc(s, y) == pytest.approx(_brute_auc(s, y))


@pytest.mark.parametrize("scores,labels,msg", [
    ([0.1, 0.2], [1, 1], "both genuine and impostor"),
    ([0.1, 0.2], [1], "differ in length"),
    ([0.1, np.nan], [1, 0], "NaN"),
    ([0.1, 0.2], [1, 2], "0/1"),
])
def test_bad_scores_raise(scores, labels, msg):
    with pytest.raises(ValueError, match=msg):
        roc_auc(scores, labels)


def test_report_states_the_resolution():
    s = np.r_[np.linspace(0.5, 1, 10), np.linspace(0, 0.6, 50)]
    y = np.r_[np.ones(10), np.zeros(50)]
    d = evaluate_scores(s, y, (1e-1, 1e-3)).to_dict()
    assert d["far_resolution"] == pytest.approx(1 / 50)
    assert d["at_far"]["0.1"]["resolved"] and not d["at_far"]["0.001"]["resolved"]


# ------------------------------------------------------------------------------- pair lists
@pytest.mark.parametrize("text,msg", [
    ("a,b\nx,y\n", "header"),
    ("file_a,file_b,same\nx,y,maybe\n", ":2:"),
    ("file_a,file_b,same\n,y,1\n", "empty file name"),
    ("file_a,file_b,same\n", "no pairs"),
])
def test_pairs_csv_errors_name_the_file_and_line(tmp_path, text, msg):
    p = tmp_path / "pairs.csv"
    p.write_text(text)
    with pytest.raises(PairsFormatError, match=msg):
        read_pairs_csv(p)


def test_shared_pair_lists(data_dir):
    pairs = read_pairs_csv(data_dir / "faces/deepface_pairs.csv")
    assert len(pairs) == 520 and sum(p.same for p in pairs) == 140
    files, lfw = lfw_pairs(data_dir / "faces/lfw100_aligned")
    assert len(files) == 200 and sum(s for _, _, s in lfw) == 100 and len(lfw) - 100 == 19_800


def test_pair_scores_missing_face_is_a_rejection():
    e = [np.array([1.0, 0.0]), None, np.array([0.0, 1.0])]
    s, y = pair_scores(e, [(0, 1, True), (0, 2, False), (0, 0, True)], missing_score=-1.0)
    np.testing.assert_allclose(s, [-1.0, 0.0, 1.0])
    assert y.tolist() == [True, False, True]


# ------------------------------------------------------------------------------- edge eval faces
def test_edge_eval_faces_on_deepface_pairs(data_dir, capsys):
    from edge.cli import main

    rc = main(["eval", "faces", "--pairs", str(data_dir / "faces/deepface_pairs.csv"),
               "--images", str(data_dir / "faces/deepface"), "--model", "mobilefacenet_128d", "--threads", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "mobilefacenet_128d" and out["model_sha256"] == get_card("mobilefacenet_128d").sha256
    assert out["genuine_pairs"] == 140 and out["impostor_pairs"] == 380 and out["no_face"] == []
    assert out["roc_auc"] > 0.99
    assert set(out["at_far"]) == {"0.01", "0.001"} and not out["at_far"]["0.001"]["resolved"]
    card = out["at_card_thresholds"]["0.001"]
    assert card["threshold"] == get_card("mobilefacenet_128d").thresholds.cosine_at_far["0.001"]
    assert card["false_accepts"] <= 1  # the one look-alike pair (see test_face_pipeline)


@pytest.mark.parametrize("args,msg", [
    (["--pairs", "nope.csv", "--images", "."], "not found"),
    (["--pairs", "x.csv"], "--images"),
])
def test_edge_eval_faces_errors(args, msg, capsys, tmp_path, monkeypatch):
    from edge.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.csv").write_text("file_a,file_b,same\na.jpg,b.jpg,1\n")
    assert main(["eval", "faces", *args]) == 2
    assert msg in capsys.readouterr().err


# ------------------------------------------------------------------------------- card thresholds
@pytest.mark.slow
def test_card_thresholds_rederive_on_lfw(data_dir):
    """The thresholds written in the built-in card are what the documented procedure gives."""
    from edge.face.embedder import create_embedder
    from edge.vision.face_detectors import create_face_detector

    card = get_card("mobilefacenet_128d")
    with create_face_detector("yunet_dynamic", threads=1) as det, create_embedder(card.name, threads=1) as emb:
        embs, pairs, found = embed_lfw(emb, det, data_dir / "faces/lfw100_aligned")
    assert found == 200
    s, y = pair_scores(embs, pairs)
    for far, key in ((1e-2, "0.01"), (1e-3, "0.001")):
        assert threshold_at_far(s, y, far) == pytest.approx(card.thresholds.cosine_at_far[key], abs=CARD_DECIMALS_TOL)
        assert rates_at_threshold(s, y, card.thresholds.cosine_at_far[key]).far <= far + 1 / 19_800
