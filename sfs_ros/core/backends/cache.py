"""The export cache: each exported model built once, found again by what it was built from.

A key names the network (FastSAM, CLIP crop or dense graph), the model, its weights by content
(weights.file_fingerprint, as the text-embedding cache), the input size, the backend and the
versions of the exporting code, so a replaced checkpoint or an upgraded exporter never serves a
stale file. Building happens in a temporary folder renamed into place: a crash or a parallel
process never leaves half an export that a later load would take for done.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sfs_ros.core.frame import SfsError
from sfs_ros.core.weights import cache_dir

log = logging.getLogger("sfs_ros.backends")

#: Written last into a finished export folder: the artifact's path relative to the folder.
DONE = "artifact.txt"

Progress = Callable[[str], None]


def export_dir() -> Path:
    """Root of the export cache ($SFS_EXPORT_DIR, default <cache_dir>/exported)."""
    return Path(os.environ.get("SFS_EXPORT_DIR", cache_dir() / "exported"))


@dataclass(frozen=True)
class ExportKey:
    """What one exported model was built from."""

    network: str  # "fastsam", "clip-crop", "clip-dense"
    model: str  # model name or checkpoint stem
    weights: str  # content fingerprint of the weights
    size: str  # input size, e.g. "640" or "224"
    backend: str
    versions: str  # exporter versions (torch, ultralytics / onnx opset ...)

    @property
    def folder(self) -> Path:
        digest = hashlib.sha1("\x1f".join(
            (self.network, self.model, self.weights, self.size, self.backend, self.versions)
        ).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model)[-40:]
        return export_dir() / f"{self.network}-{slug}-{self.size}-{self.backend}-{digest}"

    def describe(self) -> str:
        return f"{self.network} {self.model} (input {self.size}, {self.backend})"


def cached(key: ExportKey) -> Path | None:
    """The finished artifact of `key`, or None."""
    done = key.folder / DONE
    return key.folder / done.read_text().strip() if done.is_file() else None


def build(key: ExportKey, make: Callable[[Path], Path], allow: bool,
          progress: Progress = log.info) -> Path:
    """The artifact of `key`: from the cache, else made by `make(folder) -> artifact path`.

    `allow=False` (export_missing off) turns a miss into an error naming `sfs export`."""
    found = cached(key)
    if found is not None:
        return found
    if not allow:
        raise SfsError(f"no exported {key.describe()} in {export_dir()}: run `sfs export` with "
                       "the same options first, or set export_missing")
    progress(f"exporting {key.describe()} -> {key.folder} ...")
    start = time.monotonic()
    tmp = key.folder.with_name(f"{key.folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        artifact = make(tmp).resolve().relative_to(tmp.resolve())
        (tmp / DONE).write_text(str(artifact))
        try:
            tmp.rename(key.folder)
        except OSError:  # another process finished the same export first: use theirs
            if cached(key) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"exported {key.describe()} in {time.monotonic() - start:.1f} s")
    return key.folder / artifact
