"""Untrusted image bytes in, arrays out; arrays back to PNG bytes: the boundary of the service and the CLI.

Every failure on bad input is an `ImageError` carrying the HTTP status a server should answer. Notable:

- The pixel limit is checked on the size in the header, before any pixel is decoded (`Image.open` only
  parses headers; `load` decodes). The limit is also capped at PIL's `MAX_IMAGE_PIXELS`, and PIL's
  decompression-bomb warning is raised as an error inside a local `warnings.catch_warnings`. Filters are
  process-wide in Python 3.11, so under threads that filter can outlive this block (the warning then
  raises elsewhere too) or be dropped early (the cap still refuses the image); PIL's globals are untouched.
- Only the plugins of `SUPPORTED_FORMATS` parse the bytes first; the other plugins are asked only to
  name the format of a refused file (415), never to decode it. PIL's JPEG opener returns a JPEG with
  MPF data (many phone photos) as "MPO": it is reported as the JPEG it is, first picture.
- Pillow refuses a zero width or height inside `Image.open`, so such a file reads as corrupt; the zero
  check here is defence in depth.
- PIL's `convert` clips 16- and 32-bit grayscale to 255 instead of scaling it, so those modes are
  scaled here by their bit depth (16-bit: value >> 8).
- pycocotools' C parser of RLE count strings trusts its input (a string ending mid-number is read past
  its end; runs adding up to more than H*W are written past the mask), so `rle_mask` parses and checks
  the counts in numpy; encoding still goes through pycocotools (`components.coco.encode_rle`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from components.coco import encode_rle

DEFAULT_MAX_PIXELS = 40_000_000  # the service's and the command line's default limit (a 40-megapixel photo)
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"})  # GIF: first frame only
_OPEN_WITH = tuple(sorted(SUPPORTED_FORMATS))
_SAME_AS = {"MPO": "JPEG"}  # a JPEG holding extra pictures; its first picture is the photo
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class ImageError(ValueError):
    """Bad image input. `status` is the HTTP status a server should answer: 400 malformed / not an
    image / truncated / zero size / wrong mask size, 413 over the pixel limit (incl. decompression
    bombs), 415 unsupported format."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8 RGB, C-contiguous, EXIF orientation applied
    alpha: np.ndarray | None  # (H, W) uint8 when the source had transparency, else None
    format: str  # PIL format name, one of SUPPORTED_FORMATS


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> DecodedImage:
    """Decode untrusted bytes; an image over `max_pixels` is refused from its header, before decoding."""
    if not data:
        raise ImageError(f"{what} is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open(data, what) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise ImageError(f"{what} has zero size ({width}x{height})")
            limit = max_pixels if Image.MAX_IMAGE_PIXELS is None else min(max_pixels, Image.MAX_IMAGE_PIXELS)
            if width * height > limit:
                size = f"{width}x{height} = {width * height:,} pixels"
                raise ImageError(f"{what} is {size}, over the limit of {limit:,}", 413)
            try:
                im.load()
                ImageOps.exif_transpose(im, in_place=True)
                rgb, alpha = _arrays(im, what)
            except ImageError:
                raise
            except _BOMB as err:
                raise ImageError(f"{what} is over the pixel limit: {err}", 413) from err
            except Exception as err:  # any plugin failure on hostile bytes is a bad upload, not a server error
                raise ImageError(f"{what} is truncated or corrupt ({_reason(err)})") from err
            return DecodedImage(rgb, alpha, _SAME_AS.get(im.format, im.format))


def decode_mask(data: bytes, size: tuple[int, int], max_pixels: int, what: str = "mask") -> np.ndarray:
    """(H, W) bool mask, True = to remove, for an image of `size` = (width, height).

    True where luminance > 127; for a layer whose colour is one value everywhere while its alpha
    varies (strokes painted on a transparent canvas), where alpha > 127.
    """
    decoded = decode_image(data, max_pixels, what)
    rgb, alpha = decoded.rgb, decoded.alpha
    height, width = rgb.shape[:2]
    if (width, height) != tuple(size):
        raise ImageError(f"{what} is {width}x{height} but the image is {size[0]}x{size[1]}")
    if alpha is not None and alpha.min() != alpha.max() and (rgb == rgb[0, 0]).all():
        return alpha > 127
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) > 127  # ITU-R 601 luma, as PIL's convert("L")


def read_image_file(path: str | Path, max_pixels: int) -> DecodedImage:
    """Decode an image file; errors name the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    return decode_image(path.read_bytes(), max_pixels, what=str(path))


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    """RGB PNG of (H, W, 3) uint8, or RGBA with an (H, W) uint8 alpha."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    pixels = rgb
    if alpha is not None:
        if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
            raise ValueError(f"alpha must be {rgb.shape[:2]} uint8, got {alpha.shape} {alpha.dtype}")
        pixels = np.dstack([rgb, alpha])  # (H, W, 4)
    return _png(Image.fromarray(np.ascontiguousarray(pixels)))


def mask_png(mask: np.ndarray) -> bytes:
    """8-bit grayscale PNG of an (H, W) bool mask, 255 = True."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    return _png(Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255))


def mask_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE {"size": [H, W], "counts": str} of an (H, W) bool mask."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    return encode_rle(np.asarray(mask, bool))


def rle_mask(rle: dict, *, max_pixels: int | None = None) -> np.ndarray:
    """(H, W) bool mask of a COCO compressed RLE from outside; malformed input is an ImageError."""
    if not isinstance(rle, dict):
        raise ImageError(f"RLE must be an object with 'size' and 'counts', got {type(rle).__name__}")
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(_positive_int(v) for v in size)):
        raise ImageError(f"RLE 'size' must be [height, width] of positive ints, got {str(size)[:80]}")
    height, width = int(size[0]), int(size[1])
    if max_pixels is not None and height * width > max_pixels:
        raise ImageError(f"RLE mask is {width}x{height}, over the limit of {max_pixels:,} pixels", 413)
    if isinstance(counts, str):
        counts = counts.encode()  # a non-ASCII char becomes bytes >= 0x80, refused below
    if not isinstance(counts, bytes):
        raise ImageError(f"RLE 'counts' must be a compressed RLE string, got {type(counts).__name__}")
    runs = _rle_runs(counts, height * width)
    flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)  # runs alternate 0s and 1s, starting with 0s
    return np.ascontiguousarray(flat.reshape(width, height).T)  # column-major, as COCO stores it


def _open(data: bytes, what: str) -> Image.Image:
    """The lazily opened image (header parsed, pixels not decoded), or the ImageError saying why not."""
    try:
        return Image.open(io.BytesIO(data), formats=_OPEN_WITH)
    except _BOMB as err:
        raise ImageError(f"{what} is over the pixel limit: {err}", 413) from err
    except Image.UnidentifiedImageError:
        pass
    except Exception as err:
        raise ImageError(f"{what} is truncated or corrupt ({_reason(err)})") from err
    prefix = data[:16]
    claimed = [fmt for fmt in _OPEN_WITH if (accept := Image.OPEN.get(fmt, (None, None))[1]) and accept(prefix)]
    if claimed:  # the signature of a supported format, but its header could not be parsed
        raise ImageError(f"{what} starts like a {claimed[0]} file but is truncated or corrupt")
    supported = ", ".join(_OPEN_WITH)
    try:
        with Image.open(io.BytesIO(data)) as other:  # header only, to name the format; never decoded
            name = other.format
    except Exception:
        name = None
    if name:
        raise ImageError(f"{what} is a {name} image, which is not supported; send one of {supported}", 415)
    raise ImageError(f"{what} is not a recognised image (supported formats: {supported})")


def _arrays(im: Image.Image, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) uint8 RGB and the (H, W) uint8 alpha (or None) of a loaded image."""
    if im.mode.startswith("I") or im.mode == "F":  # high bit depth grayscale: scale, not clip
        gray = _gray8(np.asarray(im))
        return np.repeat(gray[:, :, None], 3, axis=2), None
    try:
        if im.has_transparency_data:  # RGBA, LA, PA, RGBa, P or RGB/L with a tRNS colour key
            rgba = np.asarray(im.convert("RGBA"))
            return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3])
        return np.array(im.convert("RGB")), None
    except ValueError as err:
        raise ImageError(f"{what} has colour mode {im.mode}, which cannot be converted to RGB") from err


def _gray8(values: np.ndarray) -> np.ndarray:
    """uint8 of 16-bit (I;16*), 32-bit integer (I) or float (F) grayscale."""
    if values.dtype.kind == "f":  # [0, 1] when it fits there, else taken as [0, 255]
        values = np.where(np.isfinite(values), values, 0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    if values.dtype.itemsize == 2:
        return (values >> 8).astype(np.uint8)
    # mode I carries no bit depth of its own (PIL's 32-bit container): the data's range picks one
    values = np.clip(values, 0, None)
    top = int(values.max(initial=0))
    shift = 0 if top < 1 << 8 else 8 if top < 1 << 16 else 23
    return (values >> shift).astype(np.uint8)


def _rle_runs(counts: bytes, total: int) -> np.ndarray:
    """Run lengths of a COCO counts string, checked to be non-negative and to cover `total` pixels.

    As pycocotools' rleFrString reads it: each number is 5-bit groups (char - 48, least significant
    first), 0x20 = more groups follow, 0x10 in the last group = negative; from the fourth number on,
    each is a delta from the number two before it.
    """
    codes = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if codes.size == 0 or codes.min() < 0 or codes.max() > 63:
        raise ImageError("RLE 'counts' is empty or has characters outside '0'..'o'")
    last = (codes & 0x20) == 0  # the final group of each number
    if not last[-1]:
        raise ImageError("RLE 'counts' ends in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 35 bits: more than any run of a real mask
        raise ImageError("RLE 'counts' holds a number too large for a mask")
    shifts = 5 * (np.arange(codes.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((codes & 0x1F) << shifts, starts)
    values -= ((codes[ends] & 0x10) != 0) << (5 * lengths)  # sign-extend: x | (-1 << 5k) for x < 2**5k
    values[1::2] = np.cumsum(values[1::2])  # counts 3, 5, ... are deltas from 1, 3, ...
    values[2::2] = np.cumsum(values[2::2])  # counts 4, 6, ... are deltas from 2, 4, ...
    if values.min() < 0 or values.sum() != total:
        raise ImageError(f"RLE 'counts' runs add up to {values.sum()} pixels, not height x width = {total}")
    return values


def _positive_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
