"""Known answers (issue #13): the models trained on the shapes world (models/shapes/) must name
the shapes right through every entry point: the core, `sfs`, the node over DDS and `sfs_eval`.

Random weights can only prove shapes and plumbing; these tests fail on a colour-order slip, a
letterbox offset, a wrong activation or a class-id shift (the sensitivity tests prove it by
injecting each one). Frames come from seed 7, which no model was trained on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from sfs_ros.core.frame import UNLABELED
from sfs_ros.synth import known_answer as ka
from sfs_ros.synth.shapes import BACKGROUND, make_scene

pytestmark = pytest.mark.skipif(bool(ka.missing(semantic=False)),
                                reason=f"trained models missing: {ka.missing(semantic=False)}")
SEED = 7  # held out: never used in training
GOAL = 0.85  # ACCURACY.md's goal for crop and semantic-vote


def object_accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of object pixels (ground truth not background) labelled with their own class."""
    objects = truth != BACKGROUND
    return float((labels[objects] == truth[objects]).mean())


def background_kept(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of background pixels labelled background or left unlabeled (never an object)."""
    background = truth == BACKGROUND
    return float(np.isin(labels[background], (BACKGROUND, UNLABELED)).mean())


@pytest.fixture(scope="module")
def scenes():
    return [make_scene(SEED, k) for k in range(3)]


@pytest.fixture(scope="module")
def models():
    segmenter, labeler = ka.load("crop")
    assert not segmenter.random_weights and not labeler.random_weights
    return segmenter, labeler


# ---------------------------------------------------------------------- core
def test_core_names_the_shapes(models, scenes):
    segmenter, labeler = models
    matrix = ka.score(segmenter, labeler, scenes)
    assert ka.objects_miou(matrix) >= GOAL
    from sfs_ros.core.frame import Frame
    from sfs_ros.core.pipeline import Pipeline

    pipeline = Pipeline(segmenter, labeler, on_result=lambda r: None)
    labels = np.stack([pipeline.process(Frame(scene.image)).label_image for scene in scenes])
    truth = np.stack([scene.labels for scene in scenes])
    assert object_accuracy(labels, truth) >= 0.9  # objects named right on >= 90% of their pixels
    assert background_kept(labels, truth) >= 0.95  # and the background never named an object


@pytest.mark.skipif(bool(ka.missing()), reason=f"trained SegFormer missing: {ka.missing()}")
@pytest.mark.parametrize("mode", ["semantic-vote"])
def test_core_semantic_vote_names_the_shapes_and_the_background(mode, scenes):
    segmenter, labeler = ka.load(mode)
    assert labeler.bank.vocabulary.name == "shapes"
    matrix = ka.score(segmenter, labeler, scenes)
    # The SegFormer trained here sees 640x480 frames at 160x160 and misses the smallest shapes,
    # so semantic-vote stays under the 0.85 goal (ACCURACY.md); 0.5 is still far above what a
    # colour, id or geometry slip leaves (the sensitivity tests: 0.0-0.2).
    assert ka.objects_miou(matrix) >= 0.5
    background = matrix[BACKGROUND, BACKGROUND] / matrix[BACKGROUND].sum()
    assert background >= 0.9, "the semantic branch labels the background background"


# ---------------------------------------------------------------------- sensitivity
def test_feeding_bgr_where_rgb_is_expected_fails_the_known_answers(models, scenes):
    segmenter, labeler = models
    swapped = ka.score(segmenter, labeler, scenes, image=ka.bgr)
    assert ka.objects_miou(swapped) < 0.5 * GOAL


def test_a_class_id_shift_fails_the_known_answers(models, scenes):
    segmenter, labeler = models
    assert ka.objects_miou(ka.score(segmenter, labeler, scenes, prediction=ka.shift_ids)) < 0.2


def test_broken_letterbox_geometry_fails_the_known_answers(scenes):
    """Masks mapped back from the network input without the letterbox's resize gain and
    padding (a classic geometry bug) miss their objects; the answers say so. At imgsz 320 the
    640x480 frames are resized by 0.5, so the gain matters (at 640 they are not resized)."""
    segmenter, labeler = ka.load("crop", mask_resolution="low", imgsz=320)
    right = ka.objects_miou(ka.score(segmenter, labeler, scenes))
    with ka.broken_letterbox():
        wrong = ka.objects_miou(ka.score(segmenter, labeler, scenes))
    assert right >= 0.5 and wrong < 0.5 * right, (right, wrong)


# ---------------------------------------------------------------------- sfs and sfs_eval
def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900,
                          env=os.environ.copy())


def test_sfs_segment_names_the_shapes(tmp_path, scenes):
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, scene in enumerate(scenes[:2]):
        cv2.imwrite(str(frames / f"f{k}.png"), scene.image[:, :, ::-1])
    out = tmp_path / "out"
    done = run("-m", "sfs_ros.cli", "segment", str(frames), "--out", str(out), "--quiet",
               *ka.flags(ka.options("crop")))
    assert done.returncode == 0, done.stderr
    labels = np.stack([cv2.imread(str(out / "labels" / f"f{k}.png"), cv2.IMREAD_UNCHANGED)
                       for k in range(2)])
    assert object_accuracy(labels, np.stack([s.labels for s in scenes[:2]])) >= 0.9
    assert json.loads((out / "summary.json").read_text())["random_weights"] is False


def test_sfs_eval_scores_the_known_answers(tmp_path):
    bag = tmp_path / "bag"
    done = run("-m", "sfs_ros.eval", "convert", "shapes", "--frames", "3", "--seed", str(SEED),
               "--out", str(bag), "--quiet")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    done = run("-m", "sfs_ros.eval", "run", str(bag), "--out", str(out), "--no-plots", "--quiet",
               *ka.flags(ka.options("crop")))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is False
    assert ka.objects_miou(np.array(report["confusion_matrix"]["data"])) >= GOAL


# ---------------------------------------------------------------------- the node over DDS
def test_the_node_names_the_shapes_from_rgb8_bgr8_and_jpeg(scenes):
    """The colour-order contract with meaning: the same frame as rgb8, bgr8 and JPEG gives the
    same (right) labels."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image

    from ros_rig import RELIABLE, Inbox, jpeg_image, rgb_image, running_node, wait_until

    params = {k: list(v) if isinstance(v, tuple) else v for k, v in ka.options("crop").items()}
    params.update(image_topics=["raw/image", "jpeg/image/compressed"], input_reliability="reliable")
    scene = scenes[0]
    with running_node("/known", params, "known_tester") as (node, tester):
        raw = tester.create_publisher(Image, "/known/raw/image", RELIABLE)
        jpeg = tester.create_publisher(CompressedImage, "/known/jpeg/image/compressed", RELIABLE)
        outputs = {cam: Inbox(tester, Image, f"/known/sfs_node/{cam}/label_image") for cam in ("raw", "jpeg")}
        for pub in (raw, jpeg):
            wait_until(lambda pub=pub: pub.get_subscription_count() >= 1, 10, "matched")
        for cam in outputs:
            wait_until(lambda cam=cam: node.count_subscribers(f"/known/sfs_node/{cam}/label_image") >= 1,
                       10, "inbox matched")
        got = {}
        for name, pub, msg in (("rgb8", raw, rgb_image(scene.image, Time(sec=1))),
                               ("bgr8", raw, rgb_image(scene.image, Time(sec=2), encoding="bgr8")),
                               ("jpeg", jpeg, jpeg_image(scene.image, Time(sec=3)))):
            pub.publish(msg)
            out = outputs["jpeg" if name == "jpeg" else "raw"].with_stamp(msg.header.stamp)
            got[name] = np.frombuffer(out.data, np.uint16).reshape(out.height, out.width)
    for name, labels in got.items():
        assert object_accuracy(labels, scene.labels) >= 0.9, name
    assert np.array_equal(got["rgb8"], got["bgr8"]), "bgr8 is converted, not mislabelled"
    assert (got["jpeg"] == got["rgb8"]).mean() >= 0.98, "JPEG changes a few edge pixels at most"
