"""Camera messages -> RGB numpy, for the node and the bag evaluator alike (no ROS imports).

Works on anything shaped like sensor_msgs/Image (height, width, encoding, step, data) or
sensor_msgs/CompressedImage (format, data): rclpy messages and rosbags' deserialised ones.

* Image in rgb8, bgr8, rgba8, bgra8 or mono8. rgb8 and rgba8 come back as a zero-copy view of
  the message buffer that honours `step` (row padding is skipped, not copied); bgr8/bgra8
  (channel reorder) and mono8 (channel expansion) need one copy. Other encodings (16UC1 depth,
  32FC1, bayer, yuv ...) are refused with the list of accepted ones. The buffer is read by
  `strided_pixels`, which the evaluator also uses for its mono8/mono16 ground-truth labels.
* CompressedImage holding a JPEG or PNG file (image_transport's "compressed" transport),
  decoded with OpenCV. The format string must name jpeg or png ("jpeg", "png",
  "rgb8; jpeg compressed bgr8", ...) or be empty (the bytes decide); any other codec (h264,
  theora, tiff, ...) and compressedDepth are refused: only PNG and JPEG headers are checked for
  absurd sizes before decoding.

Every refusal is an ImageConversionError whose `reason` is a short fixed key (for counters)
and whose message says what exactly was wrong.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from sfs_ros.core.frame import SfsError

#: Channels of each accepted input encoding.
CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
#: Larger sides or buffers are refused as corrupt headers rather than allocated.
MAX_SIDE = 1 << 15
MAX_BYTES = 1 << 30
#: Compressed images may not declare more pixels than this (checked before decoding, so a tiny
#: file cannot make the decoder allocate gigabytes).
MAX_PIXELS = 64 << 20
#: Reasons that concern the stream (every frame will fail the same way), not one frame.
STREAM_REASONS = ("unsupported encoding", "unsupported format", "depth image")
#: Codec names a CompressedImage format string may carry.
COMPRESSED_CODECS = ("jpeg", "jpg", "png")


class ImageConversionError(SfsError, ValueError):
    """A camera message that cannot be turned into an RGB frame; the message says why."""

    def __init__(self, message: str, reason: str = "invalid image") -> None:
        super().__init__(message)
        self.reason = reason


def strided_pixels(msg: Any, dtype: Any = np.uint8, channels: int = 1) -> np.ndarray:
    """(H, W, channels) view of a sensor_msgs/Image's data, read through `step`.

    The one reader of raw image buffers, for camera images (node and evaluator) and the
    evaluator's ground-truth label images alike: rows lie `step` bytes apart, so row padding
    is skipped, not copied; multi-byte pixels take their byte order from `is_bigendian`. Sizes
    are checked before anything is read: an empty or absurd header, a `step` shorter than a
    row or a buffer shorter than `step` x `height` raise ImageConversionError.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(dtype)
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    if height == 0 or width == 0:
        raise ImageConversionError(f"empty image: {width} x {height} pixels", reason="empty image")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageConversionError(
            f"absurd size {width} x {height}: sides above {MAX_SIDE} pixels are refused",
            reason="absurd size",
        )
    row = width * channels * dtype.itemsize
    if step < row:
        names, sizes = "width x channels", f"{width} x {channels}"
        if dtype.itemsize > 1:
            names, sizes = f"{names} x bytes", f"{sizes} x {dtype.itemsize}"
        raise ImageConversionError(f"step {step} is smaller than {names} = {sizes} = {row} bytes",
                                   reason="bad step")
    needed = step * height
    if needed > MAX_BYTES:
        raise ImageConversionError(f"absurd size: step x height = {needed} bytes", reason="absurd size")
    data = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    data = data.reshape(-1)
    if data.size < needed:
        raise ImageConversionError(
            f"data holds {data.size} bytes but step x height = {step} x {height} = {needed}",
            reason="short data",
        )
    # Rows `step` bytes apart, each a contiguous run of `row` bytes reinterpreted as pixels.
    rows = np.lib.stride_tricks.as_strided(data[:needed], shape=(height, row), strides=(step, 1))
    return rows.view(dtype).reshape(height, width, channels)


def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a sensor_msgs/Image; a view of `msg.data` for rgb8 and rgba8."""
    encoding = str(msg.encoding)
    if encoding not in CHANNELS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}: accepted are {', '.join(CHANNELS)}"
            + (" (depth and other 16-bit or float images are not camera colour images)"
               if encoding in ("16UC1", "mono16", "32FC1", "16SC1") else ""),
            reason="unsupported encoding",
        )
    pixels = strided_pixels(msg, np.uint8, CHANNELS[encoding])
    if encoding == "rgb8":
        return pixels
    if encoding == "rgba8":
        return pixels[:, :, :3]
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    # bgr8 / bgra8: the one case that must copy (a reversed view has negative strides, which
    # torch.from_numpy refuses).
    return np.ascontiguousarray(pixels[:, :, 2::-1])


#: File signatures of the codecs a CompressedImage may hold.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"


def codec_of(data: bytes | np.ndarray) -> str | None:
    """"png" or "jpeg" when the bytes start like such a file (the format names image_transport
    writes), else None: everything else must be re-encoded before it goes into a message."""
    head = bytes(data[:8])
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return None


def declared_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares, or None if it says nothing we can read."""
    head = bytes(data[:64])
    codec = codec_of(head)
    if codec == "png" and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if codec != "jpeg":
        return None
    raw, i = data, 2
    while i + 9 <= raw.size:  # JPEG: walk the marker segments up to the frame header (SOFn)
        if raw[i] != 0xFF:
            return None
        marker = int(raw[i + 1])
        length = (int(raw[i + 2]) << 8) | int(raw[i + 3])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (int(raw[i + 7]) << 8) | int(raw[i + 8]), (int(raw[i + 5]) << 8) | int(raw[i + 6])
        i += 2 + length
    return None


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a CompressedImage holding a JPEG or PNG file.

    image_transport compresses colour images as BGR and OpenCV decodes to BGR, so one flip
    gives RGB whatever the "rgb8; jpeg compressed bgr8" format prefix says. IMREAD_COLOR
    always decodes to 8 bits (a 16-bit PNG keeps its high bytes), so no depth conversion here.
    """
    import cv2

    fmt = str(msg.format)
    words = re.findall(r"[a-z0-9]+", fmt.lower())
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageConversionError(f"format {fmt!r} is a compressed depth image, not colour",
                                   reason="depth image")
    if words and not set(words) & set(COMPRESSED_CODECS):
        raise ImageConversionError(
            f"unsupported format {fmt!r}: CompressedImage must hold jpeg or png "
            "(image_transport's compressed transport)", reason="unsupported format")
    data = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    data = data.reshape(-1)
    if data.size == 0:
        raise ImageConversionError(f"empty compressed image (format {fmt!r})", reason="undecodable image")
    if data.size > MAX_BYTES:
        raise ImageConversionError(f"absurd compressed size: {data.size} bytes", reason="absurd size")
    size = declared_size(data)
    if size is not None and (max(size) > MAX_SIDE or size[0] * size[1] > MAX_PIXELS):
        raise ImageConversionError(
            f"absurd size {size[0]} x {size[1]} declared by the {fmt!r} header: sides above "
            f"{MAX_SIDE} or more than {MAX_PIXELS} pixels are refused before decoding",
            reason="absurd size",
        )
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise ImageConversionError(
            f"could not decode {data.size} bytes (format {fmt!r}): {exc.err or exc}",
            reason="undecodable image",
        ) from exc
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(
            f"could not decode {data.size} bytes as JPEG or PNG (format {fmt!r}): corrupt data?",
            reason="undecodable image",
        )
    if max(bgr.shape[:2]) > MAX_SIDE:
        raise ImageConversionError(
            f"absurd size {bgr.shape[1]} x {bgr.shape[0]} after decoding: sides above {MAX_SIDE} "
            "pixels are refused", reason="absurd size",
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
