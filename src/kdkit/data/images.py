"""Reading one image file safely, for the ImageFolder reader (imagefolder.py) and `kdkit predict`.

    with opened(data, name) as image:     # header read, size checked against max_pixels()
        pixels = to_array(image, name)     # (H, W) grey or (H, W, 3) RGB uint8

- Size: width x height is checked from the header, before any pixel is decoded, against
  $KDKIT_MAX_PIXELS (default MAX_PIXELS), so a 10000x10000 PNG of 12 kB is refused at once
  instead of costing gigabytes. This limit replaces Pillow's own decompression-bomb check.
- Truncated files are errors, even when a script has set Pillow's ImageFile.LOAD_TRUNCATED_IMAGES
  (which would silently fill the missing part with grey).
- 16-bit grey (modes I;16*, and I holding 0..65535) is scaled to 8 bits (value >> 8); Pillow's
  own conversion clips it, so every pixel above 255 would read as white. Float images (mode F)
  have no agreed range and are refused.
"""
import contextlib
import io
import os

import numpy as np

from kdkit.errors import KdkitError

# Per image, width * height. 50 million pixels: a 48-megapixel photo passes; anything larger
# decodes to over 150 MB per RGB image, far beyond what a classifier input needs.
MAX_PIXELS = 50_000_000
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


class DamagedImage(KdkitError):
    """An image that cannot be decoded (truncated, corrupt, not an image); `why` says what failed."""

    def __init__(self, name: str, why: str):
        self.name, self.why = name, why
        super().__init__(f"cannot decode image {name} ({why}); the file is truncated or damaged: replace or remove it")


def max_pixels() -> int:
    """$KDKIT_MAX_PIXELS, else MAX_PIXELS: the largest width * height kdkit decodes."""
    value = os.environ.get("KDKIT_MAX_PIXELS")
    if not value:
        return MAX_PIXELS
    try:
        return int(value)
    except ValueError:
        raise KdkitError(f"KDKIT_MAX_PIXELS must be a whole number of pixels, got '{value[:40]}'; "
                         f"e.g. {MAX_PIXELS}") from None


@contextlib.contextmanager
def opened(source, name: str):
    """The open PIL image of `source` (bytes or a path), its size checked; nothing decoded yet."""
    from PIL import Image

    limit = max_pixels()
    try:
        with _pillow_settings(), Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            _check_size(image.size, name, limit)
            yield image
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DamagedImage(name, _why(error)) from None


def to_array(image, name: str, mode: str | None = None) -> np.ndarray:
    """(H, W) uint8 for grey images, (H, W, 3) for colour ones; `mode` ("L" or "RGB") forces one.
    Call it inside `opened`, whose settings make a truncated file raise here."""
    mode = mode or ("L" if image.mode in GREY_MODES else "RGB")
    if image.mode in GREY_MODES and image.mode[0] in "IF":
        grey = _deep_grey(image, name)  # (H, W) uint8
        return grey if mode == "L" else np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image if image.mode == mode else image.convert(mode))


def _deep_grey(image, name: str) -> np.ndarray:
    """16-bit grey (I;16*, or I within 0..65535) as 8 bits: the top byte of each value."""
    if image.mode == "F":
        raise KdkitError(f"image {name} holds 32-bit float pixels (mode F), which have no fixed range; "
                         "convert the images to 8 or 16-bit PNGs (scaled to 0..255 or 0..65535)")
    values = np.asarray(image).astype(np.int64)  # (H, W); I;16B arrives big-endian, I as int32
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise KdkitError(f"image {name} holds 32-bit values outside 0..65535 (mode I); convert the images to "
                         "8 or 16-bit PNGs (scaled to 0..255 or 0..65535)")
    return (values >> 8).astype(np.uint8)


def _check_size(size: tuple[int, int], name: str, limit: int) -> None:
    width, height = size
    pixels = width * height
    if pixels > limit:
        shown = f"{pixels / 1e6:.3g} million pixels" if pixels >= 1e6 else f"{pixels} pixels"
        raise KdkitError(f"image {name} is {width}x{height} ({shown}), above the limit of {limit} pixels; "
                         f"resize it, or raise the limit with KDKIT_MAX_PIXELS={pixels}")


@contextlib.contextmanager
def _pillow_settings():
    """Pillow's two global switches, set for kdkit's reads and restored after: truncated files
    fail (never half-grey), and Pillow's bomb limit is off because _check_size enforces ours."""
    from PIL import Image, ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, None
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved


def _why(error: Exception) -> str:
    return " ".join(str(error).split())[:100] or type(error).__name__
