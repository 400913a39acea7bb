"""~/segment_prompt and click-to-segment over DDS, with the trained known-answer models (so a
text prompt has a right answer): a fresh image, the latest frame, bad requests (each answered
with success false and the reason, the node serving on), prompts while frames stream, clicks.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import Image, RegionOfInterest

from ros_rig import RELIABLE, Inbox, rgb_image, running_node, wait_until
from sfs_ros.msg import InstanceArray
from sfs_ros.srv import SegmentPrompt
from sfs_ros.synth import known_answer as ka
from sfs_ros.synth.shapes import make_scene

pytestmark = pytest.mark.skipif(bool(ka.missing(semantic=False)),
                                reason=f"trained models missing: {ka.missing(semantic=False)}")
NS = "/prompted"
SCENE = make_scene(7, 1)  # three red circles, named right by the pipeline (test_prompt_known_answer)
CALL_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def ros():
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in ka.options("crop").items()}
    params.update(input_reliability="reliable", prompt_clicks=True)
    with running_node(NS, params, "prompt_tester") as (node, tester):
        client = tester.create_client(SegmentPrompt, f"{NS}/sfs_node/segment_prompt")
        assert client.wait_for_service(timeout_sec=10.0)
        camera = tester.create_publisher(Image, f"{NS}/image", RELIABLE)
        wait_until(lambda: camera.get_subscription_count() >= 1, 10, "camera matched")
        yield node, tester, client, camera


def call(client, **fields) -> SegmentPrompt.Response:
    request = SegmentPrompt.Request(**fields)
    future = client.call_async(request)
    wait_until(future.done, CALL_TIMEOUT, "the service's answer")
    return future.result()


def red_circle_centres() -> list[Point]:
    return [Point(x=o.center[0], y=o.center[1]) for o in SCENE.objects if o.name == "red circle"]


def test_no_frame_yet_and_no_image_is_refused_with_the_reason(ros):
    _, _, client, _ = ros
    answer = call(client, points=red_circle_centres()[:1], point_labels=[1])
    assert not answer.success and "no frame" in answer.message


def test_a_fresh_image_is_segmented_and_every_red_circle_returned(ros):
    node, _, client, _ = ros
    stamp = Time(sec=7, nanosec=5)
    answer = call(client, image=rgb_image(SCENE.image, stamp), texts=["red circle"])
    assert answer.success, answer.message
    names = [i.class_name for i in answer.instances.instances]
    assert names == ["red circle"] * 3, names
    assert list(answer.matched_texts) == ["red circle"] * 3
    scores = list(answer.scores)  # the text's probability, best first, over the threshold
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and min(scores) >= 0.3
    assert answer.instances.header.stamp == stamp and answer.mask.header.stamp == stamp
    mask = np.frombuffer(answer.mask.data, np.uint8).reshape(answer.mask.height, answer.mask.width)
    circles = np.isin(SCENE.instances, [o.instance for o in SCENE.objects if o.name == "red circle"])
    assert mask.shape == SCENE.labels.shape and (mask[circles] == 255).mean() > 0.9
    assert (mask[~circles] == 0).mean() > 0.99
    assert node._cameras[0].latest is None, "a prompt's image is not a camera frame"
    assert not node._cameras[0].pipeline.trackers, "nor is it tracked with anything"


def test_the_latest_frame_is_reused_for_points_boxes_and_texts(ros):
    node, tester, client, camera = ros
    outputs = Inbox(tester, InstanceArray, f"{NS}/sfs_node/instances")
    wait_until(lambda: node.count_subscribers(f"{NS}/sfs_node/instances") >= 1, 10, "inbox matched")
    stamp = Time(sec=11)
    camera.publish(rgb_image(SCENE.image, stamp))
    published = outputs.with_stamp(stamp)
    centre = red_circle_centres()[0]
    answer = call(client, points=[centre], point_labels=[1])
    assert answer.success, answer.message
    [hit] = answer.instances.instances
    assert hit.class_name == "red circle" and answer.instances.header.stamp == stamp
    same = [i for i in published.instances if i.instance_id == hit.instance_id]
    assert same and same[0].box == hit.box, "ids and boxes are those of ~/instances"
    box = RegionOfInterest(x_offset=hit.box.x_offset, y_offset=hit.box.y_offset,
                           width=hit.box.width, height=hit.box.height)
    by_box = call(client, boxes=[box])
    assert [i.instance_id for i in by_box.instances.instances] == [hit.instance_id]
    by_text = call(client, texts=["red circle"], camera="image")
    assert sorted(i.instance_id for i in by_text.instances.instances) == sorted(
        i.instance_id for i in published.instances if i.class_name == "red circle")
    nothing = call(client, texts=["blue star"], boxes=[box])
    assert nothing.success and len(nothing.instances.instances) == 0
    assert not np.frombuffer(nothing.mask.data, np.uint8).any()


@pytest.mark.parametrize("fields, words", [
    (dict(points=[Point(x=640.0, y=10.0)], point_labels=[1]), "outside"),
    (dict(points=[Point(x=5.0, y=5.0)], point_labels=[]), "point labels"),
    (dict(boxes=[RegionOfInterest(x_offset=10, y_offset=10, width=0, height=5)]), "degenerate"),
    (dict(texts=[""]), "empty"),
    (dict(texts=["very " * 80 + "red circle"]), "tokens"),
    (dict(texts=["red circle"], camera="rear"), "no camera 'rear'"),
    (dict(), "needs a foreground point"),
    (dict(image=Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8)),
          texts=["red circle"]), "16UC1"),
    (dict(image=Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(10)),
          texts=["red circle"]), "data"),
])
def test_bad_requests_get_the_reason_and_the_node_keeps_serving(ros, fields, words):
    node, _, client, _ = ros
    answer = call(client, **fields)
    assert not answer.success and words in answer.message, answer.message
    again = call(client, texts=["red circle"])  # the latest frame (sent by an earlier test)
    assert again.success, again.message


def test_prompts_are_answered_while_frames_stream(ros):
    node, tester, client, camera = ros
    outputs = Inbox(tester, InstanceArray, f"{NS}/sfs_node/instances")
    wait_until(lambda: node.count_subscribers(f"{NS}/sfs_node/instances") >= 1, 10, "inbox matched")
    stop = threading.Event()

    def stream():
        sec = 100
        while not stop.is_set():
            camera.publish(rgb_image(SCENE.image, Time(sec=sec)))
            sec += 1
            time.sleep(0.1)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        outputs.wait_for(lambda m: m.header.stamp.sec >= 100, what="from the stream")
        answers = [call(client, texts=["red circle"]) for _ in range(3)]
        fresh = call(client, image=rgb_image(SCENE.image, Time(sec=50)), points=red_circle_centres(),
                     point_labels=[1, 1, 1])
        seen = len(outputs.messages)
        outputs.wait_for(lambda m: len(outputs.messages) >= seen + 2, what="after the prompts")
    finally:
        stop.set()
        streamer.join(2.0)
    assert all(a.success and len(a.instances.instances) == 3 for a in answers)
    assert fresh.success and len(fresh.instances.instances) == 3
    assert all(m.header.stamp.sec != 50 for m in outputs.messages), "a prompt's image is not published"


def test_a_click_publishes_the_instance_under_it_and_a_highlight(ros):
    node, tester, client, camera = ros
    instances = Inbox(tester, InstanceArray, f"{NS}/sfs_node/prompt/instances")
    overlay = Inbox(tester, Image, f"{NS}/sfs_node/prompt/overlay")
    clicks = tester.create_publisher(PointStamped, f"{NS}/image_mouse_left", RELIABLE)
    wait_until(lambda: clicks.get_subscription_count() >= 1, 10, "click topic matched")
    wait_until(lambda: node.count_subscribers(f"{NS}/sfs_node/prompt/overlay") >= 1, 10, "matched")
    wait_until(lambda: node._cameras[0].latest is not None, 30, "a processed frame")
    centre = red_circle_centres()[1]
    clicks.publish(PointStamped(point=centre))
    got = instances.wait_for(lambda m: True, what="a selected instance")
    [hit] = got.instances
    assert hit.class_name == "red circle"
    x, y = int(centre.x), int(centre.y)
    assert hit.box.x_offset <= x < hit.box.x_offset + hit.box.width
    assert hit.box.y_offset <= y < hit.box.y_offset + hit.box.height
    picture = overlay.wait_for(lambda m: m.header.stamp == got.header.stamp, what="the highlight")
    pixels = np.frombuffer(picture.data, np.uint8).reshape(picture.height, picture.width, 3)
    assert not np.array_equal(pixels[y, x], SCENE.image[y, x]), "the clicked instance is highlighted"
    far = SCENE.labels == 12
    assert (pixels[far] == SCENE.image[far]).mean() > 0.9  # background mostly untouched
