"""`sfs prompt`: prompted segmentation of one image without ROS.

    sfs prompt photo.jpg --point 320 240 --out out/p
    sfs prompt photo.jpg --text "red mug" --box 100 80 400 300 --out out/p
    sfs prompt photo.jpg --point 320 240 --bg-point 330 200 --out out/p

The image is segmented and labeled like `sfs segment` does (same options), then the prompt
selects masks (core/prompt.py; README "Prompts"). Writes mask.png (mono8 union of the selected
masks), masks/<rank>_<instance id>.png (one per selected mask, best first), overlay.png (the
selection highlighted) and prompt.json (the prompt, the selected instances with their prompt
score and matched text, timings). A bad prompt (a point outside the image, a degenerate box, an
empty or too long text) is one line on stderr and exit code 2, before any model loads where the
image alone can tell.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from sfs_ros.core import options
from sfs_ros.core.frame import Frame, SfsError
from sfs_ros.core.fusion import mark_random
from sfs_ros.core.prompt import Prompt, highlight, select


def add_prompt_command(sub: argparse._SubParsersAction) -> None:
    """The `prompt` sub-command of `sfs` (its flags plus every core option)."""
    parser = sub.add_parser("prompt", help="select masks of one image by points, boxes and texts",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="image file")
    parser.add_argument("--point", nargs=2, type=float, action="append", default=[],
                        metavar=("X", "Y"), help="foreground point (pixels; repeatable)")
    parser.add_argument("--bg-point", nargs=2, type=float, action="append", default=[],
                        metavar=("X", "Y"), help="background point: masks holding it are removed")
    parser.add_argument("--box", nargs=4, type=float, action="append", default=[],
                        metavar=("X1", "Y1", "X2", "Y2"), help="box (pixels, x2/y2 exclusive; repeatable)")
    parser.add_argument("--text", action="append", default=[], help="text prompt (repeatable)")
    parser.add_argument("--out", default="out/prompt", help="output folder")
    options.add_arguments(parser)
    parser.set_defaults(func=cmd_prompt)


def cmd_prompt(args: argparse.Namespace) -> int:
    from sfs_ros.core.config import build_configs, load_models, vocabulary_for
    from sfs_ros.core.pipeline import Pipeline

    values = options.values_from_args(args)
    path = Path(args.image)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if bgr is None:
        raise SfsError(f"cannot read image {path}")
    frame = Frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), frame_id=path.stem, source=str(path))
    points = [tuple(p) for p in args.point] + [tuple(p) for p in args.bg_point]
    prompt = Prompt(points=tuple(points), point_labels=(1,) * len(args.point) + (0,) * len(args.bg_point),
                    boxes=tuple(tuple(b) for b in args.box), texts=tuple(args.text))
    prompt.check(*frame.image.shape[:2])  # before any model loads
    configs = build_configs(values)
    segmenter, labeler = load_models(configs)
    labeler.set_vocabulary(vocabulary_for(labeler, values))
    result = Pipeline(segmenter, labeler, on_result=lambda r: None, overlay=False).process(frame)
    t0 = time.monotonic()
    selection = select(result, prompt, labeler, configs.prompt)
    select_s = time.monotonic() - t0
    write(Path(args.out), selection, prompt, dict(result.timings, select=select_s))
    marker = "  [RANDOM WEIGHTS: labels are meaningless]" if result.random_weights else ""
    print(f"{len(selection)} of {len(result.masks)} masks selected (segment+label "
          f"{result.timings.get('total', 0.0):.2f} s, selection {1000 * select_s:.1f} ms){marker}"
          f"\nwrote {args.out}")
    return 0


def write(out: Path, selection, prompt: Prompt, timings: dict[str, float]) -> None:
    """mask.png, masks/<rank>_<id>.png, overlay.png and prompt.json of a selection."""
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for old in (out / "masks").glob("*.png"):  # a rerun into the same folder
        old.unlink()
    result = selection.result
    cv2.imwrite(str(out / "mask.png"), selection.mask.astype(np.uint8) * np.uint8(255))
    records = selection.records()
    for rank, (index, record) in enumerate(zip(selection.indices, records)):
        mask = result.masks.subset(np.array([index])).masks[0]
        cv2.imwrite(str(out / "masks" / f"{rank:02d}_{record['instance_id']}.png"),
                    mask.astype(np.uint8) * np.uint8(255))
    picture = highlight(selection)
    if result.random_weights:
        picture = mark_random(picture)
    cv2.imwrite(str(out / "overlay.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    report = {
        "image": result.frame.source,
        "height": result.masks.image_shape[0], "width": result.masks.image_shape[1],
        "prompt": {"points": [list(p) for p in prompt.points], "point_labels": list(prompt.point_labels),
                   "boxes": [list(b) for b in prompt.boxes], "texts": list(prompt.texts)},
        "masks": len(result.masks),
        "selected": records,
        "vocabulary": result.vocabulary_name,
        "random_weights": result.random_weights,
        "timings_s": timings,
    }
    (out / "prompt.json").write_text(json.dumps(report, indent=1))
