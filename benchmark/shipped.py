"""Prepared method artefacts that travel with a profile, so that a run needs no training.

A method's artefact folder in the cache (``<cache>/artefacts/<method>/<key[:16]>/``) is keyed by
everything its preparation depends on (method, parameters, base model, sampler, data). After the
first preparation the runner writes ``manifest.json`` there:

    {"method": ..., "key": ..., "params": {...}, "base": ..., "data": ..., "sampler": {...},
     "train_seconds": 271.3, "files": {"ddm.safetensors": "<sha256>", ...}, "versions": {...}}

``export`` copies such a folder, manifest included, into a store (for the world:
``benchmark/world/weights[-alt]/methods/``); ``seed_from`` copies it back into an empty cache folder
with the same key, after checking every file against the manifest's sha256. The method then finds
its artefacts where it looks for them and loads instead of training; it never knows where they
came from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmark.cache import atomic_write
from benchmark.errors import ModelLoadError
from benchmark.hashing import hash_file

MANIFEST = "manifest.json"


def artefact_files(folder: Path) -> dict[str, str]:
    """sha256 of every file a method left in ``folder`` (the manifest itself excluded)."""
    return {p.name: hash_file(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when there is none; an unreadable one is an error naming it."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' mapping")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable artefact manifest ({exc})") from None
    return manifest


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Record ``info`` and the hashes of the folder's files as its manifest; returns it."""
    manifest = {**info, "files": artefact_files(folder)}
    atomic_write(folder / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def verify(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest names is present and has its recorded sha256."""
    for name, sha in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ModelLoadError(f"{path}: missing (listed in {folder / MANIFEST})")
        if hash_file(path) != sha:
            raise ModelLoadError(f"{path}: sha256 does not match {folder / MANIFEST} (corrupt or modified file)")


def store_folder(store: Path, method: str, key: str) -> Path:
    return Path(store) / method / key[:16]


def find(stores: Iterable[Path], method: str, key: str) -> Path | None:
    """The first store folder holding ``method``'s artefacts for exactly ``key``."""
    for store in stores:
        folder = store_folder(store, method, key)
        manifest = read_manifest(folder) if folder.is_dir() else None
        if manifest is not None and manifest.get("key") == key:
            return folder
    return None


def seed_from(stores: Iterable[Path], method: str, key: str, workdir: Path) -> Path | None:
    """Copy shipped artefacts for ``key`` into ``workdir`` when it holds no manifest yet.

    Returns the store folder used, or None (nothing shipped for this key, or the cache already has
    a prepared folder). A shipped file that fails its sha256 is an error naming it: a silent retrain
    would hide a corrupt checkout."""
    if (workdir / MANIFEST).exists():
        return None
    folder = find(stores, method, key)
    if folder is None:
        return None
    manifest = read_manifest(folder)
    assert manifest is not None
    verify(folder, manifest)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in [*manifest["files"], MANIFEST]:
        atomic_write(workdir / name, (folder / name).read_bytes())
    return folder


def export(workdir: Path, store: Path, method: str) -> Path:
    """Copy a prepared cache folder (it must hold a manifest) into ``store``; returns the new folder."""
    manifest = read_manifest(workdir)
    if manifest is None:
        raise ModelLoadError(f"{workdir}: no {MANIFEST}; prepare the method with this version first")
    verify(workdir, manifest)
    dest = store_folder(store, method, manifest["key"])
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in [*manifest["files"], MANIFEST]:
        shutil.copy2(workdir / name, dest / name)
    return dest
