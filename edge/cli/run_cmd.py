"""``edge run MODEL_OR_CARD IMAGE...``: run any registered model on images.

With a release (``--bundle``, ``$EDGE_BUNDLE`` or the installed one, verified first), MODEL names
one of its roles (``classifier``, ``detector`` …) or one of its models; a model file or card path
given explicitly is run as is. Without a release, MODEL is a registry name, model file or card.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from edge import registry
from edge.errors import ModelCardError
from edge.cli.argtypes import integer, threads


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a model on images and print the result")
    from edge.release import add_release_args

    p.add_argument("model", metavar="MODEL_OR_CARD", help="with a release: a role (classifier, detector, …) or a "
                                                          "model name in it; else a registry name; or a model "
                                                          "file / card JSON path")
    add_release_args(p)
    p.add_argument("--explain", action="store_true", help="print which model file runs and where it comes from")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--backend", help="onnxruntime, litert or opencv (default: by file suffix)")
    p.add_argument("--threads", type=threads, default=None,
                   help="inference threads (default: the profile's, clamped to the cores)")
    p.add_argument("--profile", metavar="NAME|TOML",
                   help="device profile: threads and onnxruntime providers ($EDGE_PROFILE; default: the release's)")
    p.add_argument("-k", "--top", type=integer(1, 1000), default=5, help="classes to print for a classifier")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_run)


def _resolve(args):
    """(ModelRef, where it comes from, release or None): an explicit path as is; else the release's
    model; else the registry."""
    from pathlib import Path

    from edge.release import release_from_args
    from edge.roles import role_model

    explicit = Path(args.model)
    if explicit.is_file():
        if args.bundle is not None:
            raise ValueError(f"{args.model} is a file: with --bundle, name a role or a model of the release instead")
        ref = registry.resolve(explicit)
        return ref, f"{ref.path} (explicit file)", None
    release = release_from_args(args, required=False)
    if release is None:
        ref = registry.resolve(args.model)
        return (ref, f"{ref.card.name if ref.card else ref.path.name} ({ref.path}, registry: no release given or "
                f"installed)", None)
    if args.model in release.bundle.roles:
        m = role_model(release, args.model)
    else:
        found = [(role, m) for role, ms in release.bundle.roles.items() for m in ms
                 if args.model in (m.card.name, m.model_path.name, m.model_path.stem)]
        if len(found) != 1:
            names = ", ".join(f"{r}:{m.card.name}" for r, ms in release.bundle.roles.items() for m in ms)
            raise ModelCardError(f"release {release.source} has {'no' if not found else 'several'} model(s) named "
                                 f"{args.model!r}; give a role or one of: {names}")
        m = found[0][1]
    ref = registry.resolve(m.card_path)
    return ref, f"{m.card.name} ({m.model_path.name}, sha256 {m.card.sha256[:12]}…) from {release.describe()}", release


def _summary(name: str, a: np.ndarray) -> dict:
    a = np.asarray(a)
    d = {"name": name, "shape": list(a.shape), "dtype": str(a.dtype)}
    if a.size and np.issubdtype(a.dtype, np.number):
        d.update(min=float(a.min()), max=float(a.max()), mean=float(a.mean()))
    return d


def _dynamic_size(w: int, h: int, multiple: int = 32) -> tuple[int, int]:
    up = lambda v: ((v + multiple - 1) // multiple) * multiple  # noqa: E731
    return up(w), up(h)


def cmd_run(args) -> int:
    from edge.classify import Classifier
    from edge.engines import load_engine
    from edge.imageio import load_image
    from edge.preprocess import prepare

    from edge.profile_use import engine_options, profile_in_force

    ref, origin, release = _resolve(args)
    prof = profile_in_force(args.profile, release)
    eng = engine_options(prof, threads=args.threads)
    card = ref.card
    if args.explain:
        print(f"# model {origin}", file=sys.stderr)
        print(f"# profile {prof.name if prof else 'none'}: threads {eng.threads or 'runtime default'}, providers "
              f"{','.join(eng.providers) or 'cpu'}", file=sys.stderr)
    if card is not None and card.format == "pytorch-state-dict":
        raise ModelCardError(f"{card.name} is a float PyTorch source; export it first (edge-export) and run the exported file")
    engine = load_engine(ref.path, backend=args.backend, **eng.kwargs(),
                         **({"input_shapes": {s.name: s.shape for s in card.inputs}}
                            if args.backend in ("opencv", "cv2") and card is not None else {}))
    with engine:
        labels = registry.load_labels(card, base=ref.card_dir) if card is not None else None
        clf = Classifier(engine, card, labels) if card is not None and card.task == "classification" else None
        name = card.name if card else ref.path.name
        print(f"# {name} on {engine.backend} ({ref.path})" if not args.json else "", end="\n" if not args.json else "")
        for path in args.images:
            image = load_image(path)
            t0 = time.perf_counter()
            if clf is not None:
                preds = clf.classify(image, args.top)
                ms = (time.perf_counter() - t0) * 1e3
                if args.json:
                    print(json.dumps({"image": path, "model": name, "backend": engine.backend, "ms": ms,
                                      "top": [p.__dict__ for p in preds]}))
                else:
                    print(f"{path}  ({ms:.1f} ms)")
                    for p in preds:
                        print(f"  {p.score:6.3f}  {p.label}  [{p.class_id}]")
                continue
            feeds = {}
            for i, t in enumerate(engine.inputs):
                if card is not None and i < len(card.inputs):
                    spec = card.inputs[i]
                    size = None
                    if None in spec.size:
                        size = _dynamic_size(image.shape[1], image.shape[0])
                    x, _ = prepare(image, spec, size)
                else:
                    x = _guess_input(image, t)
                feeds[t.name] = x
            outs = engine.run(feeds)
            ms = (time.perf_counter() - t0) * 1e3
            rows = [_summary(k, v) for k, v in outs.items()]
            if args.json:
                print(json.dumps({"image": path, "model": name, "backend": engine.backend, "ms": ms, "outputs": rows}))
            else:
                print(f"{path}  ({ms:.1f} ms)")
                for r in rows:
                    rng = f"  range [{r['min']:.4g}, {r['max']:.4g}]" if "min" in r else ""
                    print(f"  {r['name']}: {r['dtype']} {'×'.join(map(str, r['shape']))}{rng}")
    return 0


def _guess_input(image: np.ndarray, t) -> np.ndarray:
    """Feed a model without a card: float 0..255 RGB, layout guessed from the channel axis."""
    import cv2

    shape = t.shape
    if len(shape) != 4:
        raise ModelCardError(f"input {t.name!r} has shape {shape}; write a model card to say how to feed it")
    nchw = shape[1] in (1, 3)
    h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    h = h or image.shape[0]
    w = w or image.shape[1]
    x = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (w, h)).astype(t.dtype if t.dtype != np.dtype(object) else np.float32)
    if nchw:
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])
