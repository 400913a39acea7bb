"""The semantic cloud as a binary PLY file (and back), for `sfs segment --depth`.

Same fields as ~/points (README "RGB-D"), with the colour as the red/green/blue bytes PLY
viewers (MeshLab, CloudCompare, Open3D) understand instead of PCL's packed float:

    float x, y, z (metres, depth optical frame) | uchar red, green, blue |
    ushort label (65535 = unlabeled) | ushort instance (0 = none) | float score
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sfs_ros.core.frame import SfsError

#: One PLY vertex (little endian, packed).
PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                      ("blue", "u1"), ("label", "<u2"), ("instance", "<u2"), ("score", "<f4")])
_PLY_TYPES = {"f4": "float", "u1": "uchar", "u2": "ushort"}
_FROM_PLY = {name: code for code, name in _PLY_TYPES.items()}


def to_ply_vertices(points: np.ndarray) -> np.ndarray:
    """geometry.POINT_DTYPE points -> PLY_DTYPE vertices (rgb unpacked to bytes)."""
    out = np.empty(points.shape, PLY_DTYPE)
    for name in ("x", "y", "z", "label", "instance", "score"):
        out[name] = points[name]
    rgb = np.ascontiguousarray(points["rgb"]).view(np.uint32)
    out["red"], out["green"], out["blue"] = rgb >> 16 & 255, rgb >> 8 & 255, rgb & 255
    return out


def write_ply(path: Path, points: np.ndarray) -> None:
    """Write geometry.POINT_DTYPE points as a binary little-endian PLY."""
    vertices = to_ply_vertices(points)
    header = ["ply", "format binary_little_endian 1.0", "comment sfs_ros semantic cloud",
              f"element vertex {len(vertices)}"]
    header += [f"property {_PLY_TYPES[PLY_DTYPE[n].str[1:]]} {n}" for n in PLY_DTYPE.names]
    Path(path).write_bytes(("\n".join(header + ["end_header"]) + "\n").encode() + vertices.tobytes())


def read_ply(path: Path) -> np.ndarray:
    """The vertices of a binary little-endian PLY with one vertex element of scalar properties."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise SfsError(f"{path} is not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise SfsError(f"{path}: only binary_little_endian PLY is read")
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    fields = [(p[2], "<" + _FROM_PLY[p[1]]) for p in (line.split() for line in lines)
              if p[0] == "property"]
    body = data[end + len(b"end_header\n"):]
    dtype = np.dtype(fields)
    if len(body) < count * dtype.itemsize:
        raise SfsError(f"{path}: {len(body)} bytes cannot hold {count} vertices")
    return np.frombuffer(body, dtype, count)
