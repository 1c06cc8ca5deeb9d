"""Check encoded image bytes before they reach the graph.

The serving graph decodes `images` itself; a request whose bytes are not an image, are
cut short, or would decode to a huge canvas must be refused up front with a message
naming the element, and without paying for a decode. This walks the JPEG marker
segments / PNG chunks (no pixel decoding, microseconds per image): it finds the format,
the size in pixels from the header, and whether the stream reaches its end marker
(JPEG EOI after the scan, PNG IEND), which is what a truncated upload lacks.
"""
import dataclasses

from serving import errors

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG), CC (DAC) share the range but don't.
_JPEG_SOF = {0xC0 + i for i in range(16)} - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = {0x01} | {0xD0 + i for i in range(8)}


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """Largest accepted image; 0 disables a limit."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" or "png"
    height: int
    width: int


def _jpeg_info(data: bytes) -> tuple[int, int]:
    """(height, width) of a baseline/progressive JPEG; ValueError when malformed or cut."""
    pos, size = 2, None
    while True:
        if pos + 4 > len(data):
            raise ValueError("truncated JPEG: no start-of-scan marker before the end of the data")
        if data[pos] != 0xFF:
            raise ValueError(f"malformed JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise ValueError(f"malformed JPEG: segment length {length} at byte {pos}")
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                raise ValueError("truncated JPEG: frame header cut short")
            size = (int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(data[pos + 7 : pos + 9], "big"))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            scan = pos + 2 + length
            break
        pos += 2 + length
    if size is None:
        raise ValueError("malformed JPEG: no frame header (SOF) before the scan")
    # Inside entropy-coded data 0xFF is followed by 0x00 or RSTn, so FF D9 is the real EOI.
    if data.find(b"\xff\xd9", scan) < 0:
        raise ValueError("truncated JPEG: the data ends before the end-of-image marker")
    return size


def _png_info(data: bytes) -> tuple[int, int]:
    """(height, width) of a PNG; ValueError when malformed or cut."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError("malformed PNG: no IHDR chunk")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            break
        if kind == b"IEND":
            return height, width
        pos = end
    raise ValueError("truncated PNG: the data ends before the IEND chunk")


def inspect_image(data: bytes) -> ImageInfo:
    """Format and size of encoded image bytes; ValueError naming what is wrong."""
    if data.startswith(_JPEG_SOI):
        height, width = _jpeg_info(data)
        fmt = "jpeg"
    elif data.startswith(_PNG_SIGNATURE):
        height, width = _png_info(data)
        fmt = "png"
    else:
        raise ValueError(f"not a JPEG or PNG image ({len(data)} bytes starting {data[:8]!r})")
    if height <= 0 or width <= 0:
        raise ValueError(f"{fmt.upper()} header declares an empty image ({height}x{width})")
    return ImageInfo(fmt, height, width)


def check_images(images, limits: ImageLimits, input_name: str = "images") -> list[ImageInfo]:
    """Validate every element of a batch of encoded images; raise ServingError on the first bad one.

    Args:
      images: iterable of `bytes` (the flattened string tensor).
      limits: size limits; an image over one of them is RESOURCE_EXHAUSTED.
      input_name: the input alias, used in messages.
    """
    infos = []
    for i, data in enumerate(images):
        where = f"input '{input_name}'[{i}]"
        if limits.max_bytes and len(data) > limits.max_bytes:
            raise errors.resource_exhausted(
                f"{where}: image is {len(data)} bytes, over the server limit of {limits.max_bytes} bytes"
            )
        try:
            info = inspect_image(data)
        except ValueError as e:
            raise errors.invalid_argument(f"{where}: {e}") from None
        if limits.max_pixels and info.height * info.width > limits.max_pixels:
            raise errors.resource_exhausted(
                f"{where}: image is {info.height}x{info.width} = {info.height * info.width} pixels, "
                f"over the server limit of {limits.max_pixels} pixels"
            )
        infos.append(info)
    return infos
