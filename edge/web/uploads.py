"""Uploaded images: bounded in bytes and pixels, decoded into the project's ``uint8`` BGR convention.

Every failure is an :class:`UploadError` carrying the HTTP status to answer with and a message
naming the upload (its form field and file name): 413 for an upload over the byte limit or a header
announcing more pixels than allowed (a decompression bomb is refused *before* decoding, from the
header, by :func:`edge.imageio.header_size`), 415 for something that is not a decodable image, 400
for an empty part.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.imageio import header_size

__all__ = ["UploadError", "UploadLimits", "decode_upload"]


class UploadError(EdgeError, ValueError):
    """An upload that cannot be used; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """Limits on what clients may send.

    Attributes:
        max_body_bytes: a whole request body (all parts of a multipart form).
        max_image_bytes: one uploaded image.
        max_pixels: width × height of one image, read from its header before decoding.
        max_files: images in one enrolment request.
    """

    max_body_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 12 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 20

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_image_bytes, self.max_pixels, self.max_files) < 1:
            raise ValueError("upload limits must be positive")


def decode_upload(data: bytes, what: str, limits: UploadLimits = UploadLimits()) -> np.ndarray:
    """Decode one uploaded image to ``uint8`` BGR ``H×W×3`` (EXIF orientation applied).

    Args:
        data: the uploaded bytes.
        what: names the upload in messages (``"image 'door.jpg'"``).

    Raises:
        UploadError: empty (400), too large in bytes or pixels (413), not a decodable image (415).
    """
    if not data:
        raise UploadError(f"{what} is empty", 400)
    if len(data) > limits.max_image_bytes:
        raise UploadError(f"{what} is {len(data):,} bytes, more than the {limits.max_image_bytes:,} allowed", 413)
    size = header_size(data)
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise UploadError(f"{what} declares {size[0]}×{size[1]} pixels, more than the {limits.max_pixels:,} "
                          "allowed", 413)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise UploadError(f"{what} is not a decodable image (JPEG, PNG, BMP or WebP expected; "
                          f"{len(data):,} bytes starting with {data[:8]!r})", 415)
    if image.shape[0] * image.shape[1] > limits.max_pixels:  # formats whose header was not read
        raise UploadError(f"{what} has {image.shape[1]}×{image.shape[0]} pixels, more than the "
                          f"{limits.max_pixels:,} allowed", 413)
    return np.ascontiguousarray(image)
