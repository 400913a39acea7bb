"""The core logs with Python logging (`sfs_ros.*`); in the node those lines go to ROS logging."""
from __future__ import annotations

import logging
import traceback
from typing import Any


class RosLogBridge(logging.Handler):
    """Forwards the core's Python log records (`sfs_ros.*`) to the node's ROS logger.

    Exceptions are summarised on one line (type and message); the traceback follows only when
    the logger is at debug level (`--ros-args --log-level sfs_node.core:=debug`).
    """

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                text += f" ({type(exc).__name__}: {exc})"
                self._ros.debug("".join(traceback.format_exception(*record.exc_info)))
            if record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            else:
                self._ros.info(text)
        except Exception:  # noqa: BLE001 - logging must never raise (e.g. after rclpy shutdown)
            pass
