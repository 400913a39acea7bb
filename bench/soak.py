"""Soak test: the sfs_ros node in a child process under sustained overload, for N seconds.

    .venv/bin/python bench/soak.py --duration 600          # default 600 s
    .venv/bin/python bench/soak.py --duration 120 --hz 60 --burst 300 --burst-every 30

The child is `python -m sfs_ros.ros.node` with random-weight models kept small (imgsz 320,
max_det 2, dense labeling, 3 classes, reliable input QoS, queue_size 1), on the loopback-only
Fast DDS profile (config/fastdds_localhost.xml) and its own ROS_DOMAIN_ID. This process
publishes 120 x 160 rgb8 frames at --hz plus a burst of --burst frames every --burst-every s,
samples the child's RSS (/proc/<pid>/status VmRSS) every 5 s, records the latency of every
answered frame (publish -> ~/label_image received here) and reads the node's counters from
/diagnostics. At the end it stops the child with SIGINT and prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vmrss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--hz", type=float, default=60.0)
    ap.add_argument("--burst", type=int, default=300, help="frames per burst")
    ap.add_argument("--burst-every", type=float, default=30.0, help="seconds between bursts")
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="seconds after the first answer that count as warm-up")
    ap.add_argument("--domain-id", type=int, default=None)
    args = ap.parse_args()

    # DDS on loopback, own domain: set before rclpy is imported, inherited by the child
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None
                                      else random.Random(os.getpid()).randint(201, 230))
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_localhost.xml")
    os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    os.environ.setdefault("SFS_CACHE_DIR", tempfile.mkdtemp(prefix="sfs_soak_cache_"))
    os.environ.setdefault("SFS_WEIGHTS_DIR", tempfile.mkdtemp(prefix="sfs_soak_weights_"))

    import numpy as np
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from sfs_ros.ros import convert

    ns = f"/soak{os.getpid()}"
    node_args = {
        "random_weights": "true", "device": "cpu", "imgsz": "320", "max_det": "2",
        "labeling_mode": "dense", "vocabulary": "['cup, mug', 'table', 'floor']",
        "score_threshold": "0.0", "input_reliability": "reliable", "queue_size": "1",
        "image_topics": "['cam/image_raw']",
    }
    cmd = [sys.executable, "-m", "sfs_ros.ros.node", "--ros-args", "-r", f"__ns:={ns}"]
    for k, v in node_args.items():
        cmd += ["-p", f"{k}:={v}"]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr_tail: list[str] = []
    def drain() -> None:
        for line in child.stderr:
            stderr_tail.append(line)
            del stderr_tail[:-200]
    threading.Thread(target=drain, daemon=True).start()

    rclpy.init()
    node = rclpy.create_node("soak_driver", namespace=ns)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, f"{ns}/cam/image_raw", reliable)
    lock = threading.Lock()
    sent_at: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    diag: dict[str, str] = {}

    def on_label(msg: Image) -> None:
        t = time.monotonic()
        with lock:
            t0 = sent_at.pop((msg.header.stamp.sec, msg.header.stamp.nanosec), None)
            if t0 is not None:
                latencies.append(t - t0)

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{ns}/sfs_node"):
                with lock:
                    diag.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(Image, f"{ns}/sfs_node/label_image", on_label, reliable)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    import skimage.data

    picture = np.ascontiguousarray(skimage.data.coffee()[80:320:2, 120:440:2])
    msg = convert.numpy_to_image(picture, "rgb8", Header(frame_id="cam"))
    counter = iter(range(1, 1 << 30))

    def send() -> tuple[int, int]:
        stamp = Time(sec=next(counter), nanosec=7)
        msg.header.stamp = stamp
        with lock:
            sent_at[(stamp.sec, stamp.nanosec)] = time.monotonic()
        pub.publish(msg)
        return stamp.sec, stamp.nanosec

    rss: list[tuple[float, float]] = []
    t_start = time.monotonic()
    rss.append((0.0, vmrss_mb(child.pid)))
    print(f"soak: child pid {child.pid}, domain {os.environ['ROS_DOMAIN_ID']}: waiting for the first answer",
          file=sys.stderr)
    # start-up: one frame per second until the first answer (models load in the child)
    while not latencies:
        if child.poll() is not None:
            print("".join(stderr_tail[-30:]), file=sys.stderr)
            raise SystemExit(f"node exited with {child.returncode} during start-up")
        if time.monotonic() - t_start > 180:
            raise SystemExit("no answer within 180 s")
        send()
        time.sleep(1.0)
    t_first = time.monotonic()
    startup_s = t_first - t_start
    with lock:
        latencies.clear()  # the warm-up frame's latency includes the model load
    rss_warm = None
    sent = paced = 0
    period = 1.0 / args.hz
    t0 = time.monotonic()
    next_rss, next_burst = t0, t0 + args.burst_every
    while (now := time.monotonic()) - t0 < args.duration:
        if child.poll() is not None:
            print("".join(stderr_tail[-30:]), file=sys.stderr)
            raise SystemExit(f"node died with {child.returncode} after {now - t0:.0f} s")
        if now >= next_rss:
            rss.append((now - t_start, vmrss_mb(child.pid)))
            if rss_warm is None and now - t_first >= args.warmup:
                rss_warm = rss[-1][1]
            next_rss += 5.0
        if now >= next_burst:
            for _ in range(args.burst):
                send()
                sent += 1
            next_burst += args.burst_every
        send()
        sent, paced = sent + 1, paced + 1
        time.sleep(max(0.0, t0 + paced * period - time.monotonic()))
    # a final frame, its answer, then one more diagnostics period
    t_final = time.monotonic()
    final_key = send()
    while time.monotonic() - t_final < 30:
        with lock:
            if final_key not in sent_at:
                break
        time.sleep(0.05)
    final_latency = time.monotonic() - t_final
    time.sleep(2.5)
    rss.append((time.monotonic() - t_start, vmrss_mb(child.pid)))
    alive = child.poll() is None
    child.send_signal(signal.SIGINT)
    try:
        code = child.wait(20)
    except subprocess.TimeoutExpired:
        child.kill()
        code = "killed after 20 s"
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()

    lat = np.array(latencies) if latencies else np.array([float("nan")])
    values = [r for _, r in rss]
    rows = [
        ("duration of load (s)", f"{args.duration:.0f}"),
        ("start-up to first answer (s)", f"{startup_s:.1f}"),
        ("frames published (load)", str(sent)),
        ("frames received by node", diag.get("frames received", "?")),
        ("frames skipped before the callback (sequence gaps)",
         diag.get("frames skipped before the callback", "?")),
        ("frames sent in all (start-up + load + final) / received + skipped",
         f"{next(counter) - 1} / {_sum(diag, 'frames received', 'frames skipped before the callback')}"),
        ("frames processed (out)", diag.get("frames processed", "?")),
        ("frames dropped (pipeline)", diag.get("frames dropped", "?")),
        ("errors / bad inputs", f"{diag.get('errors', '?')} / {diag.get('bad inputs', '?')}"),
        ("messages lost (event)", diag.get("messages lost", "?")),
        ("answered frames seen here", str(len(latencies))),
        ("latency p50 / p95 / max (s)",
         f"{np.percentile(lat, 50):.2f} / {np.percentile(lat, 95):.2f} / {np.max(lat):.2f}"),
        ("final frame answered in (s)", f"{final_latency:.2f}"),
        ("node total latency p50 / p95 (ms, /diagnostics)",
         f"{diag.get('total latency p50 (ms)', '?')} / {diag.get('total latency p95 (ms)', '?')}"),
        ("RSS start (MB)", f"{values[0]:.0f}"),
        ("RSS after warm-up (MB)", f"{rss_warm:.0f}" if rss_warm is not None else "n/a"),
        ("RSS end (MB)", f"{values[-1]:.0f}"),
        ("RSS max (MB)", f"{max(values):.0f}"),
        ("RSS samples (every 5 s)", str(len(values))),
        ("node alive at end / exit code after SIGINT", f"{alive} / {code}"),
    ]
    print("| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print("\nRSS series (s, MB): " + ", ".join(f"{t:.0f}:{r:.0f}" for t, r in rss))
    return 0 if alive and code == 0 else 1


def _sum(values: dict, *keys: str) -> str:
    try:
        return str(sum(int(values[k]) for k in keys))
    except (KeyError, ValueError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
