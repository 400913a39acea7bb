"""Where checkpoints come from, and one clear error when they are not there.

Nothing here downloads: robots and CI machines are often offline, and a model that silently
fetches gigabytes at start-up (or hangs on a dead network) is worse than a plain message. Users
put the files in the weights directory (or pass a path); `--random-weights` builds the same
architectures untrained so the whole pipeline can run anywhere, marked as such.
"""
from __future__ import annotations

import os
from pathlib import Path

from sfs_ros.core.frame import SfsError

#: FastSAM checkpoints by name -> (file name, YOLOv8-seg architecture of the same cost).
FASTSAM_MODELS = {
    "FastSAM-s": ("FastSAM-s.pt", "yolov8s-seg.yaml"),
    "FastSAM-x": ("FastSAM-x.pt", "yolov8x-seg.yaml"),
}
FASTSAM_URL = "https://github.com/ultralytics/assets/releases/download/v8.3.0/{}"


class WeightsMissingError(SfsError, FileNotFoundError):
    """A checkpoint the configuration asks for is not on this machine."""


def weights_dir() -> Path:
    """The directory searched for checkpoints given by name ($SFS_WEIGHTS_DIR overrides)."""
    return Path(os.environ.get("SFS_WEIGHTS_DIR", Path.home() / ".cache" / "sfs_ros" / "weights"))


def cache_dir() -> Path:
    """Where generated files (random-weight checkpoints, text-embedding caches) are kept."""
    return Path(os.environ.get("SFS_CACHE_DIR", Path.home() / ".cache" / "sfs_ros"))


def resolve_fastsam(model: str) -> Path:
    """Path of the FastSAM (or any YOLOv8-seg) checkpoint named by `model`.

    `model` is a known name (FastSAM-s, FastSAM-x, with or without .pt) looked up in
    weights_dir() and the working directory, or a path to a checkpoint file.
    """
    name = model[:-3] if model.endswith(".pt") else model
    if name in FASTSAM_MODELS:
        filename = FASTSAM_MODELS[name][0]
        for candidate in (weights_dir() / filename, Path.cwd() / filename):
            if candidate.is_file():
                return candidate
        raise WeightsMissingError(
            f"FastSAM checkpoint {filename!r} not found in {weights_dir()} or {Path.cwd()}. "
            f"Download it from {FASTSAM_URL.format(filename)} and put it in {weights_dir()} "
            "(or set SFS_WEIGHTS_DIR, or pass a checkpoint path), or run with --random-weights."
        )
    path = Path(model).expanduser()
    if path.is_file():
        return path
    known = ", ".join(FASTSAM_MODELS)
    raise WeightsMissingError(
        f"FastSAM model {model!r} is neither a known name ({known}) nor an existing checkpoint file."
    )


def fastsam_architecture(model: str) -> str:
    """The YOLOv8-seg config with the compute cost of `model` (for random-weight builds)."""
    name = model[:-3] if model.endswith(".pt") else model
    return FASTSAM_MODELS.get(name, FASTSAM_MODELS["FastSAM-s"])[1]


def resolve_clip(model_name: str, pretrained: str) -> tuple[str, bool]:
    """Find open_clip's `pretrained` weights for `model_name` on this machine.

    `pretrained` is an open_clip tag (e.g. "openai", "laion2b_s34b_b79k"), found in the Hugging
    Face cache or weights_dir(), or a local checkpoint file. Returns the file and whether the
    tag was trained with QuickGELU (open_clip would infer that from the tag, not from a path).
    """
    import open_clip

    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path), False
    if model_name not in open_clip.list_models():
        raise WeightsMissingError(f"open_clip has no model named {model_name!r}")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name))
        raise WeightsMissingError(
            f"{pretrained!r} is neither an open_clip pretrained tag of {model_name} ({tags}) "
            "nor an existing checkpoint file."
        )
    quick_gelu = bool(cfg.get("quick_gelu", False))
    repo = cfg.get("hf_hub", "").rstrip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        filenames = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        for filename in filenames:
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str):
                return hit, quick_gelu
        raise WeightsMissingError(
            f"CLIP weights {model_name}/{pretrained} not found in the Hugging Face cache "
            f"({HF_HUB_CACHE}). Fetch them on a connected machine with "
            f"`huggingface-cli download {repo} {filenames[0]}` and copy the cache over, or pass "
            "a local checkpoint file as the pretrained value, or run with --random-weights."
        )
    url = cfg.get("url", "")
    filename = Path(url).name if url else f"{model_name}-{pretrained}.pt"
    if (weights_dir() / filename).is_file():
        return str(weights_dir() / filename), quick_gelu
    raise WeightsMissingError(
        f"CLIP weights {model_name}/{pretrained} ({filename}) not found in {weights_dir()}. "
        f"Download {url or filename} there, or pass a local checkpoint file, or run with "
        "--random-weights."
    )
