"""The evaluator's errors: each says what is wrong with which input, in one line.

Two kinds of trouble, kept apart on purpose:
- `EvalError` subclasses stop the run (the CLI prints the message and exits with code 2): a
  missing topic, an encoding we cannot read, a bag that ends early, ground truth that does not
  fit the images or the vocabulary. Carrying on would produce a number that looks right but
  is not.
- `BadFrame` marks one message that cannot be used (a corrupt JPEG, a short data buffer). The
  runner skips that frame, counts it under its reason and lists it in the report, so a skip is
  never silent; `--strict` turns it into an error.
"""
from __future__ import annotations

from sfs_ros.core.frame import SfsError


class EvalError(SfsError):
    """Base of every error that stops an evaluation, a conversion or a merge."""


class BagError(EvalError):
    """The bag cannot be read: missing, truncated, corrupt, or without the topics asked for."""


class EncodingError(EvalError):
    """A topic carries an image encoding or format the evaluator does not read."""


class GroundTruthError(EvalError):
    """Ground truth that does not fit: wrong size, ids outside the vocabulary, other vocabulary."""


class DatasetError(EvalError):
    """A dataset folder that does not have the layout it was announced as."""


class MergeError(EvalError):
    """Shard reports that cannot be added: other settings, duplicated or missing shards."""


class BadFrame(SfsError):
    """One frame that cannot be used; the caller skips and counts it (not fatal by itself).

    `reason` is a short fixed key (e.g. "undecodable image") used to count skips in the report.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
