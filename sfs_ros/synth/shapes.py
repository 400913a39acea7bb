"""The known-answer world: coloured shapes on grey textures, with exact ground truth.

The spec (issue #13, "The world"), which other tools can reproduce:

- 13 classes, shape-major: for shape in circle, square, triangle, star; for colour in red,
  green, blue -> "red circle" = 0, "green circle" = 1, ..., "blue star" = 11; "background" = 12.
- Nominal colours (RGB): red (220, 40, 40), green (40, 180, 60), blue (40, 70, 220). Every
  object pixel is within +-25 per channel of its nominal colour (a per-object offset, a linear
  shading and pixel noise, clipped to that band), filled, no outline.
- Scenes are 640x480 by default, 2 to 12 objects, each 24 to 160 px across (the diameter of the
  circle through its corners), anywhere inside the image, at any rotation. Objects are drawn
  back to front and may occlude each other; an object is only placed when every object behind
  it stays one piece, at least 40 % visible, with at most 10 % of its outline's area hidden
  inside it (a hole), so each stays one recognisable piece.
- Backgrounds: grey textures (value noise, gradients, checkerboards, grey noise) with a faint
  tint: HSV saturation stays below 0.2, never a saturated red, green or blue.
- Ground truth: `labels` (uint8 class id per pixel, 12 = background), `instances` (uint16,
  0 = background, 1..N back to front) and, per object, its class and the polygon of its
  visible region (the largest outer contour of the visible mask, pixel coordinates).
- Frame k of seed s draws everything from `np.random.default_rng([s, k])` with numpy and
  OpenCV only, without antialiasing: any frame can be made alone, the same on every machine,
  and the image is painted from the very masks the labels come from.

Writers (a folder of PNGs, an Ultralytics YOLO segmentation dataset) are in
`sfs_ros.synth.writers`; the command line is `python -m sfs_ros.synth.shapes --help`.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: tuple[str, ...] = ("red", "green", "blue")
#: Nominal RGB colour of each entry of COLOURS.
NOMINAL_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220),
}
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS) + ("background",)
BACKGROUND = len(CLASS_NAMES) - 1  # 12
DEFAULT_SIZE: tuple[int, int] = (480, 640)  # (height, width)

COLOUR_TOLERANCE = 25  # max per-channel distance of an object pixel from its nominal colour
MIN_OBJECTS, MAX_OBJECTS = 2, 12
MIN_DIAMETER, MAX_DIAMETER = 24.0, 160.0
MIN_VISIBLE = 0.4  # share of an object's own area that must stay visible
MIN_SOLIDITY = 0.9  # visible area / area inside its outer contour (holes cut by occluders)
MAX_BACKGROUND_SATURATION = 0.2  # HSV saturation bound of every background pixel
PLACEMENT_ATTEMPTS = 30
STAR_INNER_RATIO = 0.5
_SUBPIXEL_SHIFT = 4  # OpenCV fixed-point bits: vertices placed to 1/16 px


@dataclass(frozen=True)
class ShapeObject:
    """One placed object: what it is, where, and what is left of it in front of the others."""

    instance: int  # id in Scene.instances (1..N, back to front)
    class_id: int
    shape: str
    colour: str
    center: tuple[float, float]  # (x, y) pixels
    diameter: float  # of the circle through its corners (a circle's own diameter)
    angle: float  # degrees
    rgb: tuple[int, int, int]  # the object's base colour (nominal + its offset)
    area: int  # pixels of the whole shape
    visible_area: int  # pixels of it left visible under the objects in front of it
    polygon: np.ndarray  # (K, 2) int32 x, y: largest outer contour of the visible mask

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id]


@dataclass(frozen=True)
class Scene:
    """One frame of the world: the RGB image and its exact ground truth."""

    seed: int
    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8 class ids, BACKGROUND where no object
    instances: np.ndarray  # (H, W) uint16, 0 = background, ShapeObject.instance elsewhere
    objects: tuple[ShapeObject, ...]


def class_id(shape: str, colour: str) -> int:
    """Shape-major id: the order CLASS_NAMES lists."""
    return SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)


def make_scene(seed: int, index: int, size: tuple[int, int] = DEFAULT_SIZE) -> Scene:
    """Frame `index` of world `seed`, at `size` = (height, width); the same on every call."""
    height, width = _checked_size(size)
    rng = np.random.default_rng([seed, index])
    background = _background(rng, height, width)
    placed = _place_objects(rng, height, width)
    instances = np.zeros((height, width), np.uint16)
    for obj in placed:
        instances[obj.bbox][obj.mask] = obj.instance
    image = background
    objects = []
    for obj in placed:
        visible = instances[obj.bbox] == obj.instance
        region = image[obj.bbox]
        region[visible] = _paint(rng, obj, visible.shape)[visible]
        objects.append(obj.finished(visible))
    lut = np.array([BACKGROUND] + [o.class_id for o in placed], np.uint8)
    return Scene(seed, index, image, lut[instances], instances, tuple(objects))


def iter_scenes(seed: int, count: int, start: int = 0,
                size: tuple[int, int] = DEFAULT_SIZE) -> Iterator[Scene]:
    """Frames start .. start + count - 1 of world `seed`."""
    for index in range(start, start + count):
        yield make_scene(seed, index, size)


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (width x height, as cameras are named) -> (height, width)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    return _checked_size((height, width))


def _checked_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if min(height, width) < 64:
        raise ValueError(f"scene size must be at least 64x64 pixels, got {width}x{height}")
    return height, width


# ------------------------------------------------------------------------ background
def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A grey texture with a faint tint: saturation below MAX_BACKGROUND_SATURATION by construction
    (tint gains within +-0.08 of 1 on grey levels 30..225 give at most 0.16/1.08 ~ 0.15)."""
    kind = rng.integers(4)
    grey = (_value_noise, _gradient, _checkerboard, _grey_noise)[kind](rng, height, width)
    grey = grey + rng.normal(0.0, 2.0, grey.shape)
    grey = np.clip(grey, 30.0, 225.0)
    tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
    return np.clip(np.rint(grey[:, :, None] * tint), 0, 255).astype(np.uint8)


def _levels(rng: np.random.Generator) -> tuple[float, float]:
    """Two grey levels at least 20 apart, inside 40..215."""
    low = rng.uniform(40.0, 150.0)
    return low, rng.uniform(low + 20.0, 215.0)


def _value_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    field = np.zeros((height, width), np.float64)
    cells = int(rng.integers(3, 10))
    for octave, weight in ((1, 1.0), (4, 0.35)):
        grid = rng.uniform(0.0, 1.0, (cells * octave + 1, cells * octave + 1))
        field += weight * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    low, high = _levels(rng)
    span = field.max() - field.min()
    return low + (field - field.min()) / (span if span > 0 else 1.0) * (high - low)


def _coordinates(height: int, width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by `angle` radians: (along, across)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    c, s = math.cos(angle), math.sin(angle)
    return x * c + y * s, -x * s + y * c


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    along, _ = _coordinates(height, width, rng.uniform(0.0, 2 * math.pi))
    t = (along - along.min()) / max(along.max() - along.min(), 1.0)
    low, high = _levels(rng)
    return low + t * (high - low)


def _checkerboard(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    along, across = _coordinates(height, width, rng.uniform(0.0, math.pi / 2))
    cell = rng.uniform(12.0, 64.0)
    odd = (np.floor(along / cell) + np.floor(across / cell)) % 2
    low, high = _levels(rng)
    return np.where(odd > 0, high, low)


def _grey_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    level = rng.uniform(60.0, 190.0)
    noise = rng.normal(0.0, rng.uniform(8.0, 25.0), (height, width))
    return level + cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.5, 2.0))


# ------------------------------------------------------------------------ objects
@dataclass
class _Placed:
    """An object while the scene is built: its whole mask inside its bounding box."""

    instance: int
    shape: str
    colour: str
    center: tuple[float, float]
    diameter: float
    angle: float
    offset: np.ndarray  # (3,) per-object colour offset from nominal
    bbox: tuple[slice, slice]
    mask: np.ndarray  # bool, the bbox's shape

    @property
    def class_id(self) -> int:
        return class_id(self.shape, self.colour)

    def finished(self, visible: np.ndarray) -> ShapeObject:
        """The public record, once nothing else will be drawn in front of it."""
        rows, cols = self.bbox
        nominal = np.array(NOMINAL_RGB[self.colour])
        return ShapeObject(
            instance=self.instance, class_id=self.class_id, shape=self.shape, colour=self.colour,
            center=self.center, diameter=self.diameter, angle=self.angle,
            rgb=tuple(int(v) for v in nominal + self.offset), area=int(self.mask.sum()),
            visible_area=int(visible.sum()), polygon=_outline(visible, (cols.start, rows.start)),
        )


def _place_objects(rng: np.random.Generator, height: int, width: int) -> list[_Placed]:
    """Objects back to front; a candidate that would spoil one behind it is drawn again (up to
    PLACEMENT_ATTEMPTS times, then that object is dropped; the first two never meet anything)."""
    wanted = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    placed: list[_Placed] = []
    instances = np.zeros((height, width), np.uint16)
    for _ in range(wanted):
        for _ in range(PLACEMENT_ATTEMPTS):
            candidate = _random_object(rng, len(placed) + 1, height, width)
            if _keeps_others_whole(candidate, placed, instances):
                instances[candidate.bbox][candidate.mask] = candidate.instance
                placed.append(candidate)
                break
    return placed


def _random_object(rng: np.random.Generator, instance: int, height: int, width: int) -> _Placed:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = COLOURS[rng.integers(len(COLOURS))]
    largest = min(MAX_DIAMETER, min(height, width) - 4.0)
    # log-uniform: as many small objects as large ones per octave of size
    diameter = float(math.exp(rng.uniform(math.log(MIN_DIAMETER), math.log(largest))))
    radius = diameter / 2
    center = (float(rng.uniform(radius + 1, width - radius - 2)),
              float(rng.uniform(radius + 1, height - radius - 2)))
    angle = float(rng.uniform(0.0, 360.0))
    offset = rng.integers(-12, 13, 3)
    x0, y0 = int(math.floor(center[0] - radius)) - 1, int(math.floor(center[1] - radius)) - 1
    x1, y1 = int(math.ceil(center[0] + radius)) + 2, int(math.ceil(center[1] + radius)) + 2
    bbox = (slice(max(y0, 0), min(y1, height)), slice(max(x0, 0), min(x1, width)))
    mask = _rasterise(shape, (center[0] - bbox[1].start, center[1] - bbox[0].start), radius, angle,
                      (bbox[0].stop - bbox[0].start, bbox[1].stop - bbox[1].start))
    return _Placed(instance, shape, colour, center, diameter, angle, offset, bbox, mask)


def shape_vertices(shape: str, center: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """(K, 2) float x, y corners of a polygonal shape (`radius` to its outer corners)."""
    turns = {"square": 4, "triangle": 3, "star": 10}[shape]
    radii = np.full(turns, radius)
    if shape == "star":
        radii[1::2] *= STAR_INNER_RATIO
    theta = math.radians(angle) + np.arange(turns) * 2 * math.pi / turns
    return np.stack([center[0] + radii * np.cos(theta), center[1] + radii * np.sin(theta)], axis=1)


def _rasterise(shape: str, center: tuple[float, float], radius: float, angle: float,
               hw: tuple[int, int]) -> np.ndarray:
    """The filled shape as a bool mask, aliased (LINE_8): a pixel is in or out, nothing between."""
    canvas = np.zeros(hw, np.uint8)
    scale = 1 << _SUBPIXEL_SHIFT
    if shape == "circle":
        cv2.circle(canvas, (round(center[0] * scale), round(center[1] * scale)), round(radius * scale),
                   1, thickness=-1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    else:
        points = np.rint(shape_vertices(shape, center, radius, angle) * scale).astype(np.int32)
        cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    return canvas.astype(bool)


def _keeps_others_whole(candidate: _Placed, placed: list[_Placed], instances: np.ndarray) -> bool:
    """Whether every object already placed stays one recognisable piece under the candidate."""
    cover = np.zeros(instances.shape, bool)
    cover[candidate.bbox] = candidate.mask
    for other in placed:
        hidden = cover[other.bbox]
        if not hidden.any():
            continue
        visible = (instances[other.bbox] == other.instance) & ~hidden
        if not _recognisable(visible, int(other.mask.sum())):
            return False
    return True


def _recognisable(visible: np.ndarray, area: int) -> bool:
    """At least MIN_VISIBLE of the shape left, in one 8-connected piece, nearly without holes."""
    shown = int(visible.sum())
    if shown < MIN_VISIBLE * area:
        return False
    pieces, _ = cv2.connectedComponents(visible.astype(np.uint8), connectivity=8)
    if pieces != 2:  # component 0 is the rest
        return False
    filled = np.zeros(visible.shape, np.uint8)
    cv2.fillPoly(filled, [_outline(visible, (0, 0))], 1, lineType=cv2.LINE_8)
    return shown >= MIN_SOLIDITY * int(filled.sum())


def _outline(visible: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """(K, 2) int32 x, y: the largest outer contour of a mask, shifted by `offset`."""
    contours, _ = cv2.findContours(visible.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                   offset=offset)
    if not contours:
        return np.zeros((0, 2), np.int32)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.int32)


def _paint(rng: np.random.Generator, obj: _Placed, hw: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 colour field over the object's box: nominal + offset (+-12) + a linear shading
    (+-8) + pixel noise (sigma 2), clipped to within COLOUR_TOLERANCE of the nominal colour."""
    nominal = np.array(NOMINAL_RGB[obj.colour], np.float64)
    y, x = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    light = rng.uniform(0.0, 2 * math.pi)
    along = (x - hw[1] / 2) * math.cos(light) + (y - hw[0] / 2) * math.sin(light)
    shading = rng.uniform(0.0, 8.0) * along / max(obj.diameter / 2, 1.0)
    field = nominal + obj.offset + shading[:, :, None] + rng.normal(0.0, 2.0, (*hw, 3))
    field = np.clip(field, nominal - COLOUR_TOLERANCE, nominal + COLOUR_TOLERANCE)
    return np.clip(np.rint(field), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sfs_ros.synth.shapes",
        description="Write frames of the known-answer shapes world (deterministic from --seed).")
    sub = parser.add_subparsers(dest="command", required=True)
    folder = sub.add_parser("folder", help="DIR/images, DIR/labels (uint8 ids), DIR/instances (uint16)")
    folder.add_argument("--frames", type=int, required=True)
    folder.add_argument("--start", type=int, default=0, help="first frame index")
    folder.add_argument("--jpeg", action="store_true", help="images as JPEG (quality 95) instead of PNG")
    yolo = sub.add_parser("yolo", help="Ultralytics YOLO-seg dataset, one class-agnostic 'object' class")
    yolo.add_argument("--train-frames", type=int, required=True, help="frames 0 .. N-1")
    yolo.add_argument("--val-frames", type=int, required=True, help="frames N .. N+M-1")
    for command in (folder, yolo):
        command.add_argument("--seed", type=int, required=True)
        command.add_argument("--out", required=True, help="folder to write")
        command.add_argument("--size", type=parse_size, default=DEFAULT_SIZE, metavar="WxH",
                             help="image size, default 640x480")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    from sfs_ros.synth import writers

    args = build_parser().parse_args(argv)
    if args.command == "folder":
        count = writers.write_folder(args.out, args.seed, args.frames, args.size, start=args.start,
                                     jpeg=args.jpeg, progress=not args.quiet)
    else:
        count = writers.write_yolo(args.out, args.seed, args.train_frames, args.val_frames, args.size,
                                   progress=not args.quiet)
    print(f"wrote {count} frames of seed {args.seed} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
