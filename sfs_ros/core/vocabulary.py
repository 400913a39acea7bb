"""Class vocabularies as data: benchmark presets and user lists, validated once, here.

A class id is its position in the vocabulary (0..K-1), written straight into the mono16 label
image, so K must leave UNLABELED (65535) free. Each class carries synonyms ("wall, brick")
because the labeler prompts with all of them, and a colour so every viewer agrees.

Preset files live in `config/vocabularies/*.tsv`: the first line is the header naming the
tab-separated columns (`# id<TAB>name[<TAB>color][<TAB>extra...]`), later `#` lines are
comments. `name` holds the synonyms separated by ", ", `color` is "r,g,b", any other column is
integer metadata per class (e.g. the Cityscapes gtFine `label_id`) exposed as `Vocabulary.extra`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

import numpy as np

from sfs_ros.core.frame import UNLABELED, SfsError

PRESETS: tuple[str, ...] = ("cityscapes", "ade20k", "ade20k_full", "coco", "shapes")
#: CLIP prompt templates. Few on purpose: each one multiplies the text-encoder cost of a
#: vocabulary change.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a photo of the {} in the scene.")
#: Ids must stay below UNLABELED, which marks unlabeled pixels in the label image.
MAX_CLASSES = UNLABELED - 1
_GOLDEN_RATIO = 0.618033988749895


class VocabularyError(SfsError, ValueError):
    """A vocabulary spec or file the core cannot use; the message says which entry and why."""


@dataclass(frozen=True)
class VocabClass:
    """One class: `name` is the first synonym, `synonyms` starts with `name`."""

    id: int
    name: str
    synonyms: tuple[str, ...]
    color: tuple[int, int, int]

    @property
    def prompts_names(self) -> tuple[str, ...]:
        """The texts the labeler prompts with for this class (all synonyms)."""
        return self.synonyms


@dataclass(frozen=True)
class Vocabulary:
    """An ordered class list; `classes[i].id == i`. `name` is the preset name or "custom"."""

    name: str
    classes: tuple[VocabClass, ...]
    #: Per-class integer metadata of a preset, column name -> one value per class.
    extra: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: MappingProxyType({}), compare=False
    )

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @cached_property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 RGB, row i = colour of class i (read-only: it is shared)."""
        palette = np.array([c.color for c in self.classes], np.uint8).reshape(-1, 3)
        palette.flags.writeable = False
        return palette

    @cached_property
    def key(self) -> str:
        """sha1 hex of the ordered synonym lists: what text-embedding caches must depend on."""
        text = json.dumps([list(c.synonyms) for c in self.classes], ensure_ascii=False)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()


def template_problem(templates: Sequence[str]) -> str | None:
    """Why these prompt templates cannot be used, or None: at least one is needed, and each
    holds exactly one bare '{}' (no name, attribute, format spec, conversion or other braces),
    since the labeler fills it with `template.format(class_name)`. Every entry point (node
    parameter, CLI flag, LabelerConfig) checks templates here."""
    import string

    if isinstance(templates, str) or not templates:
        return "give at least one prompt template such as 'a photo of a {}.'"
    for template in templates:
        try:
            fields = [f for f in string.Formatter().parse(template) if f[1] is not None]
            ok = len(fields) == 1 and fields[0][1:] == ("", "", None)
        except (ValueError, TypeError):  # unbalanced braces, not a string
            ok = False
        if not ok:
            return f"prompt template {template!r} must contain '{{}}' exactly once and no other braces"
    return None


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """`templates` as a tuple, or VocabularyError saying which one is unusable and why."""
    problem = template_problem(templates)
    if problem:
        raise VocabularyError(problem)
    return tuple(templates)


def vocabulary_spec(entries: Sequence[str]) -> str | list[str]:
    """What a list of vocabulary words means for `load_vocabulary` (node parameter, --vocab).

    One entry that is a preset name (coco, ade20k, ...) or a .txt/.tsv file is that vocabulary;
    anything else is a list of classes, each "name" or "name, synonym, ...".
    """
    if isinstance(entries, str):
        entries = [entries]
    if len(entries) == 1 and (entries[0] in PRESETS or entries[0].endswith((".txt", ".tsv"))):
        return entries[0]
    return list(entries)


def vocabulary_note(entries: Sequence[str]) -> str | None:
    """A warning worth logging for an accepted vocabulary: one entry that is not a preset is a
    one-class vocabulary, which is what a misspelt preset name ("cocoa") also gives."""
    import difflib

    spec = vocabulary_spec(entries)
    if not isinstance(spec, list) or len(spec) != 1:
        return None
    close = difflib.get_close_matches(spec[0], PRESETS, n=1, cutoff=0.7)
    hint = f"; did you mean the preset {close[0]!r}?" if close else ""
    return f"vocabulary {list(spec)!r} is ONE custom class {spec[0].split(',')[0].strip()!r}{hint}"


def palette_for(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours for datasets without a standard palette.

    Golden-ratio hue steps keep neighbouring ids far apart in hue; saturation >= 0.7 and
    value >= 0.85 keep every colour bright and never grey or black (black means unlabeled).
    """
    i = np.arange(n)
    hue = (i * _GOLDEN_RATIO) % 1.0
    sat = np.where(i % 2 == 0, 0.95, 0.7)
    val = np.where((i // 2) % 2 == 0, 1.0, 0.85)
    # HSV -> RGB: channel = V - V*S*clip(min(k, 4-k), 0, 1), k = (n + 6H) mod 6, n = 5, 3, 1.
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0
    rgb = val[:, None] * (1.0 - sat[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.rint(rgb * 255.0).astype(np.uint8)


def load_vocabulary(spec: str | Sequence[str]) -> Vocabulary:
    """Build a Vocabulary from a preset name, a .txt/.tsv file path, or a list of entries.

    List entries (and .txt lines) are "name" or "name, synonym, synonym". A bare string that
    is neither a preset nor a .txt/.tsv path is refused rather than read as a one-class list,
    since a typo in a preset name would otherwise silently become a custom class.
    """
    if isinstance(spec, str):
        if spec in PRESETS:
            return _read_tsv(_data_dir() / f"{spec}.tsv", spec)
        path = Path(spec)
        if path.suffix in (".txt", ".tsv"):
            if not path.is_file():
                raise VocabularyError(f"vocabulary file not found: {path}")
            if path.suffix == ".tsv":
                return _read_tsv(path, "custom")
            return _read_txt(path)
        raise VocabularyError(
            f"unknown vocabulary {spec!r}: presets are {', '.join(PRESETS)}; a custom "
            "vocabulary must be given as a list of class names or a .txt/.tsv file"
        )
    if not isinstance(spec, Sequence):
        raise VocabularyError(
            f"vocabulary spec must be a preset name, a file path or a list of class names, "
            f"got {type(spec).__name__}"
        )
    for i, entry in enumerate(spec):
        if not isinstance(entry, str):
            raise VocabularyError(f"entry {i} must be a string, got {type(entry).__name__}")
    entries = [(f"entry {i}", _parse_synonyms(e, f"entry {i}")) for i, e in enumerate(spec)]
    return _build("custom", entries, colors=None)


def _data_dir() -> Path:
    """The preset folder: the checkout's config/, else the installed ROS package share."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "vocabularies"
    if checkout.is_dir():
        return checkout
    looked = [str(checkout)]
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("sfs_ros")) / "config" / "vocabularies"
        if installed.is_dir():
            return installed
        looked.append(str(installed))
    except (ImportError, LookupError) as exc:  # no ament, or sfs_ros not in its index
        looked.append(f"ament package share of sfs_ros ({type(exc).__name__}: {exc})")
    raise VocabularyError(f"vocabulary presets not found; looked in: {'; '.join(looked)}")


def _parse_synonyms(entry: str, where: str) -> tuple[str, ...]:
    synonyms = tuple(s.strip() for s in entry.split(","))
    if not any(synonyms):
        raise VocabularyError(f"{where}: empty class name")
    if not all(synonyms):
        raise VocabularyError(f"{where}: empty synonym in {entry!r}")
    return synonyms


def _parse_color(text: str, where: str) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise VocabularyError(f"{where}: color must be 'r,g,b' with values 0..255, got {text!r}")
    return rgb  # type: ignore[return-value]


def _read_txt(path: Path) -> Vocabulary:
    entries = [
        (f"{path.name} line {n}", _parse_synonyms(line, f"{path.name} line {n}"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return _build("custom", entries, colors=None)


def _read_tsv(path: Path, name: str) -> Vocabulary:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].startswith("#"):
        raise VocabularyError(f"{path}: first line must be a '# id<TAB>name...' header")
    columns = [c.strip() for c in lines[0].lstrip("#").split("\t")]
    if "name" not in columns:
        raise VocabularyError(f"{path}: header {lines[0]!r} has no 'name' column")
    entries, colors, extra = [], [], {c: [] for c in columns if c not in ("id", "name", "color")}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{path.name} line {n}"
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise VocabularyError(f"{where}: expected {len(columns)} columns, got {len(cells)}")
        row = dict(zip(columns, cells))
        if "id" in row and row["id"].strip() != str(len(entries)):
            raise VocabularyError(f"{where}: id must be {len(entries)} (ids are 0..K-1 in order)")
        entries.append((where, _parse_synonyms(row["name"], where)))
        if "color" in row:
            colors.append(_parse_color(row["color"], where))
        for column, values in extra.items():
            try:
                values.append(int(row[column]))
            except ValueError:
                raise VocabularyError(f"{where}: {column} must be an integer") from None
    extra_view = MappingProxyType({c: tuple(v) for c, v in extra.items()})
    return _build(name, entries, colors if "color" in columns else None, extra_view)


def _build(
    name: str,
    entries: list[tuple[str, tuple[str, ...]]],
    colors: list[tuple[int, int, int]] | None,
    extra: Mapping[str, tuple[int, ...]] = MappingProxyType({}),
) -> Vocabulary:
    if not entries:
        raise VocabularyError("vocabulary is empty: give at least one class")
    if len(entries) > MAX_CLASSES:
        raise VocabularyError(
            f"vocabulary has {len(entries)} classes; at most {MAX_CLASSES} fit the mono16 "
            f"label image ({UNLABELED} marks unlabeled pixels)"
        )
    seen: dict[str, str] = {}
    for where, synonyms in entries:
        folded = synonyms[0].casefold()
        if folded in seen:
            raise VocabularyError(
                f"{where}: duplicate class name {synonyms[0]!r} (already at {seen[folded]})"
            )
        seen[folded] = where
    if colors is None:
        colors = [tuple(int(v) for v in rgb) for rgb in palette_for(len(entries))]
    classes = tuple(
        VocabClass(id=i, name=synonyms[0], synonyms=synonyms, color=color)
        for i, ((_, synonyms), color) in enumerate(zip(entries, colors))
    )
    return Vocabulary(name=name, classes=classes, extra=extra)
