#!/usr/bin/env python3
"""Train the known-answer world's semantic branch: a tiny SegFormer on the shapes label images.

Issue #13. A TEST WORLD model, not a general segmenter: it only knows the 13 classes of
`sfs_ros.synth.shapes` (12 coloured shapes + background), so the semantic-vote and
semantic-hybrid modes can be scored for meaning. Random init (transformers SegformerConfig),
trained on CPU in minutes; the defaults below produced the committed
models/shapes/segformer-shapes-160-160 folder and its manifest.

Data: seed 1 frames for training, seed 2 frames for validation (never seed 7, the held-out
test seed). Inputs are made exactly as `SemanticVoteLabeler.preprocess` makes them at run
time (640x480 -> 160x160 square, bilinear antialiased, ImageNet statistics), so training and
inference see the same pixels; the folder name's "-160-160" suffix is what tells the labeler
that size. 160 rather than 256: at equal CPU time whole 160 frames taught shape far faster
than 256 frames or 128 crops of them (colour is learnt at once, shape is the slow part).
Loss: cross-entropy of the logits upsampled to the 160x160 labels, background weighted down.
After training, the saved folder is reloaded through the real labeler and scored on
`--test-frames` frames of `--test-seed` at full resolution; those numbers go to the manifest
and are never used to pick anything.

    .venv/bin/python tools/train_shapes_segformer.py
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sfs_ros.core.semantic import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    SemanticConfig,
    SemanticVoteLabeler,
)
from sfs_ros.eval.images import GT_IGNORE  # noqa: E402
from sfs_ros.eval.metrics import ConfusionMatrix  # noqa: E402
from sfs_ros.synth.shapes import BACKGROUND, CLASS_NAMES, make_scene  # noqa: E402

#: Seeds the issue reserves: 1 and 2 for training/validation, 7 held out for the test numbers.
TRAIN_SEED, VAL_SEED, TEST_SEED = 1, 2, 7
#: transformers' SegFormer loss ignores this label value (SegformerConfig default).
LOSS_IGNORE = 255


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The defaults are the values that produced the committed model."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="models/shapes/segformer-shapes-160-160",
                   help="save_pretrained folder; its '-S-S' suffix must match --size")
    p.add_argument("--manifest", default="models/shapes/segformer-shapes.json")
    p.add_argument("--size", type=int, default=160, help="square input side the labeler uses")
    p.add_argument("--train-frames", type=int, default=1500)
    p.add_argument("--val-frames", type=int, default=50)
    p.add_argument("--test-frames", type=int, default=100)
    p.add_argument("--test-seed", type=int, default=TEST_SEED)
    p.add_argument("--steps", type=int, default=2600)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--hidden-sizes", default="16,32,96,160")
    p.add_argument("--depths", default="1,2,2,2")
    p.add_argument("--heads", default="1,2,4,8")
    p.add_argument("--decoder", type=int, default=64, help="decoder_hidden_size")
    p.add_argument("--init", choices=("segformer", "transformers"), default="segformer",
                   help="conv init: SegFormer's He-normal (fan-out) or transformers' N(0, 0.02)")
    p.add_argument("--crop", type=int, default=0,
                   help="train on random crops of this side from the resized frames (0: whole)")
    p.add_argument("--background-weight", type=float, default=0.25,
                   help="cross-entropy weight of the background class (objects weigh 1)")
    p.add_argument("--seed", type=int, default=0, help="torch/numpy/random seed of training")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--val-every", type=int, default=500)
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    """Fixed seeds and one thread: the run is repeatable and shares the 2-core machine."""
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


# ---------------------------------------------------------------------------------- data
def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1]: the labeler's own square resize (bilinear, antialias)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


def resize_labels(labels: np.ndarray, size: int) -> torch.Tensor:
    """(size, size) int64 class ids sampled at the resized pixels' centres."""
    y = torch.from_numpy(labels)[None, None].float()
    return F.interpolate(y, size=(size, size), mode="nearest-exact")[0, 0].long()


@dataclass
class Split:
    """Frames of one seed at the model's input size: uint8 images, int64 labels."""

    images: torch.Tensor  # (N, 3, S, S) uint8 (the resized image, rounded)
    labels: torch.Tensor  # (N, S, S) uint8

    @classmethod
    def make(cls, seed: int, frames: int, size: int) -> "Split":
        images = torch.empty((frames, 3, size, size), dtype=torch.uint8)
        labels = torch.empty((frames, size, size), dtype=torch.uint8)
        for i in range(frames):
            scene = make_scene(seed, i)
            images[i] = (resize_image(scene.image, size) * 255.0).round().to(torch.uint8)
            labels[i] = resize_labels(scene.labels, size).to(torch.uint8)
        return cls(images, labels)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> ImageNet-normalised float, as the labeler feeds the model."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def augmented_batch(split: Split, rng: np.random.Generator, batch: int,
                    crop: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch, optionally one random crop window, with random horizontal/vertical flips
    (shapes keep their class under a flip) and a mild brightness/contrast jitter; returns
    (pixel_values, labels). Crops make a step cheaper: the model is fully convolutional in
    effect (no position embeddings), and objects (<= 64 px at 256) fit in a 128 crop."""
    index = torch.from_numpy(rng.choice(len(split.images), size=batch, replace=False))
    images, labels = split.images[index], split.labels[index].long()
    if crop:
        top, left = (int(v) for v in rng.integers(0, images.shape[-1] - crop + 1, size=2))
        images = images[..., top:top + crop, left:left + crop].contiguous()
        labels = labels[..., top:top + crop, left:left + crop].contiguous()
    for dim, flips in ((3, rng.random(batch) < 0.5), (2, rng.random(batch) < 0.5)):
        rows = torch.from_numpy(np.flatnonzero(flips))
        images[rows] = images[rows].flip(dim)
        labels[rows] = labels[rows].flip(dim - 1)
    x = normalise(images)
    gain = torch.from_numpy(rng.uniform(0.9, 1.1, (batch, 1, 1, 1))).float()
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, (batch, 1, 1, 1))).float()
    return x * gain + shift, labels


# ---------------------------------------------------------------------------------- model
def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """A randomly initialised SegFormer for the 13 shapes classes (ids = CLASS_NAMES order)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(
        num_labels=len(CLASS_NAMES),
        id2label=dict(enumerate(CLASS_NAMES)),
        label2id={name: i for i, name in enumerate(CLASS_NAMES)},
        hidden_sizes=ints(args.hidden_sizes),
        depths=ints(args.depths),
        num_attention_heads=ints(args.heads),
        decoder_hidden_size=args.decoder,
        semantic_loss_ignore_index=LOSS_IGNORE,
    )
    model = SegformerForSemanticSegmentation(config)
    if args.init == "segformer":
        model.apply(segformer_init)
    return model


def segformer_init(module: torch.nn.Module) -> None:
    """The SegFormer authors' from-scratch init (He-normal convolutions by fan-out). transformers
    draws every conv from N(0, 0.02) because it always loads pretrained weights; with that, the
    3x3 depthwise convs of Mix-FFN (SegFormer's only source of position) start near zero and
    the model learns colour at once but shape hardly at all."""
    if isinstance(module, torch.nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        torch.nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / (fan_out // module.groups)))
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)


def pixel_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits upsampled (bilinear, as at inference) to the label size; the
    background weight < 1 keeps the 85% background pixels from drowning the shape signal."""
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, labels, weight=weights, ignore_index=LOSS_IGNORE)


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    done = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * done))


# ---------------------------------------------------------------------------------- scores
def summary(matrix: ConfusionMatrix, objects: ConfusionMatrix) -> dict[str, float]:
    """mIoU over all 13 classes, over the 12 object classes (background's row and column kept:
    an object pixel called background and a background pixel called an object both count),
    and over the 12 object classes with background ground-truth pixels ignored (the issue's
    "objects" number for modes that cannot label background)."""
    all_iou = matrix.scores().iou
    ignored_iou = objects.scores().iou
    return {
        "miou_13": float(np.nanmean(all_iou)),
        "miou_objects": float(np.nanmean(all_iou[:BACKGROUND])),
        "miou_objects_bg_ignored": float(np.nanmean(ignored_iou[:BACKGROUND])),
        "pixel_accuracy": matrix.scores().pixel_accuracy,
    }


def score_pairs(pairs) -> dict[str, float]:
    """summary() of (ground truth, prediction) label images."""
    k = len(CLASS_NAMES)
    matrix, objects = ConfusionMatrix(k), ConfusionMatrix(k)
    for gt, pred in pairs:
        gt = gt.astype(np.int64)
        matrix.update(gt, pred)
        objects.update(np.where(gt == BACKGROUND, GT_IGNORE, gt), pred)
    return summary(matrix, objects)


@torch.inference_mode()
def validate(model: torch.nn.Module, split: Split) -> dict[str, float]:
    """Scores at the input size (cheap progress check on the validation seed)."""
    model.eval()
    pairs = []
    for start in range(0, len(split.images), 16):
        images = split.images[start:start + 16]
        logits = model(pixel_values=normalise(images)).logits
        up = F.interpolate(logits, size=images.shape[2:], mode="bilinear", align_corners=False)
        for gt, pred in zip(split.labels[start:start + 16], up.argmax(1)):
            pairs.append((gt.numpy(), pred.numpy()))
    model.train()
    return score_pairs(pairs)


def test_through_labeler(folder: Path, seed: int, frames: int) -> dict[str, float]:
    """Full-resolution scores of the SAVED folder loaded the way the node/CLI load it."""
    labeler = SemanticVoteLabeler(SemanticConfig(checkpoint=str(folder), device="cpu"))
    if labeler.vocabulary.name != "shapes":
        print(f"warning: vocabulary is {labeler.vocabulary.name!r}, not the 'shapes' preset")
    scenes = (make_scene(seed, i) for i in range(frames))
    scores = score_pairs((s.labels, labeler.predict(s.image)) for s in scenes)
    scores["vocabulary"] = labeler.vocabulary.name
    return scores


# ---------------------------------------------------------------------------------- main
def train(model: torch.nn.Module, train_split: Split, val_split: Split,
          args: argparse.Namespace, started: float) -> dict[str, float]:
    """AdamW on the built-in loss; a progress line every --log-every steps."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    weights = torch.ones(len(CLASS_NAMES))
    weights[BACKGROUND] = args.background_weight
    model.train()
    running = 0.0
    val: dict[str, float] = {}
    for step in range(args.steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, args)
        pixels, labels = augmented_batch(train_split, rng, args.batch, args.crop)
        loss = pixel_loss(model(pixel_values=pixels).logits, labels, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running += loss.item()
        if (step + 1) % args.log_every == 0:
            print(f"step {step + 1}/{args.steps} loss {running / args.log_every:.4f} "
                  f"lr {learning_rate(step, args):.2e} {time.time() - started:.0f}s", flush=True)
            running = 0.0
        if (step + 1) % args.val_every == 0 or step + 1 == args.steps:
            val = validate(model, val_split)
            print(f"  val seed {VAL_SEED}: " + " ".join(f"{k} {v:.4f}" for k, v in val.items()),
                  flush=True)
    return val


def versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if not out.name.endswith(f"-{args.size}-{args.size}"):
        raise SystemExit(f"--out {out} must end in -{args.size}-{args.size}: the labeler reads "
                         "its input size from that suffix")
    seed_everything(args.seed)
    started = time.time()
    train_split = Split.make(TRAIN_SEED, args.train_frames, args.size)
    val_split = Split.make(VAL_SEED, args.val_frames, args.size)
    print(f"data: {args.train_frames} train (seed {TRAIN_SEED}) + {args.val_frames} val "
          f"(seed {VAL_SEED}) frames in {time.time() - started:.0f}s", flush=True)
    model = build_model(args)
    params = sum(p.numel() for p in model.parameters())
    print(f"SegFormer: {params} parameters", flush=True)
    val = train(model, train_split, val_split, args, started)
    train_seconds = time.time() - started
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"saved {out} ({size / 1e6:.2f} MB); training wall time {train_seconds:.0f}s", flush=True)
    if args.test_frames <= 0:
        return 0
    test = test_through_labeler(out, args.test_seed, args.test_frames)
    print(f"test seed {args.test_seed} ({args.test_frames} frames, 640x480, through "
          "SemanticVoteLabeler): " + " ".join(f"{k} {v}" for k, v in test.items()), flush=True)
    write_manifest(args, params, size, train_seconds, val, test)
    print(f"total wall time {time.time() - started:.0f}s")
    return 0


def write_manifest(args: argparse.Namespace, params: int, size: int, seconds: float,
                   val: dict[str, float], test: dict[str, float]) -> None:
    """What the committed folder is and how it was made (issue #13 asks for each item)."""
    manifest = {
        "what": "TEST WORLD model (issue #13): a tiny SegFormer trained only on the synthetic "
                "shapes world (sfs_ros.synth.shapes); it knows 13 classes and nothing else. "
                "Used by the semantic-vote / semantic-hybrid known-answer tests, not a "
                "replacement for a real SegFormer.",
        "files": {"folder": args.out, "bytes": size, "dtype": "float16"},
        "load": "--labeling semantic-vote --semantic-checkpoint " + args.out,
        "command": " ".join([".venv/bin/python tools/train_shapes_segformer.py", *sys.argv[1:]]),
        "arguments": vars(args),
        "init": "SegFormer He-normal conv init (segformer_init), not transformers' N(0, 0.02)",
        "parameters": params,
        "classes": list(CLASS_NAMES),
        "data": {"train": {"seed": TRAIN_SEED, "frames": args.train_frames},
                 "val": {"seed": VAL_SEED, "frames": args.val_frames},
                 "frame_size": "640x480 resized to "
                               f"{args.size}x{args.size} (labeler's square resize)",
                 "augmentation": "random h/v flips, brightness/contrast jitter +-10%"},
        "steps": args.steps,
        "samples_seen": args.steps * args.batch,
        "epochs": round(args.steps * args.batch / args.train_frames, 2),
        "training_wall_time_s": round(seconds),
        "val_scores": val,
        "test_scores": {"seed": args.test_seed, "frames": args.test_frames,
                        "resolution": "640x480", **test},
        "metric_note": "pixel IoU from one confusion matrix over all frames "
                       "(sfs_ros.eval.metrics); miou_objects keeps background's row and column "
                       "(strict), miou_objects_bg_ignored drops background ground-truth pixels",
        "versions": versions(),
    }
    Path(args.manifest).write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
