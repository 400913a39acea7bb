"""The `sfs` command end to end on real photographs, as a user runs it (a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

SMALL = ["--random-weights", "--device", "cpu", "--imgsz", "320", "--max-det", "5", "--quiet"]


def sfs(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sfs_ros.cli", *args], capture_output=True,
                          text=True, timeout=600, env=env or os.environ.copy())


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "chelsea"):
        cv2.imwrite(str(folder / f"{name}.png"), getattr(skimage.data, name)()[:, :, ::-1])
    return folder


def test_folder_of_photos(photos, tmp_path):
    out = tmp_path / "out"
    run = sfs("segment", str(photos), "--vocab", "cup", "cat", "table, desk", "--out", str(out), *SMALL)
    assert run.returncode == 0, run.stderr
    assert "frames 2/2" in run.stdout and "RANDOM WEIGHTS" in run.stdout and "FPS" in run.stdout
    for name in ("coffee", "chelsea"):
        h, w = getattr(skimage.data, name)().shape[:2]
        label = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(out / "instance_ids" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        over = cv2.imread(str(out / "overlays" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint16 and label.shape == (h, w)
        assert inst.dtype == np.uint16 and inst.shape == (h, w)
        assert over.dtype == np.uint8 and over.shape == (h, w, 3)
        assert set(np.unique(label)) <= {0, 1, 2, 65535}
        record = json.loads((out / "instances" / f"{name}.json").read_text())
        assert record["random_weights"] is True and (record["height"], record["width"]) == (h, w)
        assert 0 < len(record["instances"]) == inst.max() <= 5
        first = record["instances"][0]
        assert set(first) >= {"instance_id", "class_id", "class_name", "score", "proposals",
                              "box_xyxy", "area", "mask_score"}
        assert (inst == first["instance_id"]).sum() <= first["area"]  # later masks paint over
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["random_weights"] is True and summary["classes"] == 3


def test_video_input(tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    frame = cv2.resize(skimage.data.astronaut()[:, :, ::-1], (160, 120))
    for _ in range(3):
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    out = tmp_path / "out"
    run = sfs("segment", str(video), "--vocab", "cityscapes", "--out", str(out), *SMALL)
    assert run.returncode == 0, run.stderr
    labels = sorted((out / "labels").glob("*.png"))
    assert [p.name for p in labels] == [f"clip_{i:06d}.png" for i in range(3)]


def test_missing_weights_is_one_clear_error(photos, tmp_path):
    env = dict(os.environ, SFS_WEIGHTS_DIR=str(tmp_path))
    run = sfs("segment", str(photos), "--out", str(tmp_path / "o"), "--device", "cpu", env=env)
    assert run.returncode == 2
    assert "FastSAM-s.pt" in run.stderr and str(tmp_path) in run.stderr
    assert "Traceback" not in run.stderr


def test_allow_random_weights_says_so_and_runs(photos, tmp_path):
    env = dict(os.environ, SFS_WEIGHTS_DIR=str(tmp_path))
    args = [a for a in SMALL if a != "--random-weights"]
    run = sfs("segment", str(photos / "coffee.png"), "--vocab", "cup", "saucer", "--out",
              str(tmp_path / "o"), "--allow-random-weights", *args, env=env)
    assert run.returncode == 0, run.stderr
    assert "not found" in run.stderr and "RANDOM weights" in run.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["random_weights"] is True


def test_low_mask_resolution(photos, tmp_path):
    out = tmp_path / "out"
    run = sfs("segment", str(photos / "coffee.png"), "--vocab", "cup", "saucer", "--out", str(out),
              "--mask-resolution", "low", *SMALL)
    assert run.returncode == 0, run.stderr
    h, w = skimage.data.coffee().shape[:2]
    inst = cv2.imread(str(out / "instance_ids" / "coffee.png"), cv2.IMREAD_UNCHANGED)
    assert inst.shape == (h, w) and 0 < inst.max() <= 5
    record = json.loads((out / "instances" / "coffee.json").read_text())
    assert len(record["instances"]) == inst.max()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["segmenter"]["mask_resolution"] == "low"


@pytest.mark.parametrize("args,message", [
    (["segment", "/nonexistent/x.png"], "does not exist"),
    (["segment", "{photos}", "--vocab", "a", "a"], "duplicate"),
    (["segment", "{photos}", "--imgsz", "100"], "imgsz"),
    (["segment", "{photos}", "--mask-resolution", "half"], "mask-resolution"),
])
def test_bad_arguments_exit_2_with_reason(photos, args, message):
    args = [a.format(photos=photos) for a in args]
    run = sfs(*args[:2], *SMALL, *args[2:])  # the bad value comes last, so it wins
    assert run.returncode == 2 and message in run.stderr.lower() and "Traceback" not in run.stderr


def test_same_stem_images_keep_their_own_outputs(tmp_path):
    """a.jpg and a.png in one folder used to write labels/a.png twice, the second overwriting."""
    folder = tmp_path / "in"
    folder.mkdir()
    image = skimage.data.coffee()[::4, ::4, ::-1]
    cv2.imwrite(str(folder / "a.jpg"), image)
    cv2.imwrite(str(folder / "a.png"), image)
    cv2.imwrite(str(folder / "b.png"), image)
    out = tmp_path / "out"
    run = sfs("segment", str(folder), "--vocab", "cup", "--out", str(out), *SMALL)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a_jpg.png", "a_png.png", "b.png"]
    assert sorted(p.name for p in (out / "instances").iterdir()) == ["a_jpg.json", "a_png.json", "b.json"]


def test_no_images_is_said_before_any_model_loads(tmp_path):
    """An empty folder on a machine without weights: the answer is about the folder, not about
    the missing checkpoint the model load would have complained of first."""
    (tmp_path / "empty").mkdir()
    env = dict(os.environ, SFS_WEIGHTS_DIR=str(tmp_path))
    run = sfs("segment", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--device", "cpu", env=env)
    assert run.returncode == 2 and "no images" in run.stderr, run.stderr
    assert "FastSAM" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("template", ["{} {}", "{0}", "a photo", "{name}"])
def test_a_bad_template_is_one_clear_error(photos, tmp_path, template):
    """`--templates "{} {}"` ended in an IndexError traceback; the core's one template check
    refuses it before any model loads."""
    run = sfs("segment", str(photos), "--out", str(tmp_path / "o"), *SMALL, "--templates", template)
    assert run.returncode == 2 and "template" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_semantic_vote_applies_the_threshold_as_a_vote_share(photos, tmp_path):
    """`--threshold` in semantic-vote is the vote-share cut, as the node's score_threshold is
    (it used to be ignored by the CLI): every labeled mask holds at least that share."""
    out = tmp_path / "out"
    run = sfs("segment", str(photos / "coffee.png"), "--labeling", "semantic-vote", "--out",
              str(out), *SMALL, "--threshold", "0.9", "--vocab", "ade20k")
    assert run.returncode == 0, run.stderr
    record = json.loads((out / "instances" / "coffee.json").read_text())
    votes = [i["proposals"][0]["score"] for i in record["instances"]]
    assert any(v < 0.9 for v in votes), "pick a frame with weak votes, or the test proves nothing"
    for instance, share in zip(record["instances"], votes):
        assert (instance["class_id"] >= 0) == (share >= 0.9), instance
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labeler"]["threshold"] == 0.9
    assert summary["labeler"]["threshold_kind"] == "vote_share"
