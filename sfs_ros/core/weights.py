"""Where checkpoints come from, and one clear error when they are not there.

Nothing here downloads: robots and CI machines are often offline, and a model that silently
fetches gigabytes at start-up (or hangs on a dead network) is worse than a plain message. Users
put the files in the weights directory (or pass a path); `--random-weights` builds the same
architectures untrained so the whole pipeline can run anywhere, marked as such.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from sfs_ros.core.frame import SfsError
from sfs_ros.core.options import QUICK_GELU_CHOICES

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


def resolve_clip(model_name: str, pretrained: str) -> str:
    """Find open_clip's `pretrained` weights for `model_name` on this machine.

    `pretrained` is an open_clip tag (e.g. "openai", "laion2b_s34b_b79k"), found in the Hugging
    Face cache or weights_dir(), or a local checkpoint file. Returns the file. The activation
    the weights were trained with is a separate question: `clip_quick_gelu`.
    """
    import open_clip

    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if model_name not in open_clip.list_models():
        raise WeightsMissingError(f"open_clip has no model named {model_name!r}")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name))
        raise WeightsMissingError(
            f"{pretrained!r} is neither an open_clip pretrained tag of {model_name} ({tags}) "
            "nor an existing checkpoint file."
        )
    repo = cfg.get("hf_hub", "").rstrip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        filenames = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        for filename in filenames:
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str):
                return hit
        raise WeightsMissingError(
            f"CLIP weights {model_name}/{pretrained} not found in the Hugging Face cache "
            f"({HF_HUB_CACHE}). Fetch them on a connected machine with "
            f"`huggingface-cli download {repo} {filenames[0]}` and copy the cache over, or pass "
            "a local checkpoint file as the pretrained value, or run with --random-weights."
        )
    url = cfg.get("url", "")
    filename = Path(url).name if url else f"{model_name}-{pretrained}.pt"
    if (weights_dir() / filename).is_file():
        return str(weights_dir() / filename)
    raise WeightsMissingError(
        f"CLIP weights {model_name}/{pretrained} ({filename}) not found in {weights_dir()}. "
        f"Download {url or filename} there, or pass a local checkpoint file, or run with "
        "--random-weights."
    )


#: What `clip_quick_gelu="auto"` ends with when nothing tells: the hint the log gives.
QUICK_GELU_HINT = "OpenAI weights need clip_quick_gelu=true"


def quick_gelu_problem(model_name: str, setting: str) -> str | None:
    """Why `setting` cannot apply to `model_name`, or None. A "-quickgelu" model's config turns
    QuickGELU on and open_clip can only force it on, never off."""
    if setting not in QUICK_GELU_CHOICES:
        return f"clip_quick_gelu must be one of {QUICK_GELU_CHOICES}, got {setting!r}"
    if setting == "false" and model_name.endswith("-quickgelu"):
        return (f"clip_quick_gelu=false contradicts model {model_name!r}, which always runs "
                f"QuickGELU: use model {model_name.removesuffix('-quickgelu')!r} for GELU")
    return None


def clip_quick_gelu(model_name: str, pretrained: str, setting: str = "auto") -> tuple[bool, str]:
    """Whether CLIP `model_name` with weights `pretrained` runs QuickGELU, and why (for the log).

    OpenAI's CLIP (and some later releases) was trained with QuickGELU, x * sigmoid(1.702 x).
    The activation has no parameters, so a checkpoint file does not record it and loads either
    way; run with the wrong one, the weights silently lose accuracy. open_clip infers it from a
    pretrained tag, never from a path, hence this decision. "true"/"false" force it; "auto":

    1. a model name ending in "-quickgelu" (ViT-B-32-quickgelu): on, its config says so;
    2. an open_clip pretrained tag of the model ("openai"): open_clip's cfg of that tag;
    3. a file inside a Hugging Face cache repository (.../models--timm--vit_base_patch32_clip_224.openai/...)
       that open_clip registers for a tag: that tag's cfg; another repository named "*.openai": on;
    4. a file named like a release download open_clip registers (ViT-B-32.pt, RN50.pt,
       b32_400m.pt, ...): that release's cfg;
    5. otherwise off (GELU), and the reason says that OpenAI weights need clip_quick_gelu=true.
    """
    if setting in ("true", "false"):
        return setting == "true", f"forced by clip_quick_gelu={setting}"
    if model_name.endswith("-quickgelu"):
        return True, f"model name {model_name} ends in -quickgelu"
    import open_clip

    path = Path(pretrained).expanduser()
    cfg = {} if path.is_file() else open_clip.get_pretrained_cfg(model_name, pretrained)
    if cfg:
        return bool(cfg.get("quick_gelu", False)), f"pretrained tag {pretrained} says so"
    known = _checkpoint_provenance(path)
    if known is not None:
        return known
    return False, f"nothing tells how {path.name} was trained; {QUICK_GELU_HINT}"


def _checkpoint_provenance(path: Path) -> tuple[bool, str] | None:
    """Rules 3 and 4 of clip_quick_gelu for a checkpoint path, or None when neither applies."""
    repos, files = _open_clip_releases()
    for candidate in dict.fromkeys((path, path.resolve())):  # a link into the HF cache counts
        repo = _hf_cache_repo(candidate)
        if repo in repos:
            quick, source = repos[repo]
            return quick, f"{path} is from the Hugging Face repository {repo} of open_clip's {source}"
        if repo and repo.endswith(".openai"):
            return True, f"{path} is from the Hugging Face repository {repo} (OpenAI weights)"
    if path.name in files:
        quick, source = files[path.name]
        return quick, f"file name {path.name} is open_clip's release of {source}"
    return None


def _hf_cache_repo(path: Path) -> str | None:
    """The repository id of a path inside a Hugging Face hub cache (models--org--name/...)."""
    for part in reversed(path.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


@functools.lru_cache(maxsize=1)
def _open_clip_releases() -> tuple[dict[str, tuple[bool, str]], dict[str, tuple[bool, str]]]:
    """open_clip's registered pretrained weights as (quick_gelu, "model/tag"), keyed by Hugging
    Face repository and by release file name; a key whose registrations disagree is dropped."""
    import open_clip

    repos: dict[str, tuple[bool, str] | None] = {}
    files: dict[str, tuple[bool, str] | None] = {}
    for model_name, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        entry = (bool(cfg.get("quick_gelu", False)), f"{model_name}/{tag}")
        for table, key in ((repos, cfg.get("hf_hub", "").rstrip("/")), (files, Path(cfg.get("url", "")).name)):
            if key:
                seen = table.setdefault(key, entry)
                if seen is not None and seen[0] != entry[0]:
                    table[key] = None
    return ({k: v for k, v in repos.items() if v is not None},
            {k: v for k, v in files.items() if v is not None})


def file_fingerprint(path: str | Path) -> str:
    """Size, mtime_ns and sha1 of the first MiB of a file: what a cache of results computed
    from a checkpoint must depend on. A file replaced at the same path changes it; hashing the
    whole file (600 MB for ViT-B-32) would cost seconds at every start."""
    stat = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha1(f.read(1 << 20)).hexdigest()
    return f"{stat.st_size}:{stat.st_mtime_ns}:{head}"
