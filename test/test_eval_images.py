"""Image and label messages -> numpy: every encoding, row padding, byte order, bad buffers."""
import cv2
import numpy as np
import pytest

from sfs_ros.eval import images
from sfs_ros.eval.errors import BadFrame, EncodingError
from sfs_ros.eval.images import GT_IGNORE
from sfs_ros.eval.messages import Stamp, header, image, typestore
from eval_helpers import camera_msg, compressed_msg, label_msg, random_rgb

STAMP = Stamp(3, 4)


def roundtrip(msg):
    """Through CDR bytes and back, as a bag would give it."""
    store = typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_give_rgb(encoding, pad):
    rgb = random_rgb(48, 64, seed=1)
    out = images.to_rgb(roundtrip(camera_msg(STAMP, rgb, encoding, pad=pad)), images.IMAGE_TYPE)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(out, rgb)


def test_mono8_becomes_grey_rgb():
    rgb = random_rgb(40, 30, seed=2)
    out = images.to_rgb(roundtrip(camera_msg(STAMP, rgb, "mono8", pad=3)), images.IMAGE_TYPE)
    assert np.array_equal(out, np.repeat(rgb[:, :, :1], 3, axis=2))


def test_compressed_png_and_jpeg():
    rgb = random_rgb(64, 80, seed=3)
    png = images.to_rgb(roundtrip(compressed_msg(STAMP, rgb, "png")), images.COMPRESSED_TYPE)
    assert np.array_equal(png, rgb)  # lossless, and the BGR flip is undone
    jpeg = images.to_rgb(roundtrip(compressed_msg(STAMP, rgb, "jpeg")), images.COMPRESSED_TYPE)
    assert np.abs(jpeg.astype(int) - rgb).mean() < 12  # lossy, but the same colours, not swapped
    assert np.abs(jpeg[:, :, ::-1].astype(int) - rgb).mean() > 20


def test_unknown_encoding_is_an_error_naming_it():
    msg = camera_msg(STAMP, random_rgb(8, 8, 0), "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(EncodingError, match="'yuv422'.*rgb8"):
        images.to_rgb(msg, images.IMAGE_TYPE)
    depth = compressed_msg(STAMP, random_rgb(8, 8, 0), "png")
    depth.format = "16UC1; compressedDepth png"
    with pytest.raises(EncodingError, match="depth"):
        images.to_rgb(depth, images.COMPRESSED_TYPE)


def test_short_buffer_bad_step_and_garbage_are_bad_frames():
    msg = camera_msg(STAMP, random_rgb(16, 16, 0), "rgb8")
    msg.data = msg.data[:-10]
    with pytest.raises(BadFrame, match="short data") as info:
        images.to_rgb(msg, images.IMAGE_TYPE)
    assert info.value.reason == "short data"
    msg = camera_msg(STAMP, random_rgb(16, 16, 0), "rgb8")
    msg.step = 10
    with pytest.raises(BadFrame, match="bad step"):
        images.to_rgb(msg, images.IMAGE_TYPE)
    broken = compressed_msg(STAMP, random_rgb(16, 16, 0), "jpeg")
    broken.data = np.frombuffer(b"\xff\xd8 not a jpeg at all", np.uint8)
    with pytest.raises(BadFrame, match="undecodable image"):
        images.to_rgb(broken, images.COMPRESSED_TYPE)


def test_labels_mono8_mono16_big_endian_and_png():
    ids = np.array([[0, 1, 255], [2, 254, 0]], np.uint8)
    out = images.to_labels(roundtrip(label_msg(STAMP, ids, "mono8")), images.IMAGE_TYPE)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 1, GT_IGNORE], [2, 254, 0]]
    wide = np.array([[0, 300, 65535], [149, 255, 1]], np.uint16)
    out = images.to_labels(roundtrip(label_msg(STAMP, wide, "mono16")), images.IMAGE_TYPE)
    assert out.tolist() == [[0, 300, GT_IGNORE], [149, 255, 1]]  # 255 is a class in mono16
    big = image(header(STAMP, "cam"), wide.astype(">u2"), "mono16")
    big.is_bigendian = 1
    big.data = np.frombuffer(wide.astype(">u2").tobytes(), np.uint8)
    assert images.to_labels(big, images.IMAGE_TYPE).tolist() == out.tolist()
    custom = images.to_labels(roundtrip(label_msg(STAMP, ids, "mono8")), images.IMAGE_TYPE, ignore=0)
    assert custom.tolist() == [[GT_IGNORE, 1, 255], [2, 254, GT_IGNORE]]
    ok, png = cv2.imencode(".png", ids)
    msg = roundtrip(compressed_msg(STAMP, random_rgb(4, 4, 0), "png"))
    msg.data = np.frombuffer(png.tobytes(), np.uint8)
    assert images.to_labels(msg, images.COMPRESSED_TYPE).tolist() == [[0, 1, GT_IGNORE], [2, 254, 0]]


def test_lossy_or_colour_labels_are_refused():
    msg = compressed_msg(STAMP, random_rgb(8, 8, 0), "jpeg")
    with pytest.raises(EncodingError, match="lossy"):
        images.to_labels(msg, images.COMPRESSED_TYPE)
    with pytest.raises(EncodingError, match="'rgb8'.*class ids"):
        images.to_labels(camera_msg(STAMP, random_rgb(8, 8, 0), "rgb8"), images.IMAGE_TYPE)


@pytest.mark.parametrize("change, reason", [
    ({"step": 11}, "bad step"),  # a mono16 row of 6 pixels needs 12 bytes
    ({"height": 9}, "short data"),
    ({"width": 0}, "empty image"),
    ({"height": 40_000}, "absurd size"),  # refused from the header, before the buffer is looked at
], ids=["bad-step", "short-data", "empty", "absurd-height"])
def test_label_buffers_are_refused_by_the_node_reader(change, reason):
    """Labels and camera images share one strided reader (image_codec.strided_pixels): a label
    buffer that does not fit its header is a BadFrame with the node decoder's reason and words."""
    from sfs_ros.ros import image_codec

    msg = roundtrip(label_msg(STAMP, np.zeros((4, 6)), "mono16"))
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(image_codec.ImageConversionError) as node:
        image_codec.strided_pixels(msg, np.uint16, 1)
    with pytest.raises(BadFrame) as label:
        images.to_labels(msg, images.IMAGE_TYPE)
    assert label.value.reason == node.value.reason == reason
    assert label.value.detail == str(node.value)


def test_padded_big_endian_labels_read_through_step():
    """Odd row padding (step not a multiple of 2) and big-endian mono16 ids, read as the node
    reads camera rows: padding bytes never become ids."""
    wide = np.array([[0, 300, 65535], [149, 255, 1]], np.uint16)
    rows = np.full((2, 7), 0xAB, np.uint8)  # 6 bytes of ids + 1 byte of padding per row
    rows[:, :6] = wide.astype(">u2").view(np.uint8).reshape(2, 6)
    msg = image(header(STAMP, "cam"), wide, "mono16")
    msg.is_bigendian, msg.step, msg.data = 1, 7, rows.reshape(-1)
    assert images.to_labels(msg, images.IMAGE_TYPE).tolist() == [[0, 300, GT_IGNORE], [149, 255, 1]]
