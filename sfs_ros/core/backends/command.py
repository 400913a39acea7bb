"""`sfs export`: build the exported models of a set of options into the export cache ahead.

Takes the same flags as `sfs segment` (the models, imgsz, labeling mode, backend ...) and loads
the models exactly as `segment` would, which exports what the cache lacks: FastSAM, the CLIP
crop encoder and, in the dense modes, the dense graph for `--frame-size`. A node or `sfs
segment` with the same options then starts without exporting (or, with export_missing off,
fails plainly when a model was not built here).
"""
from __future__ import annotations

import argparse
import logging

from sfs_ros.core import options
from sfs_ros.core.frame import SfsError


class _Counter(logging.Handler):
    """Counts the exports the cache performed (its 'exported ...' log lines)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.exported = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.exported += record.getMessage().startswith("exported ")


def _frame_size(text: str) -> tuple[int, int]:
    """'640x480' -> (height 480, width 640)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size must be WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
    return height, width


def cmd_export(args: argparse.Namespace) -> int:
    from sfs_ros.core.config import build_configs
    from sfs_ros.core.labeler import Labeler
    from sfs_ros.core.segmenter import Segmenter

    values = {**options.values_from_args(args), "export_missing": True}
    if values["backend"] == "torch":
        raise SfsError("sfs export needs --backend openvino, onnxruntime or tensorrt (torch runs "
                       "the checkpoints as they are, nothing to export)")
    configs = build_configs(values)
    logger = logging.getLogger("sfs_ros.backends")
    logger.setLevel(logging.INFO)  # the progress lines, on stderr
    counter = _Counter()
    logger.addHandler(counter)
    try:
        segmenter = Segmenter(configs.segmenter)
        lines = [f"fastsam: {segmenter.exported}"]
        if configs.mode != "semantic-vote":  # every other mode runs the CLIP image encoder
            labeler = Labeler(configs.labeler)
            lines.append(f"clip crops: {labeler.encode_image.path}")
            if labeler.config.mode != "crop":
                height, width = labeler._dense_size(*args.frame_size)  # the dense input
                path = labeler.dense.prepare(height // labeler.dense.patch, width // labeler.dense.patch)
                lines.append(f"clip dense {height}x{width} (HxW): {path}")
    finally:
        logger.removeHandler(counter)
    reused = len(lines) - counter.exported
    print("\n".join(lines))
    print(f"{counter.exported} exported, {reused} cached")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `export` on the `sfs` command's sub-parsers (sfs_ros/cli.py)."""
    parser = sub.add_parser("export", help="build the exported models of a backend into the cache")
    parser.add_argument("--frame-size", type=_frame_size, default=(480, 640), metavar="WxH",
                        help="camera frame size the dense CLIP graph is built for (default 640x480)")
    options.add_arguments(parser)
    parser.set_defaults(func=cmd_export)
