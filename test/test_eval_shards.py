"""`--shard i/n` runs merged with `merge` give exactly the unsharded scores and counts."""
import json

import numpy as np
import pytest

from sfs_ros.eval import cli
from sfs_ros.eval.messages import Stamp
from eval_helpers import camera_msg, label_msg, random_rgb, write_bag

H, W = 64, 96
VOCAB = ["road", "car", "sky"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, segmenter, labeler):
    """One bag evaluated whole and as two shards (3 labeled frames + 1 without label; two per shard)."""
    tmp = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        st = Stamp(20, i * 100_000_000)
        ids = rng.integers(0, 3, (H, W)).astype(np.uint8)
        ids[: 5 + i] = 255
        items += [("/cam/image_raw", st.ns, camera_msg(st, random_rgb(H, W, i))),
                  ("/cam/label", st.ns + 1, label_msg(st, ids))]
    items.append(("/cam/image_raw", 10**10, camera_msg(Stamp(21, 0), random_rgb(H, W, 9))))  # no GT
    bag = write_bag(tmp / "bag", items)
    original = cli.build_models
    cli.build_models = lambda args: (segmenter, labeler)
    try:
        common = [str(bag), "--gt-topic", "/cam/label", "--warmup", "0", "--quiet", "--no-bag",
                  "--vocab", *VOCAB]
        assert cli.main(["run", *common, "--out", str(tmp / "full")]) == 0
        for k in range(2):
            assert cli.main(["run", *common, "--shard", f"{k}/2", "--out", str(tmp / f"s{k}")]) == 0
    finally:
        cli.build_models = original
    return tmp


def load(path):
    return json.loads((path / "report.json").read_text())


def test_merged_equals_unsharded(runs):
    assert cli.main(["merge", str(runs / "s0"), str(runs / "s1" / "report.json"), "--out", str(runs / "merged")]) == 0
    full, merged = load(runs / "full"), load(runs / "merged")
    parts = [load(runs / "s0"), load(runs / "s1")]
    assert [p["frames"]["processed"] for p in parts] == [2, 2]  # both shards did work
    assert merged["confusion_matrix"] == full["confusion_matrix"]
    assert merged["metrics"] == full["metrics"]
    assert merged["frames"] == full["frames"]
    assert merged["masks_per_frame"] == full["masks_per_frame"]
    assert [(f["topic"], f["stamp"], f["masks"]) for f in merged["per_frame"]] == [
        (f["topic"], f["stamp"], f["masks"]) for f in full["per_frame"]]
    assert {s: v["n"] for s, v in merged["timing"]["stages"].items()} == {
        s: v["n"] for s, v in full["timing"]["stages"].items()}
    assert merged["shards"] == [[0, 2], [1, 2]] and merged["complete"] is True
    assert merged["random_weights"] is True
    assert (runs / "merged" / "report.md").read_text().count("random_weights: true") >= 1
    # the parts really are different: neither alone has the whole matrix
    assert all(p["confusion_matrix"]["data"] != full["confusion_matrix"]["data"] for p in parts)


def test_merge_refuses_missing_duplicate_or_foreign_shards(runs, capsys):
    assert cli.main(["merge", str(runs / "s0"), "--out", str(runs / "m1")]) == 2
    assert "shards [1] of 2 are missing" in capsys.readouterr().err
    assert cli.main(["merge", str(runs / "s0"), str(runs / "s0"), "--out", str(runs / "m2")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert cli.main(["merge", str(runs / "s0"), "--allow-partial", "--out", str(runs / "m3")]) == 0
    assert load(runs / "m3")["complete"] is False
    assert "Partial merge" in (runs / "m3" / "report.md").read_text()
    other = load(runs / "s1")
    other["settings"]["labeler"]["threshold"] = 0.5
    (runs / "other").mkdir()
    (runs / "other" / "report.json").write_text(json.dumps(other))
    assert cli.main(["merge", str(runs / "s0"), str(runs / "other"), "--out", str(runs / "m4")]) == 2
    assert "differ in setting 'labeler'" in capsys.readouterr().err
    assert cli.main(["merge", str(runs / "nothing"), "--out", str(runs / "m5")]) == 2
