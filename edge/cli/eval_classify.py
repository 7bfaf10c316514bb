"""``edge eval classify --model M --data LABELS``: top-1 / top-5 of a classifier on labelled images."""

from __future__ import annotations

import json
import sys
import time
from edge.cli.argtypes import integer, threads


def add_parser(esub) -> None:
    p = esub.add_parser("classify", help="top-1 / top-5 accuracy of a classifier on labelled images",
                        description="Evaluate an image classifier on a labelled set: a CSV with 'file' and "
                                    "'class_index' (ImageNet order) or 'label' columns, a folder holding "
                                    "labels.csv, or a folder of class folders. Prints JSON.")
    p.add_argument("--model", required=True, metavar="NAME_OR_PATH",
                   help="registry name, model file with a card, or card JSON")
    p.add_argument("--data", required=True, metavar="CSV_OR_DIR", help="labelled images (see above)")
    p.add_argument("--backend", help="onnxruntime, litert or opencv (default: by file suffix)")
    p.add_argument("--threads", type=threads, default=None, help="inference threads")
    p.add_argument("--limit", type=integer(1), default=None, metavar="N", help="evaluate only the first N images")
    p.add_argument("--progress", action="store_true", help="print progress to stderr")
    p.set_defaults(func=cmd_eval_classify)


def cmd_eval_classify(args) -> int:
    import numpy as np

    from edge import registry
    from edge.cards import ModelCardError
    from edge.classify import Classifier
    from edge.engines import load_engine
    from edge.evaluate.classification import evaluate_scores, load_labelled
    from edge.imageio import load_image
    from edge.preprocess import prepare

    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    ref = registry.resolve(args.model)
    card = ref.card
    if card is None or card.task != "classification":
        raise ModelCardError(f"{args.model}: edge eval classify needs a classification model with a card "
                             f"(got {'no card' if card is None else card.task})")
    if card.format == "pytorch-state-dict":
        raise ModelCardError(f"{card.name} is a float PyTorch source; export it first (edge-export)")
    labels = registry.load_labels(card, base=ref.card_dir)
    t0 = time.perf_counter()
    with load_engine(ref.path, backend=args.backend, threads=args.threads) as engine:
        Classifier(engine, card, labels)  # checks the card's task
        shape = card.outputs[0].shape if card.outputs else ()
        num_outputs = int(shape[-1]) if shape else (len(labels) if labels else 1000)
        items = load_labelled(args.data, labels, num_outputs)[: args.limit]
        name, out = engine.inputs[0].name, engine.outputs[0].name
        scores = []
        for k, it in enumerate(items, start=1):
            x, _ = prepare(load_image(it.path), card.inputs[0])
            scores.append(np.asarray(engine.run({name: x})[out], np.float32).reshape(-1))
            if args.progress:
                print(f"\r{k}/{len(items)}", end="\n" if k == len(items) else "", file=sys.stderr, flush=True)
        result = evaluate_scores(np.stack(scores), [it.target for it in items])
        backend = engine.backend
    print(json.dumps({"top1": result.top1, "top5": result.top5, "images": result.images,
                      "resolution": result.resolution, "model": card.name, "backend": backend,
                      "data": str(args.data), "preprocessing": {"resize": card.inputs[0].resize,
                                                                "resize_shorter": card.inputs[0].resize_shorter},
                      "elapsed": round(time.perf_counter() - t0, 2)}, indent=2))
    return 0
