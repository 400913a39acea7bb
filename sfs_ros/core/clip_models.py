"""The project's own open_clip model configs (config/clip_models/*.json), registered by name.

open_clip only knows the architectures in its package's model_configs folder. The project ships
its own (e.g. "sfs-shapes-clip", the small CLIP head of the known-answer shapes world, a test
world and not a replacement for a real CLIP), so `open_clip.create_model(name, pretrained=FILE)`
and `open_clip.get_tokenizer(name)` work for them like for any built-in name once
`register_project_models()` has run. A config file holds nothing but open_clip's own keys
(`embed_dim`, `vision_cfg`, `text_cfg`): open_clip passes every key to the model constructor,
so there is no room for comments; the architecture is described here and in the manifests of
the trained files (models/shapes/*.json).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from sfs_ros.core.frame import SfsError

log = logging.getLogger("sfs_ros.clip_models")

#: The folder under the project's config/ (checkout or installed share) holding the configs.
CLIP_MODELS_DIR = "clip_models"

_lock = threading.Lock()


def project_config_dir(name: str) -> Path | None:
    """config/<name> of the checkout, else of the installed ROS package share, else None.

    The same lookup order as the vocabulary presets: a source checkout wins, so a developer's
    edits are used without reinstalling.
    """
    checkout = Path(__file__).resolve().parents[2] / "config" / name
    if checkout.is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("sfs_ros")) / "config" / name
    except (ImportError, LookupError):  # no ament, or sfs_ros not in its index
        return None
    return installed if installed.is_dir() else None


def read_model_configs(directory: Path) -> dict[str, dict]:
    """Model name (file stem) -> config of every open_clip config file in `directory`.

    A file lacking open_clip's required keys is refused here: open_clip would skip it silently
    and the model would then be "not found" with no hint why.
    """
    configs = {}
    for path in sorted(directory.glob("*.json")):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SfsError(f"open_clip model config {path} cannot be read: {exc}") from None
        missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
        if missing:
            raise SfsError(f"open_clip model config {path} lacks {', '.join(missing)}")
        configs[path.stem] = config
    return configs


def register_project_models(directory: Path | None = None) -> tuple[str, ...]:
    """Register the project's open_clip model configs; returns their names.

    Idempotent and thread-safe: configs already registered with the same content are left
    alone (open_clip's add_model_config appends to its search path and rescans every folder on
    each call). A project config whose name open_clip already uses for a different architecture
    is refused rather than silently replacing it. `directory` defaults to config/clip_models
    of the checkout or installed share; when neither exists nothing is registered (a warning
    is logged, and built-in models keep working).
    """
    import open_clip

    directory = directory or project_config_dir(CLIP_MODELS_DIR)
    if directory is None:
        log.warning("no config/%s folder found: the project's CLIP models are not registered",
                    CLIP_MODELS_DIR)
        return ()
    configs = read_model_configs(directory)
    with _lock:
        known = set(open_clip.list_models())
        new = [name for name in configs if name not in known]
        for name in configs:
            if name in known and open_clip.get_model_config(name) != configs[name]:
                raise SfsError(f"open_clip model config {directory / name}.json reuses the name "
                               f"{name!r} of a different open_clip architecture: rename the file")
        for name in new:
            open_clip.add_model_config(directory / f"{name}.json")
    return tuple(configs)
