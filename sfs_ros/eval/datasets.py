"""Dataset folders (Cityscapes, ADE20K, plain images + labels) -> a bag the evaluator reads.

Folders are converted once into a bag (image topic + ground-truth label topic, both stamped
alike) so datasets and recordings go through one evaluation path. The conversion also maps
each dataset's label values to the vocabulary's class ids, in one table per layout:

- Cityscapes gtFine `*_labelIds.png`: label id -> train id through the `label_id` column of the
  cityscapes vocabulary (19 classes); every other id (void, license plate, ...) -> ignore.
- ADE20K SceneParsing `annotations/*.png`: 0 ("other") -> ignore, 1..150 -> 0..149.
- plain folder: `images/<stem>.<ext>` with `labels/<stem>.png` holding class ids already;
  `ignore_index` (255 by default) marks pixels that do not count.
- shapes: no folder; frames 0..N-1 of the known-answer world (`sfs_ros.synth.shapes`) are
  generated from a seed, images stored as JPEG, labels are the `shapes` preset's ids (background
  is class 12, a real class; 255 stays "ignore" and never occurs).

Images are stored as CompressedImage: JPEG and PNG files keep their own bytes (nothing lost,
and small); BMP, WebP and TIFF files are re-encoded as PNG (lossless), because the node and
`sfs_eval run` read only the jpeg and png formats of image_transport's compressed transport.
`raw=True` stores sensor_msgs/Image rgb8 instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from sfs_ros.core.vocabulary import Vocabulary, load_vocabulary
from sfs_ros.eval import bags, messages
from sfs_ros.eval.errors import DatasetError, GroundTruthError
from sfs_ros.eval.images import GT_IGNORE
from sfs_ros.ros import image_codec
from sfs_ros.synth.shapes import CLASS_NAMES as SHAPES_CLASSES, DEFAULT_SIZE as SHAPES_SIZE, Scene, make_scene
from sfs_ros.synth.writers import encode_image, frame_stem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LAYOUTS = ("cityscapes", "ade20k", "folder", "shapes")
SPLIT_ALIASES = {"ade20k": {"val": "validation", "train": "training"}}


@dataclass(frozen=True)
class Item:
    """One image file and its label file (None for unlabeled images)."""

    image: Path
    label: Path | None


@dataclass
class Dataset:
    """A resolved dataset: its files, and how raw label values become class ids."""

    layout: str
    root: Path
    split: str
    items: list[Item]
    vocabulary: Vocabulary
    #: raw label value -> class id (GT_IGNORE = ignore); None: labels are class ids already
    lut: np.ndarray | None = None
    ignore_index: int = 255
    notes: list[str] = field(default_factory=list)

    def read_image(self, item: Item) -> bytes:
        """The image file's bytes, as they go into the bag."""
        return item.image.read_bytes()

    def load_label(self, item: Item) -> np.ndarray:
        """(H, W) uint16 class ids with GT_IGNORE, checked against the vocabulary size."""
        assert item.label is not None
        raw = cv2.imread(str(item.label), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DatasetError(f"label file {item.label} cannot be read as an image")
        if raw.ndim != 2:
            raise DatasetError(
                f"label file {item.label} has {raw.shape[2]} channels; labels must be single-channel "
                "class ids (a colour-coded label image needs converting first)"
            )
        if self.lut is not None:
            if raw.max() >= len(self.lut):
                raise GroundTruthError(f"{item.label}: value {raw.max()} is outside the {self.layout} label table")
            ids = self.lut[raw]
        else:
            ids = raw.astype(np.uint16)
            ids[raw == self.ignore_index] = GT_IGNORE
        valid = ids != GT_IGNORE
        if valid.any() and ids[valid].max() >= len(self.vocabulary):
            raise GroundTruthError(
                f"{item.label}: class id {ids[valid].max()} but the vocabulary has "
                f"{len(self.vocabulary)} classes (ids 0..{len(self.vocabulary) - 1}, ignore "
                f"{self.ignore_index})"
            )
        return ids


def open_dataset(
    layout: str, root: str | Path, split: str = "val", vocabulary: Vocabulary | None = None,
    ignore_index: int = 255,
) -> Dataset:
    """Resolve a dataset folder of the given layout; fails with what is missing where.

    `vocabulary` defaults to the layout's preset (cityscapes, ade20k); a plain folder has no
    default because its label ids mean nothing without their class list.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if layout == "cityscapes":
        return _cityscapes(root, split, vocabulary or load_vocabulary("cityscapes"))
    if layout == "ade20k":
        split = SPLIT_ALIASES["ade20k"].get(split, split)
        return _ade20k(root, split, vocabulary or load_vocabulary("ade20k"))
    if layout == "folder":
        if vocabulary is None:
            raise DatasetError("a plain folder needs --vocab: its label ids must be the ids of that vocabulary")
        return _folder(root, vocabulary, ignore_index)
    if layout == "shapes":
        raise DatasetError("the shapes layout is generated, not read from a folder: use shapes_dataset()")
    raise DatasetError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def _cityscapes(root: Path, split: str, vocabulary: Vocabulary) -> Dataset:
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    if not image_dir.is_dir():
        raise DatasetError(f"{root} is not a Cityscapes folder: {image_dir} is missing")
    label_ids = vocabulary.extra.get("label_id")
    if label_ids is None:
        raise DatasetError(f"vocabulary {vocabulary.name!r} has no label_id column to map gtFine labelIds")
    lut = np.full(256, GT_IGNORE, np.uint16)
    for train_id, label_id in enumerate(label_ids):
        lut[label_id] = train_id
    items = []
    for image in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"
        items.append(Item(image, label if label.is_file() else None))
    return _checked(Dataset("cityscapes", root, split, items, vocabulary, lut=lut), label_dir)


def _ade20k(root: Path, split: str, vocabulary: Vocabulary) -> Dataset:
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    image_dir, label_dir = root / "images" / split, root / "annotations" / split
    if not image_dir.is_dir():
        raise DatasetError(f"{root} is not an ADE20K SceneParsing folder: {image_dir} is missing")
    if len(vocabulary) != 150:
        raise DatasetError(f"ADE20K annotations hold 150 classes; vocabulary {vocabulary.name!r} has {len(vocabulary)}")
    lut = np.full(256, GT_IGNORE, np.uint16)
    lut[1:151] = np.arange(150)
    items = []
    for image in sorted(image_dir.glob("*.jpg")):
        label = label_dir / f"{image.stem}.png"
        items.append(Item(image, label if label.is_file() else None))
    return _checked(Dataset("ade20k", root, split, items, vocabulary, lut=lut), label_dir)


def _folder(root: Path, vocabulary: Vocabulary, ignore_index: int) -> Dataset:
    image_dir = root / "images" if (root / "images").is_dir() else root
    label_dir = root / "labels"
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    items = [Item(p, (label_dir / f"{p.stem}.png") if (label_dir / f"{p.stem}.png").is_file() else None) for p in files]
    dataset = Dataset("folder", root, "", items, vocabulary, ignore_index=ignore_index)
    if not label_dir.is_dir():
        dataset.notes.append(f"no {label_dir}: images only, nothing to score")
        if not items:
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        return dataset
    return _checked(dataset, label_dir)


def _checked(dataset: Dataset, label_dir: Path) -> Dataset:
    """No images, or images whose label is missing, are errors: a silent partial set would
    give a number over a different set of frames than the paper's."""
    if not dataset.items:
        raise DatasetError(f"no images found for {dataset.layout} in {dataset.root} (split {dataset.split!r})")
    missing = [item.image.name for item in dataset.items if item.label is None]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(dataset.items)} images have no label in {label_dir} "
            f"(first: {missing[0]})"
        )
    return dataset


@dataclass
class ShapesDataset(Dataset):
    """Frames of the known-answer shapes world, made on demand: nothing is read from disk.

    Items name the frames (`s<seed>_<index>.jpg`); their bytes and labels come from
    `sfs_ros.synth.shapes.make_scene`, one scene kept for the image and label of the same frame."""

    seed: int = 0
    size: tuple[int, int] = SHAPES_SIZE
    jpeg_quality: int = 95
    lossless: bool = False  # PNG instead of JPEG (for `raw` bags: rgb8 with the exact pixels)
    _cached: tuple[int, Scene] | None = field(default=None, repr=False)

    def scene(self, item: Item) -> Scene:
        index = int(item.image.stem.rsplit("_", 1)[1])
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, make_scene(self.seed, index, self.size))
        return self._cached[1]

    def read_image(self, item: Item) -> bytes:
        return encode_image(self.scene(item).image, jpeg=not self.lossless, quality=self.jpeg_quality)

    def load_label(self, item: Item) -> np.ndarray:
        return self.scene(item).labels.astype(np.uint16)


def shapes_dataset(frames: int, seed: int, size: tuple[int, int] = SHAPES_SIZE,
                   vocabulary: Vocabulary | None = None, lossless: bool = False) -> ShapesDataset:
    """Frames 0..frames-1 of shapes world `seed` at `size` = (height, width), as a dataset.

    `vocabulary` may only be the shapes preset (or the same 13 names): the labels are its ids."""
    if frames < 1:
        raise DatasetError(f"--frames must be at least 1, got {frames}")
    vocabulary = vocabulary or load_vocabulary("shapes")
    if vocabulary.names != SHAPES_CLASSES:
        raise DatasetError(f"the shapes world's labels are the 'shapes' preset's 13 ids; vocabulary "
                           f"{vocabulary.name!r} has other classes")
    height, width = size
    items = [Item(Path(f"{frame_stem(seed, k)}.jpg"), Path(f"{frame_stem(seed, k)}.png")) for k in range(frames)]
    return ShapesDataset("shapes", Path(f"seed={seed}"), f"{width}x{height}", items, vocabulary,
                         seed=seed, size=(height, width), lossless=lossless)


# ====================================================================== folder -> bag
@dataclass(frozen=True)
class ConvertOptions:
    #: "" = /camera/image/compressed, or /camera/image with `raw`: the name tells sfs_node
    #: which message type to subscribe with (image_transport's rule), so a live replay matches.
    image_topic: str = ""
    gt_topic: str = "/camera/label_gt"
    frame_id: str = "camera"
    rate: float = 10.0  # Hz: frame k is stamped start + k / rate
    start_ns: int = 1_000_000_000
    raw: bool = False  # sensor_msgs/Image rgb8 instead of the original compressed file bytes
    storage: str = "mcap"
    limit: int | None = None

    @property
    def topic(self) -> str:
        """The image topic written: the given one, else the default for the message type."""
        return self.image_topic or ("/camera/image" if self.raw else "/camera/image/compressed")


def write_bag(dataset: Dataset, out: str | Path, options: ConvertOptions = ConvertOptions(),
              progress: Callable[[Iterator], Iterator] = iter) -> int:
    """Write `dataset` as a bag; returns the number of frames written.

    Labels go out as mono8 (ignore 255) when every id fits, else mono16 (ignore 65535). The
    bag's custom_data names the topics and the vocabulary, so `sfs_eval run` needs no flags and
    refuses to score these labels against another vocabulary.
    """
    if options.rate <= 0:
        raise DatasetError(f"rate must be > 0 Hz, got {options.rate}")
    wide = len(dataset.vocabulary) >= 255
    vocab = dataset.vocabulary
    custom = {
        bags.HINT_IMAGE_TOPIC: options.topic,
        bags.HINT_DATASET: f"{dataset.layout}:{dataset.root}:{dataset.split}",
        bags.HINT_VOCABULARY: vocab.name if vocab.name != "custom" else bags.hints_json(
            [", ".join(c.synonyms) for c in vocab.classes]
        ),
        bags.HINT_VOCABULARY_KEY: vocab.key,
    }
    has_labels = any(item.label is not None for item in dataset.items)
    if has_labels:
        custom[bags.HINT_GT_TOPIC] = options.gt_topic
    items = dataset.items[: options.limit] if options.limit else dataset.items
    period_ns = round(1e9 / options.rate)
    with bags.BagOutput(out, options.storage, custom) as bag:
        for k, item in enumerate(progress(items)):
            log_time = options.start_ns + k * period_ns
            hdr = messages.header(messages.Stamp.from_ns(log_time), options.frame_id)
            image_msg, shape = _image_message(dataset.read_image(item), item.image, hdr, options.raw)
            bag.write(options.topic, log_time, image_msg)
            if item.label is not None:
                ids = dataset.load_label(item)
                if ids.shape != shape:
                    raise GroundTruthError(
                        f"label {item.label} is {ids.shape[1]}x{ids.shape[0]} but image {item.image} "
                        f"is {shape[1]}x{shape[0]}"
                    )
                if wide:
                    msg = messages.image(hdr, ids, "mono16")
                else:
                    msg = messages.image(hdr, np.where(ids == GT_IGNORE, 255, ids).astype(np.uint8), "mono8")
                bag.write(options.gt_topic, log_time, msg)
    return len(items)


def _image_message(data: bytes, path: Path, hdr: object, raw: bool) -> tuple[object, tuple[int, int]]:
    """The image (the bytes of file `path`) as a message, and its (height, width); decoded once
    to catch bad files now."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"image file {path} cannot be decoded")
    if raw:
        return messages.image(hdr, bgr[:, :, ::-1], "rgb8"), bgr.shape[:2]
    fmt = image_codec.codec_of(data)  # by the bytes, not the file name
    if fmt is None:  # BMP, WebP, TIFF ...: what the node would refuse, stored as PNG
        ok, encoded = cv2.imencode(".png", bgr)
        if not ok:
            raise DatasetError(f"image file {path} decodes but cannot be re-encoded as PNG")
        fmt, data = "png", encoded.tobytes()
    return messages.compressed_image(hdr, fmt, data), bgr.shape[:2]
