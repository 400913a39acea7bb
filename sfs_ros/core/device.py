"""Device selection and per-stage CUDA streams.

Each model stage owns one `torch.cuda.Stream`, so FastSAM on frame t+1 can overlap CLIP on
frame t; on CPU the stream context is a no-op and the same code runs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from sfs_ros.core.frame import SfsError


class DeviceError(SfsError, ValueError):
    """The configured device does not exist on this machine."""


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda:0 when available else cpu; 'cpu', 'cuda', 'cuda:N' checked against the machine."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {spec!r}: use 'auto', 'cpu' or 'cuda:N'") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} asked for but CUDA is not available here")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise DeviceError(f"unsupported device {spec!r}: use 'auto', 'cpu' or 'cuda:N'")
    return device


def new_stream(device: torch.device) -> "torch.cuda.Stream | None":
    return torch.cuda.Stream(device) if device.type == "cuda" else None


@contextlib.contextmanager
def on_stream(stream: "torch.cuda.Stream | None") -> Iterator[None]:
    """Run the block on `stream` and wait for it, so results handed to the next stage are ready."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()
