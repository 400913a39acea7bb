"""Shared test set-up: DDS kept on loopback, caches in a per-run folder, small real models.

The environment is set before any test module imports rclpy, so every DDS participant of the
run (in-process or child process) uses its own ROS_DOMAIN_ID and the loopback-only Fast DDS
profile: no discovery traffic leaves the machine and parallel runs do not see each other.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(30, 200)))
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_localhost.xml")
os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)  # the profile decides
# Generated files (random-weight checkpoints, text caches) go to a per-run folder, never ~/.cache.
os.environ.setdefault("SFS_CACHE_DIR", tempfile.mkdtemp(prefix="sfs_test_cache_"))
#: Where the user keeps real checkpoints ($SFS_WEIGHTS_DIR as given, else the default): only the
#: `weights` tests look there; every other test sees an empty weights folder.
USER_WEIGHTS_DIR = Path(os.environ.get("SFS_WEIGHTS_DIR")
                        or Path.home() / ".cache" / "sfs_ros" / "weights")
os.environ.setdefault("SFS_WEIGHTS_DIR", tempfile.mkdtemp(prefix="sfs_test_weights_"))

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "weights: needs the pretrained checkpoints on disk (FastSAM-s.pt, CLIP "
        "ViT-B-32/openai); skipped with 'weights not on disk' otherwise. Run: pytest -m weights")


@pytest.fixture(scope="session")
def user_weights_dir() -> Path:
    """The weights folder the user configured (see USER_WEIGHTS_DIR), for the `weights` tests."""
    return USER_WEIGHTS_DIR


@pytest.fixture(scope="session")
def photo():
    """A real RGB photograph (scikit-image's bundled coffee cup, 400 x 600)."""
    import skimage.data

    return skimage.data.coffee()


@pytest.fixture(scope="session")
def segmenter():
    """Real FastSAM-s architecture, random weights (class bias zeroed: scores 0.5), few masks."""
    from sfs_ros.core.segmenter import Segmenter, SegmenterConfig

    return Segmenter(SegmenterConfig(random_weights=True, device="cpu", max_det=6, imgsz=320))


@pytest.fixture(scope="session")
def labeler():
    """Real open_clip ViT-B-32, random weights; threshold 0 so every mask takes its argmax."""
    from sfs_ros.core.labeler import Labeler, LabelerConfig

    return Labeler(LabelerConfig(random_weights=True, device="cpu", threshold=0.0))
