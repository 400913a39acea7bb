"""The node as a child process (`python -m sfs_ros.ros.node`): start-up errors and shutdown.

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
import time

import pytest
import yaml

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
    import threading

    import cv2
    import numpy as np
    import rclpy
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from ros_rig import RELIABLE, Inbox, new_stamp, rgb_image, wait_until

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
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    tester = rclpy.create_node("sigterm_tester", context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(tester)
    threading.Thread(target=executor.spin, daemon=True).start()
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
        executor.shutdown(timeout_sec=2)
        tester.destroy_node()
        context.try_shutdown()
    output = log_path.read_text()
    print(f"\nSIGTERM while encoding 847 classes, frames at 20 Hz: exit {code} in {elapsed:.2f} s")
    assert code == 0, f"exit code {code}:\n{output[-3000:]}"
    assert elapsed < 2.0, f"SIGTERM took {elapsed:.2f} s:\n{output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    assert "still encoding" in output and "stopped in" in output, output[-2000:]
