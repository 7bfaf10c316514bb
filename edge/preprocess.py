"""Turn a BGR uint8 image into a model input tensor as its card says. Pure numpy + OpenCV.

Every function returns the tensor and a :class:`Transform` that maps model-input pixel
coordinates back to source-image pixels, so decoders can report boxes on the original frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.cards import InputSpec


@dataclass(frozen=True)
class Transform:
    """``source = (model - pad) / scale`` per axis."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Map ``...×2`` (or ``...×4`` xyxy) model coordinates to source pixels."""
        a = np.asarray(xy, np.float32).copy()
        a[..., 0::2] = (a[..., 0::2] - self.pad_x) / self.scale_x
        a[..., 1::2] = (a[..., 1::2] - self.pad_y) / self.scale_y
        return a


#: Interpolation names a card may give (``InputSpec.interpolation``). "area" shrinks with
#: cv2.INTER_AREA (best quality, what the classifiers were evaluated with; 4-6 ms for a 640×480
#: frame on a 2-core x86); "linear" is what YOLOX/Ultralytics/TFLite detection examples use
#: (under 1 ms).
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def _interp(src_w: int, dst_w: int, interpolation: str = "area") -> int:
    if interpolation != "area":
        return INTERPOLATIONS[interpolation]
    return cv2.INTER_AREA if dst_w < src_w else cv2.INTER_LINEAR


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str = "stretch", *,
                 pad_value: float = 0.0, resize_shorter: int | None = None,
                 interpolation: str = "area") -> tuple[np.ndarray, Transform]:
    """Resize ``image`` to ``size`` = (width, height).

    Modes: ``stretch`` (ignore aspect), ``letterbox`` (keep aspect, centre, pad),
    ``letterbox_topleft`` (keep aspect, pad right/bottom: YOLOX's convention), ``center_crop``
    (resize the shorter side to ``resize_shorter`` or the target, then crop the centre:
    torchvision's ImageNet convention), ``none``.
    """
    h, w = image.shape[:2]
    tw, th = size
    if mode == "none" or (tw, th) == (w, h):
        return image, Transform()
    if mode == "stretch":
        out = cv2.resize(image, (tw, th), interpolation=_interp(w, tw, interpolation))
        return out, Transform(tw / w, th / h)
    if mode in ("letterbox", "letterbox_topleft"):
        r = min(tw / w, th / h)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        resized = cv2.resize(image, (nw, nh), interpolation=_interp(w, nw, interpolation))
        shape = (th, tw) + image.shape[2:]
        out = np.full(shape, pad_value, dtype=image.dtype)
        px, py = ((tw - nw) // 2, (th - nh) // 2) if mode == "letterbox" else (0, 0)
        out[py:py + nh, px:px + nw] = resized
        return out, Transform(r, r, px, py)
    if mode == "center_crop":
        short = resize_shorter or min(tw, th)
        r = short / min(w, h)
        nw, nh = max(tw, round(w * r)), max(th, round(h * r))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        x0, y0 = int(round((nw - tw) / 2)), int(round((nh - th) / 2))
        return resized[y0:y0 + th, x0:x0 + tw], Transform(r, r, -x0, -y0)
    raise ValueError(f"unknown resize mode {mode!r}")


def prepare(image_bgr: np.ndarray, spec: InputSpec, size: tuple[int, int] | None = None) -> tuple[np.ndarray, Transform]:
    """Make the input tensor for ``spec`` from a BGR (or gray) uint8 image.

    Args:
        image_bgr: ``H×W×3`` BGR or ``H×W`` gray ``uint8``.
        spec: the card's input spec (size, layout, colour, mean/std, dtype, resize rule).
        size: (width, height) for a model with dynamic spatial dims.

    Returns:
        ``(tensor with batch dim 1, Transform back to source pixels)``.
    """
    img = image_bgr
    if img.dtype != np.uint8:
        raise ValueError(f"prepare expects a uint8 image, got {img.dtype}")
    if spec.color == "GRAY":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    sw, sh = spec.size
    if size is not None:
        sw, sh = size
    if sw is None or sh is None:
        if spec.resize != "none":
            raise ValueError(f"input {spec.name!r} has dynamic size; pass size=(width, height)")
        sw, sh = img.shape[1], img.shape[0]
    img, tf = resize_image(img, (sw, sh), spec.resize, pad_value=spec.pad_value,
                           resize_shorter=spec.resize_shorter, interpolation=spec.interpolation)
    if img.ndim == 2:
        img = img[:, :, None]
    # Resizing and padding treat channels alike, so the colour swap is a view taken afterwards,
    # and the layout change and dtype conversion are one copy: 0.5 ms instead of 8 ms for a
    # 416×416 input on the x86 development machine.
    if spec.color == "RGB":
        img = img[:, :, ::-1]
    if spec.layout == "NCHW":
        img = img.transpose(2, 0, 1)
    dtype = np.dtype(spec.dtype)
    identity = all(m == 0 for m in spec.mean) and all(s == 1 for s in spec.std)
    if identity and dtype in (np.uint8, np.float32):
        x = np.ascontiguousarray(img, dtype=dtype)
    else:
        c = img.shape[0] if spec.layout == "NCHW" else img.shape[2]
        shape = (c, 1, 1) if spec.layout == "NCHW" else (1, 1, c)
        x = np.ascontiguousarray(img, dtype=np.float32)
        x -= np.asarray(spec.mean, np.float32)[:c].reshape(shape)
        x /= np.asarray(spec.std, np.float32)[:c].reshape(shape)
        if dtype != np.float32:
            x = x.astype(dtype)
    return x[None], tf
