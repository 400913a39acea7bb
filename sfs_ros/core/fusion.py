"""Masks + labels -> label image, instance image, and pictures of them for people.

FastSAM masks overlap (a window inside a building mask). Painting largest first lets smaller
masks painted later stay visible: the Semantic-Segment-Anything rule.
"""
from __future__ import annotations

import numpy as np

from sfs_ros.core.frame import (
    UNLABELED,
    UNLABELED_CLASS,
    UNLABELED_MONO8,
    Labels,
    Masks,
    SfsError,
    check_rgb_image,
)


class FusionError(SfsError, ValueError):
    """Inputs to fusion that do not fit together; the message says which and why."""


def paint_order(areas: np.ndarray) -> np.ndarray:
    """Mask indices, largest area first; ties keep the lower index first (stable sort)."""
    areas = np.asarray(areas)
    if areas.ndim != 1:
        raise FusionError(f"areas must be 1-D, got shape {areas.shape}")
    return np.argsort(-areas.astype(np.int64), kind="stable")


def fuse(masks: Masks, labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """Return (label_image, instance_image), both (H, W) uint16.

    label_image holds the class id of the last-painted *labeled* mask, UNLABELED elsewhere (or
    `labels.background` where that is set): an unlabeled mask must not erase what a labeled
    mask (or the background class map) beneath it said. instance_image holds
    i + 1 for the last-painted mask i, labeled or not, 0 where no mask covers.

    Masks held at low resolution (`Masks.from_low_res`) are painted on their grid and the two
    images upsampled once (nearest neighbour, letterbox undone): the result equals fusing the
    upsampled masks, without upsampling any mask. The full-resolution background map is applied
    after upsampling, so it keeps its own detail where no labeled mask covers.

    Masks held as a tensor (the segmenter's hand-off, issue #17) are painted on their device
    (`paint_tensor`) and only the two painted images come to host: the same images, bit for bit.
    """
    on_device = masks.held_on is not None
    grid = masks.grid
    if on_device:
        import torch  # here, not at the top: options reads this module without torch

        from sfs_ros.core.handoff import paint_tensor

        stack = masks.stack_tensor()
        is_bool = stack.dtype == torch.bool
    else:
        stack = masks.masks if grid is None else masks.low_res
        is_bool = stack.dtype == np.bool_
    class_ids = np.asarray(labels.class_ids)
    if stack.ndim != 3 or not is_bool:
        raise FusionError(f"masks must be (N, H, W) bool, got {tuple(stack.shape)} {stack.dtype}")
    n = stack.shape[0]
    height, width = masks.image_shape
    if class_ids.shape != (n,) or np.shape(masks.areas) != (n,):
        raise FusionError(
            f"{n} masks but {class_ids.shape} class ids and {np.shape(masks.areas)} areas"
        )
    if n > np.iinfo(np.uint16).max:
        raise FusionError(f"{n} masks do not fit the uint16 instance image")
    bad = (class_ids != UNLABELED_CLASS) & ((class_ids < 0) | (class_ids >= UNLABELED))
    if bad.any():
        raise FusionError(f"class ids must be {UNLABELED_CLASS} or 0..{UNLABELED - 1}, "
                          f"got {class_ids[bad][0]}")
    background = labels.background
    if background is not None and np.shape(background) != (height, width):
        raise FusionError(
            f"background {np.shape(background)} does not match masks {(height, width)}"
        )
    if on_device:
        label_image, instance_image = paint_tensor(stack, class_ids, paint_order(masks.areas))
    else:
        if background is None or grid is not None:
            label_image = np.full(stack.shape[1:], UNLABELED, np.uint16)
        else:
            label_image = np.asarray(background).astype(np.uint16, copy=True)
        instance_image = np.zeros(stack.shape[1:], np.uint16)
        for i in paint_order(masks.areas):
            instance_image[stack[i]] = i + 1
            if class_ids[i] != UNLABELED_CLASS:
                label_image[stack[i]] = class_ids[i]
    if grid is not None:
        label_image, instance_image = grid.upsample(label_image), grid.upsample(instance_image)
    if background is not None and (grid is not None or on_device):
        # UNLABELED is never a class id: it marks "no labeled mask"
        unlabeled = label_image == UNLABELED
        label_image[unlabeled] = np.asarray(background)[unlabeled]
    return label_image, instance_image


def track_lut(values: np.ndarray) -> np.ndarray:
    """Lookup table from `fuse`'s instance image (mask index + 1) to stable track ids: lut[0] = 0
    (no mask), lut[i + 1] = values[i], the uint16 image value of mask i's track (core/tracker.py
    `Tracks.image_values`: ids wrap onto 1..65535)."""
    lut = np.zeros(len(values) + 1, np.uint16)
    lut[1:] = values
    return lut


def to_mono8(label_image: np.ndarray) -> np.ndarray:
    """uint8 copy with UNLABELED_MONO8 (255) for unlabeled; ids >= 255 cannot be represented."""
    labeled = label_image != UNLABELED
    if labeled.any() and label_image[labeled].max() >= UNLABELED_MONO8:
        raise FusionError(
            f"class id {label_image[labeled].max()} does not fit mono8 "
            f"(ids must be < {UNLABELED_MONO8}); publish mono16 for this vocabulary"
        )
    return np.where(labeled, label_image, UNLABELED_MONO8).astype(np.uint8)


def colorize(label_image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB: palette colour of each pixel's class, black where unlabeled."""
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise FusionError(f"palette must be (K, 3) uint8, got {palette.shape} {palette.dtype}")
    labeled = label_image != UNLABELED
    ids = label_image[labeled]
    if ids.size and ids.max() >= len(palette):
        raise FusionError(f"class id {ids.max()} has no colour in a {len(palette)}-colour palette")
    rgb = np.zeros(label_image.shape + (3,), np.uint8)
    rgb[labeled] = palette[ids]
    return rgb


def overlay(
    image_rgb: np.ndarray,
    label_image: np.ndarray,
    instance_image: np.ndarray,
    palette: np.ndarray,
    alpha: float = 0.5,
) -> np.ndarray:
    """The image blended with class colours where labeled, instance boundaries in white.

    A boundary pixel is one whose instance id differs from its right or lower neighbour, so
    lines are 1 px wide; every other unlabeled pixel keeps its original value.
    """
    check_rgb_image(image_rgb)
    if not 0.0 <= alpha <= 1.0:
        raise FusionError(f"alpha must be in [0, 1], got {alpha}")
    if label_image.shape != image_rgb.shape[:2] or instance_image.shape != image_rgb.shape[:2]:
        raise FusionError(
            f"image {image_rgb.shape[:2]}, label image {label_image.shape} and instance image "
            f"{instance_image.shape} must have the same height and width"
        )
    colors = colorize(label_image, palette)
    labeled = label_image != UNLABELED
    out = image_rgb.copy()
    blend = (1.0 - alpha) * image_rgb[labeled] + alpha * colors[labeled]
    out[labeled] = np.rint(blend).astype(np.uint8)
    boundary = np.zeros(instance_image.shape, bool)
    boundary[:, :-1] |= instance_image[:, :-1] != instance_image[:, 1:]
    boundary[:-1, :] |= instance_image[:-1, :] != instance_image[1:, :]
    out[boundary] = 255
    return out


def mark_random(overlay: np.ndarray) -> np.ndarray:
    """A copy of an overlay made by untrained models with a red banner saying so, so no picture
    of a random-weight run passes for a result (the CLI's and the evaluator's overlays)."""
    import cv2

    out = overlay.copy()
    h = max(18, out.shape[0] // 20)
    cv2.rectangle(out, (0, 0), (out.shape[1], h + 8), (200, 0, 0), thickness=-1)
    cv2.putText(out, "RANDOM WEIGHTS - labels meaningless", (4, h), cv2.FONT_HERSHEY_SIMPLEX,
                h / 30.0, (255, 255, 255), max(1, h // 15), cv2.LINE_AA)
    return out
