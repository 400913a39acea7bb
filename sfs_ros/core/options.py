"""Names every entry point agrees on, importable without torch or rclpy.

The node's parameter table (`sfs_ros.ros.params`), the `sfs` and `sfs_eval` commands and the
launch file read these constants from here, so a mode or a mask resolution is spelled once.
"""
from __future__ import annotations

#: CLIP labeling modes (`core/labeler.py`).
CLIP_MODES: tuple[str, ...] = ("crop", "dense", "hybrid")
#: Closed-set modes (`core/semantic.py`): a SegFormer votes inside each mask.
SEMANTIC_MODES: tuple[str, ...] = ("semantic-vote", "semantic-hybrid")
#: Every labeling mode, in the order the help texts list them.
LABELING_MODES: tuple[str, ...] = CLIP_MODES + SEMANTIC_MODES
#: Where FastSAM's masks live (`core/segmenter.py`): the image, the prototype grid, the network grid.
MASK_RESOLUTIONS: tuple[str, ...] = ("full", "low", "network")
