"""Tests for edge.imageio.load_image: real shared images plus hand-built edge cases."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ImageLoadError
from edge.imageio import IMAGE_SUFFIXES, ImageNotFoundError, header_size, load_image
from edge.paths import data_dir

# JPEG re-encoding changes pixels a little; these bound the mean absolute difference.
JPEG_MEAN_TOL = 4.0
RESIZE_MEAN_TOL = 3.0


@pytest.fixture(scope="module")
def data() -> Path:
    d = data_dir()
    if d is None or not (d / "samples").is_dir():
        pytest.skip("shared data directory not found (set EDGE_DATA_DIR)")
    return d


# -- real files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape", [
    ("samples/cat.bmp", (341, 512, 3)),
    ("samples/parrot.jpg", (929, 512, 3)),
    ("samples/face.jpg", (355, 512, 3)),
    ("samples/zidane.jpg", (720, 1280, 3)),
])
def test_real_images_load_as_bgr_uint8(data, name, shape):
    img = load_image(data / name)
    assert img.shape == shape
    assert img.dtype == np.uint8
    assert img.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(img, cv2.imread(str(data / name), cv2.IMREAD_COLOR))


def test_bmp_channel_order_is_bgr(data):
    # Reference decode of the BMP by hand: 24-bit BMP rows are stored bottom-up as B, G, R.
    raw = (data / "samples/cat.bmp").read_bytes()
    offset, = struct.unpack("<I", raw[10:14])
    w, h = header_size(raw)
    bottom_row = np.frombuffer(raw, np.uint8, w * 3, offset).reshape(w, 3)
    np.testing.assert_array_equal(load_image(data / "samples/cat.bmp")[h - 1], bottom_row)


def test_grayscale_file_comes_back_as_three_equal_channels(data):
    path = data / "coco128/images/000000007888.jpg"  # a single-channel JPEG in coco128
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).ndim == 2
    img = load_image(path)
    assert img.shape == (640, 638, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 1])
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    gray = load_image(path, gray=True)
    assert gray.shape == (640, 638)
    np.testing.assert_array_equal(gray, img[..., 0])


def test_gray_flag_on_colour_image(data):
    gray = load_image(data / "samples/parrot.jpg", gray=True)
    assert gray.shape == (929, 512) and gray.dtype == np.uint8
    expected = cv2.cvtColor(load_image(data / "samples/parrot.jpg"), cv2.COLOR_BGR2GRAY)
    assert np.abs(gray.astype(int) - expected.astype(int)).mean() < 2.0


def test_real_exif_rotated_photo_is_upright(data):
    path = data / "antispoof/image_T1.jpg"  # stored 640 wide × 480 high, EXIF says rotate
    raw = path.read_bytes()
    assert header_size(raw) == (640, 480)
    assert load_image(path).shape == (640, 480, 3)
    assert load_image(path, gray=True).shape == (640, 480)


def test_non_ascii_path(data, tmp_path):
    target = tmp_path / "猫 café ü" / "кот.bmp"
    target.parent.mkdir()
    shutil.copy(data / "samples/cat.bmp", target)
    np.testing.assert_array_equal(load_image(target), load_image(data / "samples/cat.bmp"))


@pytest.mark.parametrize("name", ["samples/cat.bmp", "samples/parrot.jpg", "samples/bus.jpg",
                                  "coco128/images/000000007888.jpg"])
def test_header_size_matches_decoder(data, name):
    raw = (data / name).read_bytes()
    stored = cv2.imdecode(np.frombuffer(raw, np.uint8),
                          cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    assert header_size(raw) == (stored.shape[1], stored.shape[0])


# -- EXIF orientation built by hand ----------------------------------------------------------

def _exif_app1(orientation: int) -> bytes:
    """A minimal big-endian EXIF APP1 segment holding only the Orientation tag (0x0112)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)                  # header, IFD0 at offset 8
    ifd = struct.pack(">H", 1)                                   # one entry
    ifd += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)   # SHORT, count 1, value, pad
    ifd += struct.pack(">I", 0)                                  # no next IFD
    payload = b"Exif\x00\x00" + tiff + ifd
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _marker_image() -> np.ndarray:
    """60 wide × 40 high, a white block in the top-left corner only."""
    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :15] = 255
    return img


@pytest.mark.parametrize("orientation, transform", [
    (1, lambda a: a),
    (3, lambda a: cv2.rotate(a, cv2.ROTATE_180)),
    (6, lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)),
    (8, lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)),
])
def test_exif_orientation_is_applied(tmp_path, orientation, transform):
    img = _marker_image()
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    jpeg = buf.tobytes()
    path = tmp_path / f"orient{orientation}.jpg"
    path.write_bytes(jpeg[:2] + _exif_app1(orientation) + jpeg[2:])  # right after SOI

    out = load_image(path)
    expected = transform(img)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < JPEG_MEAN_TOL
    if orientation == 6:  # top-left block ends up top-right, the reader sees it upright
        assert out[:15, -10:].mean() > 200 and out[:15, :10].mean() < 50
        assert load_image(path, gray=True).shape == (60, 40)


# -- formats ---------------------------------------------------------------------------------

def test_16bit_png_is_scaled_to_8bit(tmp_path):
    a16 = np.zeros((6, 7), np.uint16)
    a16[0, 0], a16[1, 1], a16[2, 2] = 65535, 0x8000, 0x00FF
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), a16)
    img = load_image(path)
    assert img.dtype == np.uint8 and img.shape == (6, 7, 3)
    assert tuple(img[0, 0]) == (255, 255, 255)
    assert tuple(img[1, 1]) == (128, 128, 128)
    assert tuple(img[2, 2]) == (0, 0, 0)  # the high byte is kept


def test_alpha_is_dropped(tmp_path):
    bgra = np.zeros((5, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0  # fully transparent
    path = tmp_path / "alpha.png"
    assert cv2.imwrite(str(path), bgra)
    img = load_image(path)
    assert img.shape == (5, 4, 3)
    assert tuple(img[2, 2]) == (10, 20, 30)


# -- size limits ---------------------------------------------------------------------------

def test_max_side_shrinks_keeping_aspect(data):
    img = load_image(data / "samples/parrot.jpg", max_side=200)
    assert img.shape == (200, 110, 3)  # 512 * 200 / 929 = 110.2
    small = load_image(data / "samples/cat.bmp", max_side=10_000)
    assert small.shape == (341, 512, 3)  # never enlarged


def test_max_side_on_very_large_jpeg_uses_reduced_decode(data):
    path = data / "faces/deepface/img40.jpg"  # 3061 wide × 4600 high
    if not path.is_file():
        pytest.skip("img40.jpg not in this data set")
    img = load_image(path, max_side=640)
    assert img.shape == (640, 426, 3)
    full = cv2.resize(cv2.imread(str(path)), (426, 640), interpolation=cv2.INTER_AREA)
    assert np.abs(img.astype(int) - full.astype(int)).mean() < RESIZE_MEAN_TOL


def test_decompression_bomb_is_refused(tmp_path):
    # A PNG header claiming 100k × 100k pixels followed by junk: refused before decoding.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 64)
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*10,000,000,000 pixels"):
        load_image(path)


def test_max_pixels_is_configurable(data):
    with pytest.raises(ImageLoadError, match="cat.bmp"):
        load_image(data / "samples/cat.bmp", max_pixels=1000)
    assert load_image(data / "samples/cat.bmp", max_pixels=None).shape == (341, 512, 3)


def test_bad_max_side():
    with pytest.raises(ValueError, match="max_side"):
        load_image("whatever.jpg", max_side=0)


# -- failures name the file --------------------------------------------------------------

def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize("name, make", [
    ("empty.jpg", lambda d: b""),
    ("notes.jpg", lambda d: b"this is plain text, not an image\n" * 10),
    ("random.png", lambda d: np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()),
    ("half_parrot.jpg", lambda d: (d / "samples/parrot.jpg").read_bytes()[:30_000]),
    ("half_cat.bmp", lambda d: (d / "samples/cat.bmp").read_bytes()[:100_000]),
    ("cut.png", lambda d: cv2.imencode(".png", cv2.imread(str(d / "samples/cat.bmp")))[1]
     .tobytes()[:5000]),
])
def test_corrupt_files_raise_image_load_error_naming_the_file(data, tmp_path, name, make):
    path = _write(tmp_path, name, make(data))
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageNotFoundError, match="nope.jpg") as info:
        load_image(tmp_path / "nope.jpg")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ImageLoadError)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_image_suffixes():
    assert {".jpg", ".jpeg", ".png", ".bmp"} <= IMAGE_SUFFIXES
    assert all(s.startswith(".") and s == s.lower() for s in IMAGE_SUFFIXES)
    assert ".mp4" not in IMAGE_SUFFIXES
