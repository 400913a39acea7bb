"""The `sfs_eval` command (also `python -m sfs_ros.eval`): score Semantic-Fast-SAM on bags.

    sfs_eval convert cityscapes /data/cityscapes --split val --out bags/cityscapes_val
    sfs_eval convert shapes --frames 200 --seed 1 --out bags/shapes   (the known-answer world)
    sfs_eval run bags/cityscapes_val --out out/cityscapes_val --device cuda:0
    sfs_eval run drive_bag --image-topic /front/image_raw --vocab coco --out out/drive --no-bag
    sfs_eval run bags/ade20k_val --shard 0/4 --out out/ade/0   (... 1/4, 2/4, 3/4)
    sfs_eval merge out/ade/0 out/ade/1 out/ade/2 out/ade/3 --out out/ade
    sfs_eval run drive_bag --mode live --node /sfs_node --rate 5 --vocab coco --out out/live

Exit codes: 0 done (skipped frames, if any, are counted in the report and on stderr);
2 bad input or settings, with a one-line message; 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sfs_ros.cli import run_command
from sfs_ros.core import options
from sfs_ros.core.vocabulary import Vocabulary, load_vocabulary, vocabulary_spec
from sfs_ros.eval import bags, datasets, report as reports
from sfs_ros.eval.bags import BagInput, parse_shard
from sfs_ros.eval.errors import DatasetError, EvalError, GroundTruthError
from sfs_ros.eval.runner import OUTPUT_BAG, RunOptions, check_vocabulary, evaluate
from sfs_ros.synth.shapes import DEFAULT_SIZE as SHAPES_SIZE, parse_size

log = logging.getLogger("sfs_ros.eval")


# ---------------------------------------------------------------------------- helpers
def build_models(values: dict[str, Any]) -> tuple[Any, Any]:
    """Segmenter and labeler from the option values (tests replace this function)."""
    from sfs_ros.core.config import build_configs, load_models

    return load_models(build_configs(values))


def resolve_vocabulary(values: list[str] | None, source: BagInput) -> Vocabulary:
    """--vocab, else the vocabulary the bag's ground truth was converted with, else refuse
    when there is ground truth (its ids need their class list), else the `sfs` default (coco)."""
    if values:
        return load_vocabulary(vocabulary_spec(values))
    hint = source.hints.get(bags.HINT_VOCABULARY)
    if hint:
        return load_vocabulary(json.loads(hint) if hint.startswith("[") else hint)
    if source.has_gt:
        raise GroundTruthError(
            f"bag {source.path} has ground truth but does not say which vocabulary its ids belong "
            "to: pass --vocab (e.g. --vocab cityscapes)"
        )
    return load_vocabulary("coco")


# ---------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard)
    out = Path(args.out)
    if not args.no_bag and (out / OUTPUT_BAG).exists():
        raise EvalError(f"{out / OUTPUT_BAG} exists already: remove it, choose another --out, or pass --no-bag")
    values = options.values_from_args(args)  # every option checked before the bag is read
    with BagInput(args.bag, args.image_topic or (), args.gt_topic or (), args.gt_ignore, shard,
                  depth_scale=values["depth_scale"]) as source:
        vocabulary = resolve_vocabulary(args.vocabulary, source)
        check_vocabulary(source, vocabulary)
        if args.mode == "live":
            from sfs_ros.eval.live import LiveOptions, run_live

            live = LiveOptions(out_dir=out, node=args.node, rate=args.rate, wait_s=args.wait, tail_s=args.tail,
                               write_bag=not args.no_bag, progress=not args.quiet, max_frames=args.max_frames)
            report = run_live(source, vocabulary, live)
        else:
            report = _run_direct(args, values, source, vocabulary, out)
    reports.write(report, out, plots=not args.no_plots)
    print(summary_line(report), f"\nwrote {out}/{reports.JSON_NAME}, {reports.MD_NAME}"
          + ("" if args.no_bag else f", {OUTPUT_BAG}/"))
    frames = report["frames"]
    skipped = sum(frames["skipped"].values())
    if skipped:
        print(f"sfs_eval: warning: {skipped} frame(s) skipped: {frames['skipped']} "
              "(listed in report.json)", file=sys.stderr)
    if frames.get("dropped"):
        print(f"sfs_eval: warning: the node answered {frames['processed']} of {frames['published']} frames "
              f"({frames['dropped']} dropped)", file=sys.stderr)
    return 0


def _run_direct(args: argparse.Namespace, values: dict[str, Any], source: BagInput,
                vocabulary: Vocabulary, out: Path) -> dict:
    """Direct mode: load the models here (only now that the input proved usable) and run.

    --vocab names the ground truth's classes here; semantic-* labelers name masks with their
    checkpoint's classes, which must then be the ground truth's."""
    segmenter, labeler = build_models(values)
    fixed = labeler.fixed_vocabulary()
    if fixed is not None:  # semantic-*: the checkpoint's classes must be the ground truth's
        if source.has_gt and fixed.names != vocabulary.names:
            raise EvalError(
                f"--labeling {values['labeling_mode']}: the checkpoint's {len(fixed)} classes "
                f"({fixed.name}) are not the ground truth's {len(vocabulary)} ({vocabulary.name}); "
                "pick a checkpoint trained on the same label set (extra classes cannot be scored)"
            )
        vocabulary = fixed
    labeler.set_vocabulary(vocabulary)
    settings = {
        "device": str(segmenter.device),
        "segmenter": segmenter.describe(),
        "labeling": values["labeling_mode"],
        "labeler": labeler.describe(),
    }
    options = RunOptions(
        out_dir=out, write_bag=not args.no_bag, out_prefix=args.out_prefix, storage=args.storage,
        strict=args.strict, warmup=args.warmup, progress=not args.quiet, max_frames=args.max_frames,
    )
    from sfs_ros.core.tracker import tracker_config

    from sfs_ros.core.geometry import GeometryConfig

    return evaluate(source, segmenter, labeler, options, settings, tracking=tracker_config(values),
                    geometry=GeometryConfig.from_values(values))


def summary_line(report: dict) -> str:
    m, t = report["metrics"], report["timing"]
    scores = (f"mIoU {100 * m['miou']:.2f} %, pixel acc {100 * m['pixel_accuracy']:.2f} %"
              if m and m["miou"] is not None else "no ground truth scored")
    stages = t["stages"]
    ms = ", ".join(f"{s} {stages[s]['p50_ms']:.0f}" for s in ("segment", "label", "fuse", "end_to_end")
                   if stages[s]["n"])
    marker = "  [random_weights: true - scores are meaningless]" if report["random_weights"] else ""
    return (f"{scores}; {t['frames']} frames, {t['frames_per_s']} frames/s, p50 ms {ms or '-'}"
            f"{marker}")


#: convert options that only the generated shapes layout takes, and those only folders take
_SHAPES_ONLY = ("frames", "seed", "size")
_FOLDERS_ONLY = ("root", "split", "ignore_index")


def _open_for_convert(args: argparse.Namespace) -> datasets.Dataset:
    """The dataset `convert` was asked for; options of the other kind of layout are refused
    (silently ignoring --seed on a Cityscapes folder, or a folder given for shapes, would
    hide a mistake in the command)."""
    vocabulary = load_vocabulary(vocabulary_spec(args.vocab)) if args.vocab else None
    if args.layout == "shapes":
        if _given(args, _FOLDERS_ONLY):
            raise DatasetError("the shapes layout is generated from --seed: it takes no "
                               + ", ".join(_given(args, _FOLDERS_ONLY)))
        if args.frames is None or args.seed is None:
            raise DatasetError("the shapes layout needs --frames N and --seed S (e.g. --frames 200 --seed 1)")
        return datasets.shapes_dataset(args.frames, args.seed, args.size or SHAPES_SIZE, vocabulary,
                                       lossless=args.raw)
    if _given(args, _SHAPES_ONLY):
        raise DatasetError(f"{', '.join(_given(args, _SHAPES_ONLY))}: only for the shapes layout, not {args.layout}")
    if args.root is None:
        raise DatasetError(f"the {args.layout} layout needs its dataset folder: "
                           f"sfs_eval convert {args.layout} ROOT --out BAG")
    return datasets.open_dataset(args.layout, args.root, args.split or "val", vocabulary,
                                 255 if args.ignore_index is None else args.ignore_index)


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The options among `names` that were given, as the user typed them."""
    return [f"--{n.replace('_', '-')}" if n != "root" else "dataset folder"
            for n in names if getattr(args, n) is not None]


def _size_arg(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_convert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    dataset = _open_for_convert(args)
    options = datasets.ConvertOptions(
        image_topic=args.image_topic, gt_topic=args.gt_topic, frame_id=args.frame_id, rate=args.rate,
        raw=args.raw, storage=args.storage, limit=args.limit,
    )
    count = datasets.write_bag(
        dataset, args.out, options,
        progress=lambda items: tqdm(items, unit="frame", desc="convert", disable=args.quiet),
    )
    print(f"wrote {count} frames of {dataset.layout} {dataset.split or ''} to {args.out} "
          f"({options.topic}" + (f" + {options.gt_topic}" if any(i.label for i in dataset.items) else "")
          + f", vocabulary {dataset.vocabulary.name})")
    for note in dataset.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    merged = reports.merge([reports.load(p) for p in args.reports], allow_partial=args.allow_partial)
    reports.write(merged, args.out, plots=not args.no_plots)
    print(summary_line(merged), f"\nwrote {args.out}/{reports.JSON_NAME}, {reports.MD_NAME}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfs_eval", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="evaluate a bag (direct mode: every frame, no drops)")
    run.add_argument("bag", help="rosbag2 folder (mcap or sqlite3) or a single .mcap/.db3 file")
    run.add_argument("--out", required=True, help="output folder: report.json, report.md, plots, bag/")
    run.add_argument("--image-topic", action="append", metavar="TOPIC",
                     help="camera topic (Image or CompressedImage); repeat for several cameras. "
                          "Default: the converter's hint, else the only image topic")
    run.add_argument("--gt-topic", action="append", metavar="TOPIC",
                     help="ground-truth class-id topic (mono8/mono16), one per --image-topic, "
                          "paired by header stamp. Default: the converter's hint, else none")
    run.add_argument("--gt-ignore", type=int, default=None,
                     help="ground-truth value that does not count (default 255 mono8, 65535 mono16)")
    run.add_argument("--mode", choices=("direct", "live"), default="direct",
                     help="direct: every frame through the models in this process, no drops; live: "
                          "publish the bag to a running sfs_node and score what it publishes (the model "
                          "options are then the node's parameters; --vocab only names the ground truth)")
    run.add_argument("--node", default="/sfs_node", help="live: full name of the running node")
    run.add_argument("--rate", type=float, default=None, help="live: publish at this rate (Hz) instead of "
                                                              "the recorded timing")
    run.add_argument("--wait", type=float, default=60.0, help="live: seconds to wait for the node")
    run.add_argument("--tail", type=float, default=10.0, help="live: seconds to wait for the last answers")
    run.add_argument("--shard", default="0/1", help="i/n: evaluate the i-th of n parts of the bag")
    run.add_argument("--out-prefix", default="/sfs_node", help="namespace of the output bag topics")
    run.add_argument("--storage", choices=bags.STORAGES, default="mcap", help="output bag storage")
    run.add_argument("--no-bag", action="store_true", help="do not write the output bag")
    run.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    run.add_argument("--strict", action="store_true", help="stop at the first unusable frame instead of skipping it")
    run.add_argument("--warmup", type=int, default=1, help="untimed passes over the first frame")
    run.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    options.add_arguments(run)
    run.set_defaults(func=cmd_run)

    conv = sub.add_parser("convert", help="turn a dataset folder into a bag (images + ground-truth labels)")
    conv.add_argument("layout", choices=datasets.LAYOUTS)
    conv.add_argument("root", nargs="?", default=None,
                      help="dataset folder (Cityscapes root, ADEChallengeData2016 or its parent, "
                           "or a folder with images/ and labels/); none for shapes")
    conv.add_argument("--out", required=True, help="bag folder to create")
    conv.add_argument("--split", default=None, help="val (default), train, test (ADE20K: validation/training)")
    conv.add_argument("--vocab", nargs="+", default=None, metavar="CLASS",
                      help="vocabulary of the label ids (default: cityscapes / ade20k / shapes; required for folder)")
    conv.add_argument("--ignore-index", type=int, default=None,
                      help="folder layout: label value that does not count (default 255)")
    conv.add_argument("--frames", type=int, default=None, help="shapes: frames 0..N-1 of the world")
    conv.add_argument("--seed", type=int, default=None, help="shapes: the world's seed")
    conv.add_argument("--size", type=_size_arg, default=None, metavar="WxH",
                      help="shapes: image size (default 640x480)")
    conv.add_argument("--image-topic", default="",
                      help="default: /camera/image/compressed, or /camera/image with --raw (the "
                           "message type sfs_node reads a topic of that name as)")
    conv.add_argument("--gt-topic", default=datasets.ConvertOptions.gt_topic)
    conv.add_argument("--frame-id", default=datasets.ConvertOptions.frame_id)
    conv.add_argument("--rate", type=float, default=datasets.ConvertOptions.rate, help="stamps at this rate (Hz)")
    conv.add_argument("--raw", action="store_true", help="sensor_msgs/Image rgb8 instead of the original files "
                                                          "(shapes: the exact pixels instead of JPEG)")
    conv.add_argument("--storage", choices=bags.STORAGES, default="mcap")
    conv.add_argument("--limit", type=int, default=None, help="first N images only")
    conv.add_argument("--quiet", action="store_true", help="no progress bar")
    conv.set_defaults(func=cmd_convert)

    merge = sub.add_parser("merge", help="add the reports of --shard runs into one report")
    merge.add_argument("reports", nargs="+", help="report.json files or the folders holding them")
    merge.add_argument("--out", required=True, help="output folder for the merged report")
    merge.add_argument("--allow-partial", action="store_true", help="merge even if shards are missing")
    merge.add_argument("--no-plots", action="store_true")
    merge.set_defaults(func=cmd_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("sfs_eval", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
