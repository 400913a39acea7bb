"""Ultralytics' stage timers without the device-wide CUDA wait (issue #17).

`BasePredictor.stream_inference` times preprocess, inference and postprocess with three
`ultralytics.utils.ops.Profile` objects, and `Profile.time()` calls
`torch.cuda.synchronize(device)` on entering and leaving each: six waits per frame for every
stream of the device. The pipeline runs FastSAM and CLIP on two streams of one device
(core/device.py), so each of those waits also waited for the CLIP batch of the previous frame,
serialising the two stages the streams exist to overlap.

`install()` swaps `ops.Profile` (looked up by the predictor at every call) for `StreamProfile`,
which on a non-default CUDA stream waits for that stream only: the segment stage's timings
still cover its own kernels, and never the label stage's. On the default stream, and off CUDA,
it is Ultralytics' own Profile, so no other use of Ultralytics in the process changes. Modules
that imported `Profile` by name (the validator) keep the original.
"""
from __future__ import annotations

import time
from typing import Any

import torch

_PROFILE: list[type] = []  # the StreamProfile class, built once ultralytics is imported


def stream_profile() -> type:
    """The `ops.Profile` subclass that synchronises the current CUDA stream only."""
    if not _PROFILE:
        from ultralytics.utils import ops

        class StreamProfile(ops.Profile):
            """ops.Profile whose clock waits for the caller's current stream, not the device."""

            def time(self) -> float:
                device = torch.device(self.device) if self.device is not None else None
                timed_device = getattr(self, "accelerator", None) is not None  # Ultralytics' flag
                if timed_device and device is not None and device.type == "cuda":
                    stream = torch.cuda.current_stream(device)
                    if stream != torch.cuda.default_stream(device):
                        stream.synchronize()
                        return time.perf_counter()
                return super().time()

        _PROFILE.append(StreamProfile)
    return _PROFILE[0]


def install() -> Any:
    """Make Ultralytics' predictor time its stages with StreamProfile (idempotent; called when
    a Segmenter loads). Returns the class now in use."""
    from ultralytics.utils import ops

    profile = stream_profile()
    if ops.Profile is not profile:
        ops.Profile = profile
    return profile
