"""sensor_msgs Image / CompressedImage (as decoded by rosbags) -> numpy, without ROS.

Camera images go through the node's own decoder (`sfs_ros.ros.image_codec`), so a bag is read
exactly as the node would read it live; raw label images go through its strided reader too.
Label images keep their integer ids; their "ignore" value becomes `GT_IGNORE` so metrics see
one convention whatever the encoding.

Problems are reported in two ways (see `errors`): an encoding we do not read is an
`EncodingError` (the whole topic is unusable), a buffer that does not fit its own header or a
compressed image that does not decode is a `BadFrame` (that frame is skipped and counted).
"""
from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from sfs_ros.eval.errors import BadFrame, EncodingError
from sfs_ros.ros import image_codec
from sfs_ros.ros.image_codec import STREAM_REASONS, ImageConversionError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
#: Ground-truth value of pixels that do not count (after decoding, whatever the encoding).
GT_IGNORE = 65535

#: label encodings -> pixel dtype (mono16 byte order comes from is_bigendian)
LABEL_ENCODINGS: dict[str, np.dtype] = {
    "mono8": np.dtype(np.uint8),
    "8UC1": np.dtype(np.uint8),
    "mono16": np.dtype(np.uint16),
    "16UC1": np.dtype(np.uint16),
}
#: Compressed formats that decode losslessly, hence usable for label ids.
LOSSLESS_FORMATS = ("png",)


def pixels(msg: Any, dtype: np.dtype, channels: int) -> np.ndarray:
    """(H, W, C) copy of an Image message's data, read through `step` by the node's own reader
    (`image_codec.strided_pixels`), so labels and camera images are read and refused alike.

    Raises BadFrame (empty image, absurd size, bad step, short data) when the buffer does not
    fit its header.
    """
    return _decoded(lambda m: image_codec.strided_pixels(m, dtype, channels), msg)


def _decoded(convert: Callable[[Any], np.ndarray], msg: Any) -> np.ndarray:
    """The node's decoder, with its refusals sorted: a stream that can never decode
    (unsupported encoding, depth) stops the run; one bad frame is skipped and counted."""
    try:
        return np.ascontiguousarray(convert(msg))
    except ImageConversionError as exc:
        if exc.reason in STREAM_REASONS:
            raise EncodingError(str(exc)) from exc
        raise BadFrame(exc.reason, str(exc)) from exc


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image in rgb8, bgr8, rgba8, bgra8 or mono8 -> (H, W, 3) uint8 RGB copy."""
    return _decoded(image_codec.image_to_rgb, msg)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ... as image_transport writes them) -> RGB."""
    return _decoded(image_codec.compressed_to_rgb, msg)


def to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """Any supported camera message -> RGB."""
    if msgtype == IMAGE_TYPE:
        return image_to_rgb(msg)
    if msgtype == COMPRESSED_TYPE:
        return compressed_to_rgb(msg)
    raise EncodingError(f"message type {msgtype} is not an image; use {' or '.join(IMAGE_TYPES)}")


def to_labels(msg: Any, msgtype: str, ignore: int | None = None) -> np.ndarray:
    """A ground-truth class-id image -> (H, W) uint16 with `ignore` pixels set to GT_IGNORE.

    Raw Image in mono8/8UC1/mono16/16UC1, or a CompressedImage in a lossless format (png);
    JPEG is refused because lossy compression changes ids at every edge. `ignore` defaults to
    255 for 8-bit and 65535 for 16-bit labels.
    """
    if msgtype == IMAGE_TYPE:
        encoding = str(msg.encoding)
        if encoding not in LABEL_ENCODINGS:
            raise EncodingError(
                f"label encoding {encoding!r} is not supported; ground truth must be class ids "
                f"in one of {', '.join(LABEL_ENCODINGS)}"
            )
        dtype = LABEL_ENCODINGS[encoding]
        ids = pixels(msg, dtype, 1)[:, :, 0].astype(np.uint16)
    elif msgtype == COMPRESSED_TYPE:
        fmt = str(msg.format)
        if not any(f in fmt.lower() for f in LOSSLESS_FORMATS):
            raise EncodingError(f"label format {fmt!r} is lossy or unknown; labels must be png")
        decoded = _imdecode(msg.data, cv2.IMREAD_UNCHANGED, fmt)
        if decoded.ndim != 2:
            raise EncodingError(f"label png has {decoded.shape[2]} channels; class ids need one")
        dtype, ids = decoded.dtype, decoded.astype(np.uint16)
    else:
        raise EncodingError(f"message type {msgtype} cannot carry labels; use {IMAGE_TYPE}")
    if ignore is None:
        ignore = 255 if np.dtype(dtype).itemsize == 1 else GT_IGNORE
    if ignore != GT_IGNORE:
        ids[ids == ignore] = GT_IGNORE
    return ids


def _imdecode(data: Any, flags: int, fmt: str) -> np.ndarray:
    buffer = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    decoded = cv2.imdecode(buffer.reshape(-1), flags) if buffer.size else None
    if decoded is None:
        raise BadFrame("undecodable image", f"{buffer.size} bytes of format {fmt!r}")
    return decoded
