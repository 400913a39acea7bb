"""Bags in and out: pairing by stamp, sharding, and a full evaluation read back by an
independent decoder (Foxglove's mcap_ros2, not rosbags)."""
import json

import numpy as np
import pytest

from sfs_ros.core.frame import UNLABELED
from sfs_ros.eval import cli
from sfs_ros.eval.bags import BagInput, shard_of
from sfs_ros.eval.messages import Stamp
from sfs_ros.eval.runner import output_namespaces
from sfs_ros.ros.naming import camera_name
from eval_helpers import camera_msg, label_msg, random_rgb, read_mcap, use_test_models, write_bag  # noqa: F401

H, W = 96, 128
VOCAB = ["road", "car", "sky"]


def gt_ids(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 3, (H, W)).astype(np.uint8)
    ids[:8] = 255
    return ids


def test_pairs_by_header_stamp_not_arrival_order(tmp_path):
    s = [Stamp(5, i * 1000) for i in range(4)]
    items = [
        ("/gt", 10, label_msg(s[1], np.full((4, 6), 1))),  # label before its image
        ("/cam/image_raw", 11, camera_msg(s[0], random_rgb(4, 6, 0))),
        ("/cam/image_raw", 12, camera_msg(s[1], random_rgb(4, 6, 1))),
        ("/gt", 13, label_msg(s[0], np.full((4, 6), 0))),  # label after its image
        ("/cam/image_raw", 14, camera_msg(s[2], random_rgb(4, 6, 2))),  # never labeled
        ("/gt", 15, label_msg(s[3], np.full((4, 6), 2))),  # label of no image
    ]
    bag = write_bag(tmp_path / "bag", items)
    with BagInput(bag, ["/cam/image_raw"], ["/gt"]) as source:
        got = {str(x.stamp): x for x in source.samples()}
        stats = source.stats
    assert set(got) == {str(s[0]), str(s[1]), str(s[2])}
    assert got[str(s[0])].gt.tolist() == np.zeros((4, 6)).tolist()
    assert got[str(s[1])].gt.tolist() == np.ones((4, 6)).tolist()
    assert got[str(s[2])].gt is None
    assert np.array_equal(got[str(s[1])].image, random_rgb(4, 6, 1))
    assert got[str(s[0])].log_time == 11 and got[str(s[0])].frame_id == "cam"
    assert stats.images_without_gt == 1 and stats.gt_without_image == 1
    with BagInput(next(bag.glob("*.mcap")), ["/cam/image_raw"], ["/gt"]) as bare:  # a lone .mcap file
        assert sorted(str(x.stamp) for x in bare.samples()) == sorted(got)


def test_shards_partition_frames_with_their_labels(tmp_path):
    stamps = [Stamp(1, i) for i in range(12)]
    items = []
    for i, st in enumerate(stamps):
        items.append(("/cam/image_raw", 100 + 2 * i, camera_msg(st, random_rgb(4, 4, i))))
        items.append(("/gt", 101 + 2 * i, label_msg(st, np.full((4, 4), i % 3))))
    bag = write_bag(tmp_path / "bag", items)
    seen = []
    for k in range(3):
        with BagInput(bag, ["/cam/image_raw"], ["/gt"], shard=(k, 3)) as source:
            part = list(source.samples())
            assert source.stats.images_without_gt == 0 and source.stats.gt_without_image == 0
        assert all(shard_of("/cam/image_raw", x.stamp, 3) == k for x in part)
        seen += [(x.stamp, int(x.gt[0, 0])) for x in part]
    assert sorted(seen) == [(st, i % 3) for i, st in enumerate(stamps)]


def test_several_cameras_pair_with_their_own_labels(tmp_path):
    st = Stamp(2, 0)
    items = [
        ("/left/image_raw", 1, camera_msg(st, random_rgb(4, 4, 1))),
        ("/right/image_raw", 2, camera_msg(st, random_rgb(4, 4, 2))),
        ("/right/gt", 3, label_msg(st, np.full((4, 4), 2))),
        ("/left/gt", 4, label_msg(st, np.full((4, 4), 1))),
    ]
    bag = write_bag(tmp_path / "bag", items)
    with BagInput(bag, ["/left/image_raw", "/right/image_raw"], ["/left/gt", "/right/gt"]) as source:
        got = {x.topic: int(x.gt[0, 0]) for x in source.samples()}
    assert got == {"/left/image_raw": 1, "/right/image_raw": 2}
    assert output_namespaces(["/left/image_raw", "/right/image_raw"], "/sfs_node") == {
        "/left/image_raw": "/sfs_node/left", "/right/image_raw": "/sfs_node/right"}
    assert output_namespaces(["/cam/image_raw"], "sfs_node") == {"/cam/image_raw": "/sfs_node"}
    assert camera_name("/rig/left/image_rect_color/compressed") == "rig/left"


@pytest.mark.parametrize("storage,encoding,frames", [("mcap", "bgr8", 3), ("sqlite3", "rgb8", 2)])
def test_round_trip_read_back_with_mcap_ros2(tmp_path, use_test_models, storage, encoding, frames):
    stamps = [Stamp(1_700_000_000 + i, 250_000_000 * i) for i in range(frames)]
    log_times = [st.ns + 3_000_000 for st in stamps]  # recorded a little after the stamp
    pictures = [random_rgb(H, W, seed=i) for i in range(frames)]
    items = []
    for st, t, rgb, i in zip(stamps, log_times, pictures, range(frames)):
        items.append(("/cam/image_raw", t, camera_msg(st, rgb, encoding, frame_id="cam_optical")))
        items.append(("/cam/label", t + 1, label_msg(st, gt_ids(i), frame_id="cam_optical")))
    bag = write_bag(tmp_path / "in", items, storage=storage)
    out = tmp_path / "out"
    rc = cli.main(["run", str(bag), "--gt-topic", "/cam/label", "--out", str(out), "--warmup", "0",
                   "--quiet", "--vocab", *VOCAB, "--no-tracking"])  # unrelated pictures: ids = mask order
    assert rc == 0

    files = list((out / "bag").glob("*.mcap"))
    assert len(files) == 1
    got = {}
    for topic, schema, log_time, msg in read_mcap(files[0]):
        got.setdefault(topic, []).append((log_time, schema, msg))
    per_frame = ["/sfs_node/label_image", "/sfs_node/instance_image", "/sfs_node/overlay", "/sfs_node/instances"]
    assert set(got) == set(per_frame) | {"/sfs_node/label_info"}
    for topic in per_frame:
        assert [t for t, _, _ in got[topic]] == log_times, topic  # bag times as recorded
        assert [(m.header.stamp.sec, m.header.stamp.nanosec) for _, _, m in got[topic]] == [
            (st.sec, st.nanosec) for st in stamps], topic  # header stamps of the input
        assert all(m.header.frame_id == "cam_optical" for _, _, m in got[topic])
    encodings = {t: {m.encoding for _, _, m in got[t]} for t in per_frame[:3]}
    assert encodings == {"/sfs_node/label_image": {"mono16"}, "/sfs_node/instance_image": {"mono16"},
                         "/sfs_node/overlay": {"rgb8"}}
    assert {s for t in per_frame for _, s, _ in got[t]} == {"sensor_msgs/msg/Image", "sfs_ros/msg/InstanceArray"}

    (_, schema, info), = got["/sfs_node/label_info"]
    assert schema == "sfs_ros/msg/LabelInfo"
    assert [c.name for c in info.classes] == VOCAB and info.unlabeled_value == UNLABELED
    assert info.random_weights is True

    unmasked = 0
    for i, ((_, _, label), (_, _, inst), (_, _, over), (_, _, arr)) in enumerate(zip(*(got[t] for t in per_frame))):
        assert (label.height, label.width, label.step) == (H, W, 2 * W)
        ids = np.frombuffer(bytes(label.data), "<u2").reshape(H, W)
        assert set(np.unique(ids)) <= {0, 1, 2, UNLABELED}
        instance_ids = np.frombuffer(bytes(inst.data), "<u2").reshape(H, W)
        assert arr.random_weights is True and (arr.height, arr.width) == (H, W)
        assert len(arr.instances) == instance_ids.max() > 0
        for k, instance in enumerate(arr.instances):
            assert instance.instance_id == k + 1 and instance.class_name == VOCAB[instance.class_id]
            assert instance.mask.encoding == "mono8"
            assert (instance.mask.width, instance.mask.height) == (instance.box.width, instance.box.height)
        # Pixels no mask covers keep the input picture: proves the bgr8 -> RGB order end to end.
        rgb = np.frombuffer(bytes(over.data), np.uint8).reshape(H, W, 3)
        free = (instance_ids == 0)
        free[:30] = False  # the RANDOM WEIGHTS banner
        free[:-1] &= instance_ids[1:] == 0  # and instance boundaries (drawn white)
        free[:, :-1] &= instance_ids[:, 1:] == 0
        assert np.array_equal(rgb[free], pictures[i][free])
        unmasked += int(free.sum())
    assert unmasked > 100  # the colour check above compared real pixels

    report = json.loads((out / "report.json").read_text())
    assert list(report)[0] == "random_weights" and report["random_weights"] is True
    assert "random_weights: true" in (out / "report.md").read_text()
    assert report["frames"]["processed"] == report["frames"]["scored"] == frames
    assert report["input"]["storage"] == storage
    assert report["metrics"]["valid_pixels"] == sum(int((gt_ids(i) != 255).sum()) for i in range(frames))
    assert report["timing"]["stages"]["segment"]["n"] == frames
    assert (out / "iou_per_class.png").stat().st_size > 1000
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_predictions_in_report_match_output_bag(tmp_path, use_test_models):
    """The confusion matrix is built from the same label images the bag carries."""
    st = Stamp(9, 0)
    gt = gt_ids(7)
    bag = write_bag(tmp_path / "in", [("/cam/image_raw", 5, camera_msg(st, random_rgb(H, W, 7))),
                                      ("/cam/gt", 6, label_msg(st, gt))])
    out = tmp_path / "out"
    assert cli.main(["run", str(bag), "--gt-topic", "/cam/gt", "--out", str(out), "--warmup", "0",
                     "--quiet", "--vocab", *VOCAB]) == 0
    label = next(msg for topic, _, _, msg in read_mcap(next((out / "bag").glob("*.mcap")))
                 if topic == "/sfs_node/label_image")
    pred = np.frombuffer(bytes(label.data), "<u2").reshape(H, W)
    expected = np.zeros((3, 4), np.int64)
    for g, p in zip(gt.ravel(), pred.ravel()):
        if g != 255:
            expected[g, 3 if p == UNLABELED else p] += 1
    report = json.loads((out / "report.json").read_text())
    assert report["confusion_matrix"]["data"] == expected.tolist()


def test_our_message_definitions_match_the_built_ones():
    """rosbags-built sfs_ros messages: same type hashes as rosidl, and rclpy reads their bytes."""
    import sys
    from pathlib import Path

    from rclpy.serialization import deserialize_message

    from sfs_ros.core.frame import Labels, Masks
    from sfs_ros.eval import messages
    from sfs_ros.msg import InstanceArray

    share = Path(sys.prefix) / "share" / "sfs_ros" / "msg"
    for name in messages.MSG_NAMES:
        described = json.loads((share / f"{name}.json").read_text())
        ours = messages.typestore().hash_rihs01(f"sfs_ros/msg/{name}")
        assert {h["hash_string"] for h in described["type_hashes"] if h["type_name"] == f"sfs_ros/msg/{name}"} == {ours}

    mask = np.zeros((1, 6, 8), bool)
    mask[0, 2:5, 1:4] = True
    result = type("R", (), {})()  # just the fields messages.instances reads
    result.masks = Masks(mask, np.array([[1, 2, 4, 5]], np.int32), np.array([0.5], np.float32), np.array([9]))
    result.labels = Labels(np.array([1], np.int32), np.array([0.7], np.float32),
                           np.array([[1, 0]], np.int32), np.array([[0.7, 0.2]], np.float32))
    result.class_names, result.label_image, result.random_weights = ("a", "b"), np.zeros((6, 8), np.uint16), True
    result.vocabulary_version = 3
    result.tracks = result.geometry = None  # no tracker, no depth
    msg = messages.instances(result, messages.header(Stamp(3, 9), "cam"))
    back = deserialize_message(messages.serialize(msg), InstanceArray)
    (inst,) = back.instances
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.random_weights) == (3, 9, True)
    assert (inst.instance_id, inst.class_id, inst.class_name, inst.area) == (1, 1, "b", 9)
    assert (inst.box.x_offset, inst.box.y_offset, inst.box.width, inst.box.height) == (1, 2, 3, 3)
    assert [(p.class_id, p.class_name) for p in inst.proposals] == [(1, "b"), (0, "a")]
    assert bytes(inst.mask.data) == b"\xff" * 9 and inst.mask.encoding == "mono8"


def test_frames_carry_the_header_stamp_and_the_sample_as_a_named_tag(tmp_path, use_test_models, monkeypatch):
    """The evaluator used to pack (sample, read time) into Frame.stamp; now stamp is the header
    stamp, as the node sets it, and the evaluator's bookkeeping travels as a named Tagged."""
    from sfs_ros.eval import runner

    submitted = []

    class RecordingPipeline(runner.Pipeline):
        """The real pipeline, keeping what the evaluator submits."""

        def submit(self, frame):
            submitted.append(frame)
            return super().submit(frame)

    monkeypatch.setattr(runner, "Pipeline", RecordingPipeline)
    stamps = [Stamp(1_700_000_000, 125_000_000), Stamp(1_700_000_000, 625_000_000)]
    items = [("/cam/image_raw", st.ns + 40_000_000, camera_msg(st, random_rgb(32, 48, i)))  # logged 40 ms late
             for i, st in enumerate(stamps)]
    out = tmp_path / "out"
    assert cli.main(["run", str(write_bag(tmp_path / "in", items)), "--out", str(out), "--warmup", "0",
                     "--quiet", "--no-plots", "--no-bag", "--vocab", *VOCAB]) == 0
    assert [f.stamp for f in submitted] == stamps
    assert all(isinstance(f.tag, runner.Tagged) and f.tag.read_s >= 0.0 for f in submitted)
    assert [f.tag.sample.log_time for f in submitted] == [st.ns + 40_000_000 for st in stamps]
    per_frame = json.loads((out / "report.json").read_text())["per_frame"]
    assert [f["stamp"] for f in per_frame] == [str(st) for st in stamps] and all("read" in f["ms"] for f in per_frame)


def test_every_frame_is_evaluated_whatever_order_the_bag_yields_them(tmp_path, use_test_models):
    """Pairing releases an image whose label never comes after later, labeled ones, and two
    cameras interleave their stamps: frames reach the pipeline out of stamp order. None may be
    refused (the core's live-camera order rule would refuse them if Frame.time carried the
    stamps, and the run would stop on its frame accounting)."""
    left = [Stamp(5, 100_000_000 * (i + 1)) for i in range(3)]
    right = [Stamp(5, 100_000_000 * (i + 1) - 30_000_000) for i in range(3)]  # 30 ms older, logged after left
    items = []
    for i, (a, b) in enumerate(zip(left, right)):
        items.append(("/left/image_raw", 100 * i + 1, camera_msg(a, random_rgb(32, 48, i))))
        if i:  # the first left image never gets its label: pairing releases it last
            items.append(("/left/gt", 100 * i + 2, label_msg(a, np.full((32, 48), 1))))
        items.append(("/right/image_raw", 100 * i + 3, camera_msg(b, random_rgb(32, 48, 9 - i))))
        items.append(("/right/gt", 100 * i + 4, label_msg(b, np.full((32, 48), 2))))
    bag = write_bag(tmp_path / "in", items)
    out = tmp_path / "out"
    assert cli.main(["run", str(bag), "--image-topic", "/left/image_raw", "--image-topic", "/right/image_raw",
                     "--gt-topic", "/left/gt", "--gt-topic", "/right/gt", "--out", str(out), "--warmup", "0",
                     "--quiet", "--no-plots", "--no-bag", "--vocab", *VOCAB]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["frames"]["processed"], report["frames"]["scored"], report["frames"]["skipped"]) == (6, 5, {})
    assert [f["stamp"] for f in report["per_frame"] if not f["scored"]] == [str(left[0])]
