"""The face pipeline: detect → align → quality → liveness → embed, with per-stage timings.

Example:
    >>> pipe = create_pipeline(detector="yunet", embedder="sface_2021dec_fp32")   # doctest: +SKIP
    >>> result = pipe.analyze(load_image("me.jpg"))                              # doctest: +SKIP
    >>> face = result.largest                                                    # doctest: +SKIP
    >>> match(face.embedding, templates, pipe.threshold())                       # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from edge.errors import FaceError
from edge.face.align import align_face, as_bgr
from edge.face.match import threshold_for
from edge.face.quality import QualityConfig, assess
from edge.face.types import FaceAnalysis, FaceObservation
from edge.types import Frame

__all__ = ["FacePipeline", "FaceDetections", "create_pipeline", "STAGES", "DEFAULT_TARGET_FAR", "FAST_DETECT_SIZE",
           "DEFAULT_FIT_SIZE"]

#: Stage names of :attr:`FaceAnalysis.timings_ms` (plus ``"total"``).
STAGES = ("detect", "align", "quality", "liveness", "embed")
#: FAR used when no profile is given (the profiles' own default).
DEFAULT_TARGET_FAR = 1e-3
#: A detector input that keeps a face at arm's length (≥ ~80 px in a 640×480 frame) detectable
#: at a quarter of the 640×480 cost.
FAST_DETECT_SIZE = (320, 240)
#: ``create_pipeline(detector="yunet")`` without ``detect_size`` fits frames as the 640×640 graph.
DEFAULT_FIT_SIZE = (640, 640)
#: A detection region's origin is snapped to this many detector-input pixels (YuNet's stride 32).
ROI_GRID = 32


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class FacePipeline:
    """Detect, align, assess, check liveness and embed every face of a frame.

    Args:
        detector: a face detector with ``.detect(bgr) -> Detections`` carrying 5 keypoints in
            FaceDetectorYN order (YuNet; BlazeFace's 6 are reduced to 5 here).
        embedder: an :class:`edge.face.embedder.FaceEmbedder`.
        liveness: optional checker with ``.check(image, box, landmarks) -> LivenessResult``
            (:class:`~edge.face.liveness.PassiveLiveness`, :class:`~edge.face.liveness.IrLiveness`).
            It receives the frame as delivered (single-channel for an IR camera).
        quality: thresholds of the quality checks.
        detect_size: ``(width, height)`` box the frame is shrunk into (aspect kept) before
            detection; landmarks are scaled back, and alignment uses the full-resolution frame.
            ``None`` detects on the frame as is (or as ``fit_size`` says).
        fit_size: with ``detect_size`` unset, resize every frame as a fixed ``fit_size`` graph
            would (aspect kept, bilinear, enlarging a small frame too) before a dynamic-size
            detector pads it to its stride — the fixed graph's detections without the work on
            its padding. The scale is the whole frame's, also when only a region of it is
            searched (:class:`~edge.face.tracking.FaceTracker`), so a region is detected exactly
            at the scale the frame is.
        target_far: false-accept rate :meth:`threshold` reads from the embedder's card.

    Example:
        >>> pipe = FacePipeline(create_face_detector("yunet_dynamic"), create_embedder())  # doctest: +SKIP
        >>> pipe.analyze(frame).timings_ms                                                 # doctest: +SKIP
        {'detect': 4.1, 'align': 0.1, 'quality': 0.2, 'liveness': 0.0, 'embed': 6.3, 'total': 10.9}
    """

    def __init__(self, detector, embedder, liveness=None, quality: QualityConfig = QualityConfig(), *,
                 detect_size: tuple[int, int] | None = None, fit_size: tuple[int, int] | None = None,
                 target_far: float = DEFAULT_TARGET_FAR) -> None:
        self.detector = detector
        self.embedder = embedder
        self.liveness = liveness
        self.quality = quality if quality is not None else QualityConfig()
        if detect_size is not None and (len(detect_size) != 2 or min(detect_size) <= 0):
            raise ValueError(f"detect_size must be (width, height) > 0, got {detect_size!r}")
        self.detect_size = None if detect_size is None else (int(detect_size[0]), int(detect_size[1]))
        if fit_size is not None and (len(fit_size) != 2 or min(fit_size) <= 0):
            raise ValueError(f"fit_size must be (width, height) > 0, got {fit_size!r}")
        if fit_size is not None and getattr(detector, "fixed_input", False):
            raise ValueError("fit_size is for a detector of dynamic input size (a fixed graph fits frames itself)")
        self.fit_size = None if fit_size is None else (int(fit_size[0]), int(fit_size[1]))
        self.target_far = float(target_far)

    # ---------------------------------------------------------------- helpers
    def threshold(self, target_far: float | None = None) -> float:
        """The embedder card's cosine threshold at ``target_far`` (default: the pipeline's).

        Raises:
            ThresholdMissingError: the card has no threshold at that FAR.
        """
        return threshold_for(self.embedder.card, self.target_far if target_far is None else target_far)

    def _detect(self, bgr: np.ndarray, roi: tuple[int, int, int, int] | None = None):
        h, w = bgr.shape[:2]
        scale, interpolation = 1.0, cv2.INTER_AREA
        if self.detect_size is not None:  # the frame's scale, also for a region of it
            scale = min(self.detect_size[0] / w, self.detect_size[1] / h, 1.0)
        elif self.fit_size is not None:  # as the fixed graph resizes the frame (bilinear, either way)
            scale, interpolation = min(self.fit_size[0] / w, self.fit_size[1] / h), cv2.INTER_LINEAR
        x0 = y0 = 0
        if roi is not None:  # detect inside a region of the frame only; results in frame pixels
            x0, y0, x1, y1 = _clip_roi(roi, bgr.shape)
            # origin on the detector's coarsest grid (32 px after shrinking): the region's pixels
            # and anchors are then those of the whole-frame detection
            step = max(1, round(ROI_GRID / scale))
            x0, y0 = x0 // step * step, y0 // step * step
            # far side too (or the frame's edge): the detector then pads nothing the whole-frame
            # detection does not, and sees the same pixels inside the region
            x1, y1 = min(w, -(-x1 // step) * step), min(h, -(-y1 // step) * step)
            bgr = bgr[y0:y1, x0:x1]
            h, w = bgr.shape[:2]
        small = bgr
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if self.fit_size is not None:  # never beyond the fitted graph's own size
            size = (min(size[0], self.fit_size[0]), min(size[1], self.fit_size[1]))
        if size != (w, h):
            small = cv2.resize(bgr, size, interpolation=interpolation)
        dets = self.detector.detect(small)
        if dets.keypoints is None:
            raise FaceError(f"the face detector {type(self.detector).__name__} gives no landmarks; "
                            "alignment needs 5 (use YuNet or BlazeFace)")
        kps = np.asarray(dets.keypoints, np.float64)
        if kps.shape[1] == 6:  # BlazeFace: right eye, left eye, nose, mouth, right/left ear tragion
            kps = _blazeface_to_five(kps)
        if kps.shape[1] != 5:
            raise FaceError(f"expected 5 landmarks per face, the detector gives {kps.shape[1]}")
        if self.fit_size is not None:  # back by the fit's own scale, as the fixed graph's boxes are
            sx = sy = 1.0 / scale
        else:
            sx, sy = w / small.shape[1], h / small.shape[0]
        boxes = np.asarray(dets.xyxy, np.float64) * np.array([sx, sy, sx, sy]) + np.array([x0, y0, x0, y0])
        kps = kps * np.array([sx, sy]) + np.array([x0, y0])
        return boxes, np.asarray(dets.score, np.float64), kps

    def detect(self, image, roi: tuple[int, int, int, int] | None = None) -> FaceDetections:
        """Only the detection stage: faces of the frame (or of ``roi``) in frame pixels.

        Pass the result to :meth:`analyze` (``detections=``) to finish the frame without
        detecting again (:class:`~edge.face.tracking.FaceTracker` decides between a region and
        the whole frame this way, and the frame is analysed once).
        """
        t0 = time.perf_counter()
        bgr = as_bgr(image.image if isinstance(image, Frame) else image)
        boxes, scores, kps = self._detect(bgr, roi)
        return FaceDetections(boxes, scores, kps, _ms(t0))

    # ---------------------------------------------------------------- main entry
    def analyze(self, image, *, max_faces: int | None = None, embed: bool = True,
                check_liveness: bool = True, roi: tuple[int, int, int, int] | None = None,
                detections: FaceDetections | None = None) -> FaceAnalysis:
        """Analyse one frame.

        Args:
            image: ``uint8`` BGR ``H×W×3``, gray ``H×W``, or a :class:`~edge.types.Frame`.
            max_faces: keep only the largest N faces (``None``: all).
            embed: compute embeddings.
            check_liveness: run the liveness checker (when one is configured).
            roi: ``(x0, y0, x1, y1)`` frame region to detect in (clipped to the frame; used by
                :class:`~edge.face.tracking.FaceTracker`); alignment, quality, liveness and
                embedding still use the whole frame.
            detections: faces from :meth:`detect` on this frame (detection is then skipped; its
                time is reported as the ``detect`` stage).

        Returns:
            :class:`FaceAnalysis` with faces largest first and per-stage milliseconds.

        Raises:
            FaceError: the image is not a ``uint8`` image.
        """
        t_start = time.perf_counter()
        raw = image.image if isinstance(image, Frame) else image
        bgr = as_bgr(raw)
        timings = dict.fromkeys(STAGES, 0.0)
        observe = getattr(self.liveness, "observe", None) if check_liveness else None
        if observe is not None:  # stateful checkers (IR strobe) must see frames without faces too
            t0 = time.perf_counter()
            observe(raw)
            timings["liveness"] += _ms(t0)

        if detections is None:
            detections = self.detect(bgr, roi)
        boxes, scores, kps = detections.boxes, detections.scores, detections.landmarks
        timings["detect"] = detections.ms

        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-areas, kind="stable")
        if max_faces is not None:
            order = order[:max(0, int(max_faces))]

        crops, quals = [], []
        for i in order:
            t0 = time.perf_counter()
            crop = align_face(bgr, kps[i])
            timings["align"] += _ms(t0)
            t0 = time.perf_counter()
            quals.append(assess(boxes[i], kps[i], crop, self.quality))
            timings["quality"] += _ms(t0)
            crops.append(crop)

        lives = [None] * len(order)
        if check_liveness and self.liveness is not None:
            t0 = time.perf_counter()
            lives = [self.liveness.check(raw, boxes[i], kps[i]) for i in order]
            timings["liveness"] += _ms(t0)

        embs = [None] * len(order)
        if embed and len(order):
            t0 = time.perf_counter()
            embs = list(self.embedder.embed(np.stack(crops)))
            timings["embed"] = _ms(t0)

        faces = tuple(FaceObservation(box=boxes[i], landmarks=kps[i], det_score=float(scores[i]), quality=q,
                                      liveness=lv, embedding=e)
                      for i, q, lv, e in zip(order, quals, lives, embs))
        timings["total"] = _ms(t_start)
        return FaceAnalysis(faces=faces, timings_ms=timings, frame_shape=tuple(raw.shape))

    def close(self) -> None:
        for part in (self.detector, self.embedder, self.liveness):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FaceDetections(NamedTuple):
    """Faces found by :meth:`FacePipeline.detect`, in frame pixels (float64), and the time taken."""

    boxes: np.ndarray  # N×4 xyxy
    scores: np.ndarray  # N
    landmarks: np.ndarray  # N×5×2, FaceDetectorYN order
    ms: float

    @property
    def largest(self) -> int | None:
        """Index of the largest box (``None`` when there is no face)."""
        if not len(self.boxes):
            return None
        b = self.boxes
        return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


def _clip_roi(roi, shape) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0, x1, y1 = (int(round(float(v))) for v in roi)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise FaceError(f"roi {tuple(roi)} lies outside the {w}×{h} frame")
    return x0, y0, x1, y1


def _blazeface_to_five(kps6: np.ndarray) -> np.ndarray:
    """BlazeFace's 6 keypoints → 5 FaceDetectorYN-order points (mouth corners estimated).

    BlazeFace gives one mouth-centre point; the corners are placed on either side of it,
    parallel to the eye line, at the ArcFace template's mouth width / eye distance ratio.
    """
    from edge.face.align import ARCFACE_112_TEMPLATE as T

    ratio = float(np.hypot(*(T[4] - T[3])) / np.hypot(*(T[1] - T[0])))
    eye_r, eye_l, nose, mouth = kps6[:, 0], kps6[:, 1], kps6[:, 2], kps6[:, 3]
    half = (eye_l - eye_r) * ratio / 2.0
    return np.stack([eye_r, eye_l, nose, mouth - half, mouth + half], axis=1)


def _load_profile(profile):
    if profile is None:
        return None
    from edge.profile import DeviceProfile, load_profile

    return profile if isinstance(profile, DeviceProfile) else load_profile(profile)


def create_pipeline(*, detector: str = "yunet", embedder: str = "sface_2021dec_fp32", liveness_dir=None,
                    threads: int | None = 1, profile=None, detect_size=None,
                    quality: QualityConfig = QualityConfig(), liveness: bool | None = None,
                    backend: str | None = None, prefer_optimized: bool = False) -> FacePipeline:
    """Build a :class:`FacePipeline` from model names.

    Args:
        detector: ``"yunet"`` (the dynamic-size graph: at ``detect_size`` when set, else resized
            as the fixed 640×640 graph resizes a frame but padded only to a multiple of 32 —
            the same detections, with no work on the 160 empty rows that graph adds under a
            640×480 frame), ``"yunet_dynamic"``, ``"blazeface"``, ``"ulfd"`` (no landmarks:
            refused), or a model path.
        embedder: a registry name, model path or card JSON (a release's models come through
            :func:`edge.roles.face_pipeline_from_release` instead, verified first).
        liveness_dir: directory holding the MiniFASNet ONNX files and cards written by
            ``edge-export liveness``.
        threads: engine threads per model (``None``: the profile's, else the runtime default).
        profile: a :class:`~edge.profile.DeviceProfile` or TOML path: sets the target FAR,
            the liveness threshold and (when ``threads`` is ``None``) the threads.
        detect_size: ``(width, height)`` to detect at; ``None`` keeps the detector's default.
        quality: quality thresholds.
        liveness: ``True`` requires liveness models (raises when none are found), ``False``
            disables them, ``None`` uses them when found.
        backend: engine backend for the embedder.
        prefer_optimized: for a registry embedder name, use the output-identical PRelu-rewritten
            copy ``edge-export`` built in the cache when there is a valid one
            (:func:`~edge.face.embedder.optimized_card`). On onnxruntime the registry file already
            runs its PRelus on the same fast kernels (:mod:`edge.engines.onnx_prelu`, applied at
            load time, the file and its sha256 unchanged), so this only changes the embedder's
            name. Off by default: templates are bound to the embedder's id and sha256, so a cache that gains
            the rewrite later would mark existing templates stale; devices get the rewrite from
            their bundle, whose embedder the templates follow.

    Raises:
        LivenessError: ``liveness=True`` but no liveness models were found.
        ModelNotFoundError / ModelIntegrityError / ModelCardError: from model resolution.
    """
    from edge.face.embedder import create_embedder
    from edge.face.liveness import PassiveLiveness, find_liveness_cards
    from edge.vision.face_detectors import create_face_detector
    from edge.errors import LivenessError

    from edge.profile_use import engine_options, unlock_policy

    prof = _load_profile(profile)
    eng = engine_options(prof, threads=threads).kwargs()  # threads clamped to the board; providers
    policy = unlock_policy(prof)
    target_far = policy.target_far
    live_threshold = policy.liveness_threshold if prof is not None else None

    emb_src: str | Path = embedder
    if emb_src == embedder and prefer_optimized and backend in (None, "onnxruntime"):
        from edge.face.embedder import optimized_card

        emb_src = optimized_card(str(embedder)) or emb_src
    det_name, fit_size = detector, None
    if detector == "yunet":  # the dynamic graph: at detect_size, else fitted as the 640×640 graph (no padding)
        det_name, fit_size = "yunet_dynamic", (DEFAULT_FIT_SIZE if detect_size is None else None)
    det = create_face_detector(det_name, engine_options=eng)
    try:
        emb = create_embedder(emb_src, backend=backend, engine_options=eng)
    except Exception:
        det.close()
        raise
    live = None
    if liveness is not False:
        dirs = [liveness_dir] if liveness_dir is not None else []
        found = find_liveness_cards(dirs)
        if found:
            live = PassiveLiveness.from_cards(found, engine_options=eng,
                                              **({} if live_threshold is None else {"threshold": live_threshold}))
        elif liveness:
            det.close()
            emb.close()
            raise LivenessError("liveness was required but no liveness models (ONNX + card, task 'liveness') "
                                f"were found in {', '.join(map(str, dirs)) or 'any directory'}: "
                                "run `edge-export liveness --out DIR` and pass --liveness-dir DIR "
                                "(or `make demo`, which installs them where they are found without options)")
    return FacePipeline(det, emb, live, quality, detect_size=detect_size, fit_size=fit_size, target_far=target_far)
