"""Untrusted files: nothing in the package executes code from a file, and a config cannot make a
run write outside its output and cache folders.

The source scan walks the syntax tree of every module (so ``model.eval()`` is not mistaken for the
``eval`` builtin) and is itself tested on planted violations.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from benchmark.config import validate_config
from benchmark.errors import ConfigError, ModelLoadError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["benchmark", "methods", "classifiers", "leaderboard", "prompts"]

# Deserialisers that run code from the bytes they read. Importing ``pickle`` for its exception
# class (``except pickle.UnpicklingError`` around ``torch.load(weights_only=True)``) is fine.
_PICKLE_LOADERS = {"load", "loads", "Unpickler"}
UNSAFE_LOADERS = {"pickle": _PICKLE_LOADERS, "cPickle": _PICKLE_LOADERS, "_pickle": _PICKLE_LOADERS,
                  "dill": _PICKLE_LOADERS, "cloudpickle": _PICKLE_LOADERS, "joblib": {"load"},
                  "shelve": {"open"}, "marshal": {"load", "loads"}}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
# attribute calls that deserialise code or pickles whatever their arguments
UNSAFE_ATTRIBUTE_CALLS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "load_all"),
                          ("jit", "load"), ("pd", "read_pickle"), ("pandas", "read_pickle"), ("os", "system"),
                          ("os", "popen"), ("torch", "package")}


pytestmark = pytest.mark.usefixtures("one_thread")


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(source: str, where: str) -> list[str]:
    """Every way ``source`` could execute code from a file's content."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_LOADERS:
            loaders = UNSAFE_LOADERS[(node.module or "").split(".")[0]]
            found += [f"{line}: imports {node.module}.{a.name}" for a in node.names if a.name in loaders | {"*"}]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{line}: calls {func.id}()")
            if isinstance(func, ast.Attribute):
                owner = _name(func.value)
                if (owner, func.attr) in UNSAFE_ATTRIBUTE_CALLS or func.attr in UNSAFE_LOADERS.get(owner, ()):
                    found.append(f"{line}: calls {owner}.{func.attr}()")
                if func.attr == "load" and owner == "torch" and not _is_true(_keyword(node, "weights_only")):
                    found.append(f"{line}: torch.load without weights_only=True")
            if _is_true(_keyword(node, "allow_pickle")):
                found.append(f"{line}: allow_pickle=True")
            if _is_true(_keyword(node, "trust_remote_code")):
                found.append(f"{line}: trust_remote_code=True")
            if _is_true(_keyword(node, "shell")):
                found.append(f"{line}: shell=True")
    return found


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_package_sources_never_execute_file_content() -> None:
    files = _sources()
    assert len(files) > 40, "the scan found too few modules"
    found = [v for path in files for v in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize("planted", [
    "import pickle\npickle.loads(data)",
    "from dill import loads",
    "from pickle import *",
    "pickle.Unpickler(f).load()",
    "joblib.load(path)",
    "marshal.loads(data)",
    "torch.load(path)",
    "torch.load(path, weights_only=False)",
    "np.load(path, allow_pickle=True)",
    "eval(text)",
    "exec(compile(text, 'f', 'exec'))",
    "yaml.load(text, Loader=yaml.Loader)",
    "torch.jit.load(path)",
    "pd.read_pickle(path)",
    "AutoModel.from_pretrained(name, trust_remote_code=True)",
    "subprocess.run(cmd, shell=True)",
])
def test_the_scan_catches_planted_violations(planted: str) -> None:
    assert violations(planted, "planted.py")


def test_the_scan_allows_the_safe_forms() -> None:
    safe = ("torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\nmodel.eval()\n"
            "yaml.safe_load(text)\nre.compile('x')\nsafetensors.torch.load_file(p)\n"
            "import pickle\ntry:\n    torch.load(p, weights_only=True)\nexcept pickle.UnpicklingError:\n    pass\n")
    assert violations(safe, "safe.py") == []


def test_open_clip_checkpoints_must_be_safetensors(tmp_path: Path) -> None:
    from benchmark.embedding import OpenClipEmbedder

    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"not even a pickle")
    with pytest.raises(ModelLoadError, match=r"clip\.pt: .*only from \.safetensors"):
        OpenClipEmbedder(model="ViT-B-32", checkpoint=str(weights))


# -- configs cannot steer writes outside output_dir / cache_dir ---------------------------------------

HOSTILE_IDS = ["../escape", "..", ".hidden", "a/b", "/abs", "a\\b", "x" * 101, "", "a b", "ünï"]


@pytest.mark.parametrize("run_id", HOSTILE_IDS)
def test_run_ids_that_could_leave_the_output_dir_are_refused(run_id: str) -> None:
    with pytest.raises(ConfigError, match=r"^cfg: run_id: "):
        validate_config({"run_id": run_id}, "cfg")


@pytest.mark.parametrize("label", HOSTILE_IDS)
def test_method_labels_that_could_leave_the_samples_dir_are_refused(label: str) -> None:
    # The label is part of every thumbnail's file name (samples/<label>__<set>__<prompt>__<i>.png).
    with pytest.raises(ConfigError, match=r"^cfg: methods\[0\]\.label: "):
        validate_config({"methods": [{"name": "baseline", "label": label}]}, "cfg")


def test_a_run_writes_only_inside_output_and_cache_dirs(tmp_path: Path, tones_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path the run builds comes from validated names; the edge-case values that are allowed
    (dots inside a label or run id) still land inside the two folders."""
    from benchmark.config import load_config
    from benchmark.runner import run

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = {p for p in tmp_path.rglob("*")}
    config = load_config(None, {
        "profile": "tiny", "methods": [{"name": "baseline", "label": "a..b"}], "prompt_sets": [str(tones_file)],
        "classifiers": ["palette"], "images_per_prompt": 1, "metrics": {"bootstrap": 0},
        "output_dir": "out", "cache_dir": "cache", "run_id": "x..y"})
    run_dir = run(config, progress=False)
    assert run_dir.resolve() == (work / "out" / "x..y").resolve()
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if p.is_file()
               and not (p.resolve().is_relative_to(work / "out") or p.resolve().is_relative_to(work / "cache"))]
    assert outside == []
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples and all(name.startswith("a..b__tones__") for name in samples)
    assert json.loads((run_dir / "results.json").read_text())["run_id"] == "x..y"
    assert set(os.listdir(work)) == {"out", "cache"}
