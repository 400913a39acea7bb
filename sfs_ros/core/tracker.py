"""Stable instance ids and temporal labels: the masks of frame t matched to the tracks of t - 1.

FastSAM numbers its masks afresh in every frame and CLIP names each mask on its own, so without
this ids jump and labels flicker between close classes. One `Tracker` per camera (the Pipeline
owns it) does two things, class-agnostically:

* **Association.** Each live track keeps its last mask on a coarse grid (the low-res grid of
  `Masks.low_res` when the segmenter kept one, else the full masks subsampled to about
  `TrackerConfig.grid` cells on the long side). A frame's masks are matched to the tracks by mask
  IoU against the track's mask shifted by its constant-velocity prediction, gated by overlap of
  the (predicted) boxes, as an assignment problem (`scipy.optimize.linear_sum_assignment`); a pair
  under `track_iou` is never matched by IoU. The masks and tracks left over are then matched by
  centre distance (within `centre_gate` box diagonals of the prediction, areas within a factor
  of 2), a second assignment: an object moving more than its own size per frame, or one whose
  speed is not known yet (its second frame), keeps its id. BENCHMARKS.md ("Tracking") measures
  both the motion model and this pass on the moving shapes world.
* **Temporal labels.** Each track accumulates class evidence: an exponential moving average of
  the class-probability vectors the labeler gave it (`Labels.topk_ids/topk_scores` spread over the
  vocabulary), weight `label_smoothing` on the past. The smoothed class is the evidence's argmax,
  its score the evidence there, cut by the labeler's threshold like a raw score. With 0.7 a class
  that wins every frame with full confidence takes over in two frames.

Track life (ids are 1-based, counted per Tracker, never reused within its life):
* a mask no track takes starts a **tentative** track, which has its id at once; it becomes
  **confirmed** after `min_hits` consecutive matched frames. A tentative track that misses one
  frame is deleted (its id is spent), so a one-frame false mask never returns under an old id;
* a confirmed track survives up to `max_age` frames unseen (occlusion, a missed detection) and
  is matched again by its predicted mask; after that it is deleted;
* every track is dropped (`resets` says why) when the vocabulary version changes (class ids
  change meaning: "vocabulary"), when a frame's time is earlier than the previous frame's (a bag
  that loops or a camera that restarts: "time"), or when the mask grid changes ("shape").

`relabel_every` N > 1: a mask whose track is confirmed and confident (smoothed score at least
`confident` and the threshold) keeps its smoothed label for up to N - 1 frames without a CLIP
look (`Plan.to_label` lists the masks that need one), which saves labeler work on static scenes.

The Tracker is not thread-safe: the Pipeline calls it from its label stage only. `plan` changes
nothing, so a frame whose labeling fails or is cancelled leaves the tracks as they were.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import ThreadpoolController

from sfs_ros.core.frame import UNLABELED_CLASS, Labels, Masks, SfsError

#: Instance-image value range: track ids wrap onto 1..65535 (0 = no mask).
ID_WRAP = 65535
#: Assignment cost of a pair the gate or `track_iou` forbids (more than any allowed sum).
_FORBIDDEN = 1e6
#: The mask-IoU product runs on one BLAS thread: OpenBLAS's threads spin against the model
#: threads of the other stage, which made a 100-mask product 50-100x slower on 2 cores
#: (0.36-0.7 s instead of 6 ms; BENCHMARKS.md, "Tracking").
_BLAS = ThreadpoolController()


@dataclass(frozen=True)
class TrackerConfig:
    """How tracks are made, kept and labelled (options: core/options.py TRACKING_OPTIONS)."""

    track_iou: float = 0.3  # least mask IoU (against the prediction) for a match
    min_hits: int = 2  # consecutive matched frames before a track is confirmed
    max_age: int = 15  # frames a confirmed track may go unseen before it is deleted
    label_smoothing: float = 0.7  # EMA weight of past class evidence (0 = this frame alone)
    relabel_every: int = 1  # confirmed, confident tracks are labeled every N frames (1 = always)
    confident: float = 0.5  # least smoothed score for relabel_every to skip the labeler
    motion: bool = True  # constant-velocity prediction of box and mask (BENCHMARKS.md: helps)
    centre_gate: float = 1.0  # second pass: centre within this many box diagonals (0 = off)
    grid: int = 160  # long side of the association grid for full-resolution masks

    def __post_init__(self) -> None:
        checks = (
            (0.0 < self.track_iou <= 1.0, "track_iou must lie in (0, 1]"),
            (self.min_hits >= 1, "min_hits must be >= 1"),
            (self.max_age >= 0, "max_age must be >= 0"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must lie in [0, 1)"),
            (self.relabel_every >= 1, "relabel_every must be >= 1"),
            (0.0 <= self.confident <= 1.0, "confident must lie in [0, 1]"),
            (self.grid >= 8, "grid must be >= 8"),
            (self.centre_gate >= 0.0, "centre_gate must be >= 0"),
        )
        for ok, reason in checks:
            if not ok:
                raise SfsError(f"{reason}, got {self}")


@dataclass
class Tracks:
    """Per mask of one Result (same order as its Masks): the track each belongs to."""

    ids: np.ndarray  # (N,) int64 track id, 1-based, never reused within the Tracker's life
    ages: np.ndarray  # (N,) int32 frames since the track was born (0 in its first frame)
    hits: np.ndarray  # (N,) int32 frames the track was matched, this one included
    confirmed: np.ndarray  # (N,) bool: min_hits reached (False: tentative)
    smoothed: np.ndarray  # (N,) bool: the label is evidence over several frames, not this one's
    relabeled: np.ndarray  # (N,) bool: the labeler looked at the mask in this frame

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def image_values(self) -> np.ndarray:
        """(N,) uint16 instance-image values: (id - 1) mod 65535 + 1, so ids 1..65535 are
        themselves and id 65536 paints as 1 again (0 stays "no mask")."""
        return ((self.ids - 1) % ID_WRAP + 1).astype(np.uint16)


@dataclass(eq=False)
class _Track:
    id: int
    mask: np.ndarray  # (P,) float32, the last matched mask on the association grid
    box: np.ndarray  # (4,) float64 x0, y0, x1, y1 image pixels, last matched
    born: int  # Tracker frame count at birth
    hits: int = 1
    since: int = 0  # frames since last matched
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px / frame (x, y)
    evidence: np.ndarray | None = None  # (C,) float64 EMA of class probabilities
    observations: int = 0  # labeler looks folded into `evidence`
    labeled_at: int = -1  # frame count of the last look
    embedding: np.ndarray | None = None  # last Labels.embeddings row, when the labeler gives them

    def confirmed(self, min_hits: int) -> bool:
        # tentative tracks die at their first miss, so min_hits hits were consecutive
        return self.hits >= min_hits


@dataclass
class Plan:
    """One frame's association, made before labeling; the Tracker is untouched until commit."""

    matches: list[_Track | None]  # per mask: its track, or None (a new track)
    to_label: np.ndarray  # (L,) intp mask indices the labeler must name
    grid_masks: np.ndarray  # (N, P) float32 masks on the association grid
    boxes: np.ndarray  # (N, 4) float64
    reset: str | None  # why every track is dropped before this frame
    version: int
    time: float | None
    grid_shape: tuple[int, ...] | None  # None for a frame without masks

    @property
    def label_all(self) -> bool:
        return len(self.to_label) == len(self.matches)


class Tracker:
    """One camera's tracks (see the module docstring). `config` may be replaced between frames."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._frame = 0
        self._version: int | None = None
        self._time: float | None = None
        self._grid_shape: tuple[int, ...] | None = None
        #: why tracks were dropped, counted: vocabulary, time, shape
        self.resets: dict[str, int] = {"vocabulary": 0, "time": 0, "shape": 0}

    @property
    def live(self) -> int:
        """Tracks alive now (tentative and confirmed, seen or not)."""
        return len(self._tracks)

    @property
    def next_id(self) -> int:
        return self._next_id

    # ------------------------------------------------------------------ association
    def plan(self, masks: Masks, *, version: int = 0, time: float | None = None) -> Plan:
        """Match this frame's masks to the live tracks and say which masks need labeling."""
        grid_masks, grid_shape, scale = association_grid(masks, self.config.grid)
        boxes = masks.boxes.astype(np.float64)
        if not len(masks):
            grid_shape = None  # an empty frame says nothing about the grid (Masks.empty is full-res)
        reset = self._reset_reason(version, time, grid_shape)
        tracks = [] if reset else self._tracks
        matches: list[_Track | None] = [None] * len(masks)
        if tracks and len(masks):
            for i, j in self._assign(grid_masks, boxes, tracks, grid_shape, scale):
                matches[i] = tracks[j]
        cfg = self.config
        skip = [
            i for i, t in enumerate(matches)
            if t is not None and cfg.relabel_every > 1 and t.evidence is not None
            and t.confirmed(cfg.min_hits) and self._frame - t.labeled_at < cfg.relabel_every
            and t.evidence.max() >= cfg.confident
        ]
        to_label = np.setdiff1d(np.arange(len(masks)), np.array(skip, np.intp)).astype(np.intp)
        return Plan(matches, to_label, grid_masks, boxes, reset, version, time, grid_shape)

    def _reset_reason(self, version: int, time: float | None, grid_shape: tuple[int, ...] | None
                      ) -> str | None:
        if not self._tracks:
            return None
        if version != self._version:
            return "vocabulary"
        if time is not None and self._time is not None and time < self._time:
            return "time"
        if grid_shape is not None and grid_shape != self._grid_shape:
            return "shape"
        return None

    def _assign(self, grid_masks: np.ndarray, boxes: np.ndarray, tracks: list[_Track],
                grid_shape: tuple[int, ...], scale: tuple[float, float]) -> list[tuple[int, int]]:
        """(mask, track) index pairs: first the maximum total IoU among pairs at or over
        track_iou, then what is left by centre distance (`centre_gate`)."""
        steps = np.array([t.since + 1 for t in tracks], np.float64)[:, None]
        shift = np.stack([t.velocity for t in tracks]) * steps if self.config.motion else np.zeros((len(tracks), 2))
        predicted = np.stack([t.box for t in tracks]) + np.tile(shift, 2)
        pairs = self._by_iou(grid_masks, boxes, tracks, predicted, shift, grid_shape, scale)
        if self.config.centre_gate > 0:
            pairs += self._by_distance(grid_masks, boxes, tracks, predicted, pairs)
        return pairs

    def _by_iou(self, grid_masks: np.ndarray, boxes: np.ndarray, tracks: list[_Track], predicted: np.ndarray,
                shift: np.ndarray, grid_shape: tuple[int, ...], scale: tuple[float, float]) -> list[tuple[int, int]]:
        gate = box_overlap(boxes, predicted)
        rows, cols = np.nonzero(gate.any(axis=1))[0], np.nonzero(gate.any(axis=0))[0]
        if not len(rows):
            return []
        moved = np.stack([
            shift_mask(tracks[j].mask, grid_shape, shift[j, 1] * scale[0], shift[j, 0] * scale[1])
            for j in cols
        ])
        iou = np.zeros(gate.shape)
        iou[np.ix_(rows, cols)] = mask_iou(grid_masks[rows], moved)
        iou[~gate] = 0.0
        return _solve(iou >= self.config.track_iou, 1.0 - iou)

    def _by_distance(self, grid_masks: np.ndarray, boxes: np.ndarray, tracks: list[_Track],
                     predicted: np.ndarray, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Leftover masks and tracks whose masks no longer overlap (an object faster than its
        own size per frame, or one whose speed is not known yet): the nearest centres within
        `centre_gate` box diagonals of the prediction, areas within a factor of 2."""
        free_m = np.setdiff1d(np.arange(len(boxes)), [i for i, _ in taken])
        free_t = np.setdiff1d(np.arange(len(tracks)), [j for _, j in taken])
        if not len(free_m) or not len(free_t):
            return []
        box_t = predicted[free_t]
        diagonal = np.hypot(box_t[:, 2] - box_t[:, 0], box_t[:, 3] - box_t[:, 1])
        offset = _centres(boxes[free_m])[:, None, :] - _centres(box_t)[None, :, :]
        distance = np.hypot(offset[..., 0], offset[..., 1]) / np.maximum(diagonal, 1.0)[None, :]
        area_m = grid_masks[free_m].sum(axis=1)[:, None]
        area_t = np.array([tracks[j].mask.sum() for j in free_t])[None, :]
        similar = (area_m <= 2 * area_t) & (area_t <= 2 * area_m)
        pairs = _solve(similar & (distance <= self.config.centre_gate), distance)
        return [(int(free_m[i]), int(free_t[j])) for i, j in pairs]

    # ------------------------------------------------------------------ update and labels
    def commit(self, plan: Plan, labels: Labels, num_classes: int, threshold: float) -> tuple[Labels, Tracks]:
        """Apply `plan` with the labels of its `to_label` masks (in that order): update, birth
        and death of tracks, fold the new class evidence in, and return the smoothed Labels of
        every mask with each mask's track."""
        if len(labels) != len(plan.to_label):
            raise SfsError(f"{len(labels)} labels for {len(plan.to_label)} masks to label")
        if plan.reset:
            self.resets[plan.reset] += 1
            self._tracks = []
        cfg, frame = self.config, self._frame
        self._version, self._time = plan.version, plan.time
        self._grid_shape = plan.grid_shape or self._grid_shape
        n, k = len(plan.matches), labels.topk_ids.shape[1]
        looked = np.full(n, -1, np.intp)
        looked[plan.to_label] = np.arange(len(plan.to_label))
        matched = {id(t) for t in plan.matches if t is not None}
        survivors = [t for t in self._tracks if id(t) not in matched and self._survives(t)]
        rows: list[tuple[int, float, np.ndarray, np.ndarray]] = []
        out = _TrackRows(n)
        for i, track in enumerate(plan.matches):
            track = self._update(track, plan.grid_masks[i], plan.boxes[i], frame)
            survivors.append(track)
            row = int(looked[i])
            raw = row >= 0 and (track.observations == 0 or cfg.label_smoothing == 0.0)
            if row >= 0:
                self._observe(track, labels, row, num_classes, frame)
            rows.append(_raw_row(labels, row) if raw else _evidence_row(track.evidence, k, threshold))
            out.put(i, track, frame, cfg.min_hits, smoothed=not raw, relabeled=row >= 0)
        self._tracks = survivors
        self._frame += 1
        return _merge_labels(labels, rows, looked, self._embeddings(plan, labels, looked)), out.tracks()

    def _survives(self, track: _Track) -> bool:
        """An unmatched track one frame older: tentative ones die at once, confirmed ones after
        max_age frames unseen."""
        if not track.confirmed(self.config.min_hits):
            return False
        track.since += 1
        return track.since <= self.config.max_age

    def _update(self, track: _Track | None, mask: np.ndarray, box: np.ndarray, frame: int) -> _Track:
        if track is None:
            track = _Track(self._next_id, mask, box, frame)
            self._next_id += 1
            return track
        step = (_centres(box[None])[0] - _centres(track.box[None])[0]) / (track.since + 1)
        track.velocity = step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step
        track.mask, track.box = mask, box
        track.hits += 1
        track.since = 0
        return track

    def _observe(self, track: _Track, labels: Labels, row: int, num_classes: int, frame: int) -> None:
        probs = np.zeros(num_classes)
        ids, scores = labels.topk_ids[row], labels.topk_scores[row]
        ok = (ids >= 0) & (ids < num_classes)
        probs[ids[ok]] = scores[ok]
        a = self.config.label_smoothing
        if track.evidence is None or track.evidence.shape != probs.shape:
            track.evidence = probs
        else:
            track.evidence = a * track.evidence + (1.0 - a) * probs
        track.observations += 1
        track.labeled_at = frame
        if labels.embeddings is not None:
            track.embedding = labels.embeddings[row]

    @staticmethod
    def _embeddings(plan: Plan, labels: Labels, looked: np.ndarray) -> np.ndarray | None:
        """Every mask's embedding when the labeler gives them: skipped masks reuse their
        track's last one (zeros if it has none yet)."""
        if labels.embeddings is None:
            return None
        out = np.zeros((len(looked), labels.embeddings.shape[1]), np.float32)
        for i, track in enumerate(plan.matches):
            if looked[i] >= 0:
                out[i] = labels.embeddings[looked[i]]
            elif track is not None and track.embedding is not None:
                out[i] = track.embedding
        return out


def _solve(allowed: np.ndarray, cost: np.ndarray) -> list[tuple[int, int]]:
    """Row, column pairs of least total cost among the allowed ones (forbidden pairs cost more
    than any set of allowed ones, so the solver only takes them when nothing else is left)."""
    rows, cols = linear_sum_assignment(np.where(allowed, cost, _FORBIDDEN))
    return [(int(i), int(j)) for i, j in zip(rows, cols) if allowed[i, j]]


def _centres(boxes: np.ndarray) -> np.ndarray:
    """(N, 2) x, y centres of xyxy boxes."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


class _TrackRows:
    """Collects the per-mask Tracks columns."""

    def __init__(self, n: int) -> None:
        self.ids, self.ages, self.hits = (np.zeros(n, np.int64), np.zeros(n, np.int32), np.zeros(n, np.int32))
        self.confirmed, self.smoothed, self.relabeled = (np.zeros(n, bool) for _ in range(3))

    def put(self, i: int, track: _Track, frame: int, min_hits: int, smoothed: bool, relabeled: bool) -> None:
        self.ids[i], self.ages[i], self.hits[i] = track.id, frame - track.born, track.hits
        self.confirmed[i], self.smoothed[i], self.relabeled[i] = track.confirmed(min_hits), smoothed, relabeled

    def tracks(self) -> Tracks:
        return Tracks(self.ids, self.ages, self.hits, self.confirmed, self.smoothed, self.relabeled)


def _raw_row(labels: Labels, row: int) -> tuple[int, float, np.ndarray, np.ndarray]:
    """This frame's own label of a mask, unchanged."""
    return (int(labels.class_ids[row]), float(labels.scores[row]), labels.topk_ids[row], labels.topk_scores[row])


def _evidence_row(evidence: np.ndarray | None, k: int, threshold: float) -> tuple[int, float, np.ndarray, np.ndarray]:
    """The smoothed label: argmax of the evidence, its score cut by the threshold, top k."""
    assert evidence is not None  # a track without a look is always labeled (plan)
    top = np.argsort(-evidence, kind="stable")[:k]
    best = float(evidence[top[0]]) if len(top) else 0.0
    class_id = int(top[0]) if len(top) and best >= threshold and best > 0 else UNLABELED_CLASS
    return class_id, best, top.astype(np.int32), evidence[top].astype(np.float32)


def _merge_labels(labels: Labels, rows: list[tuple[int, float, np.ndarray, np.ndarray]],
                  looked: np.ndarray, embeddings: np.ndarray | None) -> Labels:
    k = labels.topk_ids.shape[1]
    n = len(rows)
    out = Labels(
        class_ids=np.array([r[0] for r in rows], np.int32).reshape(n),
        scores=np.array([r[1] for r in rows], np.float32).reshape(n),
        topk_ids=np.zeros((n, k), np.int32), topk_scores=np.zeros((n, k), np.float32),
        background=labels.background, embeddings=embeddings,
    )
    for i, (_, _, ids, scores) in enumerate(rows):
        m = min(k, len(ids))
        out.topk_ids[i, :m], out.topk_scores[i, :m] = ids[:m], scores[:m]
    return out


# ---------------------------------------------------------------------- geometry helpers
def association_grid(masks: Masks, long_side: int) -> tuple[np.ndarray, tuple[int, int], tuple[float, float]]:
    """(N, P) float32 masks on the grid the tracker compares them on, its (h, w), and its
    (sy, sx) grid cells per image pixel: the low-res grid when the masks have one, else the
    full masks subsampled by one integer stride to about `long_side` cells."""
    if masks.low_res is not None:
        low = masks.low_res
        sy, sx = masks.grid.scale  # type: ignore[union-attr]
    else:
        stride = max(1, -(-max(masks.image_shape) // long_side))
        low = masks.sampled(stride)  # a device-held stack sends only the samples to host
        sy = sx = 1.0 / stride
    shape = (int(low.shape[1]), int(low.shape[2]))
    return low.reshape(len(low), shape[0] * shape[1]).astype(np.float32), shape, (float(sy), float(sx))


def box_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) bool: boxes a[i] and b[j] (xyxy, exclusive max) share area."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    return (x1 > x0) & (y1 > y0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, P) and (M, P) 0/1 float32 masks (one matrix product)."""
    with _BLAS.limit(limits=1, user_api="blas"):
        inter = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def shift_mask(mask: np.ndarray, shape: tuple[int, ...], dy: float, dx: float) -> np.ndarray:
    """A flattened (h * w) mask moved by (dy, dx) grid cells, rounded; what leaves is lost."""
    dy, dx = int(round(dy)), int(round(dx))
    if dy == 0 and dx == 0:
        return mask
    h, w = shape
    src = mask.reshape(h, w)
    out = np.zeros_like(src)
    if abs(dy) < h and abs(dx) < w:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            src[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out.reshape(-1)


def tracker_config(values: Any) -> TrackerConfig | None:
    """The TrackerConfig of option values (TRACKING_OPTIONS names), None when tracking is off."""
    if not values["tracking"]:
        return None
    names = {f.name for f in fields(TrackerConfig)}
    return TrackerConfig(**{k: values[k] for k in names if k in values})
