"""Security basics, checked on the source and on real loads.

* No code path evaluates strings: parameters, vocabulary files and bag contents are data. The
  source of the package, launch file, benches and tools is parsed and searched for eval/exec/
  compile, pickle/marshal loads, yaml.load without a safe loader, and torch.load without
  weights_only=True.
* Prompt templates are the one place a parameter string is used as a format string: anything
  beyond one plain '{}' (attribute access, indexing, conversions) is refused.
* A FastSAM checkpoint is loaded with Ultralytics' restricted (weights_only) loader: a pickle
  that would run code is refused, and the code does not run.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from sfs_ros.ros import params

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [p for d in ("sfs_ros", "bench", "tools", "launch", "scripts") for p in (ROOT / d).rglob("*.py")]
)
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRIBUTES = {("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"),
                        ("yaml", "load"), ("yaml", "unsafe_load"), ("dill", "load")}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"node.py", "params.py", "segmenter.py", "labeler.py", "sfs.launch.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_string_evaluation_or_unsafe_deserialisation(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for call in _calls(tree):
        func = call.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
            problems.append(f"line {call.lineno}: {func.id}()")
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if (func.value.id, func.attr) in FORBIDDEN_ATTRIBUTES:
                problems.append(f"line {call.lineno}: {func.value.id}.{func.attr}()")
            if (func.value.id, func.attr) == ("torch", "load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                           and k.value.value is True for k in call.keywords)
                if not safe:
                    problems.append(f"line {call.lineno}: torch.load() without weights_only=True")
    assert not problems, f"{path.relative_to(ROOT)}: {problems}"


@pytest.mark.parametrize("template", [
    "{0.__class__.__init__.__globals__}", "{} {0.__class__}", "{}{__builtins__}", "{!r}",
    "{:>{}}", "{}{}", "{[0]}", "{.real}", "{}}", "{{}}", "{:>9}", "{!s}", "no field",
])
def test_prompt_templates_allow_one_plain_placeholder_only(template):
    assert params.validate({"prompt_templates": (template,)}) is not None, template


def test_a_plain_placeholder_with_literal_braces_is_accepted():
    assert params.validate({"prompt_templates": ("a photo of a {}.", "{} {{in braces}}")}) is None


def test_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    """A .pt whose unpickling calls a function (here: one that writes a file) never runs it."""
    from sfs_ros.core.segmenter import Segmenter, SegmenterConfig

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "pwned"))

    checkpoint = tmp_path / "FastSAM-evil.pt"
    torch.save({"model": Payload()}, checkpoint)
    with pytest.raises(Exception) as info:
        Segmenter(SegmenterConfig(model=str(checkpoint), device="cpu"))
    assert not marker.exists(), "unpickling ran code from the checkpoint"
    assert "FastSAM-evil.pt" in str(info.value)
