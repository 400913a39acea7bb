"""msg/ really builds: the generated types import, serialise and keep their constants."""
from __future__ import annotations

from rclpy.serialization import deserialize_message, serialize_message

from sfs_ros.msg import ClassScore, Instance, InstanceArray, LabelClass, LabelInfo


def test_instance_array_round_trip():
    inst = Instance(instance_id=3, class_id=7, class_name="car", score=0.5, area=42,
                    proposals=[ClassScore(class_id=7, class_name="car", score=0.5)])
    inst.box.x_offset, inst.box.width = 10, 20
    inst.mask.encoding, inst.mask.height, inst.mask.width, inst.mask.step = "mono8", 2, 3, 3
    inst.mask.data = bytes([0, 255, 0, 255, 255, 0])
    msg = InstanceArray(height=480, width=640, random_weights=True, instances=[inst])
    msg.header.frame_id = "camera_optical_frame"
    back = deserialize_message(serialize_message(msg), InstanceArray)
    assert back.header.frame_id == "camera_optical_frame" and back.random_weights
    got = back.instances[0]
    assert (got.instance_id, got.class_id, got.class_name, got.area) == (3, 7, "car", 42)
    assert got.proposals[0].class_name == "car" and got.box.width == 20
    assert bytes(got.mask.data) == bytes([0, 255, 0, 255, 255, 0])
    assert Instance.UNLABELED_CLASS == -1


def test_label_info_round_trip():
    info = LabelInfo(vocabulary="cityscapes", unlabeled_value=65535, threshold=0.1,
                     classes=[LabelClass(class_id=0, name="road")])
    info.classes[0].color.r = 0.5
    back = deserialize_message(serialize_message(info), LabelInfo)
    assert back.classes[0].name == "road" and back.unlabeled_value == 65535
    assert abs(back.classes[0].color.r - 0.5) < 1e-6
