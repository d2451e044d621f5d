"""Image boundary: hostile bytes become ImageErrors with the right status; every mode decodes to RGB uint8.

All files are made here with PIL, OpenCV or by hand (struct + zlib for PNGs that lie about their size).
"""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile
from pycocotools import mask as mask_utils

from components.images import (
    SUPPORTED_FORMATS,
    DecodedImage,
    ImageError,
    decode_image,
    decode_mask,
    encode_png,
    mask_png,
    mask_rle,
    read_image_file,
    rle_mask,
)

LIMIT = 10**6


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A real 1-bit black PNG of the given size, compressed row by row (20000x20000 is ~50 KB)."""
    compressor, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.fixture
def load_calls(monkeypatch) -> list:
    """Records every pixel decode (ImageFile.load) made while the test runs."""
    calls, original = [], ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def refused(data: bytes, status: int, max_pixels: int = LIMIT) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(data, max_pixels, what="upload.png")
    assert info.value.status == status, str(info.value)
    return str(info.value)


# --- refusals -----------------------------------------------------------------------------------------


def test_empty_bytes():
    assert refused(b"", 400) == "upload.png is empty (0 bytes)"


@pytest.mark.parametrize("data", [b"hello", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", b'{"image": "cat.png"}'])
def test_not_an_image(data):
    assert "upload.png is not a recognised image" in refused(data, 400)


@pytest.mark.parametrize(("fmt", "mode"), [("PPM", "RGB"), ("ICO", "RGBA"), ("TGA", "RGB")])
def test_unsupported_format_is_415_naming_it(fmt, mode):
    message = refused(save(Image.new(mode, (16, 16)), fmt), 415)
    assert f"is a {fmt} image" in message
    assert all(name in message for name in SUPPORTED_FORMATS)


def test_zero_width_is_400():
    # Pillow refuses a zero size inside Image.open (ImageFile.__init__), so this reads as a corrupt PNG
    ihdr = struct.pack(">IIBBBBB", 0, 10, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    assert "starts like a PNG file but is truncated or corrupt" in refused(data, 400)


def test_pixel_limit_is_checked_on_the_header(rgb, load_calls):
    data = save(Image.fromarray(rgb), "PNG")
    message = refused(data, 413, max_pixels=599)
    assert "30x20 = 600 pixels" in message and "limit of 599" in message
    assert load_calls == []
    assert decode_image(data, 600).rgb.shape == (20, 30, 3)


def test_decompression_bomb_is_refused_without_decoding(load_calls):
    bomb = png_declaring(20000, 20000)
    assert len(bomb) < 100_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refused(bomb, 413)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "400000000 pixels" in message  # PIL's own DecompressionBombError (over 2 x MAX_IMAGE_PIXELS)
    assert elapsed < 1.0 and peak < 50 * 2**20
    assert load_calls == []


def test_bomb_under_pil_limit_is_refused_by_ours(load_calls):
    message = refused(png_declaring(9000, 9000), 413)  # 81 M pixels: PIL would decode it
    assert "9000x9000" in message and f"{LIMIT:,}" in message
    assert load_calls == []


def test_limit_is_capped_at_pils_even_without_the_warning_filter(monkeypatch, load_calls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        monkeypatch.setattr(warnings, "simplefilter", lambda *args, **kwargs: None)  # as if a thread dropped it
        message = refused(png_declaring(10000, 10000), 413, max_pixels=10**9)
    assert f"over the limit of {Image.MAX_IMAGE_PIXELS:,}" in message
    assert load_calls == []


def test_pil_bomb_warning_becomes_413_without_touching_globals(load_calls):
    filters, pil_limit = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    message = refused(png_declaring(10000, 10000), 413, max_pixels=10**9)  # over PIL's 89 M: a warning
    assert "decompression bomb" in message
    assert load_calls == []
    assert warnings.filters == filters and Image.MAX_IMAGE_PIXELS == pil_limit


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(rgb, fmt):
    data = save(Image.fromarray(rgb), fmt)
    assert "upload.png is truncated or corrupt" in refused(data[: len(data) // 2], 400)


def test_truncated_header_names_the_format(rgb):
    assert "starts like a PNG file" in refused(save(Image.fromarray(rgb), "PNG")[:40], 400)


def test_png_text_bomb_is_400():
    text = chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(4 << 20)))  # 4 MB of text from 4 KB
    data = save(Image.new("L", (4, 4)), "PNG")
    assert "MAX_TEXT_CHUNK" in refused(data[:33] + text + data[33:], 400)


@pytest.mark.parametrize(
    "error",
    [OSError, ValueError, SyntaxError, struct.error, EOFError, MemoryError, Image.UnidentifiedImageError, KeyError],
)
def test_pil_exceptions_become_image_errors(monkeypatch, rgb, error):
    def broken(self):
        raise error("decoder exploded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    message = refused(save(Image.fromarray(rgb), "PNG"), 400)
    assert f"truncated or corrupt ({error.__name__}" in message and "decoder exploded" in message


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL reports the corrupt metadata it skips
def test_mutated_files_never_raise_anything_else(rgb):
    rng = np.random.default_rng(1)
    sources = [save(Image.fromarray(rgb[:16, :16]), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]
    outcomes = []
    for source in sources:
        for _ in range(40):
            data = bytearray(source[: rng.integers(8, len(source) + 1)])
            for at in rng.integers(0, len(data), rng.integers(1, 5)):
                data[at] = rng.integers(0, 256)
            try:
                decoded = decode_image(bytes(data), 64 * 64)
            except ImageError as err:
                assert err.status in (400, 413, 415)
                outcomes.append(err.status)
                continue
            height, width, channels = decoded.rgb.shape
            assert decoded.rgb.dtype == np.uint8 and channels == 3 and height * width <= 64 * 64
            outcomes.append(200)
    assert 200 in outcomes and 400 in outcomes


# --- modes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "kwargs"), [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_decode_exactly(rgb, fmt, kwargs):
    decoded = decode_image(save(Image.fromarray(rgb), fmt, **kwargs), LIMIT)
    assert isinstance(decoded, DecodedImage) and decoded.format == fmt and decoded.alpha is None
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.flags.c_contiguous and decoded.rgb.flags.writeable
    assert np.array_equal(decoded.rgb, rgb)


def test_rgba(rgb):
    alpha = np.arange(600, dtype=np.uint8).reshape(20, 30)
    decoded = decode_image(save(Image.fromarray(np.dstack([rgb, alpha])), "PNG"), LIMIT)
    assert np.array_equal(decoded.rgb, rgb) and np.array_equal(decoded.alpha, alpha)
    assert decoded.rgb.flags.c_contiguous and decoded.alpha.flags.c_contiguous


def test_grayscale_1bit_and_la_are_replicated():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    decoded = decode_image(save(Image.fromarray(gray), "PNG"), LIMIT)
    assert decoded.rgb.shape == (16, 16, 3) and np.array_equal(decoded.rgb[..., 1], gray)
    assert (decoded.rgb == gray[..., None]).all() and decoded.alpha is None
    la = decode_image(save(Image.merge("LA", [Image.fromarray(gray), Image.fromarray(255 - gray)]), "PNG"), LIMIT)
    assert (la.rgb == gray[..., None]).all() and np.array_equal(la.alpha, 255 - gray)
    bits = decode_image(save(Image.fromarray(gray > 127), "PNG"), LIMIT)  # mode "1"
    assert np.array_equal(bits.rgb[..., 0], np.where(gray > 127, 255, 0))


def test_palette_with_and_without_transparency():
    palette = Image.new("P", (4, 2), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 1), 1)
    plain = decode_image(save(palette, "PNG"), LIMIT)
    assert plain.alpha is None and tuple(plain.rgb[1, 1]) == (0, 0, 255) and tuple(plain.rgb[0, 0]) == (255, 0, 0)
    keyed = decode_image(save(palette, "PNG", transparency=0), LIMIT)
    assert keyed.alpha is not None and keyed.alpha[1, 1] == 255 and keyed.alpha.sum() == 255
    assert tuple(keyed.rgb[1, 1]) == (0, 0, 255)


def test_16bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 255, 256, 32768, 65535]], np.uint16)
    decoded = decode_image(cv2.imencode(".png", values)[1].tobytes(), LIMIT)
    assert decoded.rgb[0, :, 0].tolist() == [0, 0, 1, 128, 255]


def test_16bit_rgb_png():
    values = np.random.default_rng(2).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    decoded = decode_image(cv2.imencode(".png", values[..., ::-1])[1].tobytes(), LIMIT)  # OpenCV writes BGR
    assert np.abs(decoded.rgb.astype(int) - (values >> 8)).max() <= 1


def test_32bit_integer_and_float_tiff():
    ints = np.array([[0, 1 << 23, 2**31 - 1]], np.int32)
    assert decode_image(save(Image.fromarray(ints), "TIFF"), LIMIT).rgb[0, :, 0].tolist() == [0, 1, 255]
    floats = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    assert decode_image(save(Image.fromarray(floats), "TIFF"), LIMIT).rgb[0, :, 0].tolist() == [0, 128, 255, 0]


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("RGB", (16, 16), (200, 100, 50)).convert("CMYK")
    decoded = decode_image(save(cmyk, "JPEG", quality=95), LIMIT)
    assert decoded.format == "JPEG" and np.abs(decoded.rgb.astype(int) - [200, 100, 50]).max() <= 3


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    decoded = decode_image(save(frames[0], "GIF", save_all=True, append_images=frames[1:]), LIMIT)
    assert decoded.format == "GIF" and (decoded.rgb == [255, 0, 0]).all()


def test_multi_picture_jpeg_is_a_jpeg():
    data = save(Image.new("RGB", (8, 8), (255, 0, 0)), "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    decoded = decode_image(data, LIMIT)
    assert decoded.format == "JPEG" and np.abs(decoded.rgb.astype(int) - [255, 0, 0]).max() <= 3


def blocks() -> np.ndarray:
    """(32, 48, 3): four colours in 16-pixel blocks, so JPEG error stays small and the image is asymmetric."""
    image = np.zeros((32, 48, 3), np.uint8)
    image[:16, :16], image[:16, 16:], image[16:, :32] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    return image


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1), (3, 2)])  # np.rot90 turns, + = anticlockwise
def test_exif_orientation_is_applied(orientation, turns):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(blocks()), "JPEG", exif=exif, quality=95, subsampling=0)
    decoded = decode_image(data, LIMIT)
    expected = np.rot90(blocks(), turns)
    assert decoded.rgb.shape == expected.shape and decoded.rgb.flags.c_contiguous
    assert np.abs(decoded.rgb.astype(int) - expected).mean() < 3


# --- encoding and masks ---------------------------------------------------------------------------------


def test_encode_png_round_trips(rgb):
    assert np.array_equal(decode_image(encode_png(rgb), LIMIT).rgb, rgb)
    alpha = np.random.default_rng(3).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    decoded = decode_image(encode_png(rgb[:, ::-1], alpha), LIMIT)  # a non-contiguous view is fine too
    assert np.array_equal(decoded.rgb, rgb[:, ::-1]) and np.array_equal(decoded.alpha, alpha)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(rgb.astype(np.float32))


def test_mask_png_round_trips():
    mask = np.random.default_rng(4).random((21, 34)) > 0.5
    data = mask_png(mask)
    assert Image.open(io.BytesIO(data)).mode == "L"
    assert np.array_equal(decode_mask(data, (34, 21), LIMIT), mask)


def test_mask_thresholds():
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    assert decode_mask(encode_png(np.repeat(gray[..., None], 3, 2)), (4, 1), LIMIT).tolist() == [
        [False, False, True, True]
    ]
    colours = np.array([[[255, 0, 0], [255, 255, 0]]], np.uint8)  # luma 76 and 226
    assert decode_mask(encode_png(colours), (2, 1), LIMIT).tolist() == [[False, True]]


def test_mask_from_alpha_when_colour_says_nothing():
    black = np.zeros((1, 3, 3), np.uint8)
    alpha = np.array([[0, 200, 100]], np.uint8)
    assert decode_mask(encode_png(black, alpha), (3, 1), LIMIT).tolist() == [[False, True, False]]
    strokes = np.array([[[0, 0, 0], [255, 255, 255], [255, 255, 255]]], np.uint8)  # white strokes on clear
    assert decode_mask(encode_png(strokes, alpha), (3, 1), LIMIT).tolist() == [[False, True, True]]


def test_mask_size_mismatch_is_measured_after_exif():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = save(Image.fromarray(blocks()[..., 0]), "JPEG", exif=exif)  # stored 48x32, shown 32x48
    with pytest.raises(ImageError) as info:
        decode_mask(data, (48, 32), LIMIT)
    assert info.value.status == 400 and str(info.value) == "mask is 32x48 but the image is 48x32"
    assert decode_mask(data, (32, 48), LIMIT).shape == (48, 32)


def test_mask_rle_round_trips_at_odd_size():
    rng = np.random.default_rng(5)
    mask = cv2.GaussianBlur(rng.random((479, 641)).astype(np.float32), (0, 0), 6) > 0.5  # random blobs
    assert 0.05 < mask.mean() < 0.95
    rle = mask_rle(mask)
    assert rle["size"] == [479, 641] and isinstance(rle["counts"], str)
    rle = json.loads(json.dumps(rle))
    assert np.array_equal(rle_mask(rle), mask)
    assert rle_mask(rle).flags.c_contiguous
    reference = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    assert np.array_equal(reference, mask)


def test_rle_edge_masks_round_trip():
    for mask in (np.ones((3, 5), bool), np.zeros((3, 5), bool), np.eye(7, dtype=bool)):
        assert np.array_equal(rle_mask(mask_rle(mask)), mask)


@pytest.mark.parametrize(
    ("rle", "needle"),
    [
        ([1, 2], "must be an object"),
        ({"size": [3, 5]}, "'counts' must be"),
        ({"size": [3, True], "counts": "0"}, "'size' must be"),
        ({"size": [0, 5], "counts": "0"}, "'size' must be"),
        ({"size": [3, 5], "counts": ""}, "empty"),
        ({"size": [3, 5], "counts": "P"}, "middle of a number"),  # pycocotools would read past the end
        ({"size": [3, 5], "counts": "0\x7f"}, "characters outside"),
        ({"size": [3, 5], "counts": "0é"}, "characters outside"),
        ({"size": [3, 5], "counts": "0" + "`" * 7 + "0"}, "too large"),
        ({"size": [3, 5], "counts": "0o0"}, "add up to"),  # a negative run
        ({"size": [3, 5], "counts": "0_1"}, "add up to"),  # 31 + 1 runs > 15: pycocotools would overflow
    ],
)
def test_rle_mask_refuses_malformed(rle, needle):
    with pytest.raises(ImageError, match=needle) as info:
        rle_mask(rle)
    assert info.value.status == 400


def test_rle_mask_pixel_limit():
    with pytest.raises(ImageError) as info:
        rle_mask({"size": [100000, 100000], "counts": "0"}, max_pixels=LIMIT)
    assert info.value.status == 413


def test_read_image_file(tmp_path, rgb):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image_file(tmp_path / "missing.png", LIMIT)
    (tmp_path / "a.png").write_bytes(encode_png(rgb))
    assert np.array_equal(read_image_file(str(tmp_path / "a.png"), LIMIT).rgb, rgb)
    (tmp_path / "empty.png").touch()
    with pytest.raises(ImageError, match=f"{tmp_path / 'empty.png'} is empty"):
        read_image_file(tmp_path / "empty.png", LIMIT)
