"""``edge eval faces --pairs CSV --images DIR [--model NAME]``: face verification figures as JSON."""

from __future__ import annotations

import json
import sys
from edge.cli.argtypes import threads

#: FAR operating points reported.
EVAL_FARS = (1e-2, 1e-3)


def add_parser(esub) -> None:
    p = esub.add_parser("faces", help="ROC AUC, TAR at FAR 1e-2/1e-3 and thresholds of a face embedder on labelled pairs",
                        description="Evaluate a face embedder on a pair list (CSV: file_a,file_b,same) or on an "
                                    "<person>/<image> folder of tight LFW-style crops. Prints JSON.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", metavar="CSV", help="pair list with columns file_a,file_b,same")
    src.add_argument("--lfw", metavar="DIR", help="folder of <person>/<image> tight crops: all pairs are used")
    p.add_argument("--images", metavar="DIR", help="directory the CSV's file names are relative to")
    p.add_argument("--model", default="sface_2021dec_fp32", metavar="NAME_OR_PATH",
                   help="embedder: registry name, model file with a card, or card JSON (default sface_2021dec_fp32)")
    p.add_argument("--detector", default="yunet", help="face detector (default yunet)")
    p.add_argument("--threads", type=threads, default=None, help="inference threads")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    p.set_defaults(func=cmd_eval_faces)


def _progress(done: int, total: int) -> None:
    if done == total or done % 10 == 0:
        print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _at_card_thresholds(card, scores, labels) -> dict:
    from edge.errors import ThresholdMissingError
    from edge.face.match import available_fars, threshold_for
    from edge.face.verification import rates_at_threshold

    out = {}
    for far in available_fars(card):
        try:
            t = threshold_for(card, far)
        except ThresholdMissingError:
            continue
        r = rates_at_threshold(scores, labels, t)
        out[far] = {"threshold": t, "tar": round(r.tar, 6), "far": round(r.far, 6), "frr": round(r.frr, 6),
                    "false_accepts": r.false_accepts, "false_rejects": r.false_rejects}
    return out


def cmd_eval_faces(args) -> int:
    from pathlib import Path

    from edge.face.datasets import embed_lfw, evaluate_pair_list, pair_scores
    from edge.face.verification import evaluate_scores

    if args.pairs and not args.images:
        raise ValueError("--pairs needs --images DIR (the directory the CSV's file names are relative to)")
    if args.pairs and not Path(args.pairs).is_file():
        raise FileNotFoundError(f"pair list not found: {args.pairs}")
    if args.images and not Path(args.images).is_dir():
        raise FileNotFoundError(f"image directory not found: {args.images}")
    progress = _progress if args.progress else None
    if args.lfw:
        from edge.face.embedder import create_embedder
        from edge.vision.face_detectors import create_face_detector

        with create_face_detector("yunet_dynamic", threads=args.threads) as det, \
                create_embedder(args.model, threads=args.threads) as emb:
            embs, pairs, found = embed_lfw(emb, det, args.lfw)
            scores, labels = pair_scores(embs, pairs)
            card = emb.card
        report = evaluate_scores(scores, labels, EVAL_FARS).to_dict()
        report["images"], report["landmarks_detected"] = len(embs), found
        data = args.lfw
    else:
        from edge.face.pipeline import create_pipeline

        with create_pipeline(detector=args.detector, embedder=args.model, threads=args.threads, liveness=False) as pipe:
            res = evaluate_pair_list(pipe, args.pairs, args.images, EVAL_FARS, progress=progress)
            card = pipe.embedder.card
        report, scores, labels = res["report"], res["scores"], res["labels"]
        data = args.pairs
    out = {"model": card.name, "model_sha256": card.sha256, "data": str(data), **report,
           "at_card_thresholds": _at_card_thresholds(card, scores, labels)}
    print(json.dumps(out, indent=2))
    return 0
