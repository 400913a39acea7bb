"""Speed ratios of the core pipeline on one 640x480 frame (issue #6), real architectures.

    .venv/bin/python bench/speed.py [--sections 1 2 3 4] [--device cpu] [--repeat 3] [--skip-slow]

Random weights unless weights are on disk (same compute cost). Sections:
  1. two-thread Pipeline (drop=False, submit N frames, wait_idle) vs sequential process()
  2. Labeler.label cost at 1/10/50/200 masks, crop vs dense mode
  3. Labeler.label cost vs vocabulary size (19/150/847 classes), with and without pruning
  4. FastSAM segment time vs imgsz, FastSAM-s and FastSAM-x
  5. segment() + fuse() with full-res vs grid (mask_resolution low / network) post-processing,
     640x480 and 1920x1080, and the pixel agreement of the label images
Prints one markdown block (command, machine, versions, thread count, then a table per
section). Times are medians of `--repeat` calls after one warm-up call; ratios are taken
within the same run, so compare those across machines rather than absolute times.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np
import skimage.data
import torch

from sfs_ros.core.frame import Frame
from sfs_ros.core.labeler import Labeler, LabelerConfig
from sfs_ros.core.pipeline import Pipeline
from sfs_ros.core.segmenter import Segmenter, SegmenterConfig
from sfs_ros.core.vocabulary import load_vocabulary

SINGLE_TEMPLATE = ("a photo of a {}.",)


def timed(fn, repeat: int, warmup: bool = True) -> float:
    """Median seconds of `repeat` calls, after one warm-up call unless `warmup` is False."""
    if warmup:
        fn()
    samples = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def log(msg: str) -> None:
    print(f"[speed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.0f}"


def segmenter(args, **kw) -> Segmenter:
    """FastSAM with weights from disk, else the same architecture with random weights."""
    from sfs_ros.core.weights import WeightsMissingError

    try:
        return Segmenter(SegmenterConfig(device=args.device, conf=0.0, **kw))
    except WeightsMissingError:
        return Segmenter(SegmenterConfig(device=args.device, conf=0.0, random_weights=True, **kw))


def labeler(args, **kw) -> Labeler:
    from sfs_ros.core.weights import WeightsMissingError

    try:
        return Labeler(LabelerConfig(device=args.device, **kw))
    except WeightsMissingError:
        return Labeler(LabelerConfig(device=args.device, random_weights=True, **kw))


# ---------------------------------------------------------------------------------- section 1
def section_pipeline(args, image, out, notes, random_flags) -> None:
    """Two-thread Pipeline vs sequential process() on the same frames, per torch thread count."""
    seg = segmenter(args, max_det=args.pipe_masks)
    lab = labeler(args, mode=args.pipe_mode)
    lab.set_vocabulary(load_vocabulary(args.vocab))
    random_flags.append(seg.random_weights or lab.random_weights)
    frames = [Frame(image.copy(), seq=i) for i in range(args.frames)]
    rows = {}
    base_threads = torch.get_num_threads()
    for threads in args.pipe_threads:
        torch.set_num_threads(threads)
        results = []
        pipe = Pipeline(seg, lab, results.append, drop=False, queue_size=1)
        seq_stage = {"segment": [], "label": []}

        def sequential() -> None:
            for f in frames:
                r = pipe.process(f)
                seq_stage["segment"].append(r.timings["segment"])
                seq_stage["label"].append(r.timings["label"])

        def threaded() -> None:
            for f in frames:
                pipe.submit(f)
            assert pipe.wait_idle(600), "pipeline did not drain"

        log(f"section 1: threads={threads}, {args.frames} frames x {args.repeat} repeats")
        pipe.process(frames[0])  # warm-up of both stages in this thread
        seq_samples, par_samples = [], []
        with pipe:
            threaded()  # warm-up of both worker threads
            results.clear()
            # alternate the two so drift in machine load hits both alike
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                sequential()
                seq_samples.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                threaded()
                par_samples.append(time.perf_counter() - t0)
            stats = pipe.stats
        assert stats.errors == 0 and stats.dropped == 0, f"pipeline errors/drops: {stats}"
        seq_fps = args.frames / statistics.median(seq_samples)
        par_fps = args.frames / statistics.median(par_samples)
        rows[threads] = {
            "seq_fps": seq_fps,
            "par_fps": par_fps,
            "seg": statistics.median(seq_stage["segment"]),
            "lab": statistics.median(seq_stage["label"]),
            "par_seg": statistics.median(r.timings["segment"] for r in results),
            "par_lab": statistics.median(r.timings["label"] for r in results),
            "masks": len(results[-1].masks),
        }
    torch.set_num_threads(base_threads)

    out.append(f"### 1. Two-thread Pipeline vs sequential `process()` ({args.pipe_mode} labeling, "
               f"{args.vocab}, max_det {args.pipe_masks}, {args.frames} frames per run)\n")
    out.append("| torch threads | masks | segment ms (seq) | label ms (seq) | label/segment | "
               "segment ms (in pipeline) | label ms (in pipeline) | sequential frames/s | "
               "Pipeline frames/s | **Pipeline / sequential** |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, r in rows.items():
        out.append(f"| {t} | {r['masks']} | {ms(r['seg'])} | {ms(r['lab'])} | {r['lab'] / r['seg']:.2f} | "
                   f"{ms(r['par_seg'])} | {ms(r['par_lab'])} | {r['seq_fps']:.3f} | {r['par_fps']:.3f} | "
                   f"**{r['par_fps'] / r['seq_fps']:.2f}x** |")
    ts = list(rows)
    if len(ts) > 1:
        best_seq = max(rows.values(), key=lambda r: r["seq_fps"])
        out.append("\nPipeline at each thread count / best sequential frames/s: " + ", ".join(
            f"{t} thread(s) **{rows[t]['par_fps'] / best_seq['seq_fps']:.2f}x**" for t in ts))
    out.append("")


# ---------------------------------------------------------------------------------- section 2
def section_masks(args, image, out, notes, random_flags) -> None:
    """Labeler.label cost vs number of masks, crop vs dense."""
    vocab = load_vocabulary(args.vocab)
    masks_by_n = {}
    for n in args.mask_counts:
        seg = segmenter(args, max_det=n)
        random_flags.append(seg.random_weights)
        masks_by_n[n] = seg.segment(image)
        del seg
    rows = {}
    for mode in ("crop", "dense"):
        lab = labeler(args, mode=mode)
        random_flags.append(lab.random_weights)
        bank = lab.encode_vocabulary(vocab)
        warm = False
        for n in args.mask_counts:
            masks = masks_by_n[n]
            slow = mode == "crop" and n >= 200
            if slow and args.skip_slow:
                rows[(mode, n)] = None
                continue
            log(f"section 2: {mode} {len(masks)} masks")
            if slow:  # ~35 s per call on 2 CPU cores: one call, already warm from smaller counts
                seconds = timed(lambda: lab.label(image, masks, bank), 1, warmup=not warm)
            else:
                seconds = timed(lambda: lab.label(image, masks, bank), args.repeat)
            warm = True
            rows[(mode, n)] = (len(masks), seconds, 1 if slow else args.repeat)
    out.append(f"### 2. `Labeler.label` cost vs number of masks ({args.vocab}, {len(vocab)} classes)\n")
    out.append("| max_det | masks | crop ms | crop ms/mask | dense ms | dense ms/mask | **crop / dense** |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.mask_counts:
        c, d = rows.get(("crop", n)), rows.get(("dense", n))
        count = (c or d)[0]
        crop = f"{ms(c[1])}" + (" (n=1)" if c[2] == 1 else "") if c else "skipped (--skip-slow)"
        crop_pm = f"{1e3 * c[1] / max(count, 1):.1f}" if c else "-"
        ratio = f"**{c[1] / d[1]:.1f}x**" if c and d else "-"
        out.append(f"| {n} | {count} | {crop} | {crop_pm} | {ms(d[1])} | {1e3 * d[1] / max(count, 1):.1f} | {ratio} |")
    counts = [n for n in args.mask_counts if rows.get(("dense", n))]
    if len(counts) > 1:
        lo, hi = rows[("dense", counts[0])], rows[("dense", counts[-1])]
        line = f"\ndense {hi[0]} masks / {lo[0]} mask(s): **{hi[1] / lo[1]:.2f}x**"
        cc = [n for n in counts if rows.get(("crop", n))]
        if len(cc) > 1:
            lo, hi = rows[("crop", cc[0])], rows[("crop", cc[-1])]
            line += f"; crop {hi[0]} masks / {lo[0]} mask(s): **{hi[1] / lo[1]:.1f}x**"
        out.append(line)
    out.append("")


# ---------------------------------------------------------------------------------- section 3
def section_vocab(args, image, out, notes, random_flags) -> None:
    """Dense labeling cost vs vocabulary size, with and without class pruning."""
    seg = segmenter(args, max_det=args.vocab_masks)
    masks = seg.segment(image)
    random_flags.append(seg.random_weights)
    del seg
    plain = labeler(args, mode="dense")
    pruned = labeler(args, mode="dense", prune_topk=args.prune_topk)
    random_flags.append(plain.random_weights)
    banks = {}
    for name in args.vocabs:
        vocab = load_vocabulary(name)
        templates = SINGLE_TEMPLATE if name in args.single_template else None
        t0 = time.perf_counter()
        before = plain.text_encodings
        banks[name] = plain.encode_vocabulary(vocab, templates)
        seconds = time.perf_counter() - t0
        src = "encoded" if plain.text_encodings > before else "disk cache"
        tmpl = len(banks[name].templates)
        notes.append(f"text embeddings {name}: {len(vocab)} classes, {tmpl} template(s), "
                     f"{seconds:.1f} s ({src})")
        pruned.encode_vocabulary(vocab, templates)  # same key: memory/disk cache hit
    rows = {}
    for name, bank in banks.items():
        for tag, lab in (("none", plain), (f"top-{args.prune_topk}", pruned)):
            log(f"section 3: {name} pruning {tag}")
            lab._recent.clear()  # no memory carried between vocabularies
            rows[(name, tag)] = timed(lambda: lab.label(image, masks, bank), args.repeat)
    out.append(f"### 3. Dense `Labeler.label` cost vs vocabulary size ({len(masks)} masks)\n")
    tags = ["none", f"top-{args.prune_topk}"]
    out.append("| vocabulary | classes | label ms (no pruning) | label ms (prune top-%d) | pruned / unpruned |"
               % args.prune_topk)
    out.append("|---|---:|---:|---:|---:|")
    for name, bank in banks.items():
        a, b = rows[(name, tags[0])], rows[(name, tags[1])]
        out.append(f"| {name} | {len(bank.vocabulary)} | {ms(a)} | {ms(b)} | {b / a:.2f}x |")
    names = list(banks)
    if len(names) > 1:
        lo, hi = names[0], names[-1]
        parts = [f"{tag}: **{rows[(hi, tag)] / rows[(lo, tag)]:.2f}x**" for tag in tags]
        out.append(f"\n{hi} ({len(banks[hi].vocabulary)}) / {lo} ({len(banks[lo].vocabulary)}) classes, "
                   + "; ".join(parts))
    out.append("")


# ---------------------------------------------------------------------------------- section 4
def section_imgsz(args, image, out, notes, random_flags) -> None:
    """FastSAM segment() time vs network input size."""
    rows = []
    for model in args.models:
        for size in args.imgsz:
            seg = segmenter(args, model=model, imgsz=size, max_det=args.seg_masks)
            random_flags.append(seg.random_weights)
            log(f"section 4: {model} imgsz {size}")
            n = len(seg.segment(image))
            rows.append((model, size, n, timed(lambda: seg.segment(image), args.repeat)))
    out.append(f"### 4. FastSAM `segment()` time vs imgsz (max_det {args.seg_masks}, conf 0, retina masks)\n")
    out.append("| model | imgsz | masks | segment ms | vs same model @ %d |" % args.imgsz[0])
    out.append("|---|---:|---:|---:|---:|")
    base = {}
    for model, size, n, s in rows:
        base.setdefault(model, s)
        out.append(f"| {model} | {size} | {n} | {ms(s)} | {s / base[model]:.2f}x |")
    models = list(dict.fromkeys(r[0] for r in rows))
    if len(models) > 1:
        by = {(m, sz): s for m, sz, _, s in rows}
        parts = [f"{sz}: {by[(models[-1], sz)] / by[(models[0], sz)]:.1f}x" for sz in args.imgsz
                 if (models[0], sz) in by and (models[-1], sz) in by]
        out.append(f"\n{models[-1]} / {models[0]} at the same imgsz: " + ", ".join(parts))
    out.append("")


# ---------------------------------------------------------------------------------- section 5
def agreement(full, low) -> dict[str, float]:
    """Pixel agreement of the fused images, every mask its own class id (the strictest case):
    low masks are matched to the full mask they overlap most. "label" paints both in the full
    path's order (what low-res post-processing changes: where each mask's pixels are); "own
    order" lets the low path use its own areas, so near-equal masks may also swap order."""
    from sfs_ros.core.frame import Labels, Masks
    from sfs_ros.core.fusion import fuse

    up = low.masks  # materialised for the comparison only (not timed)
    f = full.masks.reshape(len(full), -1).astype(np.float32)
    g = up.reshape(len(low), -1).astype(np.float32)
    inter = g @ f.T
    index = (inter / (g.sum(1)[:, None] + f.sum(1)[None] - inter)).argmax(axis=1)

    def labels(ids):
        ids = np.asarray(ids, np.int32)
        return Labels(ids, np.ones(len(ids), np.float32), ids[:, None], np.ones((len(ids), 1), np.float32))

    label_f, inst_f = fuse(full, labels(np.arange(len(full))))
    shared = Masks.from_low_res(low.low_res, low.grid, low.boxes, low.scores, full.areas[index])
    label_s, _ = fuse(shared, labels(index))
    label_o, inst_o = fuse(low, labels(index))
    return {"masks": (len(full), len(low)), "label": float((label_s == label_f).mean()),
            "own": float((label_o == label_f).mean()),
            "coverage": float(((inst_o > 0) == (inst_f > 0)).mean())}


def shape_agreement(frame: np.ndarray, factor: int, imgsz: int = 640, segments: int = 60) -> float:
    """Label agreement of the two post-processing paths on REAL object outlines.

    Random-weight FastSAM masks are boxes, whose straight edges flatter nearest upsampling.
    Here the masks are the frame's Felzenszwalb segments (curved, image-driven outlines, the
    `segments` largest); each becomes prototype-grid logits (its signed distance map, area-
    averaged onto the grid), then goes through Ultralytics' full path (bilinear x4, letterbox
    crop, bilinear to the image, > 0) and through ours (bilinear x `factor`, > 0 on that grid,
    nearest upsampling of the fused images). Same paint order (full areas), every mask its own
    id. Real FastSAM masks (32 smooth prototypes) are smoother than these segments, so this is
    closer to a worst case than the random-weight figure is.
    """
    import torch.nn.functional as F
    from skimage.segmentation import felzenszwalb
    from ultralytics.utils.ops import scale_masks

    from sfs_ros.core.frame import Labels, MaskGrid, Masks
    from sfs_ros.core.fusion import fuse

    h, w = frame.shape[:2]
    gain = imgsz / max(h, w)
    net = (-(-round(h * gain) // 32) * 32, -(-round(w * gain) // 32) * 32)  # rect letterbox
    proto = MaskGrid.letterbox((h, w), net, (net[0] // 4, net[1] // 4))
    seg = felzenszwalb(frame, scale=400, sigma=0.8, min_size=200)
    ids, counts = np.unique(seg, return_counts=True)
    ids = ids[np.argsort(-counts)][:segments]
    # image -> letterboxed prototype grid: each signed distance map resized into the content area
    top, left = int(round(proto.offset[0])), int(round(proto.offset[1]))
    ch, cw = round(h * proto.scale[0]), round(w * proto.scale[1])
    logits = np.full((len(ids), *proto.shape), -1e3, np.float32)
    for i, k in enumerate(ids):
        inside = (seg == k).astype(np.uint8)
        sdf = cv2.distanceTransform(inside, cv2.DIST_L2, 3) - cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
        logits[i, top:top + ch, left:left + cw] = cv2.resize(sdf, (cw, ch), interpolation=cv2.INTER_AREA)
    t = torch.from_numpy(logits)[None]
    full = scale_masks(F.interpolate(t, scale_factor=4, mode="bilinear"), (h, w))[0].numpy() > 0
    low = (F.interpolate(t, scale_factor=factor, mode="bilinear") if factor > 1 else t)[0].numpy() > 0
    grid = MaskGrid.letterbox((h, w), net, low.shape[1:])
    n = len(ids)
    labels = Labels(np.arange(n, dtype=np.int32), np.ones(n, np.float32),
                    np.arange(n, dtype=np.int32)[:, None], np.ones((n, 1), np.float32))
    areas = full.sum(axis=(1, 2)).astype(np.int64)
    label_f, _ = fuse(Masks(full, np.zeros((n, 4), np.int32), np.ones(n, np.float32), areas), labels)
    label_l, _ = fuse(Masks.from_low_res(low, grid, grid.boxes(low), np.ones(n, np.float32), areas), labels)
    return float((label_f == label_l).mean())


def section_lowres(args, image, out, notes, random_flags) -> None:
    """segment() + fuse() with masks upsampled one by one vs painted on a grid and upsampled once."""
    from sfs_ros.core.frame import Labels
    from sfs_ros.core.fusion import fuse
    from sfs_ros.core.segmenter import GRID_FACTORS

    frames = {"640x480": image,
              "1920x1080": np.ascontiguousarray(cv2.resize(skimage.data.astronaut(), (1920, 1080),
                                                           interpolation=cv2.INTER_CUBIC))}
    modes = ("full", "low", "network")
    rows = []
    for det in args.lowres_masks:
        segs = {res: segmenter(args, max_det=det, mask_resolution=res) for res in modes}
        random_flags.append(segs["full"].random_weights)
        for name, frame in frames.items():
            log(f"section 5: {name} max_det {det}")
            masks = {res: seg.segment(frame) for res, seg in segs.items()}  # also the warm-up
            labels = {}
            for res, m in masks.items():
                ids = np.arange(len(m), dtype=np.int32) % 80
                labels[res] = Labels(ids, np.ones(len(ids), np.float32), ids[:, None],
                                     np.ones((len(ids), 1), np.float32))
            samples = {(res, stage): [] for res in segs for stage in ("segment", "fuse")}
            for _ in range(max(1, args.repeat)):  # the modes alternate: load drift hits all alike
                for res, seg in segs.items():
                    t0 = time.perf_counter()
                    seg.segment(frame)
                    t1 = time.perf_counter()
                    fuse(masks[res], labels[res])  # grid modes paint on the grid, never materialise
                    samples[(res, "segment")].append(t1 - t0)
                    samples[(res, "fuse")].append(time.perf_counter() - t1)
            for res in modes:
                seg_s = statistics.median(samples[(res, "segment")])
                fuse_s = statistics.median(samples[(res, "fuse")])
                agree = agreement(masks["full"], masks[res]) if res != "full" else None
                rows.append((name, det, res, len(masks[res]), seg_s, fuse_s, agree))
        del segs
    out.append("### 5. Mask post-processing: full resolution vs painted on a grid and upsampled once "
               "(FastSAM-s, imgsz 640, conf 0)\n")
    out.append("| frame | max_det | mask_resolution | masks | segment ms | fuse ms | segment + fuse ms | "
               "**full / this** | label agreement | label agreement (own order) | coverage agreement |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {}
    for name, det, res, n, seg_s, fuse_s, a in rows:
        total = seg_s + fuse_s
        base.setdefault((name, det), total)
        pct = (lambda key: f"{100 * a[key]:.2f}%") if a else (lambda key: "-")
        out.append(f"| {name} | {det} | {res} | {n} | {ms(seg_s)} | {ms(fuse_s)} | {ms(total)} | "
                   f"**{base[(name, det)] / total:.2f}x** | {pct('label')} | {pct('own')} | {pct('coverage')} |")
    out.append("\nLabel agreement with the full path on real object outlines (60 largest Felzenszwalb "
               "segments of the frame as prototype logits, `shape_agreement`):")
    for name, frame in frames.items():
        out.append(f"{name}: " + ", ".join(f"{res} **{100 * shape_agreement(frame, GRID_FACTORS[res]):.2f}%**"
                                           for res in ("low", "network")))
    notes.append("section 5: agreement = share of pixels with the same value in the two label images, every "
                 "mask its own class id, grid masks matched to the full mask of highest IoU; 'label' paints "
                 "both in the full path's area order, 'own order' uses each path's own areas (equal-size "
                 "masks may swap order); random-weight masks are box-shaped, see the real-outline line")
    out.append("")


SECTIONS = {1: section_pipeline, 2: section_masks, 3: section_vocab, 4: section_imgsz, 5: section_lowres}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=sorted(SECTIONS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (CPU only)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--vocab", default="coco", help="vocabulary of sections 1 and 2")
    parser.add_argument("--skip-slow", action="store_true", help="skip crop labeling of 200 masks (~35 s on CPU)")
    g = parser.add_argument_group("section 1")
    g.add_argument("--frames", type=int, default=6, help="frames submitted per run")
    g.add_argument("--pipe-mode", default="dense", choices=["crop", "dense", "hybrid"])
    g.add_argument("--pipe-masks", type=int, default=50, help="max_det (random weights fill it)")
    g.add_argument("--pipe-threads", type=int, nargs="+", default=None,
                   help="torch thread counts to compare (default: --threads only)")
    g = parser.add_argument_group("section 2")
    g.add_argument("--mask-counts", type=int, nargs="+", default=[1, 10, 50, 200])
    g = parser.add_argument_group("section 3")
    g.add_argument("--vocabs", nargs="+", default=["cityscapes", "ade20k", "ade20k_full"])
    g.add_argument("--vocab-masks", type=int, default=20)
    g.add_argument("--prune-topk", type=int, default=10)
    g.add_argument("--single-template", nargs="*", default=[],
                   help="vocabularies encoded with one prompt template (slow text encoding)")
    g = parser.add_argument_group("section 4")
    g.add_argument("--models", nargs="+", default=["FastSAM-s", "FastSAM-x"])
    g.add_argument("--imgsz", type=int, nargs="+", default=[480, 640, 1024])
    g.add_argument("--seg-masks", type=int, default=50)
    g = parser.add_argument_group("section 5")
    g.add_argument("--lowres-masks", type=int, nargs="+", default=[50, 300], help="max_det values")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    args.pipe_threads = args.pipe_threads or [torch.get_num_threads()]

    image = np.ascontiguousarray(cv2.resize(skimage.data.astronaut(), (640, 480), interpolation=cv2.INTER_AREA))
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    random_flags: list[bool] = []
    print("```")
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, device {args.device}; "
          f"load average {load0[0]:.2f} at start (shared machine)")
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, python {platform.python_version()}")
    print(f"image: skimage astronaut resized to 640x480; medians of {args.repeat} after 1 warm-up")
    print("```\n", flush=True)
    notes: list[str] = []
    for s in args.sections:  # each section printed as soon as it is done
        out: list[str] = []
        SECTIONS[s](args, image, out, notes, random_flags)
        print("\n".join(out), flush=True)
    notes.append(f"random weights: {any(random_flags)}; load average {os.getloadavg()[0]:.2f} at end; "
                 f"wall {time.perf_counter() - t_start:.0f} s")
    print("Notes:\n" + "\n".join(f"- {n}" for n in notes))

if __name__ == "__main__":
    main()
