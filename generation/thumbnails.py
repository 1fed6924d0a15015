"""Thumbnails: the small WebP images grids load instead of full-size outputs and previews.

Made once — by the GPU worker beside each job's output, and by the web process for an uploaded preview — and
served by signed URL like every object. Pillow only (no numpy, no torch), so both processes can use it.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from PIL import Image, ImageOps

THUMB_MAX_SIDE = 320
THUMB_NAME = "thumb.webp"
THUMB_CONTENT_TYPE = "image/webp"


def thumbnail_bytes(image: Image.Image) -> bytes:
    """`image` as a WebP at most THUMB_MAX_SIDE px on its long side (never enlarged), EXIF rotation applied."""
    image = ImageOps.exif_transpose(image)
    image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    image.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.LANCZOS)
    out = BytesIO()
    image.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()


def write_thumbnail(source: Path, target: Path) -> None:
    """The thumbnail of the image file `source` (a job's output PNG or poster) written to `target`."""
    with Image.open(source) as image:
        target.write_bytes(thumbnail_bytes(image))
