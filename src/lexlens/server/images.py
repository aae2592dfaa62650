"""Safe decoding of images sent to the server, and thumbnails of indexed images.

Uploaded bytes are checked before any pixel is decoded: size in bytes, a known format,
and the pixel count read from the header (so a decompression bomb, a small file that
expands to gigapixels, is refused without being expanded). Truncated or corrupt files
raise :class:`ImageInputError` instead of reaching the model.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path

from lexlens.errors import UsageError

__all__ = [
    "ImageInputError",
    "ImageTooLargeError",
    "FORMATS",
    "decode_image",
    "decode_base64_image",
    "thumbnail_bytes",
]

#: formats accepted from clients (what PIL may try when opening uploaded bytes)
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


class ImageInputError(UsageError):
    """An uploaded image cannot be decoded (HTTP 400)."""


class ImageTooLargeError(UsageError):
    """An uploaded image exceeds the byte or pixel limit (HTTP 413)."""


def decode_image(data: bytes, max_bytes: int, max_pixels: int):
    """``data`` (an encoded image) -> an RGB ``PIL.Image`` fully loaded in memory.

    Raises :class:`ImageTooLargeError` past ``max_bytes`` or ``max_pixels`` and
    :class:`ImageInputError` for empty, unknown, truncated or corrupt data.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageInputError("the image is empty")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"the image has too many pixels ({e})") from None
    except UnidentifiedImageError:
        raise ImageInputError(
            f"not an image in a supported format ({', '.join(FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageInputError(f"cannot read the image: {e}") from None
    with im:
        w, h = im.size
        frames = int(getattr(im, "n_frames", 1) or 1)
        if w <= 0 or h <= 0:
            raise ImageInputError(f"the image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise ImageTooLargeError(
                f"the image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels"
            )
        if frames > 1:
            im.seek(0)  # only the first frame of an animation is used
        try:
            im.load()
            return im.convert("RGB")
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(f"the image has too many pixels ({e})") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ImageInputError(f"the image is truncated or corrupt: {e}") from None


def decode_base64_image(text: str, max_bytes: int, max_pixels: int):
    """A base64 string (optionally a ``data:image/...;base64,`` URL) -> RGB ``PIL.Image``."""
    if text.startswith("data:"):
        _, sep, text = text.partition(",")
        if not sep:
            raise ImageInputError("a data: URL without ',' before its base64 payload")
    text = "".join(text.split())
    if len(text) > (max_bytes * 4) // 3 + 8:
        raise ImageTooLargeError(f"the image is larger than the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError("the image is not valid base64") from None
    return decode_image(data, max_bytes, max_pixels)


def thumbnail_bytes(path: Path, size: int = 256) -> tuple[bytes, str]:
    """A thumbnail of the image file at ``path`` (at most ``size`` pixels a side), as
    ``(bytes, media type)``: PNG for small images, JPEG for photos."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            im = ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageInputError(f"cannot read the stored image: {e}") from None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    if im.width * im.height <= 128 * 128:
        im.save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue(), "image/jpeg"
