"""The CLIP head: names every mask of a frame against a vocabulary (the SSA labeling style).

Each mask is cut out at several context scales around its box (pixels outside the mask fade to
neutral grey so the background does not vote), all crops of the frame go through the image
encoder in one batch, and each crop is scored by cosine similarity against the cached text
embeddings of the vocabulary. Probabilities (softmax over classes) are averaged over scales.

Text embeddings are the expensive part to recompute (~9 s per 150 prompts on a 2-core CPU), so
they are cached per vocabulary and prompt-template set, in memory and on disk.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import logging
import threading
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from sfs_ros.core.dense_clip import DenseClip
from sfs_ros.core.device import new_stream, on_stream, resolve_device
from sfs_ros.core.frame import UNLABELED_CLASS, Labels, Masks, SfsError, check_rgb_image
from sfs_ros.core.labeling import SetVocabulary, next_version
from sfs_ros.core.options import CLIP_MODES, int8_problem
# DEFAULT_TEMPLATES lives in core.vocabulary; still importable from here for older callers
from sfs_ros.core.vocabulary import DEFAULT_TEMPLATES, VocabClass, Vocabulary, check_templates
from sfs_ros.core.weights import (
    cache_dir,
    clip_quick_gelu,
    file_fingerprint,
    quick_gelu_problem,
    resolve_clip,
)

log = logging.getLogger("sfs_ros.labeler")

GREY = 0.5  # neutral grey in [0, 1] RGB, before CLIP's normalisation
#: Free texts (prompts) whose embeddings stay in memory; the least recently used goes first.
PROMPT_TEXT_CACHE = 256
#: roi_align's adaptive sampling: ceil(window side / crop side) points per crop pixel and axis,
#: so a large window averages all its pixels (a fixed 2 x 2 aliased fine texture).
ADAPTIVE_SAMPLING = -1


class LabelingCancelled(SfsError):
    """The labeler was asked to stop between two crop batches (pipeline shutdown)."""


@dataclass(frozen=True)
class LabelerConfig:
    """CLIP head options."""

    clip_model: str = "ViT-B-32"
    pretrained: str = "openai"  # open_clip tag or a local checkpoint file
    # "auto" | "true" | "false": QuickGELU (OpenAI's activation); auto follows weights.clip_quick_gelu
    quick_gelu: str = "auto"
    # crop: every mask cropped and encoded (SSA style, accuracy first, cost grows with masks);
    # dense: one ClearCLIP pass per frame, mask-average-pooled (cost nearly flat in masks);
    # hybrid: dense, then low-margin masks re-scored with crops.
    mode: str = "crop"
    dense_size: int = 448  # short side of the dense-mode input, pixels
    hybrid_margin: float = 0.1  # top-1 minus top-2 probability under which hybrid uses crops
    prune_topk: int = 0  # >0: score masks only against the frame's top-k classes (+ recent ones)
    prune_memory: int = 5  # frames whose winning classes stay candidates when pruning
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    scales: tuple[float, ...] = (1.0, 1.5)  # crop side = longest box side x scale
    background_blend: float = 0.8  # 1 = pixels outside the mask fully grey, 0 = untouched
    threshold: float = 0.1  # best class probability below this leaves the mask unlabeled
    topk: int = 3
    # crops per encoder call; bounds memory and how long stop() waits. None: 64 on CUDA, 8 on
    # CPU (~0.7 s of ViT-B-32 on 2 cores; larger CPU batches gain nothing but shutdown latency)
    batch_size: int | None = None
    device: str = "auto"
    half: bool = False
    random_weights: bool = False
    disk_cache: bool = True
    backend: str = "torch"  # image encoder: options.BACKENDS (core/backends/); text stays torch
    export_missing: bool = True  # export an image encoder missing from the cache on load
    int8: bool = False  # openvino only: the NNCF-quantised copy (core/backends/quantize.py)
    int8_calibration: str = ""  # folder of calibration images; empty: generated frames

    def validate(self) -> None:
        check_templates(self.templates)
        problem = quick_gelu_problem(self.clip_model, self.quick_gelu)
        if problem:
            raise SfsError(problem)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise SfsError(f"scales must be positive, got {self.scales}")
        if not 0.0 <= self.background_blend <= 1.0 or not 0.0 <= self.threshold <= 1.0:
            raise SfsError("background_blend and threshold must lie in [0, 1]")
        if self.topk < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise SfsError("topk and batch_size must be >= 1")
        problem = int8_problem(self.backend, self.int8)
        if problem:
            raise SfsError(problem)
        if self.mode not in CLIP_MODES:
            raise SfsError(f"labeling mode must be one of {CLIP_MODES}, got {self.mode!r}")
        if self.dense_size < 32 or self.prune_topk < 0 or self.prune_memory < 0:
            raise SfsError("dense_size must be >= 32, prune_topk and prune_memory >= 0")


@dataclass(frozen=True)
class TextBank:
    """Normalised text embeddings of one vocabulary: row i belongs to class i."""

    vocabulary: Vocabulary
    embeddings: torch.Tensor  # (K, D) on the labeler's device
    templates: tuple[str, ...] = ()
    version: int = 0  # the labeler's vocabulary version when this bank became current


class Labeler(SetVocabulary):
    """Loads open_clip once; labels the masks of a frame against the current TextBank."""

    def __init__(self, config: LabelerConfig = LabelerConfig()) -> None:
        import open_clip

        config.validate()
        self.config = config
        self.threshold = config.threshold  # may change at runtime (node parameter)
        self.threshold_kind = "clip_probability"  # what `threshold` cuts (MaskLabeler)
        self.device = resolve_device(config.device)
        self.dtype = torch.float16 if config.half and self.device.type == "cuda" else torch.float32
        model = self._load_clip(config)
        self.model = model.eval().requires_grad_(False).to(self.device, self.dtype)
        self.tokenizer = open_clip.get_tokenizer(config.clip_model)
        size = model.visual.image_size
        self.crop_size = (size, size) if isinstance(size, int) else tuple(size)
        pre = model.visual.preprocess_cfg
        self.mean = torch.tensor(pre["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(pre["std"], device=self.device).view(1, 3, 1, 1)
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.stream = new_stream(self.device)
        self.dense = DenseClip(self.model.visual) if config.mode != "crop" else None
        self.encode_image = self.model.encode_image  # (B, 3, S, S) -> (B, D); see `backend`
        if config.backend != "torch":  # exported image encoder (core/backends/); text stays torch
            from sfs_ros.core.backends.clip import exported_encoders

            self.encode_image, self.dense = exported_encoders(self, dense=self.dense is not None)
        self._recent: collections.deque[set[int]] = collections.deque(maxlen=config.prune_memory)
        self._bank: TextBank | None = None
        self._memory_cache: dict[str, torch.Tensor] = {}
        self._prompt_cache: collections.OrderedDict[tuple[str, tuple[str, ...]], torch.Tensor] = (
            collections.OrderedDict())
        self._lock = threading.Lock()
        self.text_encodings = 0  # how many times the text encoder ran (cache misses)
        #: roi_align points per crop pixel and axis; -1: adaptive (bench/crop_sampling.py)
        self.crop_sampling_ratio = ADAPTIVE_SAMPLING

    def _load_clip(self, config: LabelerConfig) -> torch.nn.Module:
        """The open_clip model of `config`. Sets `quick_gelu` (the activation it runs) and
        `weights_id` (what its text embeddings depend on: the checkpoint's content, not its
        path, so a file replaced in place is not served stale embeddings from the disk cache)."""
        import open_clip

        from sfs_ros.core.clip_models import register_project_models

        register_project_models()  # the project's own configs (config/clip_models/*.json) by name
        if config.random_weights:
            checkpoint = None
            # seeded random init is reproducible for a given torch build, so it can be cached too
            weights = f"random-seed0-torch{torch.__version__}"
        else:
            checkpoint = resolve_clip(config.clip_model, config.pretrained)
            weights = f"file:{file_fingerprint(checkpoint)}"
        self.quick_gelu, why = clip_quick_gelu(config.clip_model, config.pretrained, config.quick_gelu)
        log.info("QuickGELU %s: %s", "on" if self.quick_gelu else "off", why)
        self.weights_id = f"{weights}:quick_gelu={self.quick_gelu}"
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = open_clip.create_model(config.clip_model, pretrained=checkpoint,
                                           force_quick_gelu=self.quick_gelu)
        if config.random_weights:
            log.warning("CLIP %s runs with RANDOM weights: labels are meaningless", config.clip_model)
        return model

    @property
    def random_weights(self) -> bool:
        return self.config.random_weights

    # ------------------------------------------------------------------ vocabulary / text side
    def _cache_key(self, vocabulary: Vocabulary, templates: tuple[str, ...]) -> str:
        parts = [self.config.clip_model, self.weights_id, "\x1f".join(templates), vocabulary.key]
        return hashlib.sha1("\x1e".join(parts).encode()).hexdigest()

    def encode_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> TextBank:
        """Text embeddings of `vocabulary`: template x synonym ensemble, from cache when possible.

        Thread-safe and free of side effects on the current bank, so callers can encode a new
        vocabulary (or template set; default: the configured one) on any thread while frames
        are still labeled with the old one.
        """
        templates = check_templates(templates or self.config.templates)
        key = self._cache_key(vocabulary, templates)
        with self._lock:
            cached = self._memory_cache.get(key)
        path = cache_dir() / "text" / f"{key}.pt"
        use_disk = self.config.disk_cache
        if cached is None and use_disk and path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.shape[0] != len(vocabulary):
                cached = None
        if cached is None:
            cached = self._encode_text(vocabulary, templates)
            if use_disk:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{threading.get_ident()}")
                torch.save(cached, tmp)
                tmp.replace(path)
        with self._lock:
            self._memory_cache[key] = cached
        return TextBank(vocabulary, cached.to(self.device, self.dtype), templates)

    @torch.inference_mode()
    def _encode_text(self, vocabulary: Vocabulary, templates: tuple[str, ...]) -> torch.Tensor:
        self.text_encodings += 1
        prompts: list[str] = []
        owner: list[int] = []
        for cls in vocabulary.classes:
            for name in cls.synonyms:
                for template in templates:
                    prompts.append(template.format(name))
                    owner.append(cls.id)
        embeddings = []
        for start in range(0, len(prompts), 256):
            tokens = self.tokenizer(prompts[start : start + 256]).to(self.device)
            embeddings.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        per_prompt = torch.cat(embeddings)
        index = torch.tensor(owner, device=per_prompt.device)
        summed = torch.zeros(len(vocabulary), per_prompt.shape[1], device=per_prompt.device)
        summed.index_add_(0, index, per_prompt)
        return F.normalize(summed, dim=-1).cpu()

    def text_problem(self, text: str, templates: tuple[str, ...]) -> str | None:
        """Why a free text cannot be encoded (empty, or longer than the text encoder's context
        once put in a template: open_clip would cut it silently), or None."""
        if not text.strip():
            return "a text prompt is empty"
        context = int(getattr(self.tokenizer, "context_length", 77))
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:  # a tokenizer that cannot count: it truncates like any other
            return None
        tokens = max(len(encode(template.format(text))) for template in templates) + 2  # sot, eot
        if tokens > context:
            return (f"text prompt {text[:40]!r}... is {tokens} tokens in its template; the text "
                    f"encoder takes at most {context}")
        return None

    def encode_texts(self, texts: list[str] | tuple[str, ...],
                     templates: tuple[str, ...] | None = None) -> torch.Tensor:
        """(T, D) normalised embeddings of free texts ("red mug"), float32 on the labeler's
        device. Each text is encoded like one vocabulary class (the template ensemble of
        `_encode_text`; default: the current bank's templates), so it scores on the same scale
        as the vocabulary it competes with; commas do not split it into synonyms. Raises
        SfsError with `text_problem`'s reason. Prompts are free texts: kept in a small LRU in
        memory (PROMPT_TEXT_CACHE), never on disk."""
        bank = self._bank
        templates = check_templates(templates or (bank.templates if bank else self.config.templates))
        for text in texts:
            problem = self.text_problem(text, templates)
            if problem:
                raise SfsError(problem)
        with self._lock:
            found = {t: self._prompt_cache[(t, templates)] for t in texts
                     if (t, templates) in self._prompt_cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            classes = tuple(VocabClass(i, t, (t,), (0, 0, 0)) for i, t in enumerate(missing))
            found.update(zip(missing, self._encode_text(Vocabulary("prompt", classes), templates)))
        with self._lock:
            for text in dict.fromkeys(texts):
                self._prompt_cache[(text, templates)] = found[text]
                self._prompt_cache.move_to_end((text, templates))
            while len(self._prompt_cache) > PROMPT_TEXT_CACHE:
                self._prompt_cache.popitem(last=False)
        return torch.stack([found[t] for t in texts]).to(self.device, torch.float32)

    def prepare_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> TextBank:
        """Encode (or fetch) `vocabulary` as a new bank with a new version; nothing else changes."""
        return replace(self.encode_vocabulary(vocabulary, templates), version=next_version())

    def use(self, bank: TextBank) -> None:
        """Make `bank` current: a single reference swap; frames in flight keep the old one."""
        self._bank = bank

    def fixed_vocabulary(self, extra: tuple[str, ...] = ()) -> None:
        """None: CLIP names masks with whatever vocabulary the user chooses."""
        return None

    def describe(self) -> dict:
        """The CLIP settings in effect (threshold as changed at runtime)."""
        return {**asdict(self.config), "threshold": self.threshold,
                "threshold_kind": self.threshold_kind}

    @property
    def bank(self) -> TextBank:
        if self._bank is None:
            raise SfsError("no vocabulary set: call set_vocabulary() first")
        return self._bank

    # ------------------------------------------------------------------ image side
    def crop_boxes(self, boxes: np.ndarray) -> torch.Tensor:
        """Square crop windows (x0, y0, x1, y1) per scale around each box, scale-major order."""
        b = torch.as_tensor(boxes, dtype=torch.float32)
        centre = (b[:, :2] + b[:, 2:]) / 2
        side = (b[:, 2:] - b[:, :2]).max(dim=1).values.clamp(min=1.0)
        windows = []
        for scale in self.config.scales:
            half = (side * scale / 2)[:, None]
            windows.append(torch.cat([centre - half, centre + half], dim=1))
        return torch.cat(windows)

    def make_crops(self, image: np.ndarray, masks: Masks) -> torch.Tensor:
        """All crops of a frame as one normalised batch (S*N, 3, h, w), scale-major.

        roi_align samples image and masks on the same grid, so the whole batch is built in a
        few tensor ops instead of one resize per mask; adaptive sampling makes each crop pixel
        the average of its source pixels (an area resize), not a 2 x 2 point sample.
        """
        n = len(masks)
        img = self._to_tensor(image)
        windows = self.crop_boxes(masks.boxes).to(self.device)
        index = torch.arange(n, device=self.device).repeat(len(self.config.scales))[:, None].float()
        rois = torch.cat([torch.zeros_like(index), windows], dim=1)
        sample = functools.partial(roi_align, output_size=self.crop_size, spatial_scale=1.0,
                                   sampling_ratio=self.crop_sampling_ratio, aligned=True)
        pixels = sample(img, rois)
        inside = sample(torch.ones_like(img[:, :1]), rois)  # within image
        mask_t, mask_windows = self._mask_tensor(masks, windows)
        in_mask = sample(mask_t, torch.cat([index, mask_windows], dim=1))
        keep = 1.0 - self.config.background_blend
        # pixel weight: 1 inside the mask, `keep` for context, 0 outside the image
        weight = in_mask + (1.0 - in_mask) * keep * inside
        raw = pixels / inside.clamp(min=1e-6)
        return self._normalise(weight * raw + (1.0 - weight) * GREY)

    def _mask_tensor(self, masks: Masks, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, h, w) float masks for roi_align and the crop windows in their coordinates:
        low-res masks stay low-res (windows mapped onto their grid), so crop mode never builds
        the full-resolution stack; a tensor-held stack is used where it is (never via numpy)."""
        stack = masks.stack_tensor(self.device)[:, None].float()
        grid = masks.grid
        if grid is None:
            return stack, windows
        sy, sx = grid.scale
        oy, ox = grid.offset
        scale = windows.new_tensor([sx, sy, sx, sy])
        offset = windows.new_tensor([ox, oy, ox, oy])
        return stack, windows * scale + offset

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """uint8 RGB (H, W, 3) -> float (1, 3, H, W) in [0, 1] on the labeler's device."""
        # a copy only for views torch cannot wrap (negative strides, read-only bag buffers)
        pixels = np.require(image, requirements=("C_CONTIGUOUS", "WRITEABLE"))
        return torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)[None].float() / 255.0

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return ((pixels - self.mean) / self.std).to(self.dtype)

    def _crop_probs(self, image: np.ndarray, masks: Masks, text: torch.Tensor,
                    cancelled: Callable[[], bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) class probabilities from mask crops, averaged over the context scales, and
        (N, D) mask embeddings (the scales' features averaged, re-normalised) that prompts
        score free texts against (Labels.embeddings) without another image pass."""
        crops = self.make_crops(image, masks)
        features = []
        batch = self.config.batch_size or (64 if self.device.type == "cuda" else 8)
        for start in range(0, crops.shape[0], batch):
            if cancelled():
                raise LabelingCancelled("labeling cancelled")
            chunk = self.encode_image(crops[start : start + batch])
            features.append(F.normalize(chunk.float(), dim=-1))
        per_scale = torch.cat(features).view(len(self.config.scales), len(masks), -1)
        probs = (self.logit_scale * per_scale @ text.T).softmax(dim=-1).mean(dim=0)
        return probs, F.normalize(per_scale.mean(dim=0), dim=-1)

    def _resized(self, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """The whole frame resized (antialiased) to `size` and normalised for CLIP."""
        img = F.interpolate(self._to_tensor(image), size=size, mode="bilinear", antialias=True, align_corners=False)
        return self._normalise(img)

    def _dense_size(self, height: int, width: int) -> tuple[int, int]:
        """Short side ~dense_size, both sides multiples of the patch size."""
        patch = self.dense.patch
        scale = self.config.dense_size / min(height, width)
        return (max(patch, round(height * scale / patch) * patch),
                max(patch, round(width * scale / patch) * patch))

    def _dense_probs(self, image: np.ndarray, masks: Masks, text: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) probabilities from one dense pass, patch features averaged inside each mask,
        and those (N, D) mask embeddings (Labels.embeddings)."""
        feats = self.dense(self._resized(image, self._dense_size(*image.shape[:2])))  # (gh, gw, D)
        gh, gw, dim = feats.shape
        pooled = []
        grid = masks.grid
        stack = masks.stack_tensor(self.device)  # low-res when `grid`; never via numpy
        if grid is not None:  # area pooling of the upsampled masks, done on the low-res grid
            rows = torch.from_numpy(grid.pooling(gh, 0)).to(self.device, torch.float32)
            cols = torch.from_numpy(grid.pooling(gw, 1)).to(self.device, torch.float32).T
        for start in range(0, len(masks), 64):  # bounded memory for many full-size masks
            m = stack[start : start + 64].float()
            if grid is not None:
                weights = (rows @ m @ cols).flatten(1)  # (n, gh, gw) patch coverage
            else:
                weights = F.interpolate(m[:, None], size=(gh, gw), mode="area").flatten(1)  # patch coverage
            pooled.append(weights @ feats.reshape(-1, dim) / weights.sum(1, keepdim=True).clamp(min=1e-6))
        embeddings = F.normalize(torch.cat(pooled), dim=-1)
        return (self.logit_scale * embeddings @ text.T).softmax(dim=-1), embeddings

    @torch.inference_mode()
    def _candidate_classes(self, image: np.ndarray, bank: TextBank) -> torch.Tensor | None:
        """Class ids masks are scored against when pruning: the frame's top-k by a whole-image
        CLIP score plus classes that won in recent frames (ERR-Seg's channel reduction)."""
        k, total = self.config.prune_topk, len(bank.vocabulary)
        if k == 0 or k >= total:
            return None
        whole = self.encode_image(self._resized(image, self.crop_size))
        scores = F.normalize(whole.float(), dim=-1) @ bank.embeddings.float().T
        keep = set(scores[0].topk(k).indices.tolist())
        for seen in self._recent:
            keep |= seen
        return torch.tensor(sorted(keep), device=self.device)

    @torch.inference_mode()
    def label(
        self,
        image: np.ndarray,
        masks: Masks,
        bank: TextBank | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Labels:
        """Class, score and top-k proposals for every mask, in the configured labeling mode."""
        image = check_rgb_image(image)
        bank = bank or self.bank
        n = len(masks)
        if masks.image_shape != image.shape[:2]:
            raise SfsError(f"masks {masks.image_shape} do not match image {image.shape[:2]}")
        if n == 0:
            return Labels.empty(min(self.config.topk, len(bank.vocabulary)))
        mode = self.config.mode
        with on_stream(self.stream):
            candidates = self._candidate_classes(image, bank)
            text = bank.embeddings.float() if candidates is None else bank.embeddings[candidates].float()
            if mode == "crop":
                probs, embeddings = self._crop_probs(image, masks, text, cancelled)
            else:
                probs, embeddings = self._dense_probs(image, masks, text)
                if mode == "hybrid" and text.shape[0] > 1:
                    top2 = probs.topk(2, dim=-1).values
                    unsure = torch.nonzero(top2[:, 0] - top2[:, 1] < self.config.hybrid_margin).flatten()
                    if unsure.numel():
                        idx = unsure.cpu().numpy()
                        subset = masks.subset(idx)
                        probs[unsure], embeddings[unsure] = self._crop_probs(image, subset, text,
                                                                             cancelled)
            top_scores, top_ids = probs.topk(min(self.config.topk, text.shape[0]), dim=-1)
            if candidates is not None:
                top_ids = candidates[top_ids]
            top_scores, top_ids = top_scores.cpu().numpy(), top_ids.cpu().numpy()
        best = top_scores[:, 0]
        class_ids = np.where(best >= self.threshold, top_ids[:, 0], UNLABELED_CLASS)
        if self.config.prune_topk:
            self._recent.append(set(class_ids[class_ids >= 0].tolist()))
        return Labels(
            class_ids=class_ids.astype(np.int32),
            scores=best.astype(np.float32),
            topk_ids=top_ids.astype(np.int32),
            topk_scores=top_scores.astype(np.float32),
            embeddings=embeddings.cpu().numpy(),
        )
