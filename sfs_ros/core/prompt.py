"""Prompted segmentation: pick masks of one frame by points, boxes and texts (FastSAM's stage 2).

The frame is segmented once ("everything" mode, the pipeline's Result); a prompt only selects
among its masks, so a prompt on a frame already processed costs the selection alone. The masks'
CLIP embeddings (`Labels.embeddings`, kept by the labeler in the crop, dense and hybrid modes)
score free texts without another image pass.

Semantics (README, "Prompts"):
* **Background points** remove every mask that holds one of them, whatever else is asked.
* **Foreground points** select, per point, among the masks holding it (after every filter):
  the smallest one by default (`point_select="smallest"`: a click on a cup on a table gives the
  cup, not the table; equal areas: the higher FastSAM score, then the lower index), or the
  largest, or all of them. Several points may select several masks; a point in no mask selects
  nothing for that point.
* **Boxes** on their own select, per box, the mask with the highest IoU with the box (the box
  as a rectangle of pixels; none when no mask touches it). Together with texts or foreground
  points a box is a region instead: masks with at least `box_inside` of their pixels inside
  one of the boxes are kept ("red mug" AND inside this box).
* **Texts** are scored against every mask's embedding with the labeler's templates; each text
  competes with negatives, the active vocabulary plus a few generic background prompts
  (`negatives`), so that "mug" does not win on everything. A mask matches a text when the
  text's softmax probability beats every negative's and is >= `text_threshold`; a negative
  naming the text itself (same name or synonym, or an identical text embedding) is left out.
  Every matching mask is returned, best probability first; an empty answer is a valid answer.
  Several texts: a mask matches when any of them does (its best text counts).
Prompts of different kinds combine as AND: texts, boxes-as-regions and background points
filter; foreground points then choose among what is left.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sfs_ros.core import fusion
from sfs_ros.core.frame import Frame, Labels, Masks, Result, SfsError, instance_records

#: Generic prompts every text competes with besides the vocabulary (`prompt_negatives`).
DEFAULT_NEGATIVES: tuple[str, ...] = ("background", "floor", "wall", "texture", "surface")
#: `point_select` values: which of the masks holding a foreground point it selects.
POINT_SELECT: tuple[str, ...] = ("smallest", "largest", "all")
#: A negative whose text embedding is this close to a text's is that text: it is left out.
SAME_TEXT_COSINE = 0.99
#: Colour of the selected masks in `highlight` (RGB).
HIGHLIGHT_RGB = (255, 96, 0)


class PromptError(SfsError, ValueError):
    """A prompt that cannot be answered: the message says which part and why."""


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are answered (options prompt_text_threshold, prompt_negatives,
    prompt_point_select, prompt_box_inside)."""

    text_threshold: float = 0.3
    negatives: tuple[str, ...] = DEFAULT_NEGATIVES
    point_select: str = "smallest"
    box_inside: float = 0.8

    def validate(self) -> None:
        if not 0.0 <= self.text_threshold <= 1.0 or not 0.0 < self.box_inside <= 1.0:
            raise PromptError("text_threshold must lie in [0, 1] and box_inside in (0, 1]")
        if self.point_select not in POINT_SELECT:
            raise PromptError(f"point_select must be one of {POINT_SELECT}, got {self.point_select!r}")
        if any(not n.strip() for n in self.negatives):
            raise PromptError("a negative prompt is empty")


@dataclass(frozen=True)
class Prompt:
    """What to select. Points and boxes in image pixels (x = column, y = row); boxes x1, y1,
    x2, y2 with x2/y2 exclusive; point_labels 1 = foreground, 0 = background (one per point).
    text_threshold None: the PromptConfig's."""

    points: tuple[tuple[float, float], ...] = ()
    point_labels: tuple[int, ...] = ()
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    texts: tuple[str, ...] = ()
    text_threshold: float | None = None

    @property
    def foreground(self) -> list[tuple[int, int]]:
        return [_pixel(p) for p, f in zip(self.points, self.point_labels) if f == 1]

    @property
    def background(self) -> list[tuple[int, int]]:
        return [_pixel(p) for p, f in zip(self.points, self.point_labels) if f == 0]

    def check(self, height: int, width: int) -> None:
        """Raise PromptError for anything unusable on an image of this size, before any model
        runs: points outside it, bad labels, degenerate boxes or boxes outside it, empty texts,
        a threshold outside [0, 1], or nothing that selects (background points only remove)."""
        if len(self.point_labels) != len(self.points):
            raise PromptError(f"{len(self.points)} points but {len(self.point_labels)} point labels")
        for (x, y), flag in zip(self.points, self.point_labels):
            if flag not in (0, 1):
                raise PromptError(f"point label {flag} at ({x}, {y}): use 1 (foreground) or 0 (background)")
            if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < width and 0 <= y < height):
                raise PromptError(f"point ({x}, {y}) lies outside the {width}x{height} image")
        for box in self.boxes:
            x1, y1, x2, y2 = box
            if not all(np.isfinite(box)) or x2 <= x1 or y2 <= y1:
                raise PromptError(f"box {tuple(box)} is degenerate: give x1 < x2 and y1 < y2")
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise PromptError(f"box {tuple(box)} lies outside the {width}x{height} image")
        for text in self.texts:
            if not text.strip():
                raise PromptError("a text prompt is empty")
        if self.text_threshold is not None and not 0.0 <= self.text_threshold <= 1.0:
            raise PromptError(f"text threshold must lie in [0, 1], got {self.text_threshold}")
        if not (self.foreground or self.boxes or self.texts):
            raise PromptError("a prompt needs a foreground point, a box or a text "
                              "(background points only remove masks)")


@dataclass
class Selection:
    """The masks a prompt selected from `result`, best first."""

    result: Result
    indices: np.ndarray  # (M,) int64 indices into result.masks
    #: (M,) float32: the matching text's probability (texts), the IoU (boxes alone), else 1
    scores: np.ndarray
    texts: tuple[str, ...]  # per selected mask the text it matched ("" without texts)

    def __len__(self) -> int:
        return int(len(self.indices))

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: the union of the selected masks."""
        masks = self.result.masks
        if masks.low_res is None:
            return masks.masks[self.indices].any(axis=0)
        return masks.grid.upsample(masks.low_res[self.indices].any(axis=0))

    def records(self) -> list[dict[str, Any]]:
        """Per selected mask, best first: its instance record (as ~/instances and `sfs
        segment` describe it) with the prompt score and matched text."""
        everyone = instance_records(self.result)
        return [dict(vars(everyone[int(i)]), prompt_score=float(s), text=t)
                for i, s, t in zip(self.indices, self.scores, self.texts)]


# ---------------------------------------------------------------------- selection
def select(result: Result, prompt: Prompt, labeler: Any = None,
           config: PromptConfig = PromptConfig()) -> Selection:
    """The masks of `result` that `prompt` asks for (module docstring). Texts need `labeler`
    (the CLIP labeler that made the Result) and the Result's mask embeddings."""
    config.validate()
    masks = result.masks
    height, width = masks.image_shape
    prompt.check(height, width)
    keep = np.ones(len(masks), bool)
    for x, y in prompt.background:
        keep &= ~_holding(masks, x, y)
    scores, texts = np.ones(len(masks), np.float32), [""] * len(masks)
    if prompt.texts:
        threshold = config.text_threshold if prompt.text_threshold is None else prompt.text_threshold
        matched, scores, which = _match_texts(result, prompt.texts, labeler, config, threshold)
        keep &= matched
        texts = [prompt.texts[w] for w in which]
    foreground = prompt.foreground
    if prompt.boxes and (prompt.texts or foreground):
        inside = np.zeros(len(masks), bool)
        for box in prompt.boxes:
            inside |= _inside(masks, box) >= config.box_inside * masks.areas
        keep &= inside
    if foreground:
        chosen = _by_points(masks, foreground, keep, config.point_select)
    elif prompt.boxes and not prompt.texts:
        chosen, scores = _by_boxes(masks, prompt.boxes, keep)
    else:
        chosen = np.flatnonzero(keep)
    if prompt.texts:  # best text probability first; equal: lower index
        chosen = sorted(chosen, key=lambda i: (-scores[i], i))
    index = np.asarray(chosen, np.int64)
    return Selection(result, index, np.asarray(scores, np.float32)[index],
                     tuple(texts[i] for i in index))


def segment(pipeline: Any, frame: Frame, prompt: Prompt,
            config: PromptConfig = PromptConfig()) -> Selection:
    """Process a fresh frame with `pipeline` (both stages, its model locks) and select: the
    prompt is checked against the image first, so a bad one costs no model call."""
    height, width = frame.image.shape[:2]
    prompt.check(height, width)
    return select(pipeline.process(frame, track=False), prompt, pipeline.labeler, config)


def _pixel(point: tuple[float, float]) -> tuple[int, int]:
    """The pixel (column, row) holding a point given in continuous pixel coordinates."""
    return int(np.floor(point[0])), int(np.floor(point[1]))


def _holding(masks: Masks, x: int, y: int) -> np.ndarray:
    """(N,) bool: which masks hold pixel (x, y); low-res masks are read on their grid."""
    if masks.low_res is None:
        return masks.masks[:, y, x].copy()
    return masks.low_res[:, masks.grid.rows[y], masks.grid.cols[x]]


def _clip_box(masks: Masks, box: Sequence[float]) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1 exclusive) covering `box`, cut to the image."""
    height, width = masks.image_shape
    x1, y1, x2, y2 = box
    return (max(0, int(np.floor(x1))), max(0, int(np.floor(y1))),
            min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2))))


def _inside(masks: Masks, box: Sequence[float]) -> np.ndarray:
    """(N,) int64: pixels of each mask inside `box` (exact for low-res masks too)."""
    x0, y0, x1, y1 = _clip_box(masks, box)
    if masks.low_res is None:
        return masks.masks[:, y0:y1, x0:x1].sum(axis=(1, 2), dtype=np.int64)
    grid, (h, w) = masks.grid, masks.grid.shape
    rows = np.bincount(grid.rows[y0:y1], minlength=h).astype(np.int64)
    cols = np.bincount(grid.cols[x0:x1], minlength=w).astype(np.int64)
    return (masks.low_res.astype(np.int64) @ cols) @ rows


def _by_points(masks: Masks, points: list[tuple[int, int]], keep: np.ndarray, mode: str) -> list[int]:
    """Per foreground point, the kept masks holding it chosen by `mode`; in point order, each
    mask once."""
    chosen: list[int] = []
    # smallest first; equal areas: higher FastSAM score, then lower index
    order = np.lexsort((np.arange(len(masks)), -masks.scores, masks.areas))
    for x, y in points:
        holding = keep & _holding(masks, x, y)
        ranked = [int(i) for i in order if holding[i]]
        if not ranked:
            continue
        picks = {"smallest": ranked[:1], "largest": ranked[-1:], "all": ranked}[mode]
        chosen += [i for i in picks if i not in chosen]
    return chosen


def _by_boxes(masks: Masks, boxes: Sequence[Sequence[float]], keep: np.ndarray
              ) -> tuple[list[int], np.ndarray]:
    """Per box, the kept mask of highest IoU with it (none when no kept mask touches it); and
    the (N,) IoU each chosen mask was chosen with."""
    chosen: list[int] = []
    scores = np.zeros(len(masks), np.float32)
    for box in boxes:
        x0, y0, x1, y1 = _clip_box(masks, box)
        inter = _inside(masks, box)
        iou = np.where(keep, inter / (masks.areas + (x1 - x0) * (y1 - y0) - inter), 0.0)
        best = int(np.argmax(iou)) if len(iou) else -1
        if best >= 0 and iou[best] > 0 and best not in chosen:
            chosen.append(best)
            scores[best] = iou[best]
    return chosen, scores


# ---------------------------------------------------------------------- texts
def _match_texts(result: Result, texts: Sequence[str], labeler: Any, config: PromptConfig,
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matched, best probability, index of the best text) per mask, against the negatives."""
    embeddings = result.labels.embeddings
    if labeler is None or not hasattr(labeler, "encode_texts"):
        raise PromptError("text prompts need the CLIP labeler (labeling_mode crop, dense or hybrid)")
    if embeddings is None:
        raise PromptError("this frame has no CLIP mask embeddings: text prompts need "
                          "labeling_mode crop, dense or hybrid")
    try:
        text_emb = labeler.encode_texts(list(texts)).cpu().numpy()
        generic = labeler.encode_texts(list(config.negatives)).cpu().numpy()
    except PromptError:
        raise
    except SfsError as exc:
        raise PromptError(str(exc)) from exc
    vocabulary = labeler.bank.vocabulary
    vocab_emb = labeler.bank.embeddings.float().cpu().numpy()
    names = [c.synonyms for c in vocabulary.classes] + [(n,) for n in config.negatives]
    negatives = np.concatenate([vocab_emb, generic])
    if embeddings.shape[1] != text_emb.shape[1]:
        raise PromptError(f"mask embeddings of size {embeddings.shape[1]} do not match the text "
                          f"encoder's {text_emb.shape[1]} (frame from another CLIP model)")
    return rank_texts(embeddings, text_emb, negatives, labeler.logit_scale, threshold,
                      same=same_text(texts, text_emb, names, negatives))


def same_text(texts: Sequence[str], text_emb: np.ndarray, names: Sequence[Sequence[str]],
              negatives: np.ndarray) -> np.ndarray:
    """(T, K) bool: negative k is text t itself (a name or synonym equal to it, ignoring case
    and spaces, or a text embedding closer than SAME_TEXT_COSINE) and must not compete with it."""
    fold = [" ".join(t.lower().split()) for t in texts]
    by_name = np.array([[f in {" ".join(n.lower().split()) for n in syn} for syn in names]
                        for f in fold], bool).reshape(len(texts), len(names))
    return by_name | (text_emb @ negatives.T >= SAME_TEXT_COSINE)


def rank_texts(embeddings: np.ndarray, text_emb: np.ndarray, negatives: np.ndarray,
               logit_scale: float, threshold: float, same: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score (N, D) mask embeddings against (T, D) texts, each text competing with the (K, D)
    negatives except those `same` (T, K) marks. All rows L2-normalised.

    Per mask and text: softmax over [text, negatives] of logit_scale x cosine; the text wins
    when its probability beats every negative's and is >= threshold. Returns (N,) matched (any
    text wins), (N,) float32 best winning probability (0 where none), (N,) index of that text.
    """
    n, t = len(embeddings), len(text_emb)
    same = np.zeros((t, len(negatives)), bool) if same is None else same
    probs = np.zeros((n, t), np.float32)
    wins = np.zeros((n, t), bool)
    for k in range(t):
        candidates = np.concatenate([text_emb[k : k + 1], negatives[~same[k]]])
        logits = logit_scale * embeddings.astype(np.float32) @ candidates.T.astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        probs[:, k] = p[:, 0]
        beats = p[:, 0] > p[:, 1:].max(axis=1) if p.shape[1] > 1 else np.ones(n, bool)
        wins[:, k] = beats & (p[:, 0] >= threshold)
    best_prob = np.where(wins, probs, -1.0)
    which = best_prob.argmax(axis=1) if t else np.zeros(n, np.int64)
    matched = wins.any(axis=1)
    score = np.where(matched, probs[np.arange(n), which], 0.0).astype(np.float32)
    return matched, score, which


# ---------------------------------------------------------------------- pictures
def highlight(selection: Selection, alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) RGB: the frame with the selected masks blended in HIGHLIGHT_RGB and outlined
    (fusion's overlay, with every selected mask as one class)."""
    result, m = selection.result, len(selection)
    sub = result.masks.subset(selection.indices)
    labels = Labels(class_ids=np.zeros(m, np.int32), scores=np.ones(m, np.float32),
                    topk_ids=np.zeros((m, 0), np.int32), topk_scores=np.zeros((m, 0), np.float32))
    label_image, instance_image = fusion.fuse(sub, labels)
    palette = np.array([HIGHLIGHT_RGB], np.uint8)
    return fusion.overlay(result.frame.image, label_image, instance_image, palette, alpha)

