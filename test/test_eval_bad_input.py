"""Bad input ends in one clear line and exit code 2, or in a counted skip of one frame.

Errors that can be found without pixels must be found before any model is loaded: those tests
make model loading itself fail the test.
"""
import json
import sqlite3

import numpy as np
import pytest

from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.eval import bags, cli
from sfs_ros.eval.messages import Stamp
from eval_helpers import camera_msg, label_msg, random_rgb, write_bag

H, W = 64, 80
VOCAB = ["road", "car", "sky"]
STAMPS = [Stamp(30, i) for i in range(3)]


@pytest.fixture
def no_models(monkeypatch):
    def refuse(args):
        raise AssertionError("models were loaded although the input was already known to be bad")

    monkeypatch.setattr(cli, "build_models", refuse)


@pytest.fixture
def models(monkeypatch, segmenter, labeler):
    monkeypatch.setattr(cli, "build_models", lambda args: (segmenter, labeler))


def good_items(n=2, gt_shape=(H, W), gt_value=1, encoding="rgb8"):
    items = []
    for i in range(n):
        items.append(("/cam/image_raw", 100 + i, camera_msg(STAMPS[i], random_rgb(H, W, i), encoding)))
        items.append(("/cam/label", 100 + i, label_msg(STAMPS[i], np.full(gt_shape, gt_value))))
    return items


def run(capsys, bag, *extra, out):
    rc = cli.main(["run", str(bag), "--out", str(out), "--warmup", "0", "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def expect_error(capsys, bag, *extra, out, match):
    rc, line = run(capsys, bag, *extra, out=out)
    assert rc == 2, line
    assert line.startswith("sfs_eval: error: ") and match in line, line
    return line


def test_missing_bag_topic_or_ambiguous_topics(tmp_path, capsys, no_models):
    expect_error(capsys, tmp_path / "nope", out=tmp_path / "o", match="does not exist")
    bag = write_bag(tmp_path / "bag", good_items() + [("/other/image", 5, camera_msg(STAMPS[0], random_rgb(4, 4, 0)))])
    line = expect_error(capsys, bag, "--image-topic", "/cam/missing", out=tmp_path / "o",
                        match="topic /cam/missing is not in bag")
    assert "/cam/image_raw [sensor_msgs/msg/Image, 2 msgs]" in line  # says what there is
    expect_error(capsys, bag, "--vocab", *VOCAB, out=tmp_path / "o", match="3 image topics; choose with --image-topic")
    expect_error(capsys, bag, "--image-topic", "/cam/image_raw", "--gt-topic", "/cam/label", "--gt-topic", "/x",
                 out=tmp_path / "o", match="topic /x is not in bag")
    expect_error(capsys, bag, "--image-topic", "/cam/image_raw", "--gt-topic", "/cam/label",
                 out=tmp_path / "o", match="does not say which vocabulary")
    expect_error(capsys, bag, "--shard", "2/2", out=tmp_path / "o", match="need 0 <= i < n")


def test_truncated_and_corrupt_bags(tmp_path, capsys, no_models):
    bag = write_bag(tmp_path / "mcap", good_items())
    data_file = next(bag.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    expect_error(capsys, bag, "--vocab", *VOCAB, out=tmp_path / "o", match="truncated or corrupt")
    bag = write_bag(tmp_path / "db", good_items(), storage="sqlite3")
    db = next(bag.glob("*.db3"))
    raw = bytearray(db.read_bytes())
    raw[:100] = b"\0" * 100  # the sqlite header
    db.write_bytes(bytes(raw))
    expect_error(capsys, bag, "--vocab", *VOCAB, out=tmp_path / "o", match="cannot be opened")
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    expect_error(capsys, tmp_path / "junk.mcap", "--vocab", *VOCAB, out=tmp_path / "o", match="cannot be opened")


def test_bag_with_lost_messages_is_an_error_not_a_smaller_score(tmp_path, capsys, models):
    bag = write_bag(tmp_path / "db", good_items(2), storage="sqlite3")
    with sqlite3.connect(next(bag.glob("*.db3"))) as db:  # a message lost, the index unchanged
        db.execute("DELETE FROM messages WHERE id = (SELECT MAX(id) FROM messages)")
    expect_error(capsys, bag, "--gt-topic", "/cam/label", "--vocab", *VOCAB, out=tmp_path / "o",
                 match="ends early: read 1 of 2 messages on /cam/label")


def test_unknown_encoding(tmp_path, capsys, models):
    bag = write_bag(tmp_path / "bag", good_items(1, encoding="yuv422"))
    expect_error(capsys, bag, "--vocab", *VOCAB, "--image-topic", "/cam/image_raw", out=tmp_path / "o",
                 match="unsupported encoding 'yuv422'")


def test_ground_truth_that_does_not_fit(tmp_path, capsys, models):
    bag = write_bag(tmp_path / "size", good_items(1, gt_shape=(H // 2, W)))
    expect_error(capsys, bag, "--gt-topic", "/cam/label", "--vocab", *VOCAB, out=tmp_path / "o1",
                 match=f"ground truth is {W}x{H // 2} but the image is {W}x{H}")
    bag = write_bag(tmp_path / "ids", good_items(1, gt_value=7))
    expect_error(capsys, bag, "--gt-topic", "/cam/label", "--vocab", *VOCAB, out=tmp_path / "o2",
                 match="ground-truth class id 7 but the vocabulary has 3 classes")


def test_ground_truth_of_another_vocabulary(tmp_path, capsys, no_models):
    hints = {bags.HINT_IMAGE_TOPIC: "/cam/image_raw", bags.HINT_GT_TOPIC: "/cam/label",
             bags.HINT_VOCABULARY: "cityscapes", bags.HINT_VOCABULARY_KEY: load_vocabulary("cityscapes").key}
    bag = write_bag(tmp_path / "bag", good_items(1), custom_data=hints)
    expect_error(capsys, bag, "--vocab", "ade20k", out=tmp_path / "o",
                 match="holds ids of vocabulary 'cityscapes', but the run uses 'ade20k'")


def test_output_bag_is_never_overwritten(tmp_path, capsys, no_models):
    bag = write_bag(tmp_path / "bag", good_items(1))
    (tmp_path / "o" / "bag").mkdir(parents=True)
    expect_error(capsys, bag, "--vocab", *VOCAB, out=tmp_path / "o", match="exists already")


def bad_frame_items():
    short = camera_msg(STAMPS[0], random_rgb(H, W, 0))
    short.data = short.data[: H * W]  # a third of the pixels
    return [
        ("/cam/image_raw", 100, short),
        ("/cam/image_raw", 101, ("sensor_msgs/msg/Image", b"\x00\x01\x00\x00garbage")),
        ("/cam/image_raw", 102, camera_msg(STAMPS[2], random_rgb(H, W, 2))),
    ]


def test_single_bad_frames_are_skipped_and_counted(tmp_path, capsys, models):
    bag = write_bag(tmp_path / "bag", bad_frame_items())
    out = tmp_path / "o"
    rc, line = run(capsys, bag, "--vocab", *VOCAB, "--no-bag", out=out)
    assert rc == 0
    assert "2 frame(s) skipped" in line
    report = json.loads((out / "report.json").read_text())
    assert report["frames"]["processed"] == 1
    assert report["frames"]["skipped"] == {"short data": 1, "undecodable message": 1}
    assert [s["reason"] for s in report["skipped_frames"]] == ["short data", "undecodable message"]
    assert report["skipped_frames"][0]["stamp"] == str(STAMPS[0])
    assert report["metrics"] is None  # no ground truth: no number rather than a made-up one
    assert "frames skipped | 2" in (out / "report.md").read_text()


def test_strict_turns_a_skip_into_an_error(tmp_path, capsys, models):
    bag = write_bag(tmp_path / "bag", bad_frame_items())
    expect_error(capsys, bag, "--vocab", *VOCAB, "--strict", out=tmp_path / "o", match="short data")
