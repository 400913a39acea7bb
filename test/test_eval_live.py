"""Live mode against a real sfs_node child process (random weights, loopback DDS from conftest):
the bag is published, every answer is matched by stamp, scored, and recorded in the output bag."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from sfs_ros.eval import cli
from sfs_ros.eval.messages import Stamp
from eval_helpers import camera_msg, label_msg, random_rgb, read_mcap, write_bag

H, W = 96, 128
VOCAB = ["road", "car", "sky"]
NODE = "/evallive/sfs_node"


@pytest.fixture
def node(tmp_path):
    env = dict(os.environ, ROS_LOG_DIR=str(tmp_path / "ros_log"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "sfs_ros.ros.node", "--ros-args", "-r", "__ns:=/evallive",
        "-p", "random_weights:=true", "-p", "device:=cpu", "-p", "imgsz:=320", "-p", "max_det:=4",
        "-p", f"vocabulary:=[{', '.join(VOCAB)}]", "-p", "score_threshold:=0.0",
        "-p", "image_topics:=[/cam/image_raw]", "-p", "input_reliability:=reliable",
    ]
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    yield proc, log
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_live_replay_scores_and_records_the_node_outputs(tmp_path, node, capsys):
    proc, log = node
    stamps = [Stamp(40, i * 500_000_000) for i in range(2)]
    items = []
    for i, st in enumerate(stamps):
        ids = np.full((H, W), i % 3, np.uint8)
        ids[:4] = 255
        items += [("/cam/image_raw", st.ns, camera_msg(st, random_rgb(H, W, i), "bgr8")),
                  ("/cam/label", st.ns, label_msg(st, ids))]
    bag = write_bag(tmp_path / "in", items)
    out = tmp_path / "out"
    rc = cli.main(["run", str(bag), "--mode", "live", "--node", NODE, "--rate", "0.3", "--wait", "180",
                   "--tail", "60", "--gt-topic", "/cam/label", "--vocab", *VOCAB, "--out", str(out), "--quiet"])
    assert proc.poll() is None, log.read_text()[-3000:]
    assert rc == 0, capsys.readouterr().err + log.read_text()[-3000:]

    report = json.loads((out / "report.json").read_text())
    frames = report["frames"]
    assert report["mode"] == "live" and report["random_weights"] is True
    assert frames["published"] == 2 and frames["processed"] + frames["dropped"] == 2
    assert frames["processed"] >= 1 and frames["scored"] == frames["processed"]
    assert report["metrics"]["valid_pixels"] == frames["processed"] * (H - 4) * W
    assert report["timing"]["stages"]["end_to_end"]["n"] == frames["processed"]

    got = {}
    for topic, schema, log_time, msg in read_mcap(next((out / "bag").glob("*.mcap"))):
        got.setdefault(topic, []).append((log_time, msg))
    assert f"{NODE}/label_info" in got
    labels = got[f"{NODE}/label_image"]
    answered = {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in labels}
    assert answered <= {(s.sec, s.nanosec) for s in stamps} and len(answered) == frames["processed"]
    assert all(t == Stamp(m.header.stamp.sec, m.header.stamp.nanosec).ns for t, m in labels)  # input bag time
    for name in ("instance_image", "overlay", "instances"):
        assert len(got[f"{NODE}/{name}"]) == frames["processed"], name


def test_live_without_a_node_says_so(tmp_path, capsys):
    st = Stamp(1, 0)
    bag = write_bag(tmp_path / "in", [("/cam/image_raw", 1, camera_msg(st, random_rgb(8, 8, 0)))])
    rc = cli.main(["run", str(bag), "--mode", "live", "--node", "/nobody/sfs_node", "--wait", "1",
                   "--vocab", *VOCAB, "--out", str(tmp_path / "o"), "--quiet", "--no-bag"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "no running sfs_node /nobody/sfs_node answered within 1 s" in err
