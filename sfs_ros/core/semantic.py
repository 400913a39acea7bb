"""Closed-set accuracy mode "semantic-vote": the Semantic-Segment-Anything rule (issue #8).

A closed-set semantic segmentation model (SegFormer) predicts one class per pixel; every FastSAM
mask then takes the most frequent class among its own pixels, and pixels no mask covers keep the
model's label (`Labels.background`, painted first by `fusion.fuse`). SSA reached 72.99 mIoU on
Cityscapes and 47.14 on ADE20K this way with SegFormer-B5: the masks sharpen the boundaries of a
model that is already right about *what* is where.

The label set is the checkpoint's own (`config.id2label`); `HybridLabeler` adds open-vocabulary
classes by handing masks with a weak vote to the CLIP `Labeler`.

Each mask votes over all of its own pixels, also those a smaller mask painted later will cover
(SSA does the same); only the painting, in `fusion.fuse`, is largest first. Vote tie rule: when
two classes cover the same number of pixels of a mask, the LOWER class id wins (and ranks first
among the top-k proposals). Cost: `vote` scans the (N, H, W) stack once; on CPU that scan
dominates and a per-mask loop costs about the same (bench/semantic_vote.py), the SegFormer
forward pass costs far more than either.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sfs_ros.core.device import new_stream, on_stream, resolve_device
from sfs_ros.core.frame import UNLABELED_CLASS, Labels, MaskGrid, Masks, SfsError, check_rgb_image
from sfs_ros.core.labeler import Labeler, LabelingCancelled, TextBank
from sfs_ros.core.labeling import SetVocabulary, next_version
from sfs_ros.core.vocabulary import VocabClass, Vocabulary, load_vocabulary, palette_for
from sfs_ros.core.weights import WeightsMissingError, weights_dir

log = logging.getLogger("sfs_ros.semantic")

#: Real SegFormer encoder/decoder sizes (Xie et al. 2021, Table 6) for random-weight builds.
SEGFORMER_SIZES: dict[str, dict[str, object]] = {
    "b0": dict(depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256),
    "b1": dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=256),
    "b2": dict(depths=[3, 4, 6, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
    "b3": dict(depths=[3, 4, 18, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
    "b4": dict(depths=[3, 8, 27, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
    "b5": dict(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=768),
}
#: Vocabulary presets a random-weight model can be built for (ADE20K 150, Cityscapes 19 classes).
LABEL_SETS = ("ade20k", "cityscapes", "shapes")
RESIZE_POLICIES = ("square", "short_side", "none")
#: What every SegFormer image processor normalises with (ImageNet statistics).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: A checkpoint label map is read as a preset when this share of its names (by position)
#: matches the preset's synonyms: HF's ADE20K map says "windowpane", "bathtub", ... (10 of 150
#: differ in wording) where our preset says "window", "tub"; same classes, same order.
PRESET_MATCH = 0.9


@dataclass(frozen=True)
class SemanticConfig:
    """Semantic-vote options. None fields are read from the checkpoint id where it says them."""

    checkpoint: str = "nvidia/segformer-b0-finetuned-ade-512-512"  # HF model id or local folder
    device: str = "auto"
    half: bool = False  # fp16 on CUDA only
    #: "square": input_size x input_size, what the HF SegFormer processor (and SSA) does;
    #: "short_side": keep the aspect ratio, short side = input_size; "none": native resolution.
    resize: str = "square"
    input_size: int | None = None  # None: the "-512-512" / "-1024-1024" suffix of the id, else 512
    threshold: float = 0.0  # vote share below which a mask stays unlabeled (0: SSA, always vote)
    min_vote_share: float = 0.5  # HybridLabeler: a share below this asks CLIP instead
    topk: int = 3
    random_weights: bool = False
    architecture: str | None = None  # random init: b0..b5; None: from the id, else b0
    label_set: str | None = None  # random init: ade20k | cityscapes; None: from the id, else ade20k

    def validate(self) -> None:
        if not self.checkpoint:
            raise SfsError("checkpoint must name a Hugging Face model id or a local folder")
        if self.resize not in RESIZE_POLICIES:
            raise SfsError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.input_size is not None and self.input_size < 32:
            raise SfsError(f"input_size must be >= 32 pixels, got {self.input_size}")
        if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.min_vote_share <= 1.0:
            raise SfsError("threshold and min_vote_share are vote shares: they must lie in [0, 1]")
        if self.topk < 1:
            raise SfsError(f"topk must be >= 1, got {self.topk}")
        if self.architecture is not None and self.architecture not in SEGFORMER_SIZES:
            raise SfsError(f"architecture must be one of {tuple(SEGFORMER_SIZES)}, got "
                           f"{self.architecture!r}")
        if self.label_set is not None and self.label_set not in LABEL_SETS:
            raise SfsError(f"label_set must be one of {LABEL_SETS}, got {self.label_set!r}")

    @property
    def size(self) -> int:
        """The input size in effect: explicit, else the id's "-H-W" suffix, else 512."""
        if self.input_size is not None:
            return self.input_size
        found = re.search(r"-(\d+)-(\d+)/?$", self.checkpoint)
        return min(int(found[1]), int(found[2])) if found else 512

    def random_spec(self) -> tuple[str, str]:
        """(architecture, label set) of the random-weight build, e.g. ("b5", "cityscapes")."""
        arch = self.architecture or _first(r"segformer-(b[0-5])\b", self.checkpoint.lower(), "b0")
        label_set = self.label_set or ("cityscapes" if "cityscapes" in self.checkpoint.lower()
                                       else "ade20k")
        return arch, label_set


def _first(pattern: str, text: str, default: str) -> str:
    found = re.search(pattern, text)
    return found[1] if found else default


@dataclass(frozen=True)
class SemanticBank:
    """What the Pipeline binds to a frame: here only the (fixed) vocabulary, no embeddings."""

    vocabulary: Vocabulary
    version: int = 0  # the labeler's vocabulary version when this bank became current


# ---------------------------------------------------------------------------------- voting
def _check_semantic(semantic: np.ndarray, shape: tuple[int, ...], num_classes: int, topk: int) -> None:
    """The class map a vote reads: integers in [0, num_classes) over the image `shape`."""
    if semantic.shape != tuple(shape) or not np.issubdtype(semantic.dtype, np.integer):
        raise SfsError(f"semantic must be an integer {tuple(shape)} map, got "
                       f"{semantic.shape} {semantic.dtype}")
    if num_classes < 1 or topk < 1:
        raise SfsError("num_classes and topk must be >= 1")
    if semantic.size and (semantic.min() < 0 or semantic.max() >= num_classes):
        raise SfsError(f"semantic class ids must lie in [0, {num_classes}), got "
                       f"[{semantic.min()}, {semantic.max()}]")


def vote(
    masks: np.ndarray, semantic: np.ndarray, num_classes: int, topk: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-mask class histogram of `semantic`, in ONE np.bincount over all mask pixels.

    masks (N, H, W) bool, semantic (H, W) ints in [0, num_classes). Returns
    class_ids (N,) int32 (the mode; UNLABELED_CLASS for an empty mask), shares (N,) float32
    (winner pixels / mask pixels), topk_ids (N, k) int32 and topk_shares (N, k) float32, best
    first, k = min(topk, num_classes). Ties: the lower class id wins. Memory and time grow with
    the total number of mask pixels (one int64 index per covered pixel per mask), not with N*K.
    """
    if masks.ndim != 3 or masks.dtype != np.bool_:
        raise SfsError(f"masks must be (N, H, W) bool, got {masks.shape} {masks.dtype}")
    _check_semantic(semantic, masks.shape[1:], num_classes, topk)
    n, pixels = masks.shape[0], semantic.size
    k = min(topk, num_classes)
    flat = np.flatnonzero(masks)  # sorted, so each mask's pixels form one run
    lengths = np.diff(np.searchsorted(flat, np.arange(n + 1) * pixels))
    owner = np.repeat(np.arange(n), lengths)  # mask index of each covered pixel
    flat -= owner * pixels  # -> pixel index within the frame (no integer division)
    owner *= num_classes
    owner += semantic.reshape(-1).astype(np.intp, copy=False)[flat]  # mask * K + class
    counts = np.bincount(owner, minlength=n * num_classes).reshape(n, num_classes)
    return _ranked(counts, k)


def vote_low_res(
    low: np.ndarray, grid: MaskGrid, semantic: np.ndarray, num_classes: int, topk: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`vote` of the upsampled masks `grid.upsample(low)`, without upsampling them.

    The class map is histogrammed once per low-res cell (how many image pixels of each class
    each cell stands for); each mask's histogram is then the sum over its cells. Same results
    as vote() on the upsampled masks; cost grows with the masks' low-res cells times the
    classes per cell, not with their image pixels.
    """
    if low.ndim != 3 or low.dtype != np.bool_ or low.shape[1:] != grid.shape:
        raise SfsError(f"low-res masks must be (N, {grid.shape[0]}, {grid.shape[1]}) bool, got "
                       f"{low.shape} {low.dtype}")
    _check_semantic(semantic, grid.image_shape, num_classes, topk)
    n, cells = low.shape[0], grid.shape[0] * grid.shape[1]
    cell_of_pixel = grid.rows[:, None] * grid.shape[1] + grid.cols[None, :]  # (H, W)
    keys = cell_of_pixel * num_classes + semantic.astype(np.intp, copy=False)
    hist = np.bincount(keys.reshape(-1), minlength=cells * num_classes).reshape(cells, num_classes)
    nz_cell, nz_class = np.nonzero(hist)  # sorted by cell: a CSR view of the histogram
    nz_count = hist[nz_cell, nz_class]
    per_cell = np.bincount(nz_cell, minlength=cells)
    first = np.cumsum(per_cell) - per_cell
    flat = np.flatnonzero(low)
    owner, cell = np.divmod(flat, cells)
    reps = per_cell[cell]  # histogram entries of each covered cell
    starts = np.repeat(first[cell] - (np.cumsum(reps) - reps), reps) + np.arange(reps.sum())
    counts = np.bincount(np.repeat(owner, reps) * num_classes + nz_class[starts],
                         weights=nz_count[starts], minlength=n * num_classes)
    return _ranked(np.rint(counts).astype(np.int64).reshape(n, num_classes), min(topk, num_classes))


def _ranked(counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """vote()'s outputs from per-mask class pixel counts (N, K)."""
    area = counts.sum(axis=1)
    # stable sort of -counts: equal counts keep ascending class order, so the lower id wins
    top_ids = np.argsort(-counts, axis=1, kind="stable")[:, :k]
    top_shares = np.take_along_axis(counts, top_ids, axis=1) / np.maximum(area, 1)[:, None]
    class_ids = np.where(area > 0, top_ids[:, 0], UNLABELED_CLASS)
    return (
        class_ids.astype(np.int32),
        top_shares[:, 0].astype(np.float32),
        top_ids.astype(np.int32),
        top_shares.astype(np.float32),
    )


# ---------------------------------------------------------------------------------- weights
def resolve_checkpoint(checkpoint: str) -> str:
    """The local folder or the cached HF model id to load `checkpoint` from, never the network.

    Looked up as: an existing local folder; weights_dir()/<model id>; the Hugging Face cache.
    """
    from huggingface_hub.constants import HF_HUB_CACHE

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path)
        raise WeightsMissingError(
            f"SegFormer folder {path} has no config.json: save the model there with "
            "`model.save_pretrained(folder)` (config.json + model.safetensors), or run with "
            "--random-weights."
        )
    local = weights_dir() / checkpoint
    if (local / "config.json").is_file():
        return str(local)
    looks_like_id = re.fullmatch(r"[\w.-]+/[\w.-]+", checkpoint) is not None
    if looks_like_id and _cached(checkpoint, "config.json"):
        return checkpoint
    if not looks_like_id:
        raise WeightsMissingError(
            f"SegFormer checkpoint {checkpoint!r} is neither an existing model folder nor a "
            "Hugging Face model id (org/name); pass one of those, or run with --random-weights."
        )
    raise WeightsMissingError(
        f"SegFormer checkpoint {checkpoint!r} not found: not in the Hugging Face cache "
        f"({HF_HUB_CACHE}) nor in {local}. On a connected machine run `hf download "
        f"{checkpoint}` and copy the Hugging Face cache over, or save the model folder "
        f"(config.json + model.safetensors) to {local} or pass a local folder as the "
        "checkpoint, or run with --random-weights."
    )


def _cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def build_model(config: SemanticConfig) -> torch.nn.Module:
    """The SegFormer of `config`: from local files, or the real architecture randomly seeded."""
    from transformers import (
        AutoModelForSemanticSegmentation,
        SegformerConfig,
        SegformerForSemanticSegmentation,
    )

    if config.random_weights:
        arch, label_set = config.random_spec()
        names = load_vocabulary(label_set).names
        seg_config = SegformerConfig(
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
            **SEGFORMER_SIZES[arch],
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = SegformerForSemanticSegmentation(seg_config)
        log.warning("SegFormer-%s (%s) runs with RANDOM weights: labels are meaningless",
                    arch.upper(), label_set)
        return model
    source = resolve_checkpoint(config.checkpoint)
    try:
        # use_safetensors=None: safetensors when the checkpoint has them, else pytorch_model.bin
        return AutoModelForSemanticSegmentation.from_pretrained(source, local_files_only=True)
    except OSError as exc:  # config cached but no weight file, or a broken folder
        raise WeightsMissingError(
            f"SegFormer checkpoint {config.checkpoint!r} could not be loaded from local files "
            f"({exc}). Fetch it on a connected machine with `hf download {config.checkpoint}`, "
            "or run with --random-weights."
        ) from exc


def checkpoint_vocabulary(id2label: dict[int, str]) -> Vocabulary:
    """The Vocabulary of a checkpoint's label map: a preset (standard palette, our synonyms) when
    at least PRESET_MATCH of its names match that preset position by position, else a custom one
    with the checkpoint's names (class id i = model output channel i either way)."""
    names = [str(id2label[i]).strip() for i in range(len(id2label))]
    for preset in LABEL_SETS:
        vocabulary = load_vocabulary(preset)
        if len(vocabulary) != len(names):
            continue
        same = sum(
            name.casefold() in {s.casefold() for s in cls.synonyms}
            for name, cls in zip(names, vocabulary.classes)
        )
        if same >= PRESET_MATCH * len(names):
            return vocabulary
    return load_vocabulary(names)


# ---------------------------------------------------------------------------------- labeler
class SemanticVoteLabeler(SetVocabulary):
    """SegFormer per-pixel classes + the per-mask vote, behind the CLIP Labeler's interface.

    `threshold` reads and writes `config.threshold`, so replacing `config` at runtime (as the
    node does for score_threshold) and setting `threshold` stay the same thing.
    """

    def __init__(self, config: SemanticConfig = SemanticConfig()) -> None:
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = torch.float16 if config.half and self.device.type == "cuda" else torch.float32
        self.model = build_model(config).eval().to(self.device, self.dtype)
        id2label = {int(i): name for i, name in self.model.config.id2label.items()}
        self.num_classes = len(id2label)
        self._bank = SemanticBank(checkpoint_vocabulary(id2label), next_version())
        self.threshold_kind = "vote_share"  # what `threshold` cuts (MaskLabeler)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self.stream = new_stream(self.device)

    @property
    def random_weights(self) -> bool:
        return self.config.random_weights

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        config = replace(self.config, threshold=float(value))
        config.validate()
        self.config = config

    @property
    def vocabulary(self) -> Vocabulary:
        return self._bank.vocabulary

    @property
    def bank(self) -> SemanticBank:
        return self._bank

    def fixed_vocabulary(self, extra: tuple[str, ...] = ()) -> Vocabulary:
        """The checkpoint's classes: a vote can only name what the model was trained on."""
        return self.vocabulary

    def describe(self) -> dict:
        """The vote settings in effect (threshold = the vote-share cut)."""
        return {**asdict(self.config), "threshold_kind": self.threshold_kind}

    def use(self, bank: SemanticBank) -> None:
        self._bank = bank

    def prepare_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> SemanticBank:
        """Accept only the checkpoint's own label set (same names in the same order; colours and
        synonyms may differ): class ids are the model's output channels and cannot be renamed."""
        ours = [n.casefold() for n in self.vocabulary.names]
        if [n.casefold() for n in vocabulary.names] != ours:
            raise SfsError(
                f"semantic-vote labels with the checkpoint's own {len(ours)} classes "
                f"({self.vocabulary.name}: {', '.join(self.vocabulary.names[:5])}, ...); "
                f"vocabulary {vocabulary.name!r} ({len(vocabulary)} classes) differs. Use the "
                "checkpoint's vocabulary, or the hybrid mode to add open-vocabulary classes."
            )
        return SemanticBank(vocabulary, next_version())

    # ------------------------------------------------------------------ semantic branch
    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the model sees for an image of height x width under the resize policy."""
        size, policy = self.config.size, self.config.resize
        if policy == "square":
            return size, size
        if policy == "short_side":
            scale = size / min(height, width)
            return max(1, round(height * scale)), max(1, round(width * scale))
        return height, width

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, h, w) normalised batch, resized like the HF processor (bilinear, antialiased)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        x = x.permute(2, 0, 1)[None].float() / 255.0
        shape = self.input_shape(*image.shape[:2])
        if shape != tuple(x.shape[2:]):
            x = F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """(1, K, h/4, w/4) float32 class logits of the model (its native output stride)."""
        return self.model(pixel_values=self.preprocess(image)).logits.float()

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int32 class map: logits upsampled bilinearly to the image size, then argmax."""
        image = check_rgb_image(image)
        with on_stream(self.stream):
            classes = self.upsample_argmax(self.logits(image), image.shape[:2])
        return classes.cpu().numpy()

    @staticmethod
    def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(H, W) int32 argmax of the bilinearly upsampled logits. Channels-last keeps each
        pixel's K scores adjacent for the argmax (~1.6x faster on CPU, same result); the
        full-size (K, H, W) float tensor is the memory peak (150 x 480 x 640: 184 MB)."""
        logits = logits.contiguous(memory_format=torch.channels_last)
        full = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return full[0].argmax(dim=0).to(torch.int32)

    # ------------------------------------------------------------------ labeling
    def label(
        self,
        image: np.ndarray,
        masks: Masks,
        bank: SemanticBank | TextBank | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Labels:
        """Vote every mask; `background` = the model's class map. `bank` is accepted for the
        Pipeline's interface only: the classes are the checkpoint's whatever it says."""
        image = check_rgb_image(image)
        if masks.image_shape != image.shape[:2]:
            raise SfsError(f"masks {masks.image_shape} do not match image {image.shape[:2]}")
        if cancelled():
            raise LabelingCancelled("labeling cancelled")
        semantic = self.predict(image)
        if masks.low_res is not None:  # no full-resolution masks needed
            class_ids, shares, top_ids, top_shares = vote_low_res(
                masks.low_res, masks.grid, semantic, self.num_classes, self.config.topk
            )
        else:
            class_ids, shares, top_ids, top_shares = vote(
                masks.masks, semantic, self.num_classes, self.config.topk
            )
        class_ids[shares < self.threshold] = UNLABELED_CLASS
        return Labels(class_ids, shares, top_ids, top_shares, background=semantic.astype(np.uint16))


# ---------------------------------------------------------------------------------- hybrid
def extend_vocabulary(base: Vocabulary, extra: list[str] | tuple[str, ...]) -> Vocabulary:
    """`base` (the checkpoint's classes, ids 0..K-1 unchanged) + `extra` classes with ids K...

    This is the CLIP vocabulary of the hybrid mode: one id space for the label image, where
    ids < K mean what the semantic model means and ids >= K are open-vocabulary additions.
    """
    added = load_vocabulary(list(extra)).classes if extra else ()
    taken = {n.casefold() for n in base.names}
    clash = [c.name for c in added if c.name.casefold() in taken]
    if clash:
        raise SfsError(f"extra classes {clash} are already in {base.name!r}")
    colors = palette_for(len(base) + len(added))[len(base):]
    classes = base.classes + tuple(
        VocabClass(len(base) + i, c.name, c.synonyms, tuple(int(v) for v in colors[i]))
        for i, c in enumerate(added)
    )
    if not added:
        return base
    # per-class metadata (e.g. Cityscapes label_id) has no value for the extras: dropped
    return Vocabulary(f"{base.name}+{len(added)}", classes)


class HybridLabeler(SetVocabulary):
    """Semantic vote first; masks whose winning share < min_vote_share are named by CLIP.

    Class ids: the CLIP labeler's vocabulary must be the checkpoint's classes first (same ids
    0..K-1), optionally followed by open-vocabulary extras with ids K.. (`extend_vocabulary`);
    `set_vocabulary` enforces it, so every id in the label image means one thing. A fallen-back
    mask carries CLIP's class (CLIP's own threshold may leave it unlabeled), CLIP's probability
    as score and CLIP's proposals; the semantic background map stays. Top-k lists are cut to
    the shorter of the two labelers' k.

    `threshold` (score_threshold) is CLIP's probability cut for the masks it names, as in the
    CLIP modes; `min_vote_share` decides which masks CLIP names. LabelInfo reports the former.
    """

    def __init__(
        self, semantic: SemanticVoteLabeler, clip: Labeler, min_vote_share: float | None = None
    ) -> None:
        self.semantic, self.clip = semantic, clip
        share = semantic.config.min_vote_share if min_vote_share is None else min_vote_share
        if not 0.0 <= share <= 1.0:
            raise SfsError(f"min_vote_share must lie in [0, 1], got {share}")
        self.min_vote_share = float(share)
        self.device = semantic.device
        self.threshold_kind = clip.threshold_kind
        self.fallbacks = 0  # masks handed to CLIP so far (diagnostics)

    @property
    def config(self) -> SemanticConfig:
        """Provenance: the semantic config with the min_vote_share in effect (CLIP: clip.config)."""
        return replace(self.semantic.config, min_vote_share=self.min_vote_share)

    def describe(self) -> dict:
        """Both halves' settings in effect."""
        return {**asdict(self.config), "threshold_kind": self.threshold_kind,
                "clip": self.clip.describe()}

    def fixed_vocabulary(self, extra: tuple[str, ...] = ()) -> Vocabulary:
        """The checkpoint's classes (ids 0..K-1), then `extra` open-vocabulary classes."""
        return extend_vocabulary(self.semantic.vocabulary, tuple(extra))

    @property
    def random_weights(self) -> bool:
        return self.semantic.random_weights or self.clip.random_weights

    @property
    def threshold(self) -> float:
        return self.clip.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.clip.threshold = value

    @property
    def bank(self) -> TextBank:
        return self.clip.bank

    def use(self, bank: TextBank) -> None:
        self.clip.use(bank)

    def prepare_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> TextBank:
        """Encode `vocabulary` for CLIP; it must start with the checkpoint's classes in order."""
        base = [n.casefold() for n in self.semantic.vocabulary.names]
        if [n.casefold() for n in vocabulary.names[: len(base)]] != base:
            raise SfsError(
                f"the hybrid vocabulary must start with the checkpoint's {len(base)} classes "
                f"({self.semantic.vocabulary.name}) in order, extras after them: build it with "
                "extend_vocabulary(labeler.semantic.vocabulary, extra_names)"
            )
        return self.clip.prepare_vocabulary(vocabulary, templates)

    def label(self, image: np.ndarray, masks: Masks, bank: TextBank | None = None,
              cancelled: Callable[[], bool] = lambda: False) -> Labels:
        """MaskLabeler.label: the vote, then CLIP for the masks with a weak vote."""
        bank = bank or self.bank
        out = self.semantic.label(image, masks, cancelled=cancelled)
        weak = np.flatnonzero(out.scores < self.min_vote_share)
        k = min(out.topk_ids.shape[1], self.clip.config.topk, len(bank.vocabulary))
        out = replace(out, topk_ids=out.topk_ids[:, :k].copy(),
                      topk_scores=out.topk_scores[:, :k].copy())
        if weak.size == 0:
            return out
        subset = masks.subset(weak)
        named = self.clip.label(image, subset, bank, cancelled=cancelled)
        self.fallbacks += int(weak.size)
        out.class_ids[weak] = named.class_ids
        out.scores[weak] = named.scores
        out.topk_ids[weak] = named.topk_ids[:, :k]
        out.topk_scores[weak] = named.topk_scores[:, :k]
        return out
