"""Load still images into the project's one pixel convention: ``uint8`` BGR ``H×W×3``.

OpenCV does the decoding. What this module adds is the policy around it:

- bytes are read with Python and decoded with ``cv2.imdecode``, so paths with non-ASCII
  characters work on every platform (``cv2.imread`` mangles them on Windows);
- EXIF orientation is applied (``cv2.IMREAD_COLOR`` / ``IMREAD_GRAYSCALE`` do it unless
  ``IMREAD_IGNORE_ORIENTATION`` is set), grayscale files come back as 3-channel BGR, 16-bit PNGs
  are scaled to 8 bits (OpenCV keeps the high byte) and alpha is dropped;
- the width and height in the file header are checked *before* decoding, so a tiny file that
  claims a gigapixel (a decompression bomb) is refused instead of exhausting a Pi's memory;
- every failure is an :class:`~edge.errors.ImageLoadError` whose message names the file.

Example:
    >>> img = load_image("samples/parrot.jpg", max_side=320)  # doctest: +SKIP
    >>> img.shape, img.dtype  # doctest: +SKIP
    ((320, 176, 3), dtype('uint8'))
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageLoadError

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "MAX_FILE_BYTES", "ImageNotFoundError", "load_image", "header_size"]

#: Suffixes (lower case) that :func:`load_image` and the folder sources treat as images.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff",
     ".pgm", ".ppm", ".pbm"}
)

#: Default ceiling on width × height read from a file header (100 megapixels, about 300 MB
#: decoded as BGR). Headers this module cannot parse (WebP, TIFF) fall back to OpenCV's own
#: limit, ``OPENCV_IO_MAX_IMAGE_PIXELS`` (2**30 by default).
MAX_PIXELS = 100_000_000
#: Largest image file read at all (a 100-Mpixel PNG is well under it).
MAX_FILE_BYTES = 512 * 1024 * 1024

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
# cv2 reduced-decode flags by factor; JPEG is decoded at 1/2, 1/4 or 1/8 scale directly.
_REDUCED = {
    False: {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4,
            2: cv2.IMREAD_REDUCED_COLOR_2},
    True: {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
           2: cv2.IMREAD_REDUCED_GRAYSCALE_2},
}


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image file does not exist (catchable as either ImageLoadError or FileNotFoundError)."""


def header_size(data: bytes) -> tuple[int, int] | None:
    """Return ``(width, height)`` from a PNG, JPEG or BMP header, or None for other formats.

    The JPEG size is the stored one, before EXIF rotation; the pixel count is the same.
    """
    if data[:8] == _PNG_MAGIC and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == b"BM" and len(data) >= 26:
        (dib_size,) = struct.unpack("<I", data[14:18])
        if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            w, h = struct.unpack("<HH", data[18:22])
        else:  # BITMAPINFOHEADER and later: signed 32-bit, negative height means top-down
            w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))
    if data[:2] == _JPEG_SOI:
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in _JPEG_SOF and i + 9 <= n:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return int(w), int(h)
        if marker == 0xDA:  # start of scan without a frame header: malformed
            return None
        (seg_len,) = struct.unpack(">H", data[i + 2:i + 4])
        i += 2 + seg_len
    return None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; refuses anything but a regular file of at most MAX_FILE_BYTES.

    The file is opened non-blocking and checked with ``fstat`` before a byte is read, so a named
    pipe or a device given as an image is refused at once instead of blocking forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageNotFoundError(f"image file not found: {path}") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise ImageLoadError(f"cannot load image {path}: it is a directory")
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(st.st_mode):
            raise ImageLoadError(f"cannot load image {path}: not a regular file (pipes, devices and sockets "
                                 "are refused; for a camera use --source)")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageLoadError(f"cannot load image {path}: {st.st_size:,} bytes, more than the "
                                 f"{MAX_FILE_BYTES:,}-byte limit for an image file")
        try:
            return f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ImageLoadError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def _reduction(size: tuple[int, int] | None, max_side: int | None, is_jpeg: bool) -> int:
    """Largest JPEG decode factor that still leaves the long side at least ``max_side``."""
    if size is None or max_side is None or not is_jpeg:
        return 1
    longest = max(size)
    for factor in (8, 4, 2):
        if longest // factor >= max_side:
            return factor
    return 1


def load_image(
    path: str | Path,
    *,
    gray: bool = False,
    max_side: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> np.ndarray:
    """Load an image file as ``uint8`` BGR ``H×W×3`` (or ``H×W`` when ``gray``).

    Args:
        path: a JPEG, PNG, BMP (or other format OpenCV decodes) file. Non-ASCII paths work.
        gray: return a single-channel ``H×W`` image instead of BGR.
        max_side: if given, shrink (never enlarge) so the longer side is at most this many
            pixels, keeping the aspect ratio. JPEGs are decoded at reduced scale first, which is
            much faster and lighter than decoding at full size then resizing.
        max_pixels: refuse files whose header declares more than this many pixels
            (decompression-bomb guard). None disables the check.

    Returns:
        A C-contiguous ``uint8`` array, EXIF orientation applied, alpha dropped.

    Raises:
        ImageNotFoundError: the file does not exist (also a FileNotFoundError).
        ImageLoadError: the file is empty, corrupt, truncated, not an image, or too large.
        ValueError: ``max_side`` is not a positive integer.

    Example:
        >>> load_image("cat.bmp", gray=True).ndim  # doctest: +SKIP
        2
    """
    if max_side is not None and (not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    path = Path(path)
    data = _read_bytes(path)
    if not data:
        raise ImageLoadError(f"cannot load image {path}: the file is empty")
    size = header_size(data)
    if size is not None and max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageLoadError(
            f"refusing to load image {path}: its header says {size[0]}×{size[1]} = "
            f"{size[0] * size[1]:,} pixels, more than max_pixels={max_pixels:,} "
            "(possible decompression bomb; pass a larger max_pixels if the file is trusted)"
        )
    factor = _reduction(size, max_side, data[:2] == _JPEG_SOI)
    if factor > 1:
        flags = _REDUCED[gray][factor]
    else:
        flags = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise ImageLoadError(f"cannot decode image {path}: {exc.err or exc}") from exc
    if img is None or img.size == 0:
        raise ImageLoadError(
            f"cannot decode image {path}: corrupt, truncated or not an image "
            f"({len(data):,} bytes, starts with {data[:8]!r})"
        )
    if img.dtype != np.uint8:  # defensive: IMREAD_COLOR/GRAYSCALE already give 8 bits
        img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else cv2.convertScaleAbs(img)
    if max_side is not None and max(img.shape[:2]) > max_side:
        scale = max_side / max(img.shape[:2])
        new_w = max(1, round(img.shape[1] * scale))
        new_h = max(1, round(img.shape[0] * scale))
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)
