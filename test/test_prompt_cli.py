"""`sfs prompt`: bad input exits 2 with the reason before a model loads; a text prompt on a
known-answer frame writes the union mask, one mask per instance, an overlay and the JSON."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from sfs_ros.cli import main
from sfs_ros.synth import known_answer as ka
from sfs_ros.synth.shapes import make_scene


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    scene = make_scene(7, 1)  # three red circles (test_prompt_known_answer)
    path = tmp_path_factory.mktemp("prompt") / "scene.png"
    cv2.imwrite(str(path), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return scene, path


@pytest.mark.parametrize("argv, words", [
    (["--point", "640", "10"], "outside"),
    (["--box", "10", "10", "5", "20"], "degenerate"),
    (["--text", " "], "empty"),
    (["--bg-point", "5", "5"], "needs a foreground point"),
    ([], "needs a foreground point"),
])
def test_bad_prompts_exit_2_with_the_reason(scene_file, tmp_path, capsys, argv, words, monkeypatch):
    _, path = scene_file
    import sfs_ros.core.config as config

    monkeypatch.setattr(config, "load_models", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["prompt", str(path), *argv, "--out", str(tmp_path)]) == 2
    assert words in capsys.readouterr().err


def test_a_missing_image_exits_2(tmp_path, capsys):
    assert main(["prompt", str(tmp_path / "nope.png"), "--point", "1", "1"]) == 2
    assert "cannot read image" in capsys.readouterr().err


@pytest.mark.skipif(bool(ka.missing(semantic=False)), reason="trained models missing")
def test_a_text_prompt_writes_masks_overlay_and_json(scene_file, tmp_path, capsys):
    scene, path = scene_file
    out = tmp_path / "out"
    code = main(["prompt", str(path), "--text", "red circle", "--out", str(out),
                 *ka.flags(ka.options("crop"))])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "prompt.json").read_text())
    assert [r["class_name"] for r in report["selected"]] == ["red circle"] * 3
    assert [r["text"] for r in report["selected"]] == ["red circle"] * 3
    scores = [r["prompt_score"] for r in report["selected"]]
    assert scores == sorted(scores, reverse=True)
    union = cv2.imread(str(out / "mask.png"), cv2.IMREAD_UNCHANGED)
    circles = np.isin(scene.instances, [o.instance for o in scene.objects if o.name == "red circle"])
    assert union.shape == circles.shape and (union[circles] == 255).mean() > 0.9
    each = sorted((out / "masks").glob("*.png"))
    assert len(each) == 3
    stacked = np.any([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) > 0 for p in each], axis=0)
    assert np.array_equal(stacked, union > 0)
    assert cv2.imread(str(out / "overlay.png")).shape == scene.image.shape
