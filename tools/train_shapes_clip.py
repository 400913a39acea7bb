"""Train the CLIP head of the known-answer shapes world (issue #13): models/shapes/clip-shapes.pt.

A TEST WORLD model, not a replacement for a real CLIP: the small open_clip architecture
"sfs-shapes-clip" (config/clip_models/sfs-shapes-clip.json) trained from scratch here, so the
project's tests can check that masks get the right names.

Training is CLIP's contrastive loss with the 13 class captions as the text side: crops of the
generator's ground-truth masks, made by the real `Labeler.make_crops` (context scales, grey
blend, normalisation exactly as at inference), scored as logit_scale * image_emb @ text_emb.T
against "<template> <class name>" for the project's prompt templates (one template per step),
cross-entropy on the true class; both towers train. Masks covering only background (random
blobs, and the whole background as FastSAM often returns it) teach "background". An optional
dense term applies the same loss to the labeler's DenseClip (ClearCLIP) patch features
mask-pooled per object, so labeling mode dense works too. Frames: seed 1 (train), seed 2
(validation); the held-out test is seed 7, never trained on.

    .venv/bin/python tools/train_shapes_clip.py            # the committed file (defaults)
    .venv/bin/python tools/train_shapes_clip.py --eval-only  # metrics of the committed file
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sfs_ros.core.clip_models import register_project_models  # noqa: E402
from sfs_ros.core.dense_clip import DenseClip  # noqa: E402
from sfs_ros.core.frame import Masks  # noqa: E402
from sfs_ros.core.labeler import Labeler, LabelerConfig  # noqa: E402
from sfs_ros.core.segmenter import boxes_from_masks  # noqa: E402
from sfs_ros.core.vocabulary import Vocabulary, load_vocabulary  # noqa: E402
from sfs_ros.synth.shapes import BACKGROUND, CLASS_NAMES, Scene, make_scene  # noqa: E402
from sfs_ros.synth.writers import encode_image  # noqa: E402

MODEL = "sfs-shapes-clip"
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 7
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp of the learned temperature


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=700, help="optimizer steps (fresh frames each step)")
    p.add_argument("--frames-per-step", type=int, default=4, help="seed-1 frames per step")
    p.add_argument("--all-scales", action=argparse.BooleanOptionalAction, default=True,
                   help="every context scale of every mask per step (else one random scale)")
    p.add_argument("--background-masks", type=int, default=3, help="background-only masks per frame")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--text-lr-mult", type=float, default=4.0,
                   help="text tower lr = lr x this: its captions start nearly identical (cosine "
                        "0.9-0.99 at init) and a slow text side held crops at colour-only accuracy")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=30, help="linear warm-up steps")
    p.add_argument("--dense-weight", type=float, default=0.0, help="0: no dense-mode term")
    p.add_argument("--dense-size", type=int, default=224, help="short side of the dense pass")
    p.add_argument("--jpeg-prob", type=float, default=0.5, help="share of frames JPEG re-encoded")
    p.add_argument("--val-frames", type=int, default=20, help="seed-2 frames per validation")
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--test-frames", type=int, default=100, help="seed-7 held-out frames")
    p.add_argument("--seed", type=int, default=0, help="torch / augmentation seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (2 shared cores here)")
    p.add_argument("--out", default="models/shapes/clip-shapes.pt")
    p.add_argument("--eval-only", action="store_true", help="only measure the file at --out")
    return p.parse_args(argv)


# ------------------------------------------------------------------------ masks of a frame
def object_masks(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool visible masks of the scene's objects and their class ids."""
    ids = np.array([o.instance for o in scene.objects])
    masks = scene.instances[None] == ids[:, None, None]
    return masks, np.array([o.class_id for o in scene.objects], np.int64)


def background_masks(scene: Scene, rng: np.random.Generator, count: int) -> np.ndarray:
    """(M, H, W) bool masks of background pixels only: the whole background (FastSAM's usual
    'everything else' mask) and `count` random rectangles / ellipses cut to the background."""
    free = scene.labels == BACKGROUND
    height, width = free.shape
    out = [free]
    for _ in range(count):
        canvas = np.zeros((height, width), np.uint8)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        a, b = np.exp(rng.uniform(np.log(10), np.log(200), 2))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (int(cx - a), int(cy - b)), (int(cx + a), int(cy + b)), 1, -1)
        else:
            cv2.ellipse(canvas, (int(cx), int(cy)), (int(a), int(b)), rng.uniform(0, 180), 0, 360, 1, -1)
        blob = canvas.astype(bool) & free
        if blob.sum() >= 150:
            out.append(blob)
    return np.stack(out)


def jitter_masks(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Object masks grown or shrunk by 1-2 px at random (a segmenter's edges are not exact)."""
    out = masks.copy()
    for i in np.flatnonzero(rng.random(len(masks)) < 0.5):
        kernel = np.ones((2 * rng.integers(1, 3) + 1,) * 2, np.uint8)
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        moved = op(masks[i].astype(np.uint8), kernel).astype(bool)
        if moved.sum() >= 30:
            out[i] = moved
    return out


def as_masks(masks: np.ndarray) -> Masks:
    """The core's Masks of (N, H, W) bool ground-truth masks (boxes as the segmenter makes them)."""
    n = len(masks)
    return Masks(masks, boxes_from_masks(masks), np.ones(n, np.float32),
                 masks.reshape(n, -1).sum(1).astype(np.int64))


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The RGB image after JPEG compression (bags store frames as JPEG)."""
    data = np.frombuffer(encode_image(image, jpeg=True, quality=quality), np.uint8)
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


@dataclass
class Sample:
    """One training frame: the (maybe JPEG'd) image, its masks and their class ids."""

    image: np.ndarray
    masks: Masks
    classes: torch.Tensor


def training_sample(seed: int, index: int, rng: np.random.Generator, args: argparse.Namespace) -> Sample:
    scene = make_scene(seed, index)
    objects, classes = object_masks(scene)
    background = background_masks(scene, rng, args.background_masks)
    masks = np.concatenate([jitter_masks(objects, rng), background])
    classes = np.concatenate([classes, np.full(len(background), BACKGROUND)])
    image = scene.image
    if rng.random() < args.jpeg_prob:
        image = jpeg_roundtrip(image, int(rng.integers(70, 96)))
    return Sample(image, as_masks(masks), torch.from_numpy(classes))


# ------------------------------------------------------------------------ model pieces
class TextSide:
    """Tokenised captions, template x class, and their embeddings through the text tower."""

    def __init__(self, labeler: Labeler, vocabulary: Vocabulary) -> None:
        self.labeler = labeler
        self.tokens = [labeler.tokenizer([t.format(c.name) for c in vocabulary.classes])
                       for t in labeler.config.templates]

    def embed(self, template: int) -> torch.Tensor:
        """(K, D) normalised class embeddings for one template (with gradients)."""
        return F.normalize(self.labeler.model.encode_text(self.tokens[template]), dim=-1)

    def ensemble(self) -> torch.Tensor:
        """(K, D) the labeler's inference bank: normalised sum over templates."""
        return F.normalize(sum(self.embed(t) for t in range(len(self.tokens))), dim=-1)


def dense_features(dense: DenseClip, pixels: torch.Tensor) -> torch.Tensor:
    """DenseClip's (gh, gw, D) normalised patch features, with gradients (its __call__ runs in
    inference mode). Its positional-embedding cache is cleared: entries would hold a graph."""
    dense._pos_cache.clear()
    x, gh, gw = dense.trunk(pixels)
    x = DenseClip._clear_attention(dense.visual.transformer.resblocks[-1], x)
    tokens = dense.visual.ln_post(x[:, 1:]) @ dense.visual.proj
    return F.normalize(tokens, dim=-1).reshape(gh, gw, -1)


def dense_embeddings(labeler: Labeler, sample: Sample) -> torch.Tensor:
    """(N, D) mask-pooled dense features of the sample's masks (the labeler's pooling)."""
    image = sample.image
    pixels = labeler._resized(image, labeler._dense_size(*image.shape[:2]))
    feats = dense_features(labeler.dense, pixels)
    gh, gw, dim = feats.shape
    m = torch.from_numpy(sample.masks.masks)[:, None].float()
    weights = F.interpolate(m, size=(gh, gw), mode="area").flatten(1)
    pooled = weights @ feats.reshape(-1, dim) / weights.sum(1, keepdim=True).clamp(min=1e-6)
    return F.normalize(pooled, dim=-1)


def crop_embeddings(labeler: Labeler, samples: list[Sample],
                    rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) normalised crop embeddings and classes: every context scale of every mask
    (scale-major, as make_crops orders them), or with `rng` one random scale per mask (half
    the encoder cost per step; each scale is its own example either way)."""
    scales = len(labeler.config.scales)
    crops, classes = [], []
    with torch.no_grad():
        for s in samples:
            batch, n = labeler.make_crops(s.image, s.masks), len(s.classes)
            pick = torch.arange(scales * n) if rng is None else \
                torch.from_numpy(rng.integers(scales, size=n) * n + np.arange(n))
            crops.append(batch[pick])
            classes.append(s.classes.repeat(scales)[pick])
    return F.normalize(labeler.model.encode_image(torch.cat(crops)), dim=-1), torch.cat(classes)


def logits(labeler: Labeler, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    return labeler.model.logit_scale.exp() * image_emb @ text_emb.T


# ------------------------------------------------------------------------ training
def build_labeler(args: argparse.Namespace, pretrained: str | None = None, mode: str = "dense",
                  dense_size: int | None = None) -> Labeler:
    """The real Labeler: random weights to train, or the saved file through the normal loader."""
    register_project_models()
    source = {"pretrained": pretrained} if pretrained else {"random_weights": True}
    config = LabelerConfig(clip_model=MODEL, device="cpu", mode=mode, disk_cache=False,
                           dense_size=dense_size or args.dense_size, **source)
    return Labeler(config)


def shapes_vocabulary() -> Vocabulary:
    vocabulary = load_vocabulary("shapes")
    if vocabulary.names != CLASS_NAMES:
        raise SystemExit(f"the shapes preset {vocabulary.names} does not match the generator's {CLASS_NAMES}")
    return vocabulary


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW; matrices decay (embeddings, gains, biases and the temperature do not); the text
    tower (everything outside `visual` but the temperature) runs at lr x --text-lr-mult."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        text = not name.startswith("visual.") and name != "logit_scale"
        decay = p.ndim >= 2 and "embedding" not in name
        groups.setdefault((text, decay), []).append(p)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": args.weight_decay if decay else 0.0,
          "lr_mult": args.text_lr_mult if text else 1.0} for (text, decay), params in groups.items()],
        lr=args.lr, betas=(0.9, 0.98))


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(args.steps - args.warmup, 1)
    return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def train_step(labeler: Labeler, text: TextSide, samples: list[Sample], step: int,
               rng: np.random.Generator, args: argparse.Namespace) -> dict[str, float]:
    """One contrastive step over the crops (and, with --dense-weight, one frame's dense pass)."""
    template = step % len(text.tokens)
    text_emb = text.embed(template)
    image_emb, classes = crop_embeddings(labeler, samples, None if args.all_scales else rng)
    crop_logits = logits(labeler, image_emb, text_emb)
    loss = F.cross_entropy(crop_logits, classes)
    stats = {"crop_loss": loss.item(), "crop_acc": float((crop_logits.argmax(1) == classes).float().mean())}
    if args.dense_weight > 0:
        sample = samples[step % len(samples)]
        dense_logits = logits(labeler, dense_embeddings(labeler, sample), text_emb)
        dense_loss = F.cross_entropy(dense_logits, sample.classes)
        loss = loss + args.dense_weight * dense_loss
        stats["dense_loss"] = dense_loss.item()
    return {"loss": loss.item(), **stats, "_loss": loss}


@torch.no_grad()
def validate(labeler: Labeler, text: TextSide, args: argparse.Namespace) -> dict[str, float]:
    """Crop and dense accuracy on seed-2 frames, scored like the labeler (template ensemble,
    probabilities averaged over the context scales)."""
    labeler.model.eval()
    rng = np.random.default_rng(1234)
    bank = text.ensemble()
    right = dense_right = total = 0
    scales = len(labeler.config.scales)
    for index in range(args.val_frames):
        sample = training_sample(VAL_SEED, index, rng, args)
        emb, _ = crop_embeddings(labeler, [sample])
        probs = logits(labeler, emb, bank).softmax(-1).view(scales, len(sample.classes), -1).mean(0)
        right += int((probs.argmax(1) == sample.classes).sum())
        if labeler.dense is not None:
            dense = logits(labeler, dense_embeddings(labeler, sample), bank)
            dense_right += int((dense.argmax(1) == sample.classes).sum())
        total += len(sample.classes)
    labeler.model.train()
    dense = {"val_dense_acc": dense_right / total} if labeler.dense is not None else {}
    return {"val_crop_acc": right / total, **dense}


def train(args: argparse.Namespace) -> float:
    """Train, save the fp16 state_dict to --out; returns the wall time in seconds."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    labeler = build_labeler(args, mode="dense" if args.dense_weight > 0 else "crop")
    model = labeler.model.train().requires_grad_(True)
    text = TextSide(labeler, shapes_vocabulary())
    optimizer = make_optimizer(model, args)
    start = time.monotonic()
    frame = 0
    for step in range(args.steps):
        samples = [training_sample(TRAIN_SEED, frame + i, rng, args) for i in range(args.frames_per_step)]
        frame += args.frames_per_step
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args) * group["lr_mult"]
        stats = train_step(labeler, text, samples, step, rng, args)
        optimizer.zero_grad(set_to_none=True)
        stats.pop("_loss").backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if step % 10 == 0 or step == args.steps - 1:
            shown = " ".join(f"{k} {v:.3f}" for k, v in stats.items())
            print(f"step {step + 1}/{args.steps} {shown} scale {model.logit_scale.exp():.1f} "
                  f"{time.monotonic() - start:.0f}s", flush=True)
        if (step + 1) % args.val_every == 0 or step == args.steps - 1:
            print("validation (seed 2):", validate(labeler, text, args), flush=True)
    wall = time.monotonic() - start
    save(model, Path(args.out))
    print(f"training wall time {wall:.0f} s ({frame} frames of seed {TRAIN_SEED})")
    return wall


def save(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().half() for k, v in model.state_dict().items()}, path)
    print(f"saved {path} ({path.stat().st_size / 2**20:.1f} MiB)")


# ------------------------------------------------------------------------ held-out metric
def confusion_report(confusion: np.ndarray) -> dict[str, dict]:
    """Per true class: accuracy and the wrong names it was given (UNLABELED as 'unlabeled')."""
    report = {}
    for cls, row in enumerate(confusion):
        total = int(row.sum())
        wrong = {("unlabeled" if j == len(CLASS_NAMES) else CLASS_NAMES[j]): int(row[j])
                 for j in np.flatnonzero(row) if j != cls}
        report[CLASS_NAMES[cls]] = {"n": total, "acc": round(float(row[cls]) / max(total, 1), 4),
                                    "confused_with": wrong}
    return report


def evaluate(args: argparse.Namespace, mode: str, dense_size: int | None = None) -> dict:
    """Per-GT-object accuracy on seed-7 frames through the real loading path and Labeler.label;
    background-only masks (the whole background and random blobs) are scored separately."""
    labeler = build_labeler(args, pretrained=args.out, mode=mode, dense_size=dense_size)
    labeler.set_vocabulary(shapes_vocabulary())
    rng = np.random.default_rng(7777)
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES) + 1), np.int64)
    for index in range(args.test_frames):
        scene = make_scene(TEST_SEED, index)
        objects, classes = object_masks(scene)
        background = background_masks(scene, rng, args.background_masks)
        masks = np.concatenate([objects, background])
        truth = np.concatenate([classes, np.full(len(background), BACKGROUND)])
        got = labeler.label(scene.image, as_masks(masks)).class_ids
        np.add.at(confusion, (truth, np.where(got < 0, len(CLASS_NAMES), got)), 1)
    objects_only = confusion[:BACKGROUND]
    result = {
        "mode": mode, "quick_gelu": labeler.quick_gelu,
        "object_accuracy": round(float(np.trace(objects_only)) / objects_only.sum(), 4),
        "objects": int(objects_only.sum()),
        "background_accuracy": round(float(confusion[BACKGROUND, BACKGROUND]) / confusion[BACKGROUND].sum(), 4),
        "background_masks": int(confusion[BACKGROUND].sum()),
        "per_class": confusion_report(confusion),
    }
    if dense_size:
        result["dense_size"] = dense_size
    return result


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "open_clip_torch", "ultralytics", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_manifest(args: argparse.Namespace, wall: float | None, metrics: list[dict]) -> None:
    path = Path(args.out).with_suffix(".json")
    old = json.loads(path.read_text()) if path.is_file() else {}
    manifest = {
        "what": ("CLIP head of the known-answer shapes world (issue #13): a TEST WORLD model "
                 "trained here on synthetic frames so tests can check labels; not a replacement "
                 "for a real CLIP"),
        "file": args.out, "format": "open_clip state_dict, fp16 (torch.save)",
        "architecture": f"open_clip '{MODEL}' (config/clip_models/{MODEL}.json), registered by "
                        "sfs_ros.core.clip_models.register_project_models(); GELU (no QuickGELU)",
        "load_with": f"--clip-model {MODEL} --clip-pretrained {args.out}",
        "command": old.get("command") if args.eval_only else "python " + " ".join(sys.argv),
        "options": old.get("options") if args.eval_only else
                   {k: v for k, v in vars(args).items() if k != "eval_only"},
        "seeds": {"train": TRAIN_SEED, "validation": VAL_SEED, "test": TEST_SEED, "torch": args.seed},
        "train_frames": old.get("train_frames") if args.eval_only else args.steps * args.frames_per_step,
        "dense_term": (f"trained (weight {args.dense_weight}, dense_size {args.dense_size})"
                       if args.dense_weight > 0 else "not trained: dense-mode metrics are as they come"),
        "steps": args.steps, "wall_time_s": round(wall) if wall is not None else old.get("wall_time_s"),
        "file_size_bytes": Path(args.out).stat().st_size,
        "metrics_test_seed7": metrics, "versions": versions(),
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    wall = None if args.eval_only else train(args)
    # dense mode is measured either way (as it is, when no dense term was trained)
    metrics = [evaluate(args, "crop"), evaluate(args, "dense", args.dense_size), evaluate(args, "dense", 448)]
    for m in metrics:
        weak = {k: v for k, v in m["per_class"].items() if v["acc"] < 0.95}
        print(f"test seed {TEST_SEED} {m['mode']} {m.get('dense_size', '')}: objects "
              f"{m['object_accuracy']:.4f} (n={m['objects']}), background {m['background_accuracy']:.4f}; "
              f"classes under 0.95: {weak or 'none'}", flush=True)
    write_manifest(args, wall, metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
