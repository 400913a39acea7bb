"""The `sfs_node` command: start SfsNode, spin it, stop it cleanly on SIGINT/SIGTERM.

    sfs_node --ros-args -p random_weights:=true -r image:=/camera/image_raw
    python -m sfs_ros.ros.main --ros-args --params-file config/sfs.yaml -p device:=cpu
(`python -m sfs_ros.ros.node` runs the same.) `--autostart` / `--no-autostart`, before
`--ros-args`, overrides the `autostart` parameter (configure and activate on start-up).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from sfs_ros.core.frame import SfsError
from sfs_ros.ros.executor import SfsExecutor
from sfs_ros.ros.node import SfsNode


def main(args: list[str] | None = None) -> int:
    """`sfs_node` / `python -m sfs_ros.ros.main`: spin until SIGINT/SIGTERM, then exit 0.

    Exit codes: 0 after a signal, 1 when autostart's configure/activate failed, 2 for parameter
    overrides the node refuses at start-up. With `args=None` (the real command line) the process
    ends with os._exit once everything is closed and flushed: the Python interpreter's own
    teardown of torch and ultralytics takes 1-2 s on small CPUs and owns nothing of ours. Pass
    `args` to get the code returned instead.
    """
    fast_exit = args is None
    code = _run(list(sys.argv if args is None else args), fast_exit)
    if fast_exit:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(argv: list[str], fast_exit: bool) -> int:
    parser = argparse.ArgumentParser(
        prog="sfs_node", description="Semantic-Fast-SAM ROS 2 node (parameters: --ros-args -p ...)"
    )
    parser.add_argument(
        "--autostart", action=argparse.BooleanOptionalAction, default=None,
        help="configure and activate on start-up (default: the autostart parameter, true)",
    )
    opts = parser.parse_args(remove_ros_args(argv)[1:])
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():  # second signal: stop waiting for anything
            signal.signal(signum, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        node = SfsNode()
    except SfsError as exc:  # a refused params file or -p override: say which, no traceback
        print(f"sfs_node: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    except Exception as exc:  # noqa: BLE001 - rclpy refused an override (type, read-only, ...)
        print(f"sfs_node: {type(exc).__name__}: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    log = node.get_logger()
    executor = SfsExecutor(num_threads=4)
    executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    spinner = threading.Thread(target=spin, name="sfs-executor", daemon=True)
    spinner.start()  # diagnostics and lifecycle services answer while the models load

    failed = threading.Event()

    def autostart() -> None:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            log.error("autostart: configure failed (see above)")
            failed.set()
        elif not stop.is_set() and node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            log.error("autostart: activate failed (see above)")
            failed.set()
        if failed.is_set():
            stop.set()

    starter = None
    use_autostart = opts.autostart if opts.autostart is not None else node.get_parameter("autostart").value
    if use_autostart:
        starter = threading.Thread(target=autostart, name="sfs-autostart", daemon=True)
        starter.start()
    else:
        log.info("autostart off: waiting for lifecycle transitions (configure, activate)")

    while not stop.wait(0.2) and rclpy.ok():
        pass
    code = 1 if failed.is_set() else 0
    if starter is not None and starter.is_alive():
        if fast_exit:
            # Loading models or encoding text cannot be interrupted, and nothing of ours runs yet
            # besides it: leave now rather than after the load.
            log.info("shutting down during start-up (models still loading): not waiting for them")
            _exit_now(0)
        starter.join()
    log.info("shutting down")
    t0 = time.monotonic()
    node.close()
    executor.shutdown(timeout_sec=1.0)
    spinner.join(1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    if code == 0:
        print(f"sfs_node: stopped in {time.monotonic() - t0:.2f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
