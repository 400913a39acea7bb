"""sensor_msgs <-> numpy and Result -> sfs_ros messages (sfs_ros.ros.convert); no DDS needed."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sfs_ros.core.frame import UNLABELED, UNLABELED_CLASS, Frame, Labels, Masks, Result, SfsError
from sfs_ros.core.segmenter import boxes_from_masks
from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.ros import convert
from sfs_ros.ros.convert import ImageConversionError

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def make_image(pixels: np.ndarray, encoding: str, pad: int = 0, fill: int = 0xAB) -> Image:
    """An Image message of `pixels` (H, W, C) with `pad` garbage bytes after each row."""
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.full((h, rows.shape[1] + pad), fill, np.uint8)
    padded[:, : rows.shape[1]] = rows
    return Image(
        header=Header(stamp=Time(sec=12, nanosec=345), frame_id="cam_optical"),
        height=h, width=w, encoding=encoding, step=padded.shape[1],
        data=array.array("B", padded.tobytes()),
    )


def encoded(encoding: str) -> np.ndarray:
    """RGB turned into the channel layout of `encoding`."""
    alpha = np.full(RGB.shape[:2] + (1,), 200, np.uint8)
    return {
        "rgb8": RGB,
        "bgr8": RGB[:, :, ::-1],
        "rgba8": np.concatenate([RGB, alpha], axis=2),
        "bgra8": np.concatenate([RGB[:, :, ::-1], alpha], axis=2),
        "mono8": RGB[:, :, :1],
    }[encoding]


# ---------------------------------------------------------------------- Image -> RGB
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_each_encoding_gives_rgb(encoding, pad):
    msg = make_image(encoded(encoding), encoding, pad=pad)
    rgb = convert.image_to_rgb(msg)
    expected = np.repeat(RGB[:, :, :1], 3, axis=2) if encoding == "mono8" else RGB
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected)
    assert all(s > 0 for s in rgb.strides), "negative strides break torch.from_numpy"


@pytest.mark.parametrize("encoding", ["rgb8", "rgba8"])
def test_rgb_and_rgba_are_zero_copy_views_honouring_step(encoding):
    msg = make_image(encoded(encoding), encoding, pad=3)
    rgb = convert.image_to_rgb(msg)
    assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    assert rgb.strides[0] == msg.step
    np.testing.assert_array_equal(rgb, RGB)


def test_reordered_encodings_copy_once():
    msg = make_image(encoded("bgr8"), "bgr8", pad=2)
    rgb = convert.image_to_rgb(msg)
    assert not np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
    assert rgb.flags.c_contiguous


def test_extra_trailing_bytes_are_ignored():
    msg = make_image(RGB, "rgb8")
    msg.data.frombytes(b"\x00" * 11)
    np.testing.assert_array_equal(convert.image_to_rgb(msg), RGB)


def _bad(**changes):
    msg = make_image(RGB, "rgb8")
    for key, value in changes.items():
        setattr(msg, key, value)
    return msg


@pytest.mark.parametrize(
    "msg, words",
    [
        (_bad(encoding="16UC1"), "unsupported encoding '16UC1'"),
        (_bad(encoding="yuv422"), "accepted are rgb8"),
        (_bad(encoding=""), "unsupported encoding ''"),
        (_bad(width=0), "empty image"),
        (_bad(height=0), "empty image"),
        (_bad(step=20), "step 20 is smaller than width x channels"),
        (_bad(height=6), "data holds 105 bytes but step x height"),
        (_bad(data=array.array("B")), "data holds 0 bytes"),
        (_bad(width=100000, step=300000), "absurd size"),
        (_bad(width=30000, height=30000, step=90000), "absurd size"),
    ],
    ids=["16UC1", "yuv", "no-encoding", "zero-width", "zero-height", "short-step",
         "short-data", "no-data", "huge-side", "huge-buffer"],
)
def test_bad_images_raise_with_a_reason(msg, words):
    with pytest.raises(ImageConversionError, match=words.replace("(", r"\(")) as info:
        convert.image_to_rgb(msg)
    assert isinstance(info.value, SfsError)


def test_to_frame_keeps_stamp_frame_id_and_source():
    msg = make_image(RGB, "bgr8")
    frame = convert.to_frame(msg, source="/cam/image_raw", seq=9)
    assert isinstance(frame, Frame)
    assert (frame.stamp.sec, frame.stamp.nanosec) == (12, 345)
    assert frame.frame_id == "cam_optical" and frame.source == "/cam/image_raw" and frame.seq == 9
    header = convert.header_of(frame)
    assert header.frame_id == "cam_optical" and header.stamp.sec == 12


# ---------------------------------------------------------------------- CompressedImage
@pytest.fixture(scope="module")
def picture(photo):
    return np.ascontiguousarray(photo[:120, :160])


@pytest.mark.parametrize("fmt, ext", [("png", ".png"), ("jpeg", ".jpg"), ("rgb8; jpeg compressed bgr8", ".jpg")])
def test_compressed_round_trip(picture, fmt, ext):
    ok, data = cv2.imencode(ext, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format=fmt, data=array.array("B", data.tobytes()))
    rgb = convert.to_rgb(msg)
    assert rgb.shape == picture.shape and rgb.dtype == np.uint8
    error = np.abs(rgb.astype(int) - picture.astype(int)).mean()
    assert error == 0 if ext == ".png" else error < 6  # jpeg is lossy, colours stay in place


@pytest.mark.parametrize(
    "fmt, data, words",
    [
        ("jpeg", b"", "empty compressed image"),
        ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg", "could not decode"),
        ("png", bytes(range(256)) * 4, "could not decode"),
        ("16UC1; compressedDepth png", b"\x89PNG....", "compressed depth"),
        ("h264", b"\x00\x00\x00\x01\x67", "unsupported format 'h264'"),
        ("bgr8; tiff compressed bgr8", b"II*\x00", "unsupported format"),
    ],
    ids=["empty", "corrupt-jpeg", "random-bytes", "compressedDepth", "h264", "tiff"],
)
def test_bad_compressed_raise_with_a_reason(fmt, data, words):
    msg = CompressedImage(format=fmt, data=array.array("B", data))
    with pytest.raises(ImageConversionError, match=words):
        convert.to_rgb(msg)


# ---------------------------------------------------------------------- numpy -> Image
@pytest.mark.parametrize(
    "encoding, pixels",
    [
        ("mono16", np.array([[0, 1, 65535], [300, 2, 7]], np.uint16)),
        ("mono8", np.array([[0, 255, 3], [4, 5, 6]], np.uint8)),
        ("rgb8", RGB),
    ],
)
def test_numpy_to_image_round_trip(encoding, pixels):
    header = Header(stamp=Time(sec=3, nanosec=4), frame_id="f")
    msg = convert.numpy_to_image(pixels, encoding, header)
    assert (msg.encoding, msg.height, msg.width) == (encoding, pixels.shape[0], pixels.shape[1])
    assert msg.step == pixels.shape[1] * pixels.itemsize * (3 if encoding == "rgb8" else 1)
    assert len(msg.data) == msg.step * msg.height
    assert msg.header.stamp.sec == 3 and msg.header.frame_id == "f"
    back = np.frombuffer(msg.data, pixels.dtype).reshape(pixels.shape)
    np.testing.assert_array_equal(back, pixels)


def test_numpy_to_image_refuses_wrong_arrays():
    with pytest.raises(ImageConversionError, match="mono16 needs a uint16"):
        convert.numpy_to_image(np.zeros((2, 2), np.uint8), "mono16")
    with pytest.raises(ImageConversionError, match="cannot publish encoding 'bgr8'"):
        convert.numpy_to_image(RGB, "bgr8")
    with pytest.raises(ImageConversionError, match=r"\(H, W, 3\)"):
        convert.numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")


def test_label_image_mono8_maps_unlabeled_to_255():
    label = np.array([[0, 1], [UNLABELED, 2]], np.uint16)
    msg = convert.label_image_msg(label, "mono8", Header())
    assert msg.encoding == "mono8"
    assert np.frombuffer(msg.data, np.uint8).tolist() == [0, 1, 255, 2]
    msg16 = convert.label_image_msg(label, "mono16", Header())
    assert msg16.encoding == "mono16" and np.frombuffer(msg16.data, np.uint16).tolist() == [0, 1, 65535, 2]


# ---------------------------------------------------------------------- Result -> messages
@pytest.fixture
def result():
    h, w = 6, 8
    masks = np.zeros((2, h, w), bool)
    masks[0, 1:4, 2:7] = True  # 3 x 5 box
    masks[1, 4:6, 0:2] = True
    masks[1, 5, 1] = False
    names = ("cup", "table", "floor")
    m = Masks(masks=masks, boxes=boxes_from_masks(masks), scores=np.array([0.9, 0.4], np.float32),
              areas=masks.sum(axis=(1, 2)))
    labels = Labels(
        class_ids=np.array([1, UNLABELED_CLASS], np.int32),
        scores=np.array([0.7, 0.05], np.float32),
        topk_ids=np.array([[1, 0], [2, 1]], np.int32),
        topk_scores=np.array([[0.7, 0.2], [0.05, 0.04]], np.float32),
    )
    label_image = np.full((h, w), UNLABELED, np.uint16)
    label_image[masks[0]] = 1
    instance_image = np.zeros((h, w), np.uint16)
    instance_image[masks[0]] = 1
    instance_image[masks[1]] = 2
    return Result(
        frame=Frame(np.zeros((h, w, 3), np.uint8), stamp=Time(sec=5), frame_id="cam"),
        masks=m, labels=labels, label_image=label_image, instance_image=instance_image,
        overlay=None, class_names=names, vocabulary_name="custom", random_weights=True,
    )


def test_result_to_instances(result):
    header = convert.header_of(result.frame)
    msg = convert.result_to_instances(result, header)
    assert (msg.height, msg.width, msg.random_weights) == (6, 8, True)
    assert msg.header.stamp.sec == 5 and msg.header.frame_id == "cam"
    first, second = msg.instances
    assert (first.instance_id, first.class_id, first.class_name) == (1, 1, "table")
    assert first.score == pytest.approx(0.7) and first.mask_score == pytest.approx(0.9)
    assert [(p.class_id, p.class_name) for p in first.proposals] == [(1, "table"), (0, "cup")]
    assert (first.box.x_offset, first.box.y_offset, first.box.width, first.box.height) == (2, 1, 5, 3)
    assert first.area == 15
    assert (first.mask.encoding, first.mask.width, first.mask.height) == ("mono8", 5, 3)
    assert set(first.mask.data) == {255}
    # unlabeled: class -1, no name, score 0, proposals still listed
    assert (second.instance_id, second.class_id, second.class_name, second.score) == (
        2, UNLABELED_CLASS, "", 0.0)
    assert second.class_id == second.UNLABELED_CLASS
    assert [p.class_name for p in second.proposals] == ["floor", "table"]
    mask = np.frombuffer(second.mask.data, np.uint8).reshape(second.mask.height, second.mask.width)
    assert mask.tolist() == [[255, 255], [255, 0]] and second.area == 3
    assert second.mask.header.stamp.sec == 5


def test_empty_result_gives_no_instances(result):
    result.masks = Masks.empty(6, 8)
    result.labels = Labels.empty(2)
    msg = convert.result_to_instances(result, Header())
    assert msg.instances == [] and (msg.height, msg.width) == (6, 8)


@pytest.mark.parametrize("encoding, unlabeled", [("mono16", 65535), ("mono8", 255)])
def test_vocabulary_to_label_info(encoding, unlabeled):
    vocabulary = load_vocabulary(["cup, mug", "table"])
    msg = convert.vocabulary_to_label_info(
        vocabulary, Header(frame_id="x"), encoding=encoding, threshold=0.25, random_weights=True
    )
    assert msg.vocabulary == "custom" and msg.header.frame_id == "x"
    assert [(c.class_id, c.name) for c in msg.classes] == [(0, "cup"), (1, "table")]
    for cls, vc in zip(msg.classes, vocabulary.classes):
        assert (round(cls.color.r * 255), round(cls.color.g * 255), round(cls.color.b * 255)) == vc.color
        assert cls.color.a == 1.0
    assert msg.unlabeled_value == unlabeled
    assert msg.threshold == pytest.approx(0.25) and msg.random_weights


def test_preset_label_info_names_the_preset():
    msg = convert.vocabulary_to_label_info(load_vocabulary("cityscapes"), Header())
    assert msg.vocabulary == "cityscapes" and len(msg.classes) == 19
