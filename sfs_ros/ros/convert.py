"""sensor_msgs <-> numpy, and core Results -> sfs_ros messages. No model code, no node.

Input images become the RGB `Frame.image` of the core's colour contract, checked first so a bad
message raises `ImageConversionError` with the reason instead of crashing a stage later:

* sensor_msgs/Image in rgb8, bgr8, rgba8, bgra8 or mono8. rgb8 and rgba8 come back as a
  zero-copy view of the message buffer that honours `step` (row padding is skipped, not copied);
  bgr8/bgra8 (channel reorder) and mono8 (channel expansion) need one copy. Other encodings
  (16UC1 depth, 32FC1, bayer, yuv ...) are refused with the list of accepted ones.
* sensor_msgs/CompressedImage holding a JPEG or PNG file (image_transport's "compressed"
  transport), decoded with OpenCV; other formats and compressedDepth are refused.

Outputs are sensor_msgs/Image in mono16, mono8 or rgb8 with the caller's header, and the
sfs_ros/InstanceArray and sfs_ros/LabelInfo messages (fields filled by `message_fields`, shared
with the evaluator's bag writer).
"""
from __future__ import annotations

import array
import sys
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header

from sfs_ros.core import fusion
from sfs_ros.core.frame import UNLABELED, UNLABELED_MONO8, Frame, Result
from sfs_ros.core.vocabulary import Vocabulary
from sfs_ros.msg import ClassScore, Instance, InstanceArray, LabelClass, LabelInfo
from sfs_ros.ros import message_fields
from sfs_ros.ros.image_codec import (  # noqa: F401 - part of this module's interface
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
)

MESSAGE_CLASSES = message_fields.MessageClasses(
    Instance=Instance, InstanceArray=InstanceArray, ClassScore=ClassScore,
    RegionOfInterest=RegionOfInterest, LabelClass=LabelClass, LabelInfo=LabelInfo, ColorRGBA=ColorRGBA,
    Point=Point, Vector3=Vector3,
)
#: Output encodings: numpy dtype and channels.
OUTPUT_ENCODINGS = {"mono8": (np.uint8, 1), "mono16": (np.uint16, 1), "rgb8": (np.uint8, 3)}

# ---------------------------------------------------------------------- messages -> numpy
def to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """RGB pixels of either camera message type."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg)
    if isinstance(msg, Image):
        return image_to_rgb(msg)
    raise ImageConversionError(f"expected sensor_msgs Image or CompressedImage, got {type(msg).__name__}")


def to_frame(msg: Image | CompressedImage, source: str = "", seq: int = 0) -> Frame:
    """The core Frame of a camera message: RGB pixels plus the ROS stamp and frame_id."""
    return Frame(
        image=to_rgb(msg),
        stamp=msg.header.stamp,
        frame_id=msg.header.frame_id,
        source=source,
        seq=seq,
        time=stamp_seconds(msg.header.stamp),
    )


def header_of(frame: Frame) -> Header:
    """The header of every output built from `frame`: the input image's stamp and frame_id."""
    header = Header(frame_id=frame.frame_id)
    if frame.stamp is not None:
        header.stamp = frame.stamp
    return header


# ---------------------------------------------------------------------- numpy -> messages
def numpy_to_image(pixels: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """sensor_msgs/Image of an (H, W) mono8/mono16 or (H, W, 3) rgb8 array (one copy)."""
    if encoding not in OUTPUT_ENCODINGS:
        raise ImageConversionError(
            f"cannot publish encoding {encoding!r}: use one of {', '.join(OUTPUT_ENCODINGS)}"
        )
    dtype, channels = OUTPUT_ENCODINGS[encoding]
    shape_ok = pixels.ndim == (2 if channels == 1 else 3) and (channels == 1 or pixels.shape[2] == channels)
    if pixels.dtype != dtype or not shape_ok:
        raise ImageConversionError(
            f"{encoding} needs a {np.dtype(dtype).name} array of "
            f"{'(H, W)' if channels == 1 else '(H, W, 3)'}, got {pixels.dtype} {pixels.shape}"
        )
    height, width = pixels.shape[:2]
    pixels = np.ascontiguousarray(pixels)
    data = array.array("B")
    data.frombytes(pixels.view(np.uint8).reshape(-1))
    return Image(
        header=header if header is not None else Header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=pixels.dtype.itemsize > 1 and sys.byteorder == "big",
        step=width * channels * pixels.dtype.itemsize,
        data=data,
    )


def label_image_msg(label_image: np.ndarray, encoding: str, header: Header) -> Image:
    """The class-id image as mono16 (unlabeled 65535) or mono8 (unlabeled 255)."""
    if encoding == "mono8":
        return numpy_to_image(fusion.to_mono8(label_image), "mono8", header)
    return numpy_to_image(label_image, "mono16", header)


def unlabeled_value(encoding: str) -> int:
    return UNLABELED_MONO8 if encoding == "mono8" else UNLABELED


def result_to_instances(result: Result, header: Header, indices: Any = None) -> InstanceArray:
    """One Instance per mask (or per mask of `indices`, in that order): class, score, top-k
    proposals, box, area and the mask itself."""
    return message_fields.instance_array(
        result, header, MESSAGE_CLASSES, lambda crop: numpy_to_image(crop, "mono8", header), indices)


def vocabulary_to_label_info(
    vocabulary: Vocabulary,
    header: Header,
    *,
    encoding: str = "mono16",
    threshold: float = 0.0,
    threshold_kind: str = "clip_probability",
    vocabulary_version: int = 0,
    random_weights: bool = False,
) -> LabelInfo:
    """What the label image values mean: class id -> name -> colour (RGBA in 0..1)."""
    return message_fields.label_info(
        ((c.id, c.name, c.color) for c in vocabulary.classes), header, MESSAGE_CLASSES,
        vocabulary=vocabulary.name, unlabeled_value=unlabeled_value(encoding),
        threshold=threshold, threshold_kind=threshold_kind,
        vocabulary_version=vocabulary_version, random_weights=random_weights,
    )


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time as float seconds (for logs and tests)."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9
