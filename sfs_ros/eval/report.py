"""report.json (the record), report.md (for people), PNG plots, and merging shard reports.

The JSON keeps everything a merge needs: the confusion matrix and per-frame timings, so the
summaries (scores, percentiles, throughput) are always recomputed from those by the same
functions here, whether for one run or for the sum of shards: merged == unsharded by
construction, not by luck.

`random_weights` is the first key of the JSON and a banner on top of the Markdown: numbers
from untrained models measure the plumbing, never the method.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sfs_ros import __version__
from sfs_ros.eval.errors import MergeError
from sfs_ros.eval.metrics import CONVENTION, ConfusionMatrix, latency_summary

STAGES = ("read", "segment", "label", "fuse", "compute", "total", "write", "end_to_end")
STAGE_NOTES = {
    "read": "bag read + image decode (main thread)",
    "segment": "FastSAM",
    "label": "CLIP",
    "fuse": "label/instance images + overlay",
    "compute": "segment + label + fuse of one frame (service time)",
    "total": "submit -> result; includes waiting for a busy stage (no-drop mode queues)",
    "write": "scoring + output bag",
    "end_to_end": "live mode: publish -> label image received (DDS both ways + the node)",
}
RANDOM_BANNER = (
    "**random_weights: true** - FastSAM and/or CLIP ran with RANDOM, untrained weights. Every "
    "score below measures the plumbing, not the method; never compare it with published numbers."
)
JSON_NAME, MD_NAME = "report.json", "report.md"
IOU_PLOT, CONFUSION_PLOT = "iou_per_class.png", "confusion_matrix.png"


# ====================================================================== sections
def metrics_section(matrix: ConfusionMatrix | None, class_names: Sequence[str]) -> dict | None:
    """Scores of a confusion matrix; None when no frame had ground truth."""
    if matrix is None or matrix.matrix.sum() == 0:
        return None
    s = matrix.scores()
    return {
        "convention": CONVENTION,
        "miou": _num(s.miou),
        "pixel_accuracy": _num(s.pixel_accuracy),
        "mean_accuracy": _num(s.mean_accuracy),
        "classes_in_miou": s.classes_in_mean,
        "valid_pixels": s.valid_pixels,
        "unlabeled_prediction_pixels": s.unlabeled_pixels,
        "per_class": [
            {
                "id": i, "name": name, "iou": _num(s.iou[i]), "accuracy": _num(s.accuracy[i]),
                "gt_pixels": int(s.gt_pixels[i]), "pred_pixels": int(s.pred_pixels[i]),
            }
            for i, name in enumerate(class_names)
        ],
    }


def timing_section(per_frame: Sequence[dict], wall_s: float, wall_s_max: float | None = None) -> dict:
    """Per-stage latency percentiles and throughput, from the per-frame records."""
    stages = {}
    for stage in STAGES:
        values = [f["ms"][stage] / 1000.0 for f in per_frame if stage in f.get("ms", {})]
        stages[stage] = dict(latency_summary(values), what=STAGE_NOTES[stage])
    frames = len(per_frame)
    return {
        "frames": frames,
        "wall_s": round(wall_s, 3),
        "wall_s_max_shard": None if wall_s_max is None else round(wall_s_max, 3),
        "frames_per_s": round(frames / wall_s, 3) if wall_s > 0 else None,
        "note": "frames_per_s = processed frames / summed wall time of the processing loops "
        "(model loading and warm-up excluded); shards run in parallel finish sooner",
        "stages": stages,
    }


def masks_section(per_frame: Sequence[dict]) -> dict:
    counts = np.array([f["masks"] for f in per_frame], np.int64)
    if counts.size == 0:
        return {"frames": 0, "total": 0, "mean": None, "p50": None, "max": None}
    return {
        "frames": int(counts.size), "total": int(counts.sum()), "mean": round(float(counts.mean()), 3),
        "p50": float(np.percentile(counts, 50)), "max": int(counts.max()),
    }


def finish(report: dict, matrix: ConfusionMatrix | None, wall_s: float, wall_s_max: float | None = None) -> dict:
    """Fill the derived sections (metrics, confusion, timing, masks) of a report in place."""
    names = report["settings"]["class_names"]
    report["per_frame"].sort(key=lambda f: (f["log_time"], f["topic"]))
    report["metrics"] = metrics_section(matrix, names)
    report["confusion_matrix"] = None if report["metrics"] is None else {
        "rows": "ground-truth class id",
        "columns": "predicted class id; the last column counts valid pixels predicted unlabeled",
        "data": matrix.matrix.tolist(),
    }
    report["timing"] = timing_section(report["per_frame"], wall_s, wall_s_max)
    report["masks_per_frame"] = masks_section(report["per_frame"])
    return report


def tracking_section(tracks: int, label_changes: int, label_pairs: int) -> dict:
    """Tracks made and how often a track's label changed between consecutive frames."""
    return {"tracks": tracks, "label_changes": label_changes, "label_pairs": label_pairs,
            "label_flicker": round(label_changes / label_pairs, 4) if label_pairs else 0.0,
            "flicker_of": "predicted tracks (consecutive frames where a track's label changed)"}


def new_report(random_weights: bool, mode: str, inputs: dict, settings: dict, shard: tuple[int, int]) -> dict:
    """The skeleton every run fills; key order is the order a reader sees in the JSON."""
    return {
        "random_weights": bool(random_weights),
        "warning": RANDOM_BANNER.replace("**", "") if random_weights else None,
        "tool": "sfs_eval",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "shards": [list(shard)],
        "shard_count": shard[1],
        "complete": True,
        "input": inputs,
        "settings": settings,
        "metrics": None,
        "frames": {},
        "skipped_frames": [],
        "timing": {},
        "masks_per_frame": {},
        "tracking": None,  # direct mode with tracking: tracks and their label flicker
        "output_bags": [],
        "confusion_matrix": None,
        "per_frame": [],
    }


# ====================================================================== files
def write(report: dict, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write report.json, report.md and (when there are scores) the two plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / JSON_NAME, out / MD_NAME]
    figures: list[str] = []
    if plots and report.get("metrics"):
        figures = _plots(report, out)
        written += [out / f for f in figures]
    (out / JSON_NAME).write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (out / MD_NAME).write_text(markdown(report, figures), encoding="utf-8")
    return written


def load(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MergeError(f"cannot read report {path}: {exc}") from None
    if not isinstance(report, dict) or report.get("tool") != "sfs_eval":
        raise MergeError(f"{path} is not an sfs_eval report.json")
    return report


def markdown(report: dict, figures: Sequence[str] = ()) -> str:
    """The human summary; headline numbers first, the random-weights banner above them."""
    lines = [f"# sfs_eval report: {Path(report['input']['bag']).name}", ""]
    if report["random_weights"]:
        lines += [f"> {RANDOM_BANNER}", ""]
    if not report.get("complete", True):
        lines += ["> **Partial merge**: shards are missing; numbers cover only the shards listed.", ""]
    m, t, fr = report["metrics"], report["timing"], report["frames"]
    lines += ["| | |", "|---|---|"]
    if m:
        lines += [
            f"| mIoU | {_pct(m['miou'])} ({m['classes_in_miou']} classes present in ground truth or prediction) |",
            f"| pixel accuracy | {_pct(m['pixel_accuracy'])} |",
            f"| mean class accuracy | {_pct(m['mean_accuracy'])} |",
        ]
    else:
        lines.append("| scores | none: no frame had a valid ground-truth pixel |")
    lines += [
        f"| random_weights | {str(report['random_weights']).lower()} |",
        f"| frames processed / scored | {fr.get('processed', 0)} / {fr.get('scored', 0)} |",
        f"| frames skipped | {sum(fr.get('skipped', {}).values())} {_fmt_skips(fr.get('skipped', {}))} |",
        f"| throughput | {t.get('frames_per_s')} frames/s ({t.get('frames')} frames in {t.get('wall_s')} s) |",
        f"| masks per frame | mean {report['masks_per_frame'].get('mean')}, max {report['masks_per_frame'].get('max')} |",
        f"| shards | {', '.join(f'{i}/{n}' for i, n in report['shards'])} |",
    ]
    if report.get("tracking"):
        tr = report["tracking"]
        lines.append(f"| tracking | {tr['tracks']} tracks, label flicker {_pct(tr['label_flicker'])} "
                     f"of {tr['label_pairs']} consecutive sightings |")
    lines += [
        "",
    ]
    if m:
        lines += [f"Convention: {m['convention']}.", ""]
    lines += ["## Frames", "", "| count | value |", "|---|---|"]
    lines += [f"| {k} | {v if not isinstance(v, dict) else json.dumps(v)} |" for k, v in fr.items()]
    if report["skipped_frames"]:
        lines += ["", "Skipped frames (first 20):", ""]
        lines += [f"- {s['topic']} @ {s['stamp']}: {s['reason']} {s.get('detail', '')}" for s in report["skipped_frames"][:20]]
    lines += ["", "## Latency (ms)", "", "| stage | p50 | p95 | max | mean | n | what |", "|---|---|---|---|---|---|---|"]
    for stage, v in t.get("stages", {}).items():
        if not v["n"]:
            continue
        lines.append(f"| {stage} | {v['p50_ms']} | {v['p95_ms']} | {v['max_ms']} | {v['mean_ms']} | {v['n']} | {v['what']} |")
    lines += ["", t.get("note", "")]
    if m:
        lines += ["", "## Per-class IoU", ""]
        lines += [f"![per-class IoU]({f})" for f in figures if f == IOU_PLOT]
        lines += ["", "| id | class | IoU | accuracy | GT pixels | predicted pixels |", "|---|---|---|---|---|---|"]
        for c in m["per_class"]:
            lines.append(f"| {c['id']} | {c['name']} | {_pct(c['iou'])} | {_pct(c['accuracy'])} | {c['gt_pixels']} | {c['pred_pixels']} |")
        lines += ["", "IoU '-' = class absent from ground truth and prediction: left out of the mean."]
        lines += [f"\n![confusion matrix]({f})" for f in figures if f == CONFUSION_PLOT]
    lines += ["", "## Input and settings", "", "```json", json.dumps(
        {"input": report["input"], "settings": {k: v for k, v in report["settings"].items() if k != "class_names"},
         "output_bags": report["output_bags"]}, indent=1), "```", ""]
    return "\n".join(lines)


def _plots(report: dict, out: Path) -> list[str]:
    """Per-class IoU bars and the row-normalised confusion matrix (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = report["metrics"]
    names = [c["name"] for c in m["per_class"]]
    iou = np.array([np.nan if c["iou"] is None else c["iou"] for c in m["per_class"]]) * 100
    title_tag = " [RANDOM WEIGHTS]" if report["random_weights"] else ""
    k = len(names)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.22 * k + 1)))
    y = np.arange(k)
    ax.barh(y, np.nan_to_num(iou), color=["#4c72b0" if not math.isnan(v) else "#cccccc" for v in iou])
    ax.set_yticks(y, names, fontsize=max(4, min(9, 400 // max(k, 1))))
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(f"per-class IoU, mIoU {_pct(m['miou'])}{title_tag}", color="red" if title_tag else "black")
    fig.tight_layout()
    fig.savefig(out / IOU_PLOT, dpi=100)
    plt.close(fig)

    data = np.array(report["confusion_matrix"]["data"], np.float64)
    rows = data.sum(axis=1, keepdims=True)
    norm = np.divide(data, rows, out=np.zeros_like(data), where=rows > 0)
    fig, ax = plt.subplots(figsize=(min(14, max(6.5, 3 + 0.3 * k)), min(12, max(5.0, 2.5 + 0.28 * k))))
    image = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    if k <= 40:
        ax.set_xticks(np.arange(k + 1), names + ["unlabeled"], rotation=90, fontsize=7)
        ax.set_yticks(np.arange(k), names, fontsize=7)
    ax.set_xlabel("prediction (last column: unlabeled)")
    ax.set_ylabel("ground truth")
    ax.set_title(f"confusion matrix (rows normalised){title_tag}", color="red" if title_tag else "black",
                 fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(out / CONFUSION_PLOT, dpi=100)
    plt.close(fig)
    return [IOU_PLOT, CONFUSION_PLOT]


# ====================================================================== merge
#: settings that must agree between shards (anything else, e.g. device, may differ)
MERGE_KEYS = ("vocabulary", "vocabulary_key", "class_names", "segmenter", "labeler", "gt_ignore")


def merge(reports: Sequence[dict], allow_partial: bool = False) -> dict:
    """Add shard reports of one bag: confusion matrices, frame counts and per-frame timings."""
    if not reports:
        raise MergeError("nothing to merge")
    first = reports[0]
    counts = {r["shard_count"] for r in reports}
    if len(counts) != 1:
        raise MergeError(f"reports come from different shard counts: {sorted(counts)}")
    for r in reports[1:]:
        for key in MERGE_KEYS:
            if _comparable(r["settings"].get(key)) != _comparable(first["settings"].get(key)):
                raise MergeError(f"reports differ in setting {key!r}; they are not shards of one run")
        for key in ("fingerprint", "image_topics", "gt_topics"):
            if r["input"].get(key) != first["input"].get(key):
                raise MergeError(f"reports differ in input {key!r}; they are not shards of one bag")
    shards = sorted(tuple(s) for r in reports for s in r["shards"])
    if len(set(shards)) != len(shards):
        raise MergeError(f"a shard is given twice: {shards}")
    total = counts.pop()
    missing = sorted(set(range(total)) - {i for i, _ in shards})
    if missing and not allow_partial:
        raise MergeError(f"shards {missing} of {total} are missing (use --allow-partial to merge anyway)")
    merged = new_report(any(r["random_weights"] for r in reports), first["mode"], dict(first["input"]),
                        dict(first["settings"]), (0, total))
    merged["shards"] = [list(s) for s in shards]
    merged["complete"] = not missing and all(r.get("complete", True) for r in reports)
    merged["input"]["bag"] = first["input"]["bag"]
    merged["frames"] = _sum_counts([r["frames"] for r in reports])
    merged["skipped_frames"] = [s for r in reports for s in r["skipped_frames"]]
    merged["output_bags"] = [b for r in reports for b in r["output_bags"]]
    merged["per_frame"] = [f for r in reports for f in r["per_frame"]]
    parts = [r["tracking"] for r in reports if r.get("tracking")]
    if parts:  # shards track apart: their tracks and sightings add up
        merged["tracking"] = tracking_section(*(sum(p[k] for p in parts) for k in
                                                ("tracks", "label_changes", "label_pairs")))
    matrix = None
    k = len(first["settings"]["class_names"])
    for r in reports:
        if r["confusion_matrix"] is not None:
            part = ConfusionMatrix(k, np.array(r["confusion_matrix"]["data"], np.int64))
            matrix = part if matrix is None else matrix + part
    walls = [r["timing"]["wall_s"] for r in reports]
    return finish(merged, matrix, float(sum(walls)), float(max(walls)))


def _comparable(value: Any) -> Any:
    """A setting as shards must agree on it: the device may differ between machines, and a
    checkpoint may sit in another folder (its file name must match)."""
    if not isinstance(value, dict):
        return value
    out = {k: v for k, v in value.items() if k != "device"}
    if "checkpoint" in out:
        out["checkpoint"] = Path(str(out["checkpoint"])).name
    return out


def _sum_counts(parts: Sequence[dict]) -> dict:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):
                out[key] = _sum_counts([out.get(key, {}), value])
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
            else:
                out.setdefault(key, value)
    return out


def _num(value: float) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f} %"


def _fmt_skips(skips: dict) -> str:
    return f"({', '.join(f'{k}: {v}' for k, v in skips.items())})" if skips else ""
