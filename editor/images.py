"""Images in documents: what an uploaded file must be to be kept, and where it is kept.

Only what Pillow recognises as PNG, JPEG, GIF or WebP is accepted; the format Pillow finds
decides the stored extension and the ``Content-Type`` the file is served with, never the
client's name or header. SVG is refused outright: it is a document that can carry scripts, not a
picture. Files live in the ``images`` storage (``STORAGES["images"]``, collab/settings.py: a
folder under the var dir, or an S3-compatible bucket) under a random name, and are only ever
served by ``editor.views.document_image``, which asks editor/access.py on every request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.files.storage import Storage, storages
from PIL import Image

# Pillow format → (Content-Type, extension). Nothing else is accepted.
FORMATS = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}
ACCEPTED = "PNG, JPEG, GIF or WebP"


class ImageRefused(Exception):
    """The file is not kept; the message says why, in words for the person who sent it."""


class NotAnImage(ImageRefused):
    pass


class ImageTooLarge(ImageRefused):
    """More bytes than ``MAX_IMAGE_BYTES`` (the API answers 413)."""


class TooManyPixels(NotAnImage):
    """More pixels than ``MAX_IMAGE_PIXELS``: a decompression bomb, or simply too big to show."""


@dataclass(frozen=True)
class Inspected:
    content_type: str
    extension: str
    width: int
    height: int
    size: int


def image_storage() -> Storage:
    """The storage images are kept in (the FileField asks once, when the model is loaded)."""
    return storages["images"]


def max_image_bytes() -> int:
    return settings.MAX_IMAGE_BYTES


def stored_name(document_id: uuid.UUID, image_id: uuid.UUID, extension: str) -> str:
    """Where an image is kept in its storage: the document's folder, a random name, the verified
    extension. The client's file name never reaches the storage or a response header."""
    return f"{document_id}/{image_id}.{extension}"


def inspect(file: IO[bytes], size: int) -> Inspected:
    """Says what ``file`` (``size`` bytes) is, or raises ``ImageRefused`` with a message.

    Reads the header (format, dimensions) and lets Pillow ``verify()`` the rest as far as the
    format allows (PNG: every chunk and checksum), without decoding pixels: a decompression
    bomb is refused by its announced size before anything is decompressed.
    """
    limit = max_image_bytes()
    if size > limit:
        raise ImageTooLarge(
            f"The image is {human_size(size)}; images are limited to {human_size(limit)}."
        )
    if size == 0:
        raise NotAnImage("The file is empty.")
    try:
        with Image.open(file, formats=list(FORMATS)) as image:
            width, height = image.size
            fmt = image.format or ""
            _check_pixels(width, height)
            image.verify()
    except Image.DecompressionBombError:
        raise TooManyPixels(_too_many_pixels()) from None
    except ImageRefused:
        raise
    except Exception:
        # Pillow raises many kinds of errors on hostile or broken input (OSError,
        # SyntaxError, ValueError, struct.error, ...): all of them mean the same here.
        file.seek(0)
        if _looks_like_svg(file.read(4096)):
            raise NotAnImage(
                f"SVG images are not accepted (they can carry scripts): use {ACCEPTED}."
            ) from None
        raise NotAnImage(f"The file is not an image collab accepts: use {ACCEPTED}.") from None
    finally:
        file.seek(0)
    content_type, extension = FORMATS[fmt]
    return Inspected(content_type, extension, width, height, size)


def _check_pixels(width: int, height: int) -> None:
    if width * height > settings.MAX_IMAGE_PIXELS:
        raise TooManyPixels(_too_many_pixels(width, height))


def _too_many_pixels(width: int = 0, height: int = 0) -> str:
    limit = settings.MAX_IMAGE_PIXELS
    size = f" ({width} × {height})" if width and height else ""
    return f"The image has too many pixels{size}; at most {limit:,} are accepted."


def _looks_like_svg(head: bytes) -> bool:
    """Only to word the refusal: Pillow does not read SVG, so it is refused either way."""
    return b"<svg" in head.lower()


def human_size(size: int) -> str:
    """A size for people: 512 → "512 bytes", 10485760 → "10.0 MiB"."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"
