"""The tracker on hand-made masks: association, id rules, resets, temporal labels (no models)."""
from __future__ import annotations

import numpy as np
import pytest

from sfs_ros.core.frame import UNLABELED_CLASS, Frame, Labels, Masks, MaskGrid, SfsError
from sfs_ros.core.tracker import ID_WRAP, Tracker, TrackerConfig, Tracks, shift_mask

H, W = 60, 80
CLASSES = 4


def squares(*corners: tuple[int, int], size: int = 10) -> Masks:
    """Full-resolution masks: one size x size square per (x, y) top-left corner."""
    stack = np.zeros((len(corners), H, W), bool)
    for i, (x, y) in enumerate(corners):
        stack[i, max(y, 0):y + size, max(x, 0):x + size] = True
    rows, cols = stack.any(axis=2), stack.any(axis=1)
    boxes = np.array([[c.argmax(), r.argmax(), W - c[::-1].argmax(), H - r[::-1].argmax()]
                      for r, c in zip(rows, cols)], np.int32).reshape(-1, 4)
    return Masks(stack, boxes, np.ones(len(corners), np.float32), stack.sum(axis=(1, 2)))


def labels_of(probs: list[list[float]], threshold: float = 0.1) -> Labels:
    """Labels whose top-k are the given class-probability rows (k = CLASSES)."""
    p = np.array(probs, np.float32).reshape(-1, CLASSES)
    top = np.argsort(-p, axis=1, kind="stable").astype(np.int32)
    scores = np.take_along_axis(p, top, axis=1)
    best = scores[:, 0] if len(p) else np.zeros(0, np.float32)
    ids = np.where(best >= threshold, top[:, 0], UNLABELED_CLASS).astype(np.int32)
    return Labels(ids, best.astype(np.float32), top, scores)


def onehot(c: int, p: float = 0.9) -> list[float]:
    row = [(1.0 - p) / (CLASSES - 1)] * CLASSES
    row[c] = p
    return row


def step(tracker: Tracker, masks: Masks, probs: list[list[float]] | None = None, *,
         version: int = 0, time: float | None = None) -> tuple[Labels, Tracks]:
    """One frame: plan, label the masks the plan asks for (class 0 unless given), commit."""
    plan = tracker.plan(masks, version=version, time=time)
    rows = probs if probs is not None else [onehot(0)] * len(masks)
    labels = labels_of([rows[i] for i in plan.to_label])
    return tracker.commit(plan, labels, CLASSES, threshold=0.1)


def ids(tracker: Tracker, masks: Masks, **kw) -> list[int]:
    return step(tracker, masks, **kw)[1].ids.tolist()


def test_a_moving_object_keeps_its_id_and_a_new_one_gets_the_next():
    t = Tracker(TrackerConfig(min_hits=2))
    assert ids(t, squares((5, 5))) == [1]
    assert ids(t, squares((8, 6))) == [1]
    _, tracks = step(t, squares((11, 7), (50, 40)))
    assert tracks.ids.tolist() == [1, 2]
    assert tracks.hits.tolist() == [3, 1] and tracks.ages.tolist() == [2, 0]
    assert tracks.confirmed.tolist() == [True, False]


def test_mask_order_does_not_matter():
    t = Tracker()
    ids(t, squares((5, 5), (50, 40)))
    assert ids(t, squares((51, 40), (6, 5))) == [2, 1]


def test_crossing_paths_keep_their_ids():
    """Two squares moving toward each other, overlapping, then apart: with the
    constant-velocity prediction neither takes the other's id."""
    t = Tracker(TrackerConfig(track_iou=0.2))
    for k in range(12):
        a, b = (5 + 5 * k, 20), (60 - 5 * k, 26)
        got = ids(t, squares(a, b, size=12))
        assert got == [1, 2], f"frame {k}: {got}"


def test_a_missed_frame_keeps_the_id_but_a_tentative_track_dies():
    t = Tracker(TrackerConfig(min_hits=2, max_age=3))
    ids(t, squares((5, 5)))
    ids(t, squares((7, 5)))  # confirmed now
    assert ids(t, squares()) == []  # missed
    assert ids(t, squares((11, 5))) == [1]  # predicted position matched again
    # a tentative track (one hit) that misses a frame is gone; its id is never given again
    ids(t, squares((11, 5), (50, 40)))
    ids(t, squares((11, 5)))
    assert ids(t, squares((11, 5), (50, 40))) == [1, 3]


def test_an_object_leaving_dies_after_max_age_and_ids_are_never_reused():
    t = Tracker(TrackerConfig(min_hits=1, max_age=2))
    ids(t, squares((5, 5)))
    for _ in range(2):
        ids(t, squares())
    assert t.live == 1
    ids(t, squares())
    assert t.live == 0
    assert ids(t, squares((5, 5))) == [2]  # same place, new object: a new id
    seen = set()
    for k in range(30):  # objects that come and go
        got = ids(t, squares((5 + 50 * (k % 2), 5)) if k % 3 else squares())
        seen.update(got)
    assert max(seen) == t.next_id - 1 and len(seen) == len(set(seen))


def test_constant_velocity_prediction_keeps_a_fast_object():
    """12 px squares moving 10 px a frame overlap their last position by IoU 1/11: without the
    prediction each frame starts a new track, with it the id holds."""
    path = [squares((2 + 10 * k, 20), size=12) for k in range(6)]
    with_motion = Tracker(TrackerConfig(motion=True, centre_gate=0.0))
    without = Tracker(TrackerConfig(motion=False, centre_gate=0.0))
    # the velocity is learnt from the first two frames, which overlap enough
    first = [squares((2, 20), size=12), squares((5, 20), size=12)]
    for masks in first + path[1:]:
        a, b = ids(with_motion, masks), ids(without, masks)
    assert a == [1] and b != [1]


def test_the_centre_distance_pass_takes_an_object_faster_than_its_size():
    """From its first frame a 12 px square moves 14 px a frame: no overlap at all, so only the
    second pass (centre within one box diagonal, similar area) keeps its id; a square of another
    size in the same place is not taken for it."""
    path = [squares((2 + 14 * k, 20), size=12) for k in range(4)]
    near, off = Tracker(TrackerConfig()), Tracker(TrackerConfig(centre_gate=0.0))
    for masks in path:
        a, b = ids(near, masks), ids(off, masks)
    assert a == [1] and b == [4]
    assert ids(near, squares((2 + 14 * 4, 20), size=30)) == [2]


def test_resets_on_vocabulary_change_time_going_back_and_grid_change():
    t = Tracker()
    ids(t, squares((5, 5)), version=1, time=10.0)
    assert ids(t, squares((5, 5)), version=1, time=10.1) == [1]
    assert ids(t, squares((5, 5)), version=2, time=10.2) == [2]
    assert ids(t, squares((5, 5)), version=2, time=5.0) == [3]
    assert ids(t, squares((5, 5)), version=2, time=None) == [3]  # no time: no rule
    low = Masks.from_low_res(np.ones((1, 15, 20), bool), MaskGrid((H, W), (15, 20), (0.25, 0.25), (0.0, 0.0)),
                             np.array([[0, 0, W, H]], np.int32), np.ones(1, np.float32), np.array([H * W]))
    assert ids(t, low, version=2) == [4]
    assert t.resets == {"vocabulary": 1, "time": 1, "shape": 1}
    assert ids(t, low, version=2) == [4]


def test_planning_changes_nothing_until_commit():
    """A frame whose labeling failed must leave the tracks as they were."""
    t = Tracker()
    ids(t, squares((5, 5)))
    t.plan(squares((50, 40)), version=0)  # labeling failed: never committed
    assert ids(t, squares((6, 5))) == [1] and t.next_id == 2


def test_two_cameras_track_independently():
    front, back = Tracker(), Tracker()
    ids(front, squares((5, 5)))
    assert ids(back, squares((50, 40), (5, 5))) == [1, 2]
    assert ids(front, squares((5, 5))) == [1]
    step(back, squares((5, 5)), version=3)
    assert front.resets["vocabulary"] == 0 and back.resets["vocabulary"] == 1


def flicker(tracker: Tracker, frames: int = 40) -> tuple[int, list[int]]:
    """Label changes of one static object whose raw labels alternate between two close classes
    (class 1 wins 2 of 3 frames, 0.45 vs 0.40)."""
    classes = []
    for k in range(frames):
        row = [0.40, 0.45, 0.1, 0.05] if k % 3 else [0.45, 0.40, 0.1, 0.05]
        labels, _ = step(tracker, squares((5, 5)), [row])
        classes.append(int(labels.class_ids[0]))
    return sum(a != b for a, b in zip(classes, classes[1:])), classes


def test_smoothing_lowers_flicker():
    raw, raw_classes = flicker(Tracker(TrackerConfig(label_smoothing=0.0)))
    smooth, classes = flicker(Tracker(TrackerConfig(label_smoothing=0.7)))
    assert raw >= 20 and smooth * 4 <= raw, (raw, smooth)
    assert classes[-1] == 1 and set(raw_classes) == {0, 1}


def test_a_confident_change_of_class_wins_within_a_few_frames():
    t = Tracker(TrackerConfig(label_smoothing=0.7))
    for _ in range(20):
        labels, tracks = step(t, squares((5, 5)), [onehot(2, 0.95)])
    assert labels.class_ids.tolist() == [2] and tracks.smoothed.tolist() == [True]
    after = [int(step(t, squares((5, 5)), [onehot(3, 0.95)])[0].class_ids[0]) for _ in range(4)]
    assert after[0] == 2 and after.index(3) <= 2 and after[-1] == 3


def test_first_look_is_the_raw_label_and_scores_are_cut_by_the_threshold():
    t = Tracker(TrackerConfig(label_smoothing=0.5))
    labels, tracks = step(t, squares((5, 5)), [[0.05, 0.05, 0.05, 0.05]])
    assert labels.class_ids.tolist() == [UNLABELED_CLASS] and tracks.smoothed.tolist() == [False]
    labels, tracks = step(t, squares((5, 5)), [onehot(1, 0.97)])
    assert labels.class_ids.tolist() == [1] and tracks.smoothed.tolist() == [True]
    assert labels.scores[0] == pytest.approx(0.5 * 0.05 + 0.5 * 0.97, abs=1e-6)
    assert labels.topk_ids[0, 0] == 1 and labels.topk_ids.shape == (1, CLASSES)


def test_relabel_every_skips_confirmed_confident_tracks_only():
    t = Tracker(TrackerConfig(min_hits=2, relabel_every=3, confident=0.5))
    looked = []
    for k in range(8):
        masks = squares((5, 5), (50, 40)) if k >= 2 else squares((5, 5))
        plan = t.plan(masks)
        looked.append(plan.to_label.tolist())
        probs = [onehot(1)] * len(masks)
        t.commit(plan, labels_of([probs[i] for i in plan.to_label]), CLASSES, 0.1)
    # mask 0: confirmed at frame 1, then looked at every 3rd frame (4, 7); mask 1: born at 2,
    # confirmed at 3, then looked at in frame 6
    assert looked == [[0], [0], [1], [1], [0], [], [1], [0]]


def test_skipped_masks_keep_their_smoothed_label_and_embedding():
    t = Tracker(TrackerConfig(min_hits=1, relabel_every=2))
    plan = t.plan(squares((5, 5)))
    labels = labels_of([onehot(2)])
    labels.embeddings = np.array([[0.6, 0.8]], np.float32)
    t.commit(plan, labels, CLASSES, 0.1)
    plan = t.plan(squares((5, 5)))
    assert plan.to_label.tolist() == []
    empty = labels_of([])
    empty.embeddings = np.zeros((0, 2), np.float32)
    out, tracks = t.commit(plan, empty, CLASSES, 0.1)
    assert out.class_ids.tolist() == [2] and tracks.relabeled.tolist() == [False]
    assert out.embeddings.tolist() == [[pytest.approx(0.6), pytest.approx(0.8)]]


def test_instance_image_values_wrap_onto_1_to_65535():
    tracks = Tracks(np.array([1, 65535, 65536, 65537, 131071]), *(np.zeros(5, np.int32),) * 2,
                    *(np.zeros(5, bool),) * 3)
    assert tracks.image_values().tolist() == [1, ID_WRAP, 1, 2, 1]


def test_shift_mask_moves_and_clips():
    m = np.zeros((4, 5), np.float32)
    m[1, 1] = 1
    assert shift_mask(m.reshape(-1), (4, 5), 2, 3).reshape(4, 5)[3, 4] == 1
    assert shift_mask(m.reshape(-1), (4, 5), 9, 0).sum() == 0


def test_bad_configs_and_label_counts_are_refused():
    with pytest.raises(SfsError, match="label_smoothing"):
        TrackerConfig(label_smoothing=1.0)
    with pytest.raises(SfsError, match="min_hits"):
        TrackerConfig(min_hits=0)
    t = Tracker()
    with pytest.raises(SfsError, match="labels for"):
        t.commit(t.plan(squares((5, 5))), labels_of([]), CLASSES, 0.1)


# ---------------------------------------------------------------------- inside the Pipeline
@pytest.fixture
def vocab_labeler(labeler):
    from sfs_ros.core.vocabulary import load_vocabulary

    labeler.set_vocabulary(load_vocabulary(["cup", "table", "saucer"]))
    return labeler


def run_frames(pipeline, photo, times_and_sources):
    results = []
    pipeline.on_result = results.append
    with pipeline:
        for seq, (t, source) in enumerate(times_and_sources):
            pipeline.submit(Frame(photo, seq=seq, time=t, source=source))
        assert pipeline.wait_idle(300)
    return results


def test_pipeline_rewind_restarts_the_order_check_and_the_tracks(segmenter, vocab_labeler, photo):
    """A bag loop: time jumps back > REWIND_S; the frame is taken (counted as a rewind) and the
    tracks start over; a small step back stays out of order."""
    from sfs_ros.core.pipeline import Pipeline

    p = Pipeline(segmenter, vocab_labeler, lambda r: None, drop=False, tracking=TrackerConfig())
    out = run_frames(p, photo, [(10.0, "cam"), (11.0, "cam"), (10.5, "cam"), (2.0, "cam"), (3.0, "cam")])
    s = p.stats
    assert (s.rewinds, s.out_of_order, s.frames_out) == (1, 1, 4)
    n = len(out[0].masks)
    assert n and [r.tracks.ids.max() for r in out] == [n, n, 2 * n, 2 * n]
    assert out[1].tracks.hits.tolist() == [2] * n and out[2].tracks.hits.tolist() == [1] * n
    assert p.trackers["cam"].resets["time"] == 1
    assert set(np.unique(out[1].instance_image)) - {0} <= set(out[1].tracks.ids.tolist())


def test_pipeline_keeps_one_tracker_per_camera_and_a_vocabulary_change_resets(segmenter, vocab_labeler, photo):
    from sfs_ros.core.pipeline import Pipeline
    from sfs_ros.core.vocabulary import load_vocabulary

    p = Pipeline(segmenter, vocab_labeler, lambda r: None, drop=False, tracking=TrackerConfig())
    out = run_frames(p, photo, [(1.0, "front"), (1.0, "back"), (2.0, "front")])
    n = len(out[0].masks)
    assert out[1].tracks.ids.tolist() == list(range(1, n + 1))  # back's own numbering
    assert out[2].tracks.hits.tolist() == [2] * n
    vocab_labeler.set_vocabulary(load_vocabulary(["cup", "plate"]))
    out = run_frames(p, photo, [(3.0, "front")])
    assert out[0].tracks.ids.min() == n + 1 and p.trackers["front"].resets["vocabulary"] == 1
    p.set_tracking(None)
    out = run_frames(p, photo, [(4.0, "front")])
    assert out[0].tracks is None and p.trackers == {}


def test_pipeline_relabel_every_sends_only_due_masks_to_the_labeler(segmenter, vocab_labeler, photo, monkeypatch):
    from sfs_ros.core.pipeline import Pipeline

    sizes = []
    real = vocab_labeler.label
    monkeypatch.setattr(vocab_labeler, "label", lambda image, masks, *a, **k: sizes.append(len(masks)) or real(image, masks, *a, **k))
    # random weights: scores are low, so "confident" must be low for the skip to happen
    p = Pipeline(segmenter, vocab_labeler, lambda r: None, drop=False,
                 tracking=TrackerConfig(min_hits=1, relabel_every=3, confident=0.0))
    out = run_frames(p, photo, [(float(t), "cam") for t in range(4)])
    n = len(out[0].masks)
    assert sizes == [n, 0, 0, n]
    assert [r.tracks.relabeled.all() for r in out] == [True, False, False, True]
    assert all(len(r.labels) == n for r in out)
    assert out[1].labels.class_ids.tolist() == out[0].labels.class_ids.tolist()


def test_pipeline_cloud_and_instance_image_carry_the_track_ids(segmenter, vocab_labeler, photo):
    """Geometry keys its statistics by mask index; what is published (the instance image and
    the cloud's instance field) carries the track ids."""
    from sfs_ros.core.geometry import Intrinsics
    from sfs_ros.core.pipeline import Pipeline

    h, w = photo.shape[:2]
    depth = np.ones((h, w), np.float32)
    k = Intrinsics(fx=300.0, fy=300.0, cx=w / 2, cy=h / 2, width=w, height=h)
    p = Pipeline(segmenter, vocab_labeler, lambda r: None, tracking=TrackerConfig())
    first = p.process(Frame(photo, source="cam", depth=depth, intrinsics=k))
    p.trackers["cam"]._next_id = 70000  # the next tracks' ids wrap in the uint16 images
    p.trackers["cam"]._tracks = []
    out = p.process(Frame(photo, source="cam", depth=depth, intrinsics=k))
    values = out.tracks.image_values()
    assert out.tracks.ids.min() == 70000 and values.min() == 70000 - 65535
    assert set(np.unique(out.instance_image)) - {0} == set(values.tolist())
    assert set(np.unique(out.geometry.points["instance"])) - {0} <= set(values.tolist())
    assert np.array_equal(out.geometry.counts, first.geometry.counts)  # still per mask index


def test_process_without_tracking_leaves_the_tracks_alone(segmenter, vocab_labeler, photo):
    """A one-off image (a prompt's) through a tracking Pipeline: `process(track=False)` neither
    creates nor advances a tracker, and its instance ids are mask indices."""
    from sfs_ros.core.pipeline import Pipeline

    p = Pipeline(segmenter, vocab_labeler, lambda r: None, tracking=TrackerConfig())
    p.process(Frame(photo, source="cam"))
    next_id = p.trackers["cam"].next_id
    one_off = p.process(Frame(photo, source="cam"), track=False)
    assert one_off.tracks is None and p.trackers["cam"].next_id == next_id and set(p.trackers) == {"cam"}
    n = len(one_off.masks)
    assert set(np.unique(one_off.instance_image)) - {0} <= set(range(1, n + 1))
    assert p.process(Frame(photo, source="cam")).tracks.hits.tolist() == [2] * n
