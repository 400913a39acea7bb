"""Property tests (hypothesis) of the message <-> numpy conversions in `sfs_ros.ros.convert`.

What a subscription callback may see is anything a publisher sends: any encoding string, any
height/width/step (uint32), any data length, any bytes in a CompressedImage. The contract is
that the only exception escaping a decoder is `ImageConversionError` (an `SfsError`), which the
node counts as a bad input; everything else would escape the executor's callback. Valid inputs
must decode exactly (compared with a straightforward reference decoder), and every output
encoding must round-trip bit for bit.

Sizes stay small (data capped at 256 KiB) so the whole module runs in a few seconds; absurd
headers (100000 x 1, 2**32-1 steps) are generated without allocating their buffers.
"""
from __future__ import annotations

import array
import re
import struct
import sys
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from sfs_ros.core.frame import SfsError, check_rgb_image
from sfs_ros.ros import convert
from sfs_ros.ros.convert import ImageConversionError

try:  # the decoders moved to sfs_ros.ros.image_codec (convert re-exports them)
    from sfs_ros.ros.image_codec import CHANNELS, MAX_BYTES, MAX_SIDE
except ImportError:  # pragma: no cover - before that move
    from sfs_ros.ros.convert import CHANNELS, MAX_BYTES, MAX_SIDE

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DATA_CAP = 256 * 1024
UINT32 = (1 << 32) - 1


# ---------------------------------------------------------------------- reference decoder
def reference_rgb(encoding: str, height: int, width: int, step: int, data: bytes) -> np.ndarray:
    """Row by row, no stride tricks: what image_to_rgb must return for a valid message."""
    channels = CHANNELS[encoding]
    rows = [np.frombuffer(data[r * step:r * step + width * channels], np.uint8)
            .reshape(width, channels) for r in range(height)]
    pixels = np.stack(rows)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding in ("bgr8", "bgra8"):
        return pixels[:, :, [2, 1, 0]]
    return pixels[:, :, :3]


def is_valid(encoding: str, height: int, width: int, step: int, size: int) -> bool:
    if encoding not in CHANNELS or not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        return False
    return step >= width * CHANNELS[encoding] and step * height <= MAX_BYTES and size >= step * height


# ---------------------------------------------------------------------- strategies
encodings = st.one_of(
    st.sampled_from(sorted(CHANNELS)),
    st.sampled_from(["16UC1", "mono16", "32FC1", "16SC1", "bayer_rggb8", "yuv422", "RGB8", "",
                     "rgb8 ", "8UC3", "jpeg"]),
    st.text(max_size=12),
)
sides = st.one_of(
    st.integers(0, 9),
    st.sampled_from([MAX_SIDE - 1, MAX_SIDE, MAX_SIDE + 1, 100_000, UINT32]),
    st.integers(0, UINT32),
)


@st.composite
def raw_images(draw):
    encoding = draw(encodings)
    height, width = draw(sides), draw(sides)
    row = width * CHANNELS.get(encoding, 3)
    step = draw(st.one_of(
        st.just(row),
        st.integers(0, 7).map(lambda pad: row + pad),  # padded rows
        st.integers(0, max(row, 1) + 16),  # often too small
        st.sampled_from([0, 1, UINT32]),
    ))
    step = min(step, UINT32)
    needed = step * height
    size = draw(st.one_of(
        st.just(needed),
        st.integers(-8, 8).map(lambda d: needed + d),  # truncated by a few bytes, or longer
        st.integers(0, 64),
    ))
    size = max(0, min(size, DATA_CAP))  # absurd headers come with a small buffer, not 4 GiB
    data = draw(st.binary(min_size=size, max_size=size)) if size <= 4096 else \
        np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    return encoding, height, width, step, data


# ---------------------------------------------------------------------- sensor_msgs/Image
@FUZZ
@given(raw_images())
@example(("rgb8", 1, 100_000, 300_000, b""))           # absurd width, nothing behind it
@example(("mono8", 100_000, 1, 1, bytes(100)))          # absurd height
@example(("rgb8", MAX_SIDE, MAX_SIDE, UINT32, b"\0"))   # step x height overflows 32 bits
@example(("bgra8", 2, 3, 12, bytes(23)))                # one byte short
@example(("bgr8", 2, 3, 11, bytes(64)))                 # step one byte short of the row
@example(("rgba8", 3, 2, 9, bytes(27)))                 # odd padding (step not a multiple of 4)
def test_image_to_rgb_decodes_valid_images_and_refuses_the_rest(case):
    encoding, height, width, step, data = case
    msg = Image(height=height, width=width, step=step, encoding=encoding,
                data=array.array("B", data))
    if not is_valid(encoding, height, width, step, len(data)):
        with pytest.raises(ImageConversionError):
            convert.image_to_rgb(msg)
        with pytest.raises(SfsError):  # the node catches SfsError
            convert.to_frame(msg)
        return
    rgb = convert.image_to_rgb(msg)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    check_rgb_image(rgb)
    np.testing.assert_array_equal(rgb, reference_rgb(encoding, height, width, step, data))
    frame = convert.to_frame(msg, source="fuzz", seq=7)
    np.testing.assert_array_equal(frame.image, rgb)


@FUZZ
@given(st.sampled_from(sorted(CHANNELS)), st.integers(1, 12), st.integers(1, 12),
       st.integers(0, 9), st.integers(0, 2**32 - 1))
def test_image_to_rgb_honours_step_padding(encoding, height, width, pad, seed):
    """Padding bytes (filled with garbage) never leak into the pixels; the extra tail is ignored."""
    channels = CHANNELS[encoding]
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    step = width * channels + pad
    buf = rng.integers(0, 256, (height, step), dtype=np.uint8)  # garbage everywhere ...
    buf[:, :width * channels] = pixels.reshape(height, -1)  # ... but in the pixels
    msg = Image(height=height, width=width, step=step, encoding=encoding,
                data=array.array("B", buf.tobytes() + bytes(pad)))
    want = {"mono8": lambda p: np.repeat(p, 3, axis=2), "rgb8": lambda p: p,
            "rgba8": lambda p: p[:, :, :3], "bgr8": lambda p: p[:, :, ::-1],
            "bgra8": lambda p: p[:, :, 2::-1]}[encoding](pixels)
    np.testing.assert_array_equal(convert.image_to_rgb(msg), want)


@FUZZ
@given(st.sampled_from([np.uint8, np.uint16]), st.integers(1, 4), st.integers(0, 12), st.integers(0, 12),
       st.integers(0, 7), st.integers(-3, 3), st.booleans(), st.integers(0, 2**32 - 1))
@example(np.uint16, 1, 3, 2, 1, 0, True, 0)  # odd step: every row after the first unaligned
def test_strided_pixels_reads_any_depth_or_refuses(dtype, channels, height, width, pad, extra, big, seed):
    """The one raw-buffer reader (camera images and the evaluator's mono8/mono16 labels): exact
    pixels through any padding and either byte order, or an ImageConversionError."""
    from sfs_ros.ros.image_codec import strided_pixels

    want = np.dtype(dtype).newbyteorder(">" if big else "<")
    pixels = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, (height, width, channels),
                                                  dtype=dtype)
    row = width * channels * want.itemsize
    step = row + pad
    buf = bytearray(b"\xab" * (step * height))  # garbage in the padding
    for r in range(height):
        buf[r * step:r * step + row] = pixels[r].astype(want).tobytes()
    data = bytes(buf[:max(0, len(buf) + extra)])  # a few bytes short, or a longer tail
    msg = Image(height=height, width=width, step=step, encoding="x", is_bigendian=big,
                data=array.array("B", data))
    if height == 0 or width == 0 or len(data) < step * height:
        with pytest.raises(ImageConversionError):
            strided_pixels(msg, dtype, channels)
        return
    got = strided_pixels(msg, dtype, channels)
    assert got.shape == (height, width, channels)
    np.testing.assert_array_equal(got, pixels)


def test_16_bit_png_decodes_to_its_high_bytes():
    """IMREAD_COLOR decodes a 16-bit PNG to 8 bits itself (value >> 8), so compressed_to_rgb
    needs no depth branch of its own."""
    deep = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 1091 + 17)
    ok, data = cv2.imencode(".png", deep)
    assert ok and data.tobytes()[24] == 16  # IHDR bit depth: really a 16-bit file
    rgb = convert.compressed_to_rgb(CompressedImage(format="png", data=array.array("B", data.tobytes())))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, (deep >> 8).astype(np.uint8)[:, :, ::-1])


def test_wrong_message_types_are_refused():
    for thing in (None, b"\xff\xd8", np.zeros((2, 2, 3), np.uint8), Header()):
        with pytest.raises(ImageConversionError):
            convert.to_rgb(thing)


# ---------------------------------------------------------------------- CompressedImage
def _encoded(ext: str, height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, pixels)
    assert ok
    return data.tobytes()


PNG = _encoded(".png", 24, 32, 1)
JPEG = _encoded(".jpg", 24, 32, 2)
formats = st.one_of(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "compressedDepth",
                                     "16UC1; compressedDepth png", "", "tiff"]), st.text(max_size=24))


def _decode_or_refuse(fmt: str, data: bytes) -> np.ndarray | None:
    msg = CompressedImage(format=fmt, data=array.array("B", data))
    try:
        rgb = convert.compressed_to_rgb(msg)
    except ImageConversionError:
        return None
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8 and rgb.size > 0
    check_rgb_image(rgb)
    assert "compresseddepth" not in fmt.lower()
    words = re.findall(r"[a-z0-9]+", fmt.lower())
    assert not words or {"jpeg", "jpg", "png"} & set(words), f"decoded under format {fmt!r}"
    return rgb


@FUZZ
@given(formats, st.binary(max_size=2048))
@example("jpeg", b"")
@example("jpeg", b"\xff\xd8\xff")                      # a JPEG start, nothing else
@example("png", b"\x89PNG\r\n\x1a\n")                   # a PNG signature, nothing else
@example("png", PNG[:40])
@example("jpeg", JPEG[: len(JPEG) // 2])
@example("compressedDepth", PNG)
def test_compressed_to_rgb_arbitrary_bytes(fmt, data):
    _decode_or_refuse(fmt, data)


@FUZZ
@given(st.sampled_from(["png", "jpeg"]), st.integers(64, 10_000), st.integers(0, 255),
       st.integers(0, 10_000))
def test_compressed_to_rgb_corrupt_payload(kind, position, value, cut):
    """A valid file with one byte overwritten (after the header) and/or truncated."""
    data = bytearray(PNG if kind == "png" else JPEG)
    data[position % len(data) if position < len(data) else len(data) - 1] = value
    data = bytes(data[: max(1, len(data) - cut % len(data))])
    _decode_or_refuse(kind, data)


@FUZZ
@given(st.sampled_from([".png", ".jpg", ".bmp"]), st.integers(1, 40), st.integers(1, 40),
       st.integers(0, 1000))
def test_compressed_round_trip(ext, height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(ext, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    # jpeg and png by name; an empty format lets the bytes decide (BMP here)
    rgb = _decode_or_refuse("" if ext == ".bmp" else ext[1:], data.tobytes())
    assert rgb is not None and rgb.shape == pixels.shape
    if ext != ".jpg":  # lossless
        np.testing.assert_array_equal(rgb, pixels)


def _png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@FUZZ
@given(st.integers(0, (1 << 31) - 1), st.integers(0, (1 << 31) - 1))
@example(100_000, 100_000)
def test_compressed_to_rgb_png_header_with_any_dimensions(width, height):
    _decode_or_refuse("png", _png_header(width, height))


@FUZZ
@given(st.integers(0, 40_000), st.integers(0, 40_000).filter(lambda h: h * 1 <= 40_000))
def test_compressed_to_rgb_png_header_below_the_opencv_pixel_limit(width, height):
    """Claimed sizes OpenCV accepts (< 2**30 pixels) but with no data behind them: refused."""
    _decode_or_refuse("png", _png_header(width, min(height, 2)))


# ---------------------------------------------------------------------- numpy -> sensor_msgs
small_shapes = st.tuples(st.integers(1, 16), st.integers(1, 16))


@FUZZ
@given(st.data(), small_shapes, st.sampled_from(["mono8", "mono16", "rgb8"]), st.booleans())
def test_numpy_to_image_round_trips(data, shape, encoding, strided):
    dtype, channels = convert.OUTPUT_ENCODINGS[encoding]
    full = shape if channels == 1 else (*shape, 3)
    if strided:  # a non-contiguous view (every other column of a wider array)
        wide = data.draw(hnp.arrays(dtype, (full[0], full[1] * 2, *full[2:])))
        pixels = wide[:, ::2]
    else:
        pixels = data.draw(hnp.arrays(dtype, full))
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = convert.numpy_to_image(pixels, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (*shape, encoding)
    assert msg.step == shape[1] * channels * np.dtype(dtype).itemsize
    assert len(msg.data) == msg.step * msg.height
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 12
    assert msg.is_bigendian == (np.dtype(dtype).itemsize > 1 and sys.byteorder == "big")
    back = np.frombuffer(msg.data, dtype).reshape(full)
    np.testing.assert_array_equal(back, pixels)
    if encoding != "mono16":  # the decoder reads what the encoder wrote
        rgb = convert.image_to_rgb(msg)
        np.testing.assert_array_equal(rgb, pixels if channels == 3 else np.repeat(pixels[..., None], 3, 2))


@FUZZ
@given(hnp.arrays(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.bool_, np.int64,
                                   np.dtype(">u2")]),
                  hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4)),
       st.one_of(st.sampled_from(["mono8", "mono16", "rgb8", "bgr8", "rgba8", "16UC1"]), st.text(max_size=8)))
def test_numpy_to_image_accepts_only_matching_arrays(pixels, encoding):
    want = convert.OUTPUT_ENCODINGS.get(encoding)
    ok = want is not None and pixels.dtype == want[0] and (
        pixels.ndim == 2 if want[1] == 1 else pixels.ndim == 3 and pixels.shape[2] == 3)
    if not ok:
        with pytest.raises(ImageConversionError):
            convert.numpy_to_image(pixels, encoding)
        return
    msg = convert.numpy_to_image(pixels, encoding)
    assert len(msg.data) == msg.step * msg.height == pixels.nbytes


@FUZZ
@given(hnp.arrays(np.uint16, small_shapes, elements=st.integers(0, 65535)))
def test_label_image_msg_mono8_and_mono16(labels):
    m16 = convert.label_image_msg(labels, "mono16", Header())
    np.testing.assert_array_equal(np.frombuffer(m16.data, np.uint16).reshape(labels.shape), labels)
    labeled = labels[labels != 65535]
    if labeled.size and labeled.max() >= 255:  # ids 255.. do not fit mono8: refused, not wrapped
        with pytest.raises(SfsError, match="does not fit mono8"):
            convert.label_image_msg(labels, "mono8", Header())
        labels = np.where(labels == 65535, labels, labels % 255).astype(np.uint16)
    m8 = convert.label_image_msg(labels, "mono8", Header())
    back = np.frombuffer(m8.data, np.uint8).reshape(labels.shape)
    keep = labels != 65535  # class ids 0..254 survive, unlabeled (65535) becomes 255
    np.testing.assert_array_equal(back[keep], labels[keep])
    assert (back[~keep] == 255).all()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_declared_size_is_read_before_decoding(fmt):
    """The header's size is what a file would make the decoder allocate: read it first, and
    refuse absurd ones before any pixel is decoded (RELIABILITY.md, bug 2)."""
    from sfs_ros.ros import image_codec

    ok, encoded = cv2.imencode(f".{fmt}", np.zeros((37, 53, 3), np.uint8))
    assert ok
    data = np.frombuffer(encoded.tobytes(), np.uint8)
    assert image_codec.declared_size(data) == (53, 37)
    assert image_codec.declared_size(np.frombuffer(b"not an image", np.uint8)) is None
    if fmt == "png":
        huge = _png_header(20000, 20000)  # 400 MP: under OpenCV's cap, over ours
        assert image_codec.declared_size(np.frombuffer(huge, np.uint8)) == (20000, 20000)
        msg = CompressedImage(format="png", data=array.array("B", huge))
        with pytest.raises(image_codec.ImageConversionError, match="before decoding") as info:
            image_codec.compressed_to_rgb(msg)
        assert info.value.reason == "absurd size"
