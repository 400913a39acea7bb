"""The node as a child process (`python -m sfs_ros.ros.node`): start-up errors, end to end
over DDS, shutdown.

Start-up with a bad params file (`--ros-args --params-file F`).

Each case is a real child process given a YAML file the way a launch file passes one. An
operator error must end the process with a one-line reason naming the parameter, exit code 2
(refused before any model loads) or 1 (configure failed: the device, model or checkpoint does not
exist), and no Python traceback. All cases run at once: most end within a second or two, the
configure cases after torch and ultralytics import.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ros_rig import (
    RELIABLE,
    Inbox,
    SpinningTester,
    diagnostics_for,
    new_stamp,
    rgb_image,
    wait_until,
)
from sfs_ros.msg import InstanceArray, LabelInfo

ROOT = Path(__file__).resolve().parents[1]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: id -> (parameters in the file, exit code, regular expression the output must contain)
CASES: dict[str, tuple[dict, int, str]] = {
    "empty vocabulary": ({"vocabulary": []}, 2, r"vocabulary is empty"),
    "duplicate classes": ({"vocabulary": ["cup", "table", "Cup"]}, 2, r"duplicate class name"),
    "empty class name": ({"vocabulary": ["cup", " "]}, 2, r"empty class name"),
    "vocabulary file missing": ({"vocabulary": ["/nonexistent/classes.txt"]}, 2, r"not found"),
    "mono8 with 847 classes": ({"vocabulary": ["ade20k_full"], "label_encoding": "mono8"}, 2,
                               r"label_encoding:=mono16"),
    "imgsz not a multiple of 32": ({"imgsz": 100}, 2, r"imgsz"),
    "imgsz absurd": ({"imgsz": 100000}, 2, r"imgsz"),
    "imgsz negative": ({"imgsz": -640}, 2, r"imgsz"),
    "conf above 1": ({"conf": 1.5}, 2, r"conf"),
    "iou below 0": ({"iou": -0.1}, 2, r"iou"),
    "max_det zero": ({"max_det": 0}, 2, r"max_det"),
    "threshold of the wrong type": ({"score_threshold": "high"}, 2, r"score_threshold"),
    "template without placeholder": ({"prompt_templates": ["a photo"]}, 2, r"must contain '\{\}'"),
    "template with a format field": ({"prompt_templates": ["{} {0.__class__}"]}, 2,
                                     r"must contain '\{\}'"),
    "unknown device name": ({"device": "gpu"}, 2, r"device must be auto, cpu, cuda or cuda:N"),
    "unknown labeling mode": ({"labeling_mode": "magic"}, 2, r"labeling_mode must be one of"),
    "no image topics": ({"image_topics": []}, 2, r"image_topics is empty"),
    "invalid topic name": ({"image_topics": ["bad topic"]}, 2, r"not a valid topic name"),
    "absent CUDA device": ({"device": "cuda:7", "random_weights": True}, 1,
                           r"configure failed: device 'cuda:7'"),
    "unknown FastSAM model": ({"model": "FastSAM-q"}, 1,
                              r"configure failed: FastSAM model 'FastSAM-q' is neither a known name"),
    "missing checkpoint file": ({"model": "/nonexistent/weights/FastSAM-x.pt"}, 1,
                                r"configure failed: .*/nonexistent/weights/FastSAM-x\.pt"),
    "FastSAM-s not downloaded": ({"model": "FastSAM-s"}, 1,
                                 r"configure failed: .*FastSAM-s\.pt.*Download it from"),
    "unknown CLIP model": ({"clip_model": "ViT-Q-99", "random_weights": True}, 1,
                           r"configure failed: .*ViT-Q-99"),
}
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case as its own node process, all at once; id -> (exit code, output, seconds)."""
    root = tmp_path_factory.mktemp("startup")
    env = dict(os.environ, ROS_LOG_DIR=str(root / "ros_log"), PYTHONUNBUFFERED="1")
    running = {}
    for i, (case, (values, _, _)) in enumerate(CASES.items()):
        params_file = root / f"case{i}.yaml"
        params_file.write_text(yaml.safe_dump(
            {"/**": {"ros__parameters": {"device": "cpu", **values}}}))
        log = open(root / f"case{i}.log", "w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "sfs_ros.ros.node", "--ros-args", "-r", f"__ns:=/startup{i}",
             "--params-file", str(params_file)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        running[case] = (proc, log, time.monotonic())
    results = {}
    for case, (proc, log, t0) in running.items():
        try:
            code = proc.wait(timeout=max(1.0, t0 + TIMEOUT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.seek(0)
        results[case] = (code, log.read(), time.monotonic() - t0)
        log.close()
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_bad_params_file_is_a_clear_start_up_error(outcomes, case):
    _, expected_code, words = CASES[case]
    code, output, _ = outcomes[case]
    assert code == expected_code, f"exit code {code}, expected {expected_code}:\n{output[-2000:]}"
    assert re.search(words, output), output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    if expected_code == 2:  # refused before the models: nothing was loaded
        assert "parameter refused at start-up" in output or "InvalidParameterValue" in output, output
        assert "configured:" not in output


# ---------------------------------------------------------------------- shutdown mid-work
def test_sigterm_while_frames_are_in_flight_and_a_vocabulary_is_encoding(photo, tmp_path):
    """SIGTERM while frames stream in and the 847-class ADE20K-full vocabulary is being encoded
    (about a minute of CLIP text encoder on this CPU): exit code 0 within 2 s, no traceback.
    The node runs with mask_resolution:=low (the parameter reaches the segmenter)."""
    picture = np.ascontiguousarray(cv2.resize(photo, (160, 120)))
    ns = "/sigterm"
    env = dict(os.environ, ROS_LOG_DIR=str(tmp_path / "ros_log"), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sfs_ros.ros.node", "--ros-args", "-r", f"__ns:={ns}",
             "-p", "random_weights:=true", "-p", "device:=cpu", "-p", "imgsz:=160",
             "-p", "max_det:=3", "-p", "labeling_mode:=dense", "-p", "vocabulary:=[cup, table]",
             "-p", "image_topics:=[cam/image]", "-p", "input_reliability:=reliable",
             "-p", "mask_resolution:=low"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    spinning = SpinningTester("sigterm_tester")
    tester = spinning.node
    streaming = threading.Event()

    def alive():
        if proc.poll() is not None:
            raise AssertionError(f"node exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        return True

    try:
        pub = tester.create_publisher(Image, f"{ns}/cam/image", RELIABLE)
        labels = Inbox(tester, Image, f"{ns}/sfs_node/label_image")
        wait_until(lambda: alive() and pub.get_subscription_count() >= 1, 90, "the node to subscribe")
        wait_until(lambda: alive() and tester.count_publishers(labels.topic) >= 1, 10, "its output")
        stamp = new_stamp()
        pub.publish(rgb_image(picture, stamp))
        label = labels.with_stamp(stamp, timeout=60)
        assert (label.height, label.width) == picture.shape[:2]  # low-res masks, full-size answer

        def stream():  # 20 Hz until the node is gone: frames are always in flight
            while streaming.is_set():
                pub.publish(rgb_image(picture, new_stamp()))
                time.sleep(0.05)

        streaming.set()
        threading.Thread(target=stream, daemon=True).start()
        client = tester.create_client(SetParameters, f"{ns}/sfs_node/set_parameters")
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(SetParameters.Request(parameters=[
            Parameter("vocabulary", Parameter.Type.STRING_ARRAY, ["ade20k_full"]).to_parameter_msg()]))
        wait_until(future.done, 10, "the set_parameters answer")
        assert future.result().results[0].successful, future.result().results[0].reason
        wait_until(lambda: alive() and "encoding vocabulary 'ade20k_full'" in log_path.read_text(),
                   10, "the encoding to start")
        time.sleep(1.0)  # well inside the encoding (about a minute), frames still answered
        n_answers = len(labels.messages)
        wait_until(lambda: len(labels.messages) > n_answers, 20, "a frame answered meanwhile")
        assert "vocabulary now 'ade20k_full'" not in log_path.read_text()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - t0
    finally:
        streaming.clear()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        spinning.close()
    output = log_path.read_text()
    print(f"\nSIGTERM while encoding 847 classes, frames at 20 Hz: exit {code} in {elapsed:.2f} s")
    assert code == 0, f"exit code {code}:\n{output[-3000:]}"
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f} s:\n{output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert "still encoding" in output and "stopped in" in output, output[-2000:]


# ---------------------------------------------------------------------- cross-process
def test_node_process_end_to_end_and_sigint(photo, tmp_path):
    picture = np.ascontiguousarray(photo[100:300, 150:450])  # 200 x 300
    env = dict(os.environ, ROS_LOG_DIR=str(tmp_path / "ros_log"), PYTHONUNBUFFERED="1")
    ns = "/xproc"
    cmd = [
        sys.executable, "-m", "sfs_ros.ros.node", "--ros-args", "-r", f"__ns:={ns}",
        "--params-file", str(ROOT / "config" / "sfs.yaml"),
        "-p", "random_weights:=true", "-p", "device:=cpu", "-p", "imgsz:=320",
        "-p", "max_det:=4", "-p", "vocabulary:=[cup, table, floor]",
        "-p", "image_topics:=[camera/image_raw]", "-p", "labeling_mode:=dense",
    ]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out, "w") as fout, open(err, "w") as ferr:
        proc = subprocess.Popen(cmd, env=env, stdout=fout, stderr=ferr, cwd=tmp_path)
    tester = SpinningTester("xproc_tester")
    node = tester.node

    def alive():
        if proc.poll() is not None:
            raise AssertionError(f"node exited with {proc.returncode}:\n{err.read_text()[-3000:]}")
        return True

    try:
        # default input QoS (best_effort, sensor data) with the loopback profile
        pub = node.create_publisher(Image, f"{ns}/camera/image_raw",
                                    QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        labels = Inbox(node, Image, f"{ns}/sfs_node/label_image")
        instances = Inbox(node, InstanceArray, f"{ns}/sfs_node/instances")
        info = Inbox(node, LabelInfo, f"{ns}/sfs_node/label_info", LATCHED)
        wait_until(lambda: alive() and pub.get_subscription_count() >= 1, 90, "the node to subscribe")
        wait_until(lambda: alive() and node.count_publishers(labels.topic) >= 1, 10, "label publisher")
        sent = []
        deadline = time.monotonic() + 60
        while not labels.messages and time.monotonic() < deadline:  # best effort: send until heard
            alive()
            stamp = new_stamp()
            sent.append((stamp.sec, stamp.nanosec))
            pub.publish(rgb_image(picture, stamp))
            time.sleep(0.5)
        assert labels.messages, f"no label image from the node process:\n{err.read_text()[-3000:]}"
        label = labels.messages[0]
        assert (label.header.stamp.sec, label.header.stamp.nanosec) in sent
        assert (label.encoding, label.height, label.width) == ("mono16", 200, 300)
        assert label.header.frame_id == "cam_optical"
        instances.with_stamp(label.header.stamp, timeout=10)
        first = info.wait_for(lambda m: True, 10)
        assert [c.name for c in first.classes] == ["cup", "table", "floor"]

        # runtime vocabulary change through the parameter service (what `ros2 param set` does)
        client = node.create_client(SetParameters, f"{ns}/sfs_node/set_parameters")
        assert client.wait_for_service(timeout_sec=10)
        for value, ok in ((["road", "car, truck"], True), ([], False)):
            request = SetParameters.Request(
                parameters=[Parameter("vocabulary", Parameter.Type.STRING_ARRAY, value).to_parameter_msg()])
            future = client.call_async(request)
            wait_until(future.done, 10, "the set_parameters answer")
            assert future.result().results[0].successful is ok, future.result().results[0].reason
        info.wait_for(lambda m: [c.name for c in m.classes] == ["road", "car"], 30, "with the new classes")
    finally:
        alive_before_signal = proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
        elapsed = time.monotonic() - t0
        tester.close()
    stderr = err.read_text()
    assert alive_before_signal
    assert code == 0, f"exit code {code}:\n{stderr[-3000:]}"
    assert elapsed < 3.0, f"SIGINT took {elapsed:.1f} s"
    assert "Traceback" not in stderr and "Traceback" not in out.read_text(), stderr[-3000:]
    assert "shutting down" in stderr and "RANDOM weights" in stderr


def test_node_process_without_autostart_and_with_missing_weights(tmp_path):
    """--no-autostart leaves the node unconfigured (SIGTERM ends it with 0); a checkpoint that is
    not there makes autostart fail with a plain message and exit code 1, without a traceback."""
    env = dict(os.environ, ROS_LOG_DIR=str(tmp_path / "ros_log"), PYTHONUNBUFFERED="1")
    base = [sys.executable, "-m", "sfs_ros.ros.node"]
    idle_err, failed_err = tmp_path / "idle.txt", tmp_path / "failed.txt"
    with open(idle_err, "w") as f1, open(failed_err, "w") as f2:
        idle = subprocess.Popen(base + ["--no-autostart", "--ros-args", "-r", "__ns:=/idle"],
                                env=env, stdout=f1, stderr=subprocess.STDOUT)
        failed = subprocess.Popen(
            base + ["--ros-args", "-r", "__ns:=/failed", "-p", "device:=cpu",
                    "-p", "model:=/nonexistent/FastSAM-s.pt"],
            env=env, stdout=f2, stderr=subprocess.STDOUT)
    tester = SpinningTester("idle_tester")
    node = tester.node
    try:
        diagnostics = Inbox(node, DiagnosticArray, "/diagnostics")
        status, values = diagnostics_for(diagnostics, "/idle/sfs_node", "node", timeout=60)
        assert values["state"] == "unconfigured" and status.level == DiagnosticStatus.OK
        t0 = time.monotonic()
        idle.send_signal(signal.SIGTERM)
        assert idle.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 3.0
        assert failed.wait(timeout=60) == 1
    finally:
        for proc in (idle, failed):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        tester.close()
    idle_log, failed_log = idle_err.read_text(), failed_err.read_text()
    assert "autostart off" in idle_log and "Traceback" not in idle_log, idle_log
    assert "configure failed" in failed_log and "/nonexistent/FastSAM-s.pt" in failed_log, failed_log
    assert "random_weights:=true" in failed_log and "Traceback" not in failed_log, failed_log
