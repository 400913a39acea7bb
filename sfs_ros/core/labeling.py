"""The one interface every labeler implements, so callers never ask which labeler they hold.

Three labelers name masks: the CLIP `Labeler` (crop, dense, hybrid modes), the closed-set
`SemanticVoteLabeler` (SegFormer vote, the SSA rule) and the `HybridLabeler` (vote, CLIP for
weak votes). The node, the CLI, the evaluator and the Pipeline talk to them only through
`MaskLabeler`; no isinstance switches, no reaching into a labeler's parts.

Vocabulary changes are two steps so a consumer can be told before the first frame uses a new
class map: `prepare_vocabulary` builds a bank (text embeddings; the slow part, no side effect)
with a new process-wide `version`, `use` makes it current in one reference swap. The Pipeline
binds the current bank to each frame at submission, so no frame mixes two vocabularies, and
every Result carries its bank's version.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from sfs_ros.core.frame import Labels, Masks
from sfs_ros.core.vocabulary import Vocabulary

_versions = itertools.count(1)


def next_version() -> int:
    """A new vocabulary version, unique and increasing within the process (thread-safe:
    itertools.count's next() runs under the GIL)."""
    return next(_versions)


class SetVocabulary:
    """The step every labeler shares: set_vocabulary = prepare_vocabulary, then use."""

    def set_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> Any:
        """Encode (or fetch) `vocabulary` and make it current; frames in flight keep the old one."""
        bank = self.prepare_vocabulary(vocabulary, templates)  # type: ignore[attr-defined]
        self.use(bank)  # type: ignore[attr-defined]
        return bank


class Bank(Protocol):
    """What a labeler labels a frame against: a vocabulary and its version (CLIP banks also hold
    the text embeddings)."""

    vocabulary: Vocabulary
    version: int


class MaskLabeler(Protocol):
    """Names the masks of a frame. `threshold` is the node's score_threshold in every labeler;
    `threshold_kind` says what it cuts ("clip_probability" or "vote_share"), so LabelInfo can
    report one meaning per mode."""

    threshold: float
    threshold_kind: str
    device: Any

    @property
    def random_weights(self) -> bool: ...

    @property
    def bank(self) -> Bank: ...

    def fixed_vocabulary(self, extra: tuple[str, ...] = ()) -> Vocabulary | None:
        """The vocabulary this labeler dictates (a closed-set checkpoint's classes, plus `extra`
        open-vocabulary classes where the labeler can name them), or None when it is the
        user's choice."""
        ...

    def prepare_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> Bank:
        """A new bank for `vocabulary` with a new version; the current one is untouched."""
        ...

    def use(self, bank: Bank) -> None:
        """Make a prepared bank current (one reference swap)."""
        ...

    def set_vocabulary(self, vocabulary: Vocabulary, templates: tuple[str, ...] | None = None) -> Bank:
        """prepare_vocabulary + use."""
        ...

    def label(self, image: np.ndarray, masks: Masks, bank: Any = None,
              cancelled: Callable[[], bool] = lambda: False) -> Labels:
        """Class, score and top-k proposals of every mask, against `bank` (default: current)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The settings in effect, for reports and summaries (JSON-serialisable)."""
        ...
