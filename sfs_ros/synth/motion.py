"""The shapes world in motion: a known-answer video for tracking (issue #14).

The objects of `sfs_ros.synth.shapes` (same classes, colours, sizes and painting) move over one
fixed background at constant velocity, bouncing off the image border (a reflection keeps the
speed), spinning at a constant rate, and drawn in a fixed depth order, so they cross and
occlude each other. Every frame comes with exact ground truth: the label image, and an instance
image whose ids are **stable over the sequence** (object k is id k + 1 in every frame; 0 =
background). An object hidden below `MIN_VISIBLE_PIXELS` has no ground truth in that frame.

Deterministic from (seed, frame): the layout from `default_rng([seed])`, each frame's pixel
noise from `default_rng([seed, frame])`. `shapes.make_scene` is untouched: this module only
reuses its background, rasteriser and painter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sfs_ros.synth import shapes

#: Objects hidden below this many visible pixels have no ground truth in that frame (the
#: segmenter's min_mask_area is 100: nothing smaller can be found).
MIN_VISIBLE_PIXELS = 100


@dataclass(frozen=True)
class Mover:
    """One object of the sequence: what it is and how it moves."""

    shape: str
    colour: str
    diameter: float
    start: tuple[float, float]  # (x, y) centre in frame 0
    velocity: tuple[float, float]  # pixels per frame
    angle: float  # degrees in frame 0
    spin: float  # degrees per frame
    offset: tuple[int, int, int]  # colour offset from nominal

    @property
    def class_id(self) -> int:
        return shapes.class_id(self.shape, self.colour)

    def centre(self, frame: int, size: tuple[int, int]) -> tuple[float, float]:
        """Centre in `frame`: straight motion folded back at the border (a bounce)."""
        radius = self.diameter / 2
        out = []
        for start, v, extent in zip(self.start, self.velocity, (size[1], size[0])):
            low, span = radius + 1, max(extent - 2 * radius - 3, 1.0)
            t = (start - low + v * frame) % (2 * span)
            out.append(low + (t if t <= span else 2 * span - t))
        return out[0], out[1]


@dataclass(frozen=True)
class MotionFrame:
    """One frame of a sequence with its ground truth."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    labels: np.ndarray  # (H, W) uint8 class ids, shapes.BACKGROUND where no object
    instances: np.ndarray  # (H, W) uint16 stable object ids (k + 1), 0 = background
    classes: dict[int, int]  # object id -> class id, for the objects visible in this frame


@dataclass(frozen=True)
class Sequence:
    """A layout: the background and the movers (frames are made on demand)."""

    seed: int
    size: tuple[int, int]
    background: np.ndarray
    movers: tuple[Mover, ...]

    def frame(self, index: int) -> MotionFrame:
        height, width = self.size
        rng = np.random.default_rng([self.seed, index])
        image = self.background.copy()
        instances = np.zeros((height, width), np.uint16)
        placed = [self._placed(k, mover, index) for k, mover in enumerate(self.movers)]
        for obj in placed:  # back to front: later movers occlude earlier ones
            instances[obj.bbox][obj.mask] = obj.instance
        classes = {}
        for obj, mover in zip(placed, self.movers):
            visible = instances[obj.bbox] == obj.instance
            region = image[obj.bbox]
            region[visible] = shapes._paint(rng, obj, visible.shape)[visible]
            if visible.sum() >= MIN_VISIBLE_PIXELS:
                classes[obj.instance] = mover.class_id
            else:
                instances[obj.bbox][visible] = 0
        lut = np.full(len(self.movers) + 1, shapes.BACKGROUND, np.uint8)
        for obj_id, class_id in classes.items():
            lut[obj_id] = class_id
        return MotionFrame(index, image, lut[instances], instances, classes)

    def frames(self, count: int) -> Iterator[MotionFrame]:
        for index in range(count):
            yield self.frame(index)

    def _placed(self, k: int, mover: Mover, index: int) -> "shapes._Placed":
        height, width = self.size
        cx, cy = mover.centre(index, self.size)
        radius = mover.diameter / 2
        x0, y0 = int(math.floor(cx - radius)) - 1, int(math.floor(cy - radius)) - 1
        x1, y1 = int(math.ceil(cx + radius)) + 2, int(math.ceil(cy + radius)) + 2
        bbox = (slice(max(y0, 0), min(y1, height)), slice(max(x0, 0), min(x1, width)))
        angle = (mover.angle + mover.spin * index) % 360.0
        mask = shapes._rasterise(mover.shape, (cx - bbox[1].start, cy - bbox[0].start), radius, angle,
                                 (bbox[0].stop - bbox[0].start, bbox[1].stop - bbox[1].start))
        return shapes._Placed(k + 1, mover.shape, mover.colour, (cx, cy), mover.diameter, angle,
                              np.array(mover.offset), bbox, mask)


def make_sequence(seed: int, objects: int = 8, size: tuple[int, int] = shapes.DEFAULT_SIZE,
                  speed: tuple[float, float] = (2.0, 12.0), static: bool = False) -> Sequence:
    """A layout of `objects` movers at random speeds in `speed` (pixels per frame) and random
    directions; `static` keeps every object still (relabel_every savings)."""
    height, width = shapes._checked_size(size)
    rng = np.random.default_rng([seed])
    background = shapes._background(rng, height, width)
    movers = []
    largest = min(shapes.MAX_DIAMETER * 0.75, min(height, width) / 3)
    for _ in range(objects):
        diameter = float(math.exp(rng.uniform(math.log(40.0), math.log(largest))))
        radius = diameter / 2
        start = (float(rng.uniform(radius + 1, width - radius - 2)),
                 float(rng.uniform(radius + 1, height - radius - 2)))
        heading, v = rng.uniform(0, 2 * math.pi), 0.0 if static else rng.uniform(*speed)
        movers.append(Mover(
            shape=shapes.SHAPES[rng.integers(len(shapes.SHAPES))],
            colour=shapes.COLOURS[rng.integers(len(shapes.COLOURS))],
            diameter=diameter, start=start, velocity=(v * math.cos(heading), v * math.sin(heading)),
            angle=float(rng.uniform(0, 360)), spin=0.0 if static else float(rng.uniform(-3, 3)),
            offset=tuple(int(o) for o in rng.integers(-12, 13, 3)),
        ))
    return Sequence(seed, (height, width), background, tuple(movers))
