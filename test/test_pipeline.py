"""Pipeline: two real stage threads over real (random-weight) models.

Slow or failing stages are made by wrapping the real models (a delay or an exception on one
chosen frame), never by replacing them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from sfs_ros.core import fusion
from sfs_ros.core.frame import UNLABELED, Frame, InvalidImageError
from sfs_ros.core.pipeline import STAGES, BoundedQueue, Pipeline
from sfs_ros.core.vocabulary import load_vocabulary


class Wrapped:
    """A real model with an optional delay before, or failure on, chosen frames."""

    def __init__(self, inner, method: str, delay: float = 0.0, fail_on: set[int] = frozenset(),
                 error: type[Exception] = RuntimeError):
        self.inner, self.method, self.delay, self.fail_on = inner, method, delay, fail_on
        self.error = error
        self.calls = 0

    def __getattr__(self, name):
        if name != self.method:
            return getattr(self.inner, name)

        def call(*args, **kwargs):
            self.calls += 1
            time.sleep(self.delay)
            if self.calls - 1 in self.fail_on:
                raise self.error(f"injected failure on call {self.calls - 1}")
            return getattr(self.inner, name)(*args, **kwargs)

        return call


@pytest.fixture
def vocab_labeler(labeler):
    labeler.set_vocabulary(load_vocabulary(["cup", "table", "saucer"]))
    return labeler


def frames(photo, n):
    return [Frame(photo, stamp=(100 + i, 7), frame_id="cam", source="test", seq=i) for i in range(n)]


def test_offline_mode_keeps_every_frame_in_order(segmenter, vocab_labeler, photo):
    results = []
    with Pipeline(segmenter, vocab_labeler, results.append, drop=False) as p:
        for f in frames(photo, 4):
            p.submit(f)
        assert p.wait_idle(120)
    assert [r.frame.seq for r in results] == [0, 1, 2, 3]
    assert [r.frame.stamp for r in results] == [(100 + i, 7) for i in range(4)]
    r = results[0]
    assert r.label_image.shape == photo.shape[:2] and r.label_image.dtype == np.uint16
    assert r.instance_image.max() == len(r.masks) > 0
    assert r.overlay.shape == photo.shape and r.random_weights
    assert set(r.timings) == {"segment", "label", "fuse", "total"}
    labeled = r.label_image[r.label_image != UNLABELED]
    assert labeled.size and labeled.max() < 3
    s = p.stats
    assert (s.frames_in, s.frames_out, s.dropped, s.errors) == (4, 4, 0, 0)


def test_keep_latest_drops_and_counts_under_a_slow_stage(segmenter, vocab_labeler, photo):
    slow = Wrapped(vocab_labeler, "label", delay=1.0)
    results = []
    with Pipeline(segmenter, slow, results.append, drop=True) as p:
        for f in frames(photo, 8):
            p.submit(f)
            time.sleep(0.05)
        assert p.wait_idle(60)
    s = p.stats
    seqs = [r.frame.seq for r in results]
    assert s.dropped > 0 and s.frames_out + s.dropped == s.frames_in == 8
    assert seqs == sorted(seqs) and seqs[-1] == 7  # the newest frame always comes out
    assert s.frames_out == len(results) < 8


@pytest.mark.parametrize("stage,error", [("segment", RuntimeError), ("label", RuntimeError),
                                         ("segment", torch.cuda.OutOfMemoryError)])
def test_a_failing_frame_does_not_stop_the_next(segmenter, vocab_labeler, photo, stage, error):
    seg = Wrapped(segmenter, "segment", fail_on={1}, error=error) if stage == "segment" else segmenter
    lab = Wrapped(vocab_labeler, "label", fail_on={1}, error=error) if stage == "label" else vocab_labeler
    results, errors = [], []
    with Pipeline(seg, lab, results.append, lambda st, fr, exc: errors.append((st, fr.seq)),
                  drop=False) as p:
        for f in frames(photo, 3):
            p.submit(f)
        assert p.wait_idle(120)
    assert [r.frame.seq for r in results] == [0, 2]
    assert errors == [(stage, 1)] and p.stats.errors == 1


def test_vocabulary_is_bound_at_submission(segmenter, vocab_labeler, photo):
    results = []
    with Pipeline(segmenter, vocab_labeler, results.append, drop=False) as p:
        p.submit(frames(photo, 1)[0])
        vocab_labeler.set_vocabulary(load_vocabulary(["dog", "cat"]))
        p.submit(frames(photo, 2)[1])
        assert p.wait_idle(120)
    assert results[0].class_names == ("cup", "table", "saucer")
    assert results[1].class_names == ("dog", "cat")


def test_stop_joins_both_threads_quickly_with_frames_in_flight(segmenter, labeler, photo):
    """stop() cancels labeling between crop batches; small batches here so that the check
    holds on a loaded 2-core machine too (each batch is one uninterruptible encoder call)."""
    labeler.set_vocabulary(load_vocabulary(["cup", "table"]))
    slow = Wrapped(segmenter, "segment", delay=0.3)
    config = labeler.config
    labeler.config = replace(config, batch_size=2)
    try:
        p = Pipeline(slow, labeler, lambda r: None, drop=True).start()
        for f in frames(photo, 3):
            p.submit(f)
        time.sleep(1.0)  # segmenting and labeling are both busy now
        t0 = time.monotonic()
        assert p.stop(timeout=2.0)
        assert time.monotonic() - t0 < 2.0
        assert not [t for t in threading.enumerate() if t.name.startswith("sfs-")]
    finally:
        labeler.config = config


def test_process_matches_the_threaded_result(segmenter, vocab_labeler, photo):
    results = []
    p = Pipeline(segmenter, vocab_labeler, results.append, drop=False)
    direct = p.process(frames(photo, 1)[0])
    with p:
        p.submit(frames(photo, 1)[0])
        assert p.wait_idle(120)
    np.testing.assert_array_equal(direct.label_image, results[0].label_image)
    np.testing.assert_array_equal(direct.instance_image, results[0].instance_image)


def test_submit_checks_input_and_state(segmenter, vocab_labeler, photo):
    p = Pipeline(segmenter, vocab_labeler, lambda r: None)
    with pytest.raises(RuntimeError, match="not running"):
        p.submit(frames(photo, 1)[0])
    with p:
        with pytest.raises(InvalidImageError):
            p.submit(Frame(photo[..., :2]))
    assert p.stats.frames_in == 0


def test_bounded_queue_modes():
    q = BoundedQueue(2, drop=True)
    assert q.put(1) and q.put(2) and not q.put(3)
    assert (q.dropped, q.get(), q.get(), len(q)) == (1, 2, 3, 0)
    blocking = BoundedQueue(1, drop=False)
    blocking.put("a")
    done = threading.Event()
    threading.Thread(target=lambda: (blocking.put("b"), done.set()), daemon=True).start()
    assert not done.wait(0.3)  # full: the producer waits instead of dropping
    assert blocking.get() == "a" and done.wait(2) and blocking.get() == "b"
    blocking.close()
    assert blocking.get() is None


def test_restart_after_stop_serves_frames_and_counts_lost_ones(segmenter, vocab_labeler, photo):
    results = []
    p = Pipeline(segmenter, Wrapped(vocab_labeler, "label", delay=0.5), results.append, drop=True)
    p.start()
    for f in frames(photo, 3):
        p.submit(f)
    assert p.stop()
    s = p.stats
    assert s.frames_in == s.frames_out + s.dropped + s.errors == 3
    p.start()
    p.submit(frames(photo, 1)[0])
    assert p.wait_idle(60)
    assert p.stop() and results[-1].frame.seq == 0 and p.stats.frames_in == 4


# ---------------------------------------------------------------------------- issue #12
class FakeClock:
    """The pipeline's `clock`, moved by hand: staleness and latency checks without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Blocking(Wrapped):
    """A real model whose first call waits for `release` (an uninterruptible batch or a stuck
    device), ignoring the pipeline's cancellation; `entered` is set when that call begins."""

    def __init__(self, inner, method: str) -> None:
        super().__init__(inner, method)
        self.entered, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name):
        call = super().__getattr__(name)
        if name != self.method:
            return call

        def blocking(*args, **kwargs):
            if self.calls == 0:
                self.entered.set()
                self.release.wait(60)
            return call(*args, **kwargs)

        return blocking


def timed(photo, times):
    return [Frame(photo, frame_id="cam", seq=i, time=t) for i, t in enumerate(times)]


def stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("sfs-segment", "sfs-label"))]


def test_a_restarted_pipeline_never_delivers_a_frame_of_the_old_run(segmenter, vocab_labeler, photo):
    """Defect 3: stop() timed out while labeling was stuck; the old thread must neither deliver
    its frame after the restart nor touch the new run's queues and in-flight count."""
    stuck = Blocking(vocab_labeler, "label")
    results, in_flight = [], []

    def on_result(result):
        in_flight.append(p.in_flight)
        results.append(result.frame.seq)

    p = Pipeline(segmenter, stuck, on_result, drop=False).start()
    p.submit(Frame(photo, seq=0))
    assert stuck.entered.wait(60)
    assert not p.stop(timeout=0.2)  # the label thread is stuck: the join times out
    old = stage_threads()
    assert old and p.in_flight == 0 and p.wait_idle(0)
    p.start()
    for seq in (10, 11):
        p.submit(Frame(photo, seq=seq))
    stuck.release.set()
    for thread in old:
        thread.join(60)
        assert not thread.is_alive()  # the old run ended instead of serving the new queues
    assert p.wait_idle(120)
    assert results == [10, 11]
    assert min(in_flight) >= 0 and p.in_flight == 0
    s = p.stats
    assert (s.frames_in, s.frames_out, s.dropped, s.errors) == (3, 2, 1, 0)
    assert p.stop()


def test_frames_older_than_the_newest_one_are_refused(segmenter, vocab_labeler, photo):
    """Defect 2: a camera's frames never come out with decreasing time."""
    results = []
    with Pipeline(segmenter, vocab_labeler, results.append, drop=False) as p:
        taken = [p.submit(f) for f in timed(photo, [10.0, 12.0, 11.0, None, 12.0, 9.5])]
        assert p.wait_idle(120)
    assert taken == [True, True, False, True, True, False]
    assert [r.frame.time for r in results] == [10.0, 12.0, None, 12.0]
    s = p.stats
    assert (s.out_of_order, s.frames_in, s.frames_out, s.dropped) == (2, 4, 4, 0)


def test_a_frame_older_than_max_age_at_submit_is_not_processed(segmenter, vocab_labeler, photo):
    clock, results = FakeClock(), []
    with Pipeline(segmenter, vocab_labeler, results.append, drop=False, max_age=1.0, clock=clock) as p:
        assert not p.submit(Frame(photo, time=clock.now - 1.5))
        assert p.wait_idle(60)
    s = p.stats
    assert results == [] and (s.stale, s.frames_in, s.dropped, s.errors) == (1, 1, 0, 0)


def test_frames_going_stale_inside_the_pipeline_are_dropped_before_each_stage(
        segmenter, vocab_labeler, photo):
    """Frame 0 goes stale while segmenting (dropped before labeling), frame 1 while waiting for
    the segmenter (dropped before segmenting); a fresh frame then comes out with its
    camera-to-output latency measured on the same clock."""
    clock, results = FakeClock(), []
    seg = Blocking(segmenter, "segment")
    lab = Wrapped(vocab_labeler, "label")
    with Pipeline(seg, lab, results.append, drop=False, max_age=1.0, clock=clock) as p:
        p.submit(Frame(photo, seq=0, time=clock.now))
        assert seg.entered.wait(60)
        assert p.submit(Frame(photo, seq=1, time=clock.now))
        clock.now += 2.0
        seg.release.set()
        assert p.wait_idle(120)
        assert (seg.calls, lab.calls, results) == (1, 0, [])
        p.submit(Frame(photo, seq=2, time=clock.now - 0.25))
        assert p.wait_idle(120)
    s = p.stats
    assert (s.stale, s.dropped, s.errors, s.frames_out) == (2, 0, 0, 1)
    assert [r.frame.seq for r in results] == [2]
    assert results[0].timings["camera_to_output"] == 0.25
    assert s.latencies["camera_to_output"] == [0.25] and "camera_to_output" in STAGES


def test_outputs_not_wanted_are_not_computed(segmenter, vocab_labeler, photo, monkeypatch):
    fused, asked = [], []
    real_fuse = fusion.fuse
    monkeypatch.setattr(fusion, "fuse", lambda *a: fused.append(1) or real_fuse(*a))
    wanted: set[str] = set()
    results = []

    def outputs():
        asked.append(1)
        return wanted

    with Pipeline(segmenter, vocab_labeler, results.append, drop=False, outputs=outputs) as p:
        p.submit(Frame(photo, seq=0))
        assert p.wait_idle(120)
    r = results[0]
    assert len(r.labels) == len(r.masks) > 0 and (asked, fused) == ([1], [])
    assert r.label_image is None and r.instance_image is None and r.overlay is None
    assert "fuse" not in r.timings
    wanted.add("instance_image")
    r = p.process(Frame(photo))
    assert r.instance_image.max() == len(r.masks) and r.overlay is None and fused == [1]
    wanted.add("overlay")
    p.overlay = False  # the node's runtime switch still wins
    assert p.process(Frame(photo)).overlay is None
    p.overlay = True
    assert p.process(Frame(photo)).overlay.shape == photo.shape


def test_result_carries_the_vocabulary_version_bound_at_submit(segmenter, vocab_labeler, photo):
    versioned = Wrapped(vocab_labeler, "label")
    versioned.bank = replace(vocab_labeler.bank, version=7)
    results = []
    with Pipeline(segmenter, versioned, results.append, drop=False) as p:
        p.submit(Frame(photo, seq=0))
        versioned.bank = replace(vocab_labeler.bank, version=8)
        p.submit(Frame(photo, seq=1))
        assert p.wait_idle(120)
    assert [r.vocabulary_version for r in results] == [7, 8]
    assert p.process(Frame(photo)).vocabulary_version == 8
