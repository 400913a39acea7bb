"""`sfs_eval run` on a bag with depth + camera_info: the output bag carries ~/points, read back
with an independent decoder (mcap_ros2); images whose depth never came are counted."""
import json

import numpy as np

from sfs_ros.eval import cli, messages
from sfs_ros.eval.messages import Stamp
from eval_helpers import camera_msg, random_rgb, read_mcap, use_test_models, write_bag  # noqa: F401

H, W = 96, 128
K = [100.0, 0, 63.5, 0, 100.0, 47.5, 0, 0, 1]


def _depth(stamp: Stamp, encoding: str):
    metres = np.full((H, W), 2.0, np.float32)
    metres[20:60, 30:90] = 1.25
    pixels = np.rint(metres * 1000).astype(np.uint16) if encoding == "16UC1" else metres
    return messages.image(messages.header(stamp, "cam_depth_optical"), pixels, encoding)


def _info():
    return messages._t("sensor_msgs/msg/CameraInfo")(
        header=messages.header(Stamp(0, 0), "cam_depth_optical"), height=H, width=W,
        distortion_model="plumb_bob", d=np.zeros(5), k=np.array(K), r=np.eye(3).ravel(),
        p=np.zeros(12), binning_x=0, binning_y=0,
        roi=messages._t("sensor_msgs/msg/RegionOfInterest")(
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def test_a_bag_with_depth_gets_a_cloud_per_paired_frame(tmp_path, use_test_models):
    stamps = [Stamp(10 + i, 0) for i in range(3)]
    items = [("/cam/depth/camera_info", 1, _info())]
    # frame 0: depth after the image; frame 1: before it (32FC1); frame 2: no depth at all
    items += [("/cam/image_raw", 2, camera_msg(stamps[0], random_rgb(H, W, 0))),
              ("/cam/depth/image_rect_raw", 3, _depth(stamps[0], "16UC1")),
              ("/cam/depth/image_rect_raw", 4, _depth(stamps[1], "32FC1")),
              ("/cam/image_raw", 5, camera_msg(stamps[1], random_rgb(H, W, 1))),
              ("/cam/image_raw", 6, camera_msg(stamps[2], random_rgb(H, W, 2)))]
    bag = write_bag(tmp_path / "in", items)
    out = tmp_path / "out"
    assert cli.main(["run", str(bag), "--out", str(out), "--warmup", "0", "--quiet",
                     "--vocab", "a", "b"]) == 0  # the image topic is found: depth is not a camera
    clouds = {(m.header.stamp.sec, m.header.frame_id): m for topic, _, _, m
              in read_mcap(next((out / "bag").glob("*.mcap"))) if topic == "/sfs_node/points"}
    assert set(clouds) == {(10, "cam_depth_optical"), (11, "cam_depth_optical")}
    for cloud in clouds.values():
        names = [f.name for f in cloud.fields]
        assert names == ["x", "y", "z", "rgb", "label", "instance", "score"]
        raw = np.frombuffer(bytes(cloud.data), np.uint8).reshape(-1, cloud.point_step)
        z = raw[:, 8:12].copy().view("<f4").ravel()
        x = raw[:, 0:4].copy().view("<f4").ravel()
        assert cloud.width == H * W and set(np.round(z, 3)) == {1.25, 2.0}
        u = np.rint(x / z * K[0] + K[2]).astype(int)
        assert u.min() == 0 and u.max() == W - 1
    report = json.loads((out / "report.json").read_text())
    assert report["frames"]["processed"] == 3
    assert report["frames"]["without_depth"] == {"depth_unpaired": 1}
