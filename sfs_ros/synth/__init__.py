"""Synthetic worlds whose answers are known, so outputs can be scored for meaning, not shape.

`sfs_ros.synth.shapes` is the known-answer world of issue #13: coloured circles, squares,
triangles and stars on grey textures, with exact label and instance images. ROS-free (numpy and
OpenCV only) and deterministic from (seed, frame index).
"""
