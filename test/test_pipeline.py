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

from sfs_ros.core.frame import UNLABELED, Frame, InvalidImageError
from sfs_ros.core.pipeline import BoundedQueue, Pipeline
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
