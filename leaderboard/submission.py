"""Submissions: pack a run into a bundle, validate an untrusted bundle, merge it into the leaderboard.

A bundle is a ``.zip`` (or ``.tar.gz``) holding exactly::

    results.json          the run's results (docs/results-format.md)
    predictions.parquet   one row per image
    features.safetensors  each image's FID features and CLIP embedding (leaderboard/quality_check.py)
    manifest.json         {"schema_version": 1, "files": {name: sha256}, "thumbnails": [...]}
    thumbnails/*.png      sample thumbnails

Validation treats every byte as hostile. Sizes, member count and compression ratio are checked from
the archive's directory before anything is extracted; members are then copied into a private
temporary directory with byte counters (a lying header cannot inflate past the limits). Only the
kinds of files above are accepted (no pickles, executables, links or devices; no path leaving
the bundle). Every hash is checked, every fairness metric is recomputed from the per-image
predictions with the bootstrap settings the run recorded, FID and CLIP scores from the per-image
features, and every number is range-checked.
Each rejection is a :class:`SubmissionRejected`: one line naming the rule broken. An accepted
bundle is written to ``entries/<run_id>/`` by an atomic rename, so a failed validation leaves
nothing behind.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmark import __version__
from benchmark.errors import BenchError, DataError
from benchmark.hashing import hash_bytes, hash_file
from benchmark.quality import FEATURES_FILE
from leaderboard.quality_ahead import Checker, in_process
from leaderboard.rundir import MAX_RESULTS_BYTES, PREDICTIONS_FILE, RESULTS_FILE, probability_columns

MANIFEST_FILE = "manifest.json"
OnChecked = Callable[[Path, dict, dict], None]  # (bundle folder, results, manifest) once its structure has passed
THUMBNAIL_DIR = "thumbnails"
SCHEMA_VERSION = 1
MANIFEST_VERSION = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARQUET_MAGIC = b"PAR1"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# One plain component per path segment: no dot-files, no "..", nothing a shell or filesystem treats specially.
MEMBER_RE = re.compile(r"(results\.json|predictions\.parquet|features\.safetensors|manifest\.json|thumbnails/[A-Za-z0-9_-][A-Za-z0-9._-]{0,120}\.png)")
FORBIDDEN_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".npy", ".npz", ".joblib", ".exe", ".dll", ".so",
                      ".dylib", ".sh", ".bat", ".cmd", ".py", ".pyc", ".js", ".html", ".htm", ".svg", ".jar")
EXECUTABLE_MAGIC = (b"\x7fELF", b"MZ", b"#!", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
REL_TOL = 1e-6
ABS_TOL = 1e-9

# Value ranges by metric (inclusive); a metric not listed must only be finite.
RANGES: dict[str, tuple[float, float]] = {
    "fd": (0.0, math.sqrt(2.0)),
    "spd": (0.0, 1.0),
    "entropy": (0.0, 1.0),
    "kl": (0.0, math.inf),
    "deviation_ratio": (0.0, math.inf),
    "invdiff_bias": (0.0, math.inf),
    "fid": (0.0, math.inf),
    "clip_t": (0.0, 100.0),
    "clip_i": (0.0, 100.0),
    "no_subject_rate": (0.0, 1.0),
    "unet_evals": (0.0, math.inf),
    "seconds_per_image": (0.0, math.inf),
}
RANGE_SLACK = 1e-9
PARQUET_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
                 pa.types.is_boolean)
REQUIRED_PREDICTION_COLUMNS = ("method", "prompt_set", "prompt_id", "index", "seed", "image_key", "image_sha256")
OPTIONAL_PREDICTION_COLUMNS = ("prompt",)  # what the runner writes besides the required ones and c/... columns


@dataclass(frozen=True)
class Limits:
    """Hard limits on an untrusted bundle; all are checked before any member is extracted."""

    max_bundle_bytes: int = 256 << 20
    max_total_bytes: int = 512 << 20
    max_member_bytes: int = 256 << 20
    max_members: int = 5000
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 1 << 20  # small members compress arbitrarily well; only judge large ones
    max_json_bytes: int = MAX_RESULTS_BYTES  # the page builder's own limit: what is accepted can be built
    max_thumbnail_bytes: int = 4 << 20
    max_thumbnail_side: int = 2048
    max_rows: int = 5_000_000
    # the predictions table once decoded (parquet's own count of uncompressed bytes): a column of one
    # repeated value compresses to nothing and would still fill memory when read
    max_decoded_bytes: int = 1 << 30


DEFAULT_LIMITS = Limits()


class SubmissionRejected(BenchError):
    """A bundle broke one validation rule; the message is one line naming it."""

    def __init__(self, rule: str, detail: str, bundle: str | Path | None = None) -> None:
        self.rule = rule
        self.detail = " ".join(str(detail).split())
        where = f"{Path(bundle).name}: " if bundle is not None else ""
        super().__init__(f"{where}rejected [{rule}]: {self.detail}")


def _reject(rule: str, detail: str) -> SubmissionRejected:
    return SubmissionRejected(rule, detail)


# --- packing ---------------------------------------------------------------------------------------


def _thumbnail_files(run_dir: Path) -> list[Path]:
    samples = run_dir / "samples"
    if not samples.is_dir():
        return []
    return sorted(p for p in samples.rglob("*.png") if p.is_file() and not p.is_symlink())


def parse_sample_name(name: str) -> dict[str, Any] | None:
    """``<method>__<prompt_set>__<prompt_id>__<index>.png`` (the runner's sample names) as fields."""
    stem = name[:-4] if name.endswith(".png") else name
    parts = stem.rsplit("__", 3)
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return {"method": parts[0], "prompt_set": parts[1], "prompt_id": parts[2], "index": int(parts[3])}


def pack(run_dir: str | Path, out: str | Path | None = None, limits: Limits = DEFAULT_LIMITS,
         label: str | None = None, code: str | None = None) -> Path:
    """Write a bundle (``.zip``) of a run directory and check it with :func:`validate_bundle`.
    ``label`` names the entry on the page (e.g. "DiffLens, K=80 (lab X)"); ``code`` points to the
    code that made it (a repository URL at a commit).

    Thumbnails are renamed ``thumbnails/<n>.png``; the manifest maps each to its method, prompt
    set, prompt and image index, so no name from the run has to survive as a file name.
    """
    run_dir = Path(run_dir)
    for name in (RESULTS_FILE, PREDICTIONS_FILE):
        if not (run_dir / name).is_file():
            raise BenchError(f"{run_dir}: not a run directory ({name} missing)")
    results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    run_id = str(results.get("run_id") or run_dir.name)
    files: dict[str, Path] = {RESULTS_FILE: run_dir / RESULTS_FILE, PREDICTIONS_FILE: run_dir / PREDICTIONS_FILE}
    if (run_dir / FEATURES_FILE).is_file():
        files[FEATURES_FILE] = run_dir / FEATURES_FILE
    thumbs: list[dict[str, Any]] = []
    for i, path in enumerate(_thumbnail_files(run_dir)):
        member = f"{THUMBNAIL_DIR}/{i:05d}.png"
        files[member] = path
        fields = parse_sample_name(path.name) or {"method": None, "prompt_set": None, "prompt_id": None, "index": None}
        thumbs.append({"file": member, **fields})
    manifest = {
        "schema_version": MANIFEST_VERSION,
        "run_id": run_id,
        "files": {name: hash_file(path) for name, path in files.items()},
        "thumbnails": thumbs,
        **{k: v for k, v in (("label", label), ("code", code)) if v is not None},
    }
    for key, value in (("label", label), ("code", code)):
        if value is not None and not ENTRY_TEXT[key].fullmatch(value):
            raise BenchError(f"--{key}: {value[:80]!r} is not plain printable ASCII ({ENTRY_TEXT[key].pattern})")
    out_path = Path(out) if out is not None else run_dir.parent / f"{run_id}.zip"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in files.items():
            zf.write(path, name)
        zf.writestr(MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True))
    try:
        validate_bundle(tmp, limits=limits, label=out_path.name)
    except BenchError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out_path)
    return out_path


# --- safe extraction -------------------------------------------------------------------------------


def _check_member_name(name: str, seen: set[str]) -> str | None:
    """Return the member name to extract, None for a directory entry; reject unsafe names."""
    if "\x00" in name or "\\" in name:
        raise _reject("unsafe-path", f"member name {name!r} contains a NUL or backslash")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise _reject("unsafe-path", f"member {name!r} is an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise _reject("unsafe-path", f"member {name!r} leaves the bundle ('..')")
    clean = "/".join(p for p in parts if p not in ("", "."))
    folded = clean.casefold()
    if folded in seen:
        raise _reject("duplicate-member", f"member {clean!r} appears more than once")
    seen.add(folded)
    if name.endswith("/") or clean in ("", THUMBNAIL_DIR):
        return None
    if clean.lower().endswith(FORBIDDEN_SUFFIXES):
        raise _reject("file-type", f"member {clean!r} has a forbidden type (pickles, executables and scripts are refused)")
    if not MEMBER_RE.fullmatch(clean):
        raise _reject("file-type", f"member {clean!r} is not an expected file "
                      "(results.json, predictions.parquet, manifest.json, thumbnails/<name>.png)")
    return clean


def _check_sizes(entries: list[tuple[str, int, int]], bundle_bytes: int, limits: Limits) -> None:
    """entries: (name, uncompressed, compressed) as declared by the archive directory."""
    if len(entries) > limits.max_members:
        raise _reject("member-count", f"{len(entries)} members, more than the limit of {limits.max_members}")
    total = 0
    for name, size, csize in entries:
        if size > limits.max_member_bytes:
            raise _reject("member-size", f"member {name!r} is {size} bytes uncompressed, over {limits.max_member_bytes}")
        if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(csize, 1):
            raise _reject("compression-ratio", f"member {name!r} expands {size / max(csize, 1):.0f}x (archive bomb?)")
        total += size
    if total > limits.max_total_bytes:
        raise _reject("total-size", f"{total} bytes uncompressed, over the limit of {limits.max_total_bytes}")
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(bundle_bytes, 1):
        raise _reject("compression-ratio", f"bundle expands {total / max(bundle_bytes, 1):.0f}x (archive bomb?)")


def _copy_bounded(src: IO[bytes], dest: Path, declared: int, name: str, budget: list[int]) -> None:
    """Copy at most ``declared`` bytes; a member that produces more than its header said is refused."""
    written = 0
    with open(dest, "xb") as out:
        while chunk := src.read(1 << 16):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > declared or budget[0] < 0:
                raise _reject("member-size", f"member {name!r} decompresses to more than its declared size")
            out.write(chunk)
    if written != declared:
        raise _reject("bundle-format", f"member {name!r} is truncated ({written} of {declared} bytes)")


def _extract_zip(path: Path, dest: Path, limits: Limits) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _reject("bundle-format", f"not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        seen: set[str] = set()
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        for info in infos:
            name = _check_member_name(info.filename, seen)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _reject("link", f"member {info.filename!r} is a symbolic link")
            # Many zip writers leave the type bits empty; only a type that is set can be wrong.
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _reject("special-file", f"member {info.filename!r} is not a regular file")
            if info.flag_bits & 0x1:
                raise _reject("encrypted", f"member {info.filename!r} is encrypted")
            if name is None:
                continue
            if mode & 0o111 and not stat.S_ISDIR(mode):
                raise _reject("file-type", f"member {name!r} is marked executable")
            plan.append((info, name))
        _check_sizes([(n, i.file_size, i.compress_size) for i, n in plan], path.stat().st_size, limits)
        budget = [limits.max_total_bytes]
        for info, name in plan:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    _copy_bounded(src, target, info.file_size, name, budget)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                raise _reject("bundle-format", f"member {name!r} is corrupt ({exc})") from None


class _BoundedReader(io.RawIOBase):
    """A read-only stream that refuses to yield more than ``limit`` decompressed bytes (gzip bombs)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw, self.left = raw, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(min(len(buffer), self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise _reject("total-size", "the compressed stream expands past the size limit (archive bomb?)")
        buffer[: len(data)] = data
        return len(data)


def _extract_tar(path: Path, dest: Path, limits: Limits) -> None:
    header_room = 1536 * (limits.max_members + 2) + 20 * 512
    try:
        raw = gzip.open(path, "rb") if path.name.endswith((".gz", ".tgz")) else open(path, "rb")
    except OSError as exc:
        raise _reject("bundle-format", f"not a readable tar archive ({exc})") from None
    stream = io.BufferedReader(_BoundedReader(raw, limits.max_total_bytes + header_room))
    seen: set[str] = set()
    budget = [limits.max_total_bytes]
    entries: list[tuple[str, int, int]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for member in tf:
                name = _check_member_name(member.name, seen)
                if member.issym() or member.islnk():
                    raise _reject("link", f"member {member.name!r} is a link")
                if not (member.isreg() or member.isdir()):
                    raise _reject("special-file", f"member {member.name!r} is a device, FIFO or other special file")
                if name is None:
                    continue
                if member.mode & 0o111:
                    raise _reject("file-type", f"member {name!r} is marked executable")
                entries.append((name, member.size, member.size))
                # Sizes come from headers we have already read; check them before reading data.
                _check_sizes(entries, path.stat().st_size, limits)
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                if src is None:
                    raise _reject("special-file", f"member {name!r} has no data")
                _copy_bounded(src, target, member.size, name, budget)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _reject("bundle-format", f"not a readable tar archive ({exc})") from None
    finally:
        raw.close()
    total = sum(e[1] for e in entries)
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(path.stat().st_size, 1):
        raise _reject("compression-ratio", f"bundle expands {total / path.stat().st_size:.0f}x (archive bomb?)")


def _extract(bundle: Path, dest: Path, limits: Limits) -> None:
    if bundle.is_symlink() or not bundle.is_file():
        raise _reject("bundle-format", "the bundle is not a regular file")
    size = bundle.stat().st_size
    if size > limits.max_bundle_bytes:
        raise _reject("bundle-size", f"bundle is {size} bytes, over the limit of {limits.max_bundle_bytes}")
    with open(bundle, "rb") as f:
        head = f.read(4)
    name = bundle.name.lower()
    if head.startswith(b"PK"):
        _extract_zip(bundle, dest, limits)
    elif head.startswith(b"\x1f\x8b") and name.endswith((".tar.gz", ".tgz")):
        _extract_tar(bundle, dest, limits)
    elif name.endswith(".tar"):
        _extract_tar(bundle, dest, limits)
    else:
        raise _reject("bundle-format", "not a .zip or .tar.gz archive")


# --- content checks --------------------------------------------------------------------------------


def _read_json(path: Path, name: str, limits: Limits) -> Any:
    data = path.read_bytes()
    if len(data) > limits.max_json_bytes:
        raise _reject("member-size", f"{name} is larger than {limits.max_json_bytes} bytes")
    if data.startswith(PICKLE_MAGIC):
        raise _reject("file-type", f"{name} is a pickle, not JSON")

    def constant(token: str) -> Any:
        raise _reject("non-finite", f"{name} contains {token}")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=constant)
    except SubmissionRejected:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _reject("json", f"{name} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None


# What a submitter may say about an entry (shown on the page): printable ASCII, short, no markup needed.
ENTRY_TEXT = {
    "label": re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._,:;()+/-]{0,79}"),
    "code": re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:/?#@!$&*+,;=%-]{0,199}"),
}


def _check_manifest(root: Path, files: list[str], limits: Limits) -> dict[str, Any]:
    manifest = _read_json(root / MANIFEST_FILE, MANIFEST_FILE, limits)
    if not isinstance(manifest, dict) or manifest.get("schema_version") != MANIFEST_VERSION:
        raise _reject("manifest", f"{MANIFEST_FILE}: schema_version must be {MANIFEST_VERSION}")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in listed.items()):
        raise _reject("manifest", f"{MANIFEST_FILE}: files must map member names to sha256 strings")
    present = set(files) - {MANIFEST_FILE}
    for name in sorted(present - set(listed)):
        raise _reject("unlisted-file", f"{name} is in the bundle but not in {MANIFEST_FILE}")
    for name in sorted(set(listed) - present):
        raise _reject("missing-file", f"{name} is listed in {MANIFEST_FILE} but not in the bundle")
    for name in sorted(listed):
        if not SHA256_RE.fullmatch(listed[name]):
            raise _reject("manifest", f"{MANIFEST_FILE}: files[{name!r}] is not a sha256 hex digest")
        actual = hash_file(root / name)
        if actual != listed[name]:
            raise _reject("hash-mismatch", f"{name}: sha256 {actual[:12]}… does not match the manifest ({listed[name][:12]}…)")
    thumbs = manifest.get("thumbnails", [])
    if not isinstance(thumbs, list) or not all(isinstance(t, dict) for t in thumbs):
        raise _reject("manifest", f"{MANIFEST_FILE}: thumbnails must be a list of objects")
    for t in thumbs:
        if t.get("file") not in present or not str(t.get("file")).startswith(f"{THUMBNAIL_DIR}/"):
            raise _reject("manifest", f"{MANIFEST_FILE}: thumbnail {str(t.get('file'))[:80]!r} is not a bundled PNG")
        for key in ("method", "prompt_set", "prompt_id"):
            if t.get(key) is not None and not isinstance(t.get(key), str):
                raise _reject("manifest", f"{MANIFEST_FILE}: thumbnail {t['file']!r}: {key} must be a string")
        if t.get("index") is not None and not (isinstance(t["index"], int) and not isinstance(t["index"], bool)):
            raise _reject("manifest", f"{MANIFEST_FILE}: thumbnail {t['file']!r}: index must be an integer")
    for key, pattern in ENTRY_TEXT.items():
        value = manifest.get(key)
        if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
            raise _reject("manifest", f"{MANIFEST_FILE}: {key} must be plain printable ASCII ({pattern.pattern})")
    return manifest


def _check_thumbnail(path: Path, name: str, limits: Limits) -> None:
    data = path.read_bytes()
    if len(data) > limits.max_thumbnail_bytes:
        raise _reject("thumbnail", f"{name} is larger than {limits.max_thumbnail_bytes} bytes")
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        raise _reject("file-type", f"{name} is not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= limits.max_thumbnail_side and 0 < height <= limits.max_thumbnail_side):
        raise _reject("thumbnail", f"{name} is {width}x{height} pixels, over {limits.max_thumbnail_side} per side")


def _type(value: Any, types: type | tuple[type, ...], where: str, nullable: bool = False) -> Any:
    if value is None and nullable:
        return value
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _reject("schema", f"{where}: expected {_tname(types)}, got bool")
    if not isinstance(value, types):
        raise _reject("schema", f"{where}: expected {_tname(types)}, got {type(value).__name__}")
    return value


def _tname(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


RECORD_FIELDS = {
    "method": (str, False),
    "prompt_set": (str, False),
    "prompt_id": (str, True),
    "classifier": (str, True),
    "attribute": (str, True),
    "metric": (str, False),
    "variant": (str, True),
    "value": ((int, float), False),
    "ci_low": ((int, float), True),
    "ci_high": ((int, float), True),
    "n": (int, False),
    "higher_is_better": (bool, False),
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


# Names shown on the page and used in exported file names: plain ASCII, so a Cyrillic "а", a
# right-to-left override or a "!" cannot pass for, or collide with, another entry's name.
NAME_PATTERNS = {
    "method": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
    "prompt_set": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
    "classifier": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
    "metric": re.compile(r"[a-z][a-z0-9_]{0,39}"),
    "variant": re.compile(r"[a-z0-9][a-z0-9._-]{0,39}"),
    "attribute": re.compile(r"[A-Za-z0-9_]{1,40}(×[A-Za-z0-9_]{1,40}){0,3}"),
}


def check_results(results: Any) -> dict[str, Any]:
    """Schema, versions, ranges and finiteness of a parsed ``results.json``."""
    _type(results, dict, "results.json")
    if results.get("schema_version") != SCHEMA_VERSION:
        raise _reject("version", f"results.json: schema_version {results.get('schema_version')!r} is not {SCHEMA_VERSION}")
    run_id = _type(results.get("run_id"), str, "results.json: run_id")
    if not RUN_ID_RE.fullmatch(run_id):
        raise _reject("schema", f"results.json: run_id {run_id[:60]!r} must match {RUN_ID_RE.pattern}")
    for key in ("config", "versions", "models", "prompt_sets"):
        _type(results.get(key), dict, f"results.json: {key}")
    versions = results["versions"]
    for key, value in versions.items():
        _type(value, str, f"results.json: versions.{key}", nullable=True)
    ours = _version_tuple(__version__)
    theirs = versions.get("debias-bench")
    if not theirs:
        raise _reject("version", "results.json: versions.debias-bench is missing")
    # 0.x releases may change metric definitions between minors; later, majors do.
    keep = 2 if ours[0] == 0 else 1
    if _version_tuple(theirs)[:keep] != ours[:keep]:
        raise _reject("version", f"results.json: made with debias-bench {theirs}, this leaderboard runs {__version__}")
    metrics_cfg = _type(results["config"].get("metrics", {}), dict, "results.json: config.metrics")
    boot = _type(metrics_cfg.get("bootstrap", 1000), int, "results.json: config.metrics.bootstrap")
    _type(metrics_cfg.get("seed", 0), int, "results.json: config.metrics.seed")
    if not 0 <= boot <= 100_000:
        raise _reject("range", f"results.json: config.metrics.bootstrap {boot} outside [0, 100000]")
    classifiers = _type(results["models"].get("classifiers", {}), dict, "results.json: models.classifiers")
    for cname, info in classifiers.items():
        attrs = _type(_type(info, dict, f"results.json: models.classifiers.{cname}").get("attributes"), dict,
                      f"results.json: models.classifiers.{cname}.attributes")
        for attr, classes in attrs.items():
            _type(classes, list, f"results.json: models.classifiers.{cname}.attributes.{attr}")
            if not classes or not all(isinstance(c, str) for c in classes):
                raise _reject("schema", f"results.json: models.classifiers.{cname}.attributes.{attr}: expected class names")
    for ps, info in results["prompt_sets"].items():
        _type(info, dict, f"results.json: prompt_sets.{ps}")
        prompts = _type(info.get("prompts"), list, f"results.json: prompt_sets.{ps}.prompts")
        for i, p in enumerate(prompts):
            _type(p, dict, f"results.json: prompt_sets.{ps}.prompts[{i}]")
            _type(p.get("id"), str, f"results.json: prompt_sets.{ps}.prompts[{i}].id")
            _type(p.get("text"), str, f"results.json: prompt_sets.{ps}.prompts[{i}].text")
            _type(p.get("named", {}), dict, f"results.json: prompt_sets.{ps}.prompts[{i}].named", nullable=True)
    _type(results.get("failures", []), list, "results.json: failures")
    records = _type(results.get("metrics"), list, "results.json: metrics")
    if not records:
        raise _reject("schema", "results.json: metrics is empty")
    keys: set[tuple] = set()
    for i, rec in enumerate(records):
        where = f"results.json: metrics[{i}]"
        _type(rec, dict, where)
        for field_name, (types, nullable) in RECORD_FIELDS.items():
            _type(rec.get(field_name), types, f"{where}.{field_name}", nullable=nullable)
        _check_record_numbers(rec, where)
        key = record_key(rec)
        if key in keys:
            raise _reject("duplicate-record", f"{where}: a second record for {_key_text(key)}")
        keys.add(key)
        if rec["prompt_set"] not in results["prompt_sets"]:
            raise _reject("schema", f"{where}.prompt_set: {rec['prompt_set'][:60]!r} is not in prompt_sets")
        for field_name, pattern in NAME_PATTERNS.items():
            value = rec.get(field_name)
            if value is not None and not pattern.fullmatch(value):
                raise _reject("name", f"{where}.{field_name}: {value[:60]!r} must match {pattern.pattern} "
                              "(ASCII names: no look-alike letters, controls or punctuation that could pose "
                              "as another entry's name or file)")
    return results


def _check_record_numbers(rec: dict[str, Any], where: str) -> None:
    for name in ("value", "ci_low", "ci_high"):
        x = rec.get(name)
        if x is not None and not math.isfinite(x):
            raise _reject("non-finite", f"{where}.{name} is {x}")
    if rec["n"] < 0:
        raise _reject("range", f"{where}.n is negative")
    lo, hi = RANGES.get(rec["metric"], (-math.inf, math.inf))
    for name in ("value", "ci_low", "ci_high"):
        x = rec.get(name)
        if x is not None and not (lo - RANGE_SLACK <= x <= hi + RANGE_SLACK):
            raise _reject("range", f"{where}.{name} = {x} is outside [{lo}, {hi}] for metric {rec['metric'][:40]!r}")
    if (rec.get("ci_low") is None) != (rec.get("ci_high") is None):
        raise _reject("schema", f"{where}: ci_low and ci_high must both be set or both be null")
    if rec.get("ci_low") is not None and rec["ci_low"] > rec["ci_high"] + RANGE_SLACK:
        raise _reject("range", f"{where}: ci_low {rec['ci_low']} is above ci_high {rec['ci_high']}")


def record_key(rec: dict[str, Any]) -> tuple:
    return tuple(rec.get(k) for k in ("method", "prompt_set", "prompt_id", "classifier", "attribute", "metric", "variant"))


def _key_text(key: tuple) -> str:
    names = ("method", "prompt_set", "prompt_id", "classifier", "attribute", "metric", "variant")
    return ", ".join(f"{n}={str(v)[:40]!r}" for n, v in zip(names, key, strict=True) if v is not None)


def _decoded_bytes(path: Path, pfile: pq.ParquetFile) -> int:
    """What the table takes in memory once read into pandas, estimated without decoding it: 8 bytes per
    number, and for strings their lengths (read dictionary-encoded, each value's length counted per row)
    plus a Python object's overhead."""
    import pyarrow.compute as pc

    rows, schema = pfile.metadata.num_rows, pfile.schema_arrow
    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    total = rows * 8 * (len(schema) - len(strings)) + rows * 50 * len(strings)
    if strings:
        coded = pq.read_table(path, columns=strings, read_dictionary=strings)
        for column in coded.columns:
            for chunk in column.chunks:
                if pa.types.is_dictionary(chunk.type):
                    lengths = pc.binary_length(chunk.dictionary).fill_null(0)
                    total += int(pc.sum(pc.take(lengths, chunk.indices.fill_null(0))).as_py() or 0)
                else:
                    total += int(chunk.nbytes)
    return total


def read_predictions_safely(path: Path, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """Read an untrusted parquet file: magic bytes, plain column types only, no pandas metadata."""
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(path.stat().st_size - 4, 0))
        tail = f.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise _reject("file-type", f"{PREDICTIONS_FILE} is not a parquet file")
    try:
        pfile = pq.ParquetFile(path)
        schema = pfile.schema_arrow
        if pfile.metadata.num_rows > limits.max_rows:
            raise _reject("predictions", f"{PREDICTIONS_FILE} has {pfile.metadata.num_rows} rows, over {limits.max_rows}")
        for fld in schema:
            if not any(check(fld.type) for check in PARQUET_TYPES):
                raise _reject("predictions", f"{PREDICTIONS_FILE}: column {fld.name[:60]!r} has type {fld.type}, "
                              "only strings, integers, floats and booleans are accepted")
            known = fld.name in REQUIRED_PREDICTION_COLUMNS or fld.name in OPTIONAL_PREDICTION_COLUMNS
            if not known and fld.name.count("/") not in (1, 2):
                raise _reject("predictions", f"{PREDICTIONS_FILE}: unknown column {fld.name[:60]!r} (expected the "
                              "runner's columns and <classifier>/has_subject, <classifier>/<attribute>/<class>)")
        decoded = _decoded_bytes(path, pfile)
        if decoded > limits.max_decoded_bytes:
            raise _reject("predictions", f"{PREDICTIONS_FILE} decodes to {decoded} bytes, over {limits.max_decoded_bytes}")
        table = pfile.read()
    except SubmissionRejected:
        raise
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise _reject("predictions", f"{PREDICTIONS_FILE} is unreadable ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    # Dropping the schema metadata means pandas never sees user-controlled type descriptions.
    return table.replace_schema_metadata(None).to_pandas()


def check_predictions(pred: pd.DataFrame, results: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """Columns, finiteness and probability simplex; returns {(classifier, attribute): [columns]}."""
    for col in REQUIRED_PREDICTION_COLUMNS:
        if col not in pred.columns:
            raise _reject("predictions", f"{PREDICTIONS_FILE}: column {col!r} is missing")
    if len(pred.columns) != len(set(pred.columns)):
        raise _reject("predictions", f"{PREDICTIONS_FILE}: duplicate column names")
    if pred.empty:
        raise _reject("predictions", f"{PREDICTIONS_FILE} has no rows")
    dup = pred.duplicated(["method", "prompt_set", "prompt_id", "index"])
    if dup.any():
        r = pred[dup].iloc[0]
        raise _reject("predictions", f"{PREDICTIONS_FILE}: image {r['method']!s:.40}/{r['prompt_id']!s:.40}/{r['index']} appears twice")
    classifiers = results["models"].get("classifiers", {})
    groups = probability_columns(list(pred.columns))
    out: dict[tuple[str, str], list[str]] = {}
    for (cname, attr), cols in groups.items():
        declared = classifiers.get(cname, {}).get("attributes", {}).get(attr)
        names = [k for k, _ in cols]
        if declared != names:
            raise _reject("predictions", f"{PREDICTIONS_FILE}: columns {cname[:40]}/{attr[:40]}/* do not match the classes "
                          "declared in models.classifiers")
        probs = pred[[c for _, c in cols]].to_numpy(dtype=np.float64)
        if not np.isfinite(probs).all():
            raise _reject("non-finite", f"{PREDICTIONS_FILE}: {cname[:40]}/{attr[:40]} has NaN or Inf probabilities")
        if (probs < -1e-6).any() or (probs > 1 + 1e-6).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise _reject("probabilities", f"{PREDICTIONS_FILE}: {cname[:40]}/{attr[:40]} rows are not probability "
                          "distributions (each in [0, 1], summing to 1)")
        out[(cname, attr)] = [c for _, c in cols]
    for cname, info in classifiers.items():
        for attr in info.get("attributes", {}):
            if (cname, attr) not in out:
                raise _reject("predictions", f"{PREDICTIONS_FILE}: no probability columns for {cname[:40]}/{attr[:40]}")
    known = {(ps, p["id"]) for ps, info in results["prompt_sets"].items() for p in info["prompts"]}
    pairs = set(zip(pred["prompt_set"].astype(str), pred["prompt_id"].astype(str), strict=True))
    if not pairs <= known:
        ps, pid = sorted(pairs - known)[0]
        raise _reject("predictions", f"{PREDICTIONS_FILE}: prompt {ps[:40]}/{pid[:40]} is not in results.json prompt_sets")
    return out


# --- declarations against the registry -------------------------------------------------------------


def check_declarations(results: dict[str, Any]) -> None:
    """What the recomputation takes as given comes from the registry, not from the bundle.

    For a prompt set the project registers, every declared prompt (id, text, named attributes), the
    classes and the target distribution must equal the registered set's (a run may evaluate a subset
    of its prompts, or another image count); a registered classifier must carry the registered
    weights' fingerprint and its declared confusion matrices must equal the registered ones. The
    registered values then replace the declared ones, so a consistent forgery (rewrite the target and
    the claimed FD together) is refused instead of verified."""
    for ps, info in results["prompt_sets"].items():
        reg = _registered_prompt_set(ps)
        if reg is None:
            continue
        if (info.get("classes") or {}) != {a: list(c) for a, c in reg.classes.items() if a in (info.get("classes") or {})}:
            raise _reject("declared-classes", f"prompt set {ps[:40]!r}: the declared classes differ from the "
                          "registered prompt set's")
        registered_target = {a: reg.target[a].tolist() for a in reg.attributes}
        declared = info.get("target")
        if declared is not None and not _same_numbers(declared, registered_target):
            raise _reject("declared-target", f"prompt set {ps[:40]!r}: the declared target distribution differs from "
                          "the registered prompt set's")
        registered_prompts = {p.id: (p.text, dict(p.named)) for p in reg.prompts}
        for prompt in info.get("prompts") or []:
            pid = prompt.get("id") if isinstance(prompt, dict) else None
            if registered_prompts.get(pid) != (prompt.get("text"), prompt.get("named") or {}):
                raise _reject("declared-prompts", f"prompt set {ps[:40]!r}: prompt {str(pid)[:40]!r} is not declared "
                              "as in the registered prompt set")
        info["target"] = registered_target
        info["classes"] = {a: list(c) for a, c in reg.classes.items()}
    for cname, info in results["models"]["classifiers"].items():
        registered = _registered_confusion(cname, info.get("fingerprint"))
        if registered is None:
            continue
        for kind, matrices in registered.items():
            declared = info.get(kind)
            if declared and not _same_numbers(declared, matrices):
                raise _reject("declared-confusion", f"classifier {cname[:40]!r}: the declared {kind.replace('_', ' ')} "
                              "matrices differ from the registered classifier's")
            info[kind] = matrices


def _same_numbers(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_same_numbers(a[k], b[k]) for k in a)
    try:
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=0, atol=1e-9))


_PROMPT_SET_CACHE: dict[str, Any] = {}


def _registered_prompt_set(ps: str) -> Any:
    """The registered prompt set named ``ps`` (None for a set the project does not register)."""
    if ps not in _PROMPT_SET_CACHE:
        from prompts import PROMPT_SETS, load_prompt_set

        _PROMPT_SET_CACHE[ps] = load_prompt_set(ps) if ps in PROMPT_SETS else None
    return _PROMPT_SET_CACHE[ps]


# --- metric recomputation --------------------------------------------------------------------------


def _target(results: dict[str, Any], ps: str, attr: str, classes: list[str]) -> np.ndarray | None:
    """The prompt set's target for ``attr`` over ``classes`` (column order), or None for uniform.

    The registered prompt set's (substituted by :func:`check_declarations`); for a set the project does
    not register, as results.json declares it (a mapping, or a list in the set's class order).
    """
    info = results["prompt_sets"][ps]
    target = (info.get("target") or {}).get(attr)
    order = (info.get("classes") or {}).get(attr)
    if target is None:
        return None
    if isinstance(target, list) and isinstance(order, list) and len(order) == len(target):
        target = dict(zip(order, target, strict=True))
    if isinstance(target, dict):
        if set(target) != set(classes):
            raise _reject("schema", f"results.json: prompt_sets.{ps}.target.{attr} does not name the classifier's classes")
        target = [target[c] for c in classes]
    arr = np.asarray(target, dtype=np.float64)
    if arr.shape != (len(classes),) or not np.isfinite(arr).all():
        raise _reject("schema", f"results.json: prompt_sets.{ps}.target.{attr} does not match its classes")
    return arr


def _confusion(results: dict[str, Any], cname: str, attr: str, k: int, kind: str = "confusion") -> np.ndarray | None:
    """C[i, j] in the classifier's class order (``kind``: "confusion" or "soft_confusion"): the
    registered classifier's (substituted by :func:`check_declarations`), or for a classifier the
    project does not register, as declared."""
    info = results["models"]["classifiers"].get(cname, {})
    conf = (info.get(kind) or {}).get(attr)
    if conf is None:
        return None
    arr = np.asarray(conf, dtype=np.float64)
    if arr.shape != (k, k) or not np.isfinite(arr).all():
        raise _reject("schema", f"results.json: models.classifiers.{cname}.{kind}.{attr} must be a finite {k}x{k} matrix")
    return arr


_CONFUSION_CACHE: dict[tuple[str, Any], dict[str, Any] | None] = {}


def _registered_confusion(cname: str, fingerprint: Any) -> dict[str, Any] | None:
    """The registered classifier's confusion matrices, or None when ``cname`` is not registered or cannot
    load here (missing weights). A registered classifier with other weights is refused."""
    key = (cname, fingerprint)
    if key not in _CONFUSION_CACHE:
        from classifiers import CLASSIFIERS
        from classifiers.calibration import STORED, registered_calibration

        found: dict[str, Any] | None = None
        if cname in CLASSIFIERS.names():
            try:  # read from the shipped files where it can be (no torch), else from the loaded classifier
                clf = registered_calibration(cname) if cname in STORED else CLASSIFIERS.get(cname)()
            except Exception:  # a classifier that cannot load here (missing weights) offers no matrix
                clf = None
            if clf is not None:
                if clf.fingerprint != fingerprint:
                    raise _reject("classifier-mismatch", f"classifier {cname[:40]!r} is not the registered one (its "
                                  "weights' fingerprint differs)")
                found = {"confusion": {a: np.asarray(m).tolist() for a, m in clf.confusion.items()},
                         "soft_confusion": {a: np.asarray(m).tolist() for a, m in clf.soft_confusion.items()}}
                for kind in ("confusion_by_content", "soft_confusion_by_content", "confusion_n_by_content"):
                    by = getattr(clf, kind, {})
                    if by:
                        found[kind] = {a: {g: np.asarray(m).tolist() for g, m in v.items()} for a, v in by.items()}
                if getattr(clf, "confusion_n", {}):
                    found["confusion_n"] = {a: np.asarray(n).tolist() for a, n in clf.confusion_n.items()}
        _CONFUSION_CACHE[key] = found
    return _CONFUSION_CACHE[key]


def recompute_fairness(results: dict[str, Any], pred: pd.DataFrame, groups: dict[tuple[str, str], list[str]]) -> list[dict]:
    """Every fairness record the predictions support, keyed like the claimed ones.

    Uses :func:`benchmark.metrics.report.fairness_records` (and ``intersectional_records`` for claimed
    "a×b" attributes) with the bootstrap count and seed recorded in ``config.metrics``; images a
    classifier marked as showing no subject are left out, as in the run.
    """
    from benchmark.metrics.fairness import JOINT_SEP
    from benchmark.metrics.report import fairness_records, intersectional_records, mean_records

    cfg = results["config"].get("metrics", {})
    n_boot, seed = int(cfg.get("bootstrap", 1000)), int(cfg.get("seed", 0))
    joints = sorted({(r["classifier"], r["attribute"]) for r in results["metrics"]
                     if r.get("classifier") and r.get("attribute") and JOINT_SEP in r["attribute"]})
    out: list[dict] = []
    for (method, ps), part in pred.groupby(["method", "prompt_set"], sort=False):
        def inputs(cname: str, attr: str, part: pd.DataFrame = part, ps: str = str(ps)) -> dict[str, Any]:
            return _recompute_inputs(results, groups, part, ps, cname, attr)

        wanted = set(results["prompt_sets"][ps].get("attributes") or [a for _, a in groups])
        for cname, attr in [g for g in sorted(groups) if g[1] in wanted] + joints:
            try:
                if JOINT_SEP in attr:
                    a, b = attr.split(JOINT_SEP, 1)
                    if (cname, a) not in groups or (cname, b) not in groups:
                        continue
                    x, y = inputs(cname, a), inputs(cname, b)
                    recs = intersectional_records(x["probs"], y["probs"], x["classes"], y["classes"], x["target"],
                                                  y["target"], x["confusion"], y["confusion"], x["named"], y["named"],
                                                  n_boot=n_boot, seed=seed, soft_confusion_a=x["soft_confusion"],
                                                  soft_confusion_b=y["soft_confusion"], confusion_n_a=x["confusion_n"],
                                                  confusion_n_b=y["confusion_n"])
                else:
                    x = inputs(cname, attr)
                    if not x["probs"]:
                        continue
                    recs = fairness_records(x["probs"], x["classes"], target=x["target"], confusion=x["confusion"],
                                            named=x["named"], n_boot=n_boot, seed=seed,
                                            soft_confusion=x["soft_confusion"], confusion_n=x["confusion_n"])
            except BenchError as exc:
                raise _reject("predictions", f"{method!s:.40}/{ps!s:.40}/{cname[:40]}/{attr[:40]}: {exc}") from None
            for r in recs:
                out.append({"method": method, "prompt_set": ps, "classifier": cname, "attribute": attr, **r})
        for cname in sorted({c for c, _ in groups}):
            subject = f"{cname}/has_subject"
            if subject not in part.columns:
                continue
            rows = part.sort_values("index", kind="stable")
            missing = {str(pid): (~g[subject].astype(bool)).to_numpy(np.float64)
                       for pid, g in rows.groupby("prompt_id", sort=False)}
            for r in mean_records(missing, "no_subject_rate", "detector", False, n_boot=n_boot, seed=seed):
                out.append({"method": method, "prompt_set": ps, "classifier": cname, "attribute": None, **r})
    out += _recompute_deltas(results, pred, groups, n_boot, seed)
    return out


def _recompute_deltas(results: dict[str, Any], pred: pd.DataFrame, groups: dict[tuple[str, str], list[str]],
                      n_boot: int, seed: int) -> list[dict]:
    """``delta_fd`` of every method against the baseline, paired by prompt and seed, on the images where
    both show a subject (as :func:`benchmark.scoring.deltas_for` does)."""
    from benchmark.config import BASELINE
    from benchmark.metrics.report import paired_delta_records

    baseline = (results.get("config") or {}).get("baseline", BASELINE)
    baseline = baseline if isinstance(baseline, str) else BASELINE
    out: list[dict] = []
    for ps, rows in pred.groupby("prompt_set", sort=False):
        base = rows[rows["method"] == baseline]
        if base.empty:
            continue
        wanted = set(results["prompt_sets"][ps].get("attributes") or [a for _, a in groups])
        named_all = {p["id"]: (p.get("named") or {}) for p in results["prompt_sets"][ps]["prompts"]}
        for method, part in rows[rows["method"] != baseline].groupby("method", sort=False):
            # each prompt's rows paired with the baseline's (one merge for all prompts), once for every attribute
            paired = part.merge(base, on=["prompt_id", "index", "seed"], suffixes=("", "@base"))
            paired_rows = paired.groupby("prompt_id", sort=False).indices
            merged = []
            for pid, n_mine in part.groupby("prompt_id", sort=False).size().items():
                pos = paired_rows.get(pid)
                if pos is None or len(pos) != n_mine:
                    continue  # not sampled on the baseline's seeds: nothing to pair
                merged.append((pid, paired.iloc[pos]))
            for cname, attr in [g for g in sorted(groups) if g[1] in wanted]:
                cols, subject = groups[(cname, attr)], f"{cname}/has_subject"
                mine, theirs = {}, {}
                for pid, both in merged:
                    if subject in both.columns:
                        both = both[both[subject].astype(bool) & both[f"{subject}@base"].astype(bool)]
                    if len(both):
                        both = both.sort_values("index", kind="stable")
                        mine[str(pid)] = both[cols].to_numpy(np.float64)
                        theirs[str(pid)] = both[[f"{c}@base" for c in cols]].to_numpy(np.float64)
                if not mine:
                    continue
                classes = [c.split("/", 2)[2] for c in cols]
                named = {pid: named_all.get(pid, {}).get(attr) for pid in mine}
                recs = paired_delta_records(mine, theirs, classes, _target(results, ps, attr, classes), named,
                                            n_boot=n_boot, seed=seed)
                out += [{"method": method, "prompt_set": ps, "classifier": cname, "attribute": attr, **r} for r in recs]
    return out


def _recompute_inputs(results: dict[str, Any], groups: dict[tuple[str, str], list[str]], part: pd.DataFrame,
                      ps: str, cname: str, attr: str) -> dict[str, Any]:
    subject = f"{cname}/has_subject"
    rows = part[part[subject].astype(bool)] if subject in part.columns else part
    rows = rows.sort_values("index", kind="stable")
    cols = groups[(cname, attr)]
    classes = [c.split("/", 2)[2] for c in cols]
    by_prompt = {str(pid): g[cols].to_numpy(np.float64) for pid, g in rows.groupby("prompt_id", sort=False)}
    named_all = {p["id"]: (p.get("named") or {}) for p in results["prompt_sets"][ps]["prompts"]}
    named = {pid: named_all.get(pid, {}).get(attr) for pid in by_prompt}
    texts = {p["id"]: str(p.get("text", "")) for p in results["prompt_sets"][ps]["prompts"]}
    texts = {pid: texts.get(pid, "") for pid in by_prompt}
    return {"probs": by_prompt, "classes": classes, "target": _target(results, ps, attr, classes),
            "confusion": _per_content(results, cname, attr, classes, texts, "confusion"),
            "soft_confusion": _per_content(results, cname, attr, classes, texts, "soft_confusion"),
            "confusion_n": _counts_per_content(results, cname, attr, classes, texts), "named": named}


def _per_content(results: dict[str, Any], cname: str, attr: str, classes: list[str], texts: dict[str, str],
                 kind: str) -> np.ndarray | dict[str, np.ndarray] | None:
    """The matrix CLEAM used for each prompt (:func:`benchmark.metrics.cleam.matrices_by_prompt`): the
    prompt's content's where the classifier declares per-content matrices, else the pooled one."""
    from benchmark.metrics.cleam import matrices_by_prompt

    pooled = _confusion(results, cname, attr, len(classes), kind)
    declared = ((results["models"]["classifiers"].get(cname, {}).get(f"{kind}_by_content") or {}).get(attr) or {})
    if not isinstance(declared, dict):
        raise _reject("schema", f"results.json: models.classifiers.{cname}.{kind}_by_content.{attr} must be a mapping")
    by_content = {}
    for content, m in list(declared.items())[:1000]:
        arr = np.asarray(m, dtype=np.float64) if isinstance(m, list) else None
        if arr is None or arr.shape != (len(classes), len(classes)) or not np.isfinite(arr).all():
            raise _reject("schema", f"results.json: models.classifiers.{cname}.{kind}_by_content.{attr}: "
                          f"{str(content)[:40]!r} must be a finite {len(classes)}x{len(classes)} matrix")
        by_content[str(content)] = arr
    return matrices_by_prompt(texts, pooled, by_content)


def _counts_per_content(results: dict[str, Any], cname: str, attr: str, classes: list[str],
                        texts: dict[str, str]) -> np.ndarray | dict[str, np.ndarray | None] | None:
    """The labelled images per true class behind each prompt's matrix
    (:func:`benchmark.metrics.cleam.counts_by_prompt`, ``confusion_n`` / ``confusion_n_by_content``): the
    registered classifier's (substituted by :func:`check_declarations`), or as declared; None when there
    are none (the CLEAM intervals then take the matrices as exact)."""
    from benchmark.metrics.cleam import counts_by_prompt

    info = results["models"]["classifiers"].get(cname, {})

    def counts(value: Any, where: str) -> np.ndarray:
        arr = np.asarray(value, dtype=np.float64) if isinstance(value, list) else None
        if arr is None or arr.shape != (len(classes),) or not np.isfinite(arr).all() or (arr < 1).any() \
                or (arr != np.round(arr)).any():
            raise _reject("schema", f"results.json: models.classifiers.{cname}.{where} must be {len(classes)} "
                          "whole numbers >= 1")
        return arr.astype(np.int64)

    pooled = (info.get("confusion_n") or {}).get(attr)
    pooled = None if pooled is None else counts(pooled, f"confusion_n.{attr}")
    declared = (info.get("confusion_n_by_content") or {}).get(attr) or {}
    matrices = (info.get("confusion_by_content") or {}).get(attr) or {}
    if not isinstance(declared, dict) or not isinstance(matrices, dict):
        raise _reject("schema", f"results.json: models.classifiers.{cname}.confusion_n_by_content.{attr} must be a mapping")
    by_content = {str(g): counts(n, f"confusion_n_by_content.{attr}.{str(g)[:40]}")
                  for g, n in list(declared.items())[:1000]}
    return counts_by_prompt(texts, pooled, by_content, {str(g): m for g, m in list(matrices.items())[:1000]})


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=ABS_TOL)


def check_metrics(results: dict[str, Any], recomputed: list[dict]) -> int:
    """Compare claimed fairness records with recomputed ones; returns how many were verified."""
    fresh = {record_key(r): r for r in recomputed}
    claimed = {record_key(r) for r in results["metrics"]}
    claimed_pairs: dict[tuple, set[tuple[str, str]]] = {}
    verified = 0
    for i, rec in enumerate(results["metrics"]):
        if rec.get("classifier") is None:
            continue  # not a fairness record: leaderboard.quality_check
        key = record_key(rec)
        claimed_pairs.setdefault(key[:2] + key[3:5], set()).add((rec["metric"], rec.get("variant")))
        mine = fresh.get(key)
        if mine is None:
            raise _reject("unverifiable-metric", f"metrics[{i}] ({_key_text(key)}) cannot be recomputed from {PREDICTIONS_FILE}")
        for field_name in ("value", "ci_low", "ci_high", "p_value"):
            if not _close(rec.get(field_name), mine.get(field_name)):
                raise _reject("metric-mismatch", f"metrics[{i}] ({_key_text(key)}): {field_name} {rec.get(field_name)} "
                              f"but {PREDICTIONS_FILE} gives {mine.get(field_name)}")
        if rec["n"] != mine.get("n") or bool(rec["higher_is_better"]) != bool(mine.get("higher_is_better")):
            raise _reject("metric-mismatch", f"metrics[{i}] ({_key_text(key)}): n or direction differs from the recomputation")
        verified += 1
    # A claimed (metric, variant) must be reported for every prompt it applies to: no cherry-picking.
    for key, r in fresh.items():
        group = key[:2] + key[3:5]
        if (r["metric"], r.get("variant")) in claimed_pairs.get(group, set()) and key not in claimed:
            raise _reject("missing-metric", f"{_key_text(key)} is computable from {PREDICTIONS_FILE} but not reported")
    return verified


# --- the validator ---------------------------------------------------------------------------------


@dataclass
class ValidatedBundle:
    """A bundle that passed every check, extracted in ``root`` (a temporary directory)."""

    root: Path
    results: dict[str, Any]
    manifest: dict[str, Any]
    sha256: str
    verified_metrics: int
    reported_metrics: list[str] = field(default_factory=list)  # accepted as reported, not recomputed
    thumbnails_checked: int = 0

    @property
    def run_id(self) -> str:
        return str(self.results["run_id"])


@contextmanager
def validated(bundle: str | Path, limits: Limits = DEFAULT_LIMITS, label: str | None = None,
              on_checked: OnChecked | None = None, quality: Checker | None = None) -> Iterator[ValidatedBundle]:
    """Validate ``bundle`` in a private temporary directory, yield it, then delete the directory.
    ``on_checked(root, results, manifest)`` is called once the files, schema and predictions have
    passed, before the numbers are recomputed (the slow part). ``quality``: how the quality check is
    started (default: in this process, after the fairness records; ``QualityAhead.start``: beside them)."""
    bundle = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="debias-bench-bundle-") as tmp:
        root = Path(tmp) / "bundle"
        root.mkdir()
        try:
            result = _validate_into(bundle, root, limits, on_checked, quality)
        except SubmissionRejected as exc:
            raise SubmissionRejected(exc.rule, exc.detail, label or bundle.name) from None
        yield result


def validate_bundle(bundle: str | Path, limits: Limits = DEFAULT_LIMITS, label: str | None = None) -> dict[str, Any]:
    """Validate ``bundle``; returns its results. Raises :class:`SubmissionRejected` (one line)."""
    with validated(bundle, limits, label) as ok:
        return ok.results


def _validate_into(bundle: Path, root: Path, limits: Limits, on_checked: OnChecked | None = None,
                   quality: Checker | None = None) -> ValidatedBundle:
    _extract(bundle, root, limits)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    for required in (RESULTS_FILE, PREDICTIONS_FILE, MANIFEST_FILE):
        if required not in files:
            raise _reject("missing-file", f"{required} is missing")
    for name in files:
        with open(root / name, "rb") as f:
            head = f.read(4)
        if head.startswith(EXECUTABLE_MAGIC):
            raise _reject("file-type", f"{name} is an executable or script")
    manifest = _check_manifest(root, files, limits)
    for name in files:
        if name.startswith(f"{THUMBNAIL_DIR}/"):
            _check_thumbnail(root / name, name, limits)
    results = check_results(_read_json(root / RESULTS_FILE, RESULTS_FILE, limits))
    check_declarations(results)
    if manifest.get("run_id") not in (None, results["run_id"]):
        raise _reject("manifest", f"{MANIFEST_FILE}: run_id does not match results.json")
    pred = read_predictions_safely(root / PREDICTIONS_FILE, limits)
    groups = check_predictions(pred, results)
    claimed_methods = {(r["method"], r["prompt_set"]) for r in results["metrics"] if r.get("classifier")}
    present = set(zip(pred["method"].astype(str), pred["prompt_set"].astype(str), strict=True))
    if claimed_methods - present:
        m, ps = sorted(claimed_methods - present)[0]
        raise _reject("unverifiable-metric", f"metrics for {m[:40]}/{ps[:40]} have no rows in {PREDICTIONS_FILE}")
    if on_checked is not None:
        on_checked(root, results, manifest)
    checked = (quality or in_process)(root, results, pred, manifest)
    verified = check_metrics(results, recompute_fairness(results, pred, groups))
    try:
        verdict = checked()
    except DataError as exc:
        raise _reject("quality", str(exc)) from None
    return ValidatedBundle(root, results, manifest, hash_file(bundle), verified + verdict.verified,
                           verdict.reported, verdict.thumbnails_checked)


# --- merging ---------------------------------------------------------------------------------------


def entry_dirs(entries_dir: str | Path) -> list[Path]:
    root = Path(entries_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / RESULTS_FILE).is_file())


def predictions_digest(path: Path) -> str:
    """sha256 of a predictions file's content (rows in a fixed order, columns by name), independent of
    how the parquet was encoded: the same predictions give the same digest under any run id."""
    frame = pd.read_parquet(path)
    keys = [c for c in ("method", "prompt_set", "prompt_id", "index") if c in frame.columns]
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    frame = frame[sorted(c for c in frame.columns if c not in ("image_key",))]
    return hash_bytes(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())


def _check_against_entries(ok: ValidatedBundle, entries_dir: Path) -> None:
    results_sha = hash_file(ok.root / RESULTS_FILE)
    digest = predictions_digest(ok.root / PREDICTIONS_FILE)
    for d in entry_dirs(entries_dir):
        if d.name == ok.run_id:
            raise _reject("duplicate-entry", f"an entry with run_id {ok.run_id!r} is already on the leaderboard")
        info_path = d / "entry.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
        if info.get("results_sha256") == results_sha:
            raise _reject("duplicate-entry", f"the same results are already on the leaderboard as {d.name!r}")
        theirs = info.get("predictions_digest") or (
            predictions_digest(d / PREDICTIONS_FILE) if (d / PREDICTIONS_FILE).is_file() else None)
        if theirs == digest:
            raise _reject("duplicate-entry", f"the same predictions are already on the leaderboard as {d.name!r} "
                          "(a rerun of an entry is checked with `debias-bench verify`, not added again)")
        existing = json.loads((d / RESULTS_FILE).read_text(encoding="utf-8")).get("prompt_sets", {})
        for ps, meta in ok.results["prompt_sets"].items():
            theirs = existing.get(ps, {}).get("fingerprint")
            if theirs is not None and theirs != meta.get("fingerprint"):
                raise _reject("prompt-set-mismatch", f"prompt set {ps[:40]!r} differs from the one used by entry {d.name!r} "
                              "(fingerprints differ), so the numbers are not comparable")


def add_entry(bundle: str | Path, entries_dir: str | Path, limits: Limits = DEFAULT_LIMITS,
              on_checked: OnChecked | None = None, quality: Checker | None = None) -> Path:
    """Validate ``bundle`` and move it into ``entries_dir/<run_id>/`` atomically; returns that directory.
    ``on_checked``, ``quality``: see :func:`validated`."""
    bundle, entries_dir = Path(bundle), Path(entries_dir)
    with validated(bundle, limits, on_checked=on_checked, quality=quality) as ok:
        try:
            _check_against_entries(ok, entries_dir)
        except SubmissionRejected as exc:
            raise SubmissionRejected(exc.rule, exc.detail, bundle.name) from None
        entries_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=entries_dir))
        try:
            for name in ok.manifest["files"]:
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ok.root / name, target)
            shutil.copyfile(ok.root / MANIFEST_FILE, staging / MANIFEST_FILE)
            info = {
                "run_id": ok.run_id,
                "bundle_sha256": ok.sha256,
                "results_sha256": hash_file(ok.root / RESULTS_FILE),
                "predictions_digest": predictions_digest(ok.root / PREDICTIONS_FILE),
                "verified_metrics": ok.verified_metrics,
                "reported_metrics": ok.reported_metrics,
                "thumbnails_checked": ok.thumbnails_checked,
                "accepted": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "leaderboard_version": __version__,
                **{k: ok.manifest[k] for k in ENTRY_TEXT if ok.manifest.get(k) is not None},
            }
            (staging / "entry.json").write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
            final = entries_dir / ok.run_id
            try:
                os.rename(staging, final)  # atomic; fails if another add won the race
            except OSError:
                raise SubmissionRejected("duplicate-entry", f"an entry with run_id {ok.run_id!r} is already on the "
                                         "leaderboard", bundle.name) from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return final


__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "SubmissionRejected",
    "ValidatedBundle",
    "add_entry",
    "check_results",
    "entry_dirs",
    "hash_bytes",
    "pack",
    "validate_bundle",
    "validated",
]
