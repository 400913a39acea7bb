"""Cityscapes / ADE20K / plain-folder trees -> bag: files found, ids mapped, topics hinted."""
import cv2
import numpy as np
import pytest

from sfs_ros.core.vocabulary import load_vocabulary
from sfs_ros.eval import bags, cli
from sfs_ros.eval.bags import BagInput
from sfs_ros.eval.datasets import ConvertOptions, open_dataset, write_bag
from sfs_ros.eval.errors import DatasetError, GroundTruthError
from sfs_ros.eval.images import GT_IGNORE
from sfs_ros.ros.camera import is_compressed
from eval_helpers import random_rgb, read_mcap, use_test_models  # noqa: F401 - a fixture

H, W = 48, 64


def save_rgb(path, rgb, params=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1], list(params))


def save_ids(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), ids)


def stripes(values, dtype=np.uint8):
    """An H x W label image with one vertical stripe per value."""
    ids = np.zeros((H, W), dtype)
    for i, v in enumerate(values):
        ids[:, i * W // len(values):(i + 1) * W // len(values)] = v
    return ids


def cityscapes_tree(root):
    # gtFine labelIds: 7 road, 26 car, 33 bicycle, 0 unlabeled, 1 ego vehicle, 14 guard rail
    raw = [stripes([7, 26, 33, 0]), stripes([1, 14, 8, 24])]
    for n, (city, labels) in enumerate(zip(["aachen", "bremen"], raw)):
        stem = f"{city}_000000_00001{n}"
        save_rgb(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", random_rgb(H, W, n))
        save_ids(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", labels)
        save_ids(root / "gtFine" / "val" / city / f"{stem}_gtFine_color.png", np.zeros((H, W), np.uint8))
    return root


def ade_tree(root):
    base = root / "ADEChallengeData2016"
    for n, values in enumerate([[0, 1, 150, 13], [3, 3, 0, 2]]):
        image = base / "images" / "validation" / f"ADE_val_0000000{n + 1}.jpg"
        save_rgb(image, random_rgb(H, W, n))
        save_ids(base / "annotations" / "validation" / f"ADE_val_0000000{n + 1}.png", stripes(values))
    return root


def read_all(bag):
    with BagInput(bag) as source:
        return source, list(source.samples())


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    dataset = open_dataset("cityscapes", cityscapes_tree(tmp_path / "cs"), "val")
    assert [i.image.name for i in dataset.items] == ["aachen_000000_000010_leftImg8bit.png",
                                                     "bremen_000000_000011_leftImg8bit.png"]
    assert write_bag(dataset, tmp_path / "bag") == 2
    source, samples = read_all(tmp_path / "bag")
    topic = "/camera/image/compressed"  # sfs_node reads a /compressed topic as CompressedImage
    assert source.image_topics == [topic] and source.gt_for == {topic: "/camera/label_gt"}
    assert source.topics[topic][0] == "sensor_msgs/msg/CompressedImage" and is_compressed(topic)
    assert source.hints[bags.HINT_VOCABULARY] == "cityscapes"
    i = GT_IGNORE
    # road 0, car 13, bicycle 18, unlabeled -> ignore | ego vehicle, guard rail -> ignore, sidewalk 1, person 11
    assert [np.unique(s.gt).tolist() for s in samples] == [[0, 13, 18, i], [1, 11, i]]
    assert samples[0].gt[0].tolist() == stripes([0, 13, 18, i], np.uint16)[0].tolist()
    assert np.array_equal(samples[1].image, random_rgb(H, W, 1))  # png bytes kept: lossless
    assert [s.stamp.ns for s in samples] == [1_000_000_000, 1_100_000_000]  # 10 Hz stamps
    label_ids = load_vocabulary("cityscapes").extra["label_id"]
    assert label_ids[13] == 26 and label_ids[18] == 33  # the table the mapping came from


def test_ade20k_zero_is_ignore_and_ids_shift_down(tmp_path):
    dataset = open_dataset("ade20k", ade_tree(tmp_path / "ade"), "val")  # val -> validation
    assert dataset.split == "validation" and len(dataset.items) == 2
    write_bag(dataset, tmp_path / "bag")
    source, samples = read_all(tmp_path / "bag")
    assert source.hints[bags.HINT_VOCABULARY] == "ade20k"
    assert samples[0].gt[0].tolist() == stripes([GT_IGNORE, 0, 149, 12], np.uint16)[0].tolist()
    assert samples[1].gt[0].tolist() == stripes([2, 2, GT_IGNORE, 1], np.uint16)[0].tolist()
    assert np.abs(samples[0].image.astype(int) - random_rgb(H, W, 0)).mean() < 10  # jpeg, RGB order


def test_plain_folder_and_raw_images(tmp_path):
    root = tmp_path / "folder"
    save_rgb(root / "images" / "a.png", random_rgb(H, W, 5))
    save_ids(root / "labels" / "a.png", stripes([0, 2, 255, 1]))
    dataset = open_dataset("folder", root, vocabulary=load_vocabulary(["road", "car", "sky"]))
    write_bag(dataset, tmp_path / "bag", ConvertOptions(raw=True))
    source, (sample,) = read_all(tmp_path / "bag")
    assert source.topics["/camera/image"][0] == "sensor_msgs/msg/Image"
    assert np.array_equal(sample.image, random_rgb(H, W, 5))
    assert sample.gt[0].tolist() == stripes([0, 2, GT_IGNORE, 1], np.uint16)[0].tolist()
    assert source.hints[bags.HINT_VOCABULARY].startswith("[")  # a custom list travels as JSON


def test_convert_command_and_its_errors(tmp_path, capsys):
    root = cityscapes_tree(tmp_path / "cs")
    assert cli.main(["convert", "cityscapes", str(root), "--out", str(tmp_path / "bag"), "--quiet",
                     "--storage", "sqlite3"]) == 0
    assert list((tmp_path / "bag").glob("*.db3"))
    # the output exists already
    assert cli.main(["convert", "cityscapes", str(root), "--out", str(tmp_path / "bag"), "--quiet"]) == 2
    assert "exists already" in capsys.readouterr().err
    # a missing label is an error, not a smaller dataset
    next((root / "gtFine").rglob("*_labelIds.png")).unlink()
    assert cli.main(["convert", "cityscapes", str(root), "--out", str(tmp_path / "b2"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sfs_eval: error: 1 of 2 images have no label") and "\n" not in err
    assert cli.main(["convert", "ade20k", str(root), "--out", str(tmp_path / "b3"), "--quiet"]) == 2
    assert "not an ADE20K" in capsys.readouterr().err


def test_every_folder_image_format_converts_and_runs(tmp_path, use_test_models):
    """Defect 4: BMP, WebP and TIFF files went into the bag under their own format names, which
    `sfs_eval run` (and the node) refuse, so the whole run stopped. They are stored as PNG now,
    pixel for pixel; JPEG and PNG files keep their own bytes."""
    import json

    root, out = tmp_path / "folder", tmp_path / "out"
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
    pictures, files = [], []
    for n, suffix in enumerate(suffixes):
        path = root / "images" / f"{n}{suffix.replace('.', '_')}{suffix}"
        save_rgb(path, random_rgb(H, W, n), [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else ())  # lossless
        save_ids(root / "labels" / f"{path.stem}.png", stripes([0, 1, 255, 2]))
        pictures.append(random_rgb(H, W, n))
        files.append(path.read_bytes())
    vocab = ["road", "car", "sky"]
    assert cli.main(["convert", "folder", str(root), "--out", str(tmp_path / "bag"), "--quiet",
                     "--vocab", *vocab]) == 0
    stored = [m for topic, _, _, m in read_mcap(next((tmp_path / "bag").glob("*.mcap"))) if topic == "/camera/image/compressed"]
    assert [m.format for m in stored] == ["png", "jpeg", "jpeg", "png", "png", "png", "png"]
    assert [bytes(m.data) == data for m, data in zip(stored, files)] == [True] * 3 + [False] * 4
    _, samples = read_all(tmp_path / "bag")
    for sample, picture, suffix in zip(samples, pictures, suffixes):
        error = np.abs(sample.image.astype(int) - picture).mean()
        assert error < 10 if suffix in (".jpg", ".jpeg") else error == 0, suffix
    assert cli.main(["run", str(tmp_path / "bag"), "--out", str(out), "--quiet", "--warmup", "0",
                     "--no-plots", "--no-bag"]) == 0
    frames = json.loads((out / "report.json").read_text())["frames"]
    assert (frames["processed"], frames["scored"], frames["skipped"]) == (len(suffixes), len(suffixes), {})


def test_folder_errors(tmp_path):
    root = tmp_path / "f"
    save_rgb(root / "images" / "a.png", random_rgb(H, W, 0))
    save_ids(root / "labels" / "a.png", stripes([0, 5]))
    with pytest.raises(DatasetError, match="needs --vocab"):
        open_dataset("folder", root)
    dataset = open_dataset("folder", root, vocabulary=load_vocabulary(["a", "b"]))
    with pytest.raises(GroundTruthError, match="class id 5 but the vocabulary has 2"):
        write_bag(dataset, tmp_path / "bag")
    save_rgb(root / "labels" / "a.png", random_rgb(H, W, 0))
    with pytest.raises(DatasetError, match="3 channels"):
        write_bag(dataset, tmp_path / "bag2")
    save_ids(root / "labels" / "a.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(GroundTruthError, match="is 64x49 but image"):
        write_bag(dataset, tmp_path / "bag3")


def test_semantic_vote_mode_end_to_end_on_a_cityscapes_tree(tmp_path):
    """`sfs_eval convert` + `sfs_eval run --labeling semantic-vote` (real FastSAM and SegFormer
    architectures, random weights): the checkpoint's Cityscapes classes score against gtFine."""
    import json

    root = cityscapes_tree(tmp_path / "cs")
    assert cli.main(["convert", "cityscapes", str(root), "--out", str(tmp_path / "bag"), "--quiet"]) == 0
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "bag"), "--out", str(out), "--quiet", "--warmup", "0", "--no-plots",
            "--labeling", "semantic-vote", "--random-weights", "--device", "cpu", "--imgsz", "64",
            "--max-det", "3", "--semantic-checkpoint", "nvidia/segformer-b0-finetuned-cityscapes-512-1024"]
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is True and report["frames"]["processed"] == 2
    assert report["settings"]["labeling"] == "semantic-vote"
    assert 0.0 <= report["metrics"]["miou"] <= 1.0 and len(report["metrics"]["per_class"]) == 19
    # another label set than the ground truth's is refused, not scored
    args[args.index("nvidia/segformer-b0-finetuned-cityscapes-512-1024")] = "nvidia/segformer-b0-finetuned-ade-512-512"
    assert cli.main([*args[:3], str(tmp_path / "out2"), *args[4:]]) == 2
