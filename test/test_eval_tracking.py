"""sfs_eval with tracking: each topic of a bag has its own tracks, the output bag carries the
track ids, and the report gives the tracks' label flicker (and drops it with --no-tracking)."""
import json

from sfs_ros.eval import cli
from sfs_ros.eval.messages import Stamp
from eval_helpers import camera_msg, random_rgb, read_mcap, use_test_models, write_bag  # noqa: F401

H, W = 96, 128


def run(tmp_path, name, *flags):
    picture = random_rgb(H, W, 3)
    items = []
    for k in range(3):  # the same still scene three times on two cameras
        for n, topic in enumerate(("/front/image_raw", "/back/image_raw")):
            items.append((topic, 10 * k + n + 1, camera_msg(Stamp(20 + k, 0), picture)))
    bag = write_bag(tmp_path / f"{name}_in", items)
    out = tmp_path / name
    assert cli.main(["run", str(bag), "--out", str(out), "--warmup", "0", "--quiet",
                     "--vocab", "road", "car", "--image-topic", "/front/image_raw", "--image-topic", "/back/image_raw",
                     *flags]) == 0
    ids = {}
    for topic, _, _, msg in read_mcap(next((out / "bag").glob("*.mcap"))):
        if topic.endswith("/instances"):
            ids.setdefault(topic, []).append(sorted((i.instance_id, i.track_hits) for i in msg.instances))
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), ids


def test_eval_tracks_each_topic_and_reports_label_flicker(tmp_path, use_test_models):
    report, md, ids = run(tmp_path, "tracked")
    front, back = ids["/sfs_node/front/instances"], ids["/sfs_node/back/instances"]
    n = len(front[0])
    assert n and front == back  # two cameras, two trackers, the same numbering
    assert [max(h for _, h in frame) for frame in front] == [1, 2, 3]
    assert [sorted(i for i, _ in frame) for frame in front] == [list(range(1, n + 1))] * 3
    tracking = report["tracking"]
    assert tracking["tracks"] == 2 * n and tracking["label_pairs"] == 2 * 2 * n
    assert tracking["label_changes"] <= tracking["label_pairs"]
    assert "| tracking |" in md
    untracked, md, ids = run(tmp_path, "untracked", "--no-tracking")
    assert untracked["tracking"] is None and "| tracking |" not in md
    assert all(h == 0 for frame in ids["/sfs_node/front/instances"] for _, h in frame)
