"""Safe image loading for ingestion: path containment, full decode, RGB, EXIF.

What a written example holds: JPEG or PNG bytes of an RGB image whose pixel
grid is the one the annotations refer to, with the declared COCO width/height.
`tf.io.decode_image` ignores EXIF, so any orientation must be baked into the
pixels at ingestion.

Decisions:
- Bytes are kept unchanged when the file is an RGB JPEG/PNG whose pixels need
  no change (the common case: no re-encoding loss).
- Grey, CMYK, palette and alpha images are converted to RGB (alpha dropped,
  colour kept) and re-encoded: JPEG sources as JPEG quality 95, others as PNG.
  Other formats (BMP, GIF, WebP, TIFF) are re-encoded as PNG.
- EXIF orientation: applied when the oriented size equals the declared size
  (the annotations were drawn on what a viewer shows); for orientations 5-8
  whose raw size equals a non-square declared size, the raw grid is kept (the
  annotations were drawn on the stored pixels); any other size disagreement
  rejects the image (`image_size_mismatch`).
"""
import io
import os
import posixpath
from dataclasses import dataclass, field

from PIL import Image, ImageFile, ImageOps

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)


class ImageRejected(Exception):
    """A bad image: `reason` is a data/validate.py REASONS key."""

    def __init__(self, reason, detail=""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = str(detail)


@dataclass
class LoadedImage:
    encoded: bytes
    format: str  # "jpeg" or "png"
    height: int
    width: int
    notes: list = field(default_factory=list)  # repaired-reasons applied (report entries)


def _is_url(path):
    return "://" in path


def resolve_image_path(image_dir, file_name):
    """image_dir / file_name, refusing names that leave image_dir (ImageRejected)."""
    if (not file_name or file_name.startswith(("/", "\\")) or os.path.isabs(file_name)
            or (len(file_name) > 1 and file_name[1] == ":")):
        raise ImageRejected("image_path_escapes", file_name)
    if _is_url(image_dir):
        normalized = posixpath.normpath(file_name.replace("\\", "/"))
        if normalized == ".." or normalized.startswith("../"):
            raise ImageRejected("image_path_escapes", file_name)
        return image_dir.rstrip("/") + "/" + normalized
    base = os.path.realpath(image_dir)
    path = os.path.realpath(os.path.join(base, file_name))
    if os.path.commonpath([base, path]) != base:
        raise ImageRejected("image_path_escapes", file_name)
    return path


def read_bytes(path):
    """File bytes, ImageRejected("image_missing") when absent."""
    try:
        if _is_url(path):  # gs://, s3://, hdfs:// through Beam's FileSystems
            from apache_beam.io.filesystems import FileSystems

            if not FileSystems.exists(path):
                raise FileNotFoundError(path)
            with FileSystems.open(path) as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise ImageRejected("image_missing", path) from e


def _decode(data):
    """Fully decoded PIL image (verify + load), ImageRejected otherwise."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must be False for ingestion")
    try:
        Image.open(io.BytesIO(data)).verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Image.DecompressionBombError as e:
        raise ImageRejected("image_undecodable", e) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = "image_truncated" if "truncated" in str(e).lower() else "image_undecodable"
        raise ImageRejected(reason, e) from e


def _orient(image, height, width):
    """Apply or keep EXIF orientation so the grid is (height, width); see module doc."""
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    raw = (image.height, image.width)
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        oriented = raw[::-1] if orientation in _SWAPS_AXES else raw
        if oriented == (height, width):
            return ImageOps.exif_transpose(image), True
    if raw == (height, width):
        return image, False
    raise ImageRejected("image_size_mismatch",
                        f"declared {height}x{width}, decoded {raw[0]}x{raw[1]} (EXIF orientation {orientation})")


def load_image(path, height, width):
    """Read, decode and normalize one image to RGB JPEG/PNG bytes of size (height, width)."""
    data = read_bytes(path)
    image = _decode(data)
    source_format = (image.format or "").upper()
    notes = []
    image, transposed = _orient(image, height, width)
    if transposed:
        notes.append("image_exif_transposed")
    if image.mode != "RGB":
        notes.append("image_converted_to_rgb")
        image = image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB")
    if not notes and source_format in ("JPEG", "PNG"):
        return LoadedImage(data, source_format.lower(), height, width, notes)
    out = io.BytesIO()
    if source_format == "JPEG":
        image.save(out, format="JPEG", quality=95)
        fmt = "jpeg"
    else:
        image.save(out, format="PNG")
        fmt = "png"
    return LoadedImage(out.getvalue(), fmt, height, width, notes)
