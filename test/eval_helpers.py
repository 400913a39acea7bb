"""Small synthetic bags for tests and demos: any encoding, any stamp, even broken messages.

Written with rosbags directly (not `BagOutput`), so a test can put raw bytes that are not a
valid message into a bag, or messages in an order a recorder could produce.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pytest

from sfs_ros.eval import messages
from sfs_ros.eval.messages import Stamp

#: RGB -> encoding (what image_codec.image_to_rgb undoes)
_ENCODE = {
    "rgb8": lambda rgb: rgb,
    "bgr8": lambda rgb: rgb[:, :, ::-1],
    "rgba8": lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
    "bgra8": lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
    "mono8": lambda rgb: rgb[:, :, 0],
}


def camera_msg(stamp: Stamp, rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = "cam", pad: int = 0) -> Any:
    """sensor_msgs/Image of an RGB array in `encoding`, rows padded by `pad` bytes.

    An encoding we do not know (e.g. "yuv422") keeps the RGB bytes under that name: a message a
    reader must refuse.
    """
    pixels = np.ascontiguousarray(_ENCODE[encoding](rgb)) if encoding in _ENCODE else rgb
    msg = messages.image(messages.header(stamp, frame_id), pixels, encoding)
    if pad:
        rows = msg.data.reshape(msg.height, msg.step)
        padded = np.concatenate([rows, np.full((msg.height, pad), 0xAB, np.uint8)], axis=1)
        msg.step += pad
        msg.data = padded.reshape(-1)
    return msg


def compressed_msg(stamp: Stamp, rgb: np.ndarray, fmt: str = "png", frame_id: str = "cam") -> Any:
    ok, data = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else fmt}", rgb[:, :, ::-1])
    assert ok
    return messages.compressed_image(messages.header(stamp, frame_id), fmt, data.tobytes())


def label_msg(stamp: Stamp, ids: np.ndarray, encoding: str = "mono8", frame_id: str = "cam") -> Any:
    dtype = np.uint8 if encoding in ("mono8", "8UC1") else np.uint16
    return messages.image(messages.header(stamp, frame_id), ids.astype(dtype), encoding)


def write_bag(
    path: str | Path,
    items: Iterable[tuple[str, int, Any]],
    storage: str = "mcap",
    custom_data: dict[str, str] | None = None,
) -> Path:
    """Write (topic, log_time_ns, message) items; a message may be (msgtype, raw_bytes)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    store = messages.typestore()
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    for key, value in (custom_data or {}).items():
        writer.set_custom_data(key, value)
    connections: dict[str, Any] = {}
    with writer:
        for topic, log_time, msg in items:
            msgtype, raw = msg if isinstance(msg, tuple) else (msg.__msgtype__, None)
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], int(log_time), raw if raw is not None else store.serialize_cdr(msg, msgtype))
    return path


def random_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """A blocky random picture (blocks give FastSAM something mask-like even untrained)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST))


def read_mcap(path: str | Path) -> list[tuple[str, str, int, Any]]:
    """(topic, schema name, log time, message) of an mcap file, decoded by Foxglove's mcap_ros2:
    a decoder independent of rosbags, so tests do not check rosbags against itself."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        return [(c.topic, s.name, m.log_time, msg) for s, c, m, msg in reader.iter_decoded_messages()]


@pytest.fixture
def use_test_models(monkeypatch, segmenter, labeler):
    """`sfs_eval run` with the session's random-weight models instead of loading its own
    (import this fixture into a test module to use it)."""
    from sfs_ros.eval import cli

    monkeypatch.setattr(cli, "build_models", lambda args: (segmenter, labeler))
