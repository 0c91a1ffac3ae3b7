"""A corpus of hostile or malformed submission bundles, each built from a valid run.

Every case names the rule the validator must report and a phrase its one-line message must contain.
Cases build their bundle in a scratch directory from the good run's files, so each breaks exactly one
thing (the manifest is recomputed unless the case is about the manifest).
"""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.hashing import hash_bytes
from leaderboard.submission import Limits


@dataclass
class Case:
    name: str
    rule: str
    phrase: str
    build: Callable[[dict[str, bytes], Path], Path]
    limits: Limits = field(default_factory=Limits)


def good_files(run_dir: Path) -> dict[str, bytes]:
    """The members of a valid bundle for ``run_dir`` (without the manifest)."""
    files = {"results.json": (run_dir / "results.json").read_bytes(),
             "predictions.parquet": (run_dir / "predictions.parquet").read_bytes()}
    if (run_dir / "features.safetensors").is_file():
        files["features.safetensors"] = (run_dir / "features.safetensors").read_bytes()
    for i, p in enumerate(sorted((run_dir / "samples").glob("*.png"))[:4]):
        files[f"thumbnails/{i:05d}.png"] = p.read_bytes()
    return files


def manifest_for(files: dict[str, bytes], thumbnails: list | None = None) -> bytes:
    doc = {"schema_version": 1, "files": {n: hash_bytes(b) for n, b in files.items()}, "thumbnails": thumbnails or []}
    return json.dumps(doc).encode()


def write_zip(path: Path, files: dict[str, bytes], manifest: bool = True, attrs: dict[str, int] | None = None) -> Path:
    members = dict(files)
    if manifest:
        members["manifest.json"] = manifest_for(files)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (attrs or {}).get(name, (stat.S_IFREG | 0o644) << 16)
            zf.writestr(info, data)
    return path


def write_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> Path:
    members = dict(files)
    members["manifest.json"] = manifest_for(files)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tf.addfile(info)
    return path


def _results(files: dict[str, bytes]) -> dict:
    return json.loads(files["results.json"])


def _with_results(files: dict[str, bytes], results: dict) -> dict[str, bytes]:
    return {**files, "results.json": json.dumps(results).encode()}


def _first(results: dict, **match: object) -> dict:
    return next(r for r in results["metrics"] if all(r.get(k) == v for k, v in match.items()))


def _predictions(files: dict[str, bytes], edit: Callable[[pd.DataFrame], pd.DataFrame]) -> dict[str, bytes]:
    df = edit(pd.read_parquet(io.BytesIO(files["predictions.parquet"])))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return {**files, "predictions.parquet": buf.getvalue()}


# --- the cases -------------------------------------------------------------------------------------


def _zip_slip(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "../escaped.json": b"{}"})


def _absolute(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "/tmp/debias-bench-absolute.json": b"{}"})


def _backslash(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "..\\escaped.json": b"{}"})


def _zip_symlink(f: dict, d: Path) -> Path:
    files = {**f, "thumbnails/link.png": b"/etc/passwd"}
    return write_zip(d / "b.zip", files, attrs={"thumbnails/link.png": (stat.S_IFLNK | 0o777) << 16})


def _tar_symlink(f: dict, d: Path) -> Path:
    link = tarfile.TarInfo("thumbnails/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return write_tar(d / "b.tar.gz", f, [link])


def _tar_hardlink(f: dict, d: Path) -> Path:
    link = tarfile.TarInfo("thumbnails/hard.png")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/shadow"
    return write_tar(d / "b.tar.gz", f, [link])


def _tar_device(f: dict, d: Path) -> Path:
    dev = tarfile.TarInfo("thumbnails/dev.png")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    return write_tar(d / "b.tar.gz", f, [dev])


def _tar_fifo(f: dict, d: Path) -> Path:
    fifo = tarfile.TarInfo("thumbnails/fifo.png")
    fifo.type = tarfile.FIFOTYPE
    return write_tar(d / "b.tar.gz", f, [fifo])


def _pickle(f: dict, d: Path) -> Path:
    import pickle

    return write_zip(d / "b.zip", {**f, "model.pkl": pickle.dumps({"x": 1})})


def _pickle_as_parquet(f: dict, d: Path) -> Path:
    import pickle

    return write_zip(d / "b.zip", {**f, "predictions.parquet": pickle.dumps(pd.DataFrame({"a": [1]}))})


def _script_as_png(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "thumbnails/00000.png": b"#!/bin/sh\nrm -rf ~\n"})


def _executable_bit(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", f, attrs={"results.json": (stat.S_IFREG | 0o755) << 16})


def _unexpected_file(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "notes.txt": b"hello"})


def _duplicate_member(f: dict, d: Path) -> Path:
    path = write_zip(d / "b.zip", f)
    with zipfile.ZipFile(path, "a") as zf, _quiet():
        zf.writestr("results.json", f["results.json"])
    return path


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _zip_bomb(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "thumbnails/bomb.png": b"\0" * (8 << 20)})


def _tar_bomb(f: dict, d: Path) -> Path:
    return write_tar(d / "b.tar.gz", {**f, "thumbnails/bomb.png": b"\0" * (3 << 20)})


def _too_many_members(f: dict, d: Path) -> Path:
    png = next(v for k, v in f.items() if k.endswith(".png"))
    return write_zip(d / "b.zip", {**f, **{f"thumbnails/x{i}.png": png for i in range(30)}})


def _lying_size(f: dict, d: Path) -> Path:
    # Patch the central directory so a member claims to be 300 MB uncompressed.
    path = write_zip(d / "b.zip", f)
    data = bytearray(path.read_bytes())
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (300 << 20).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _encrypted(f: dict, d: Path) -> Path:
    path = write_zip(d / "b.zip", f)
    data = bytearray(path.read_bytes())
    cd = data.find(b"PK\x01\x02")
    data[cd + 8] |= 0x1
    path.write_bytes(bytes(data))
    return path


def _garbage(f: dict, d: Path) -> Path:
    path = d / "b.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    return path


def _not_archive(f: dict, d: Path) -> Path:
    path = d / "b.rar"
    path.write_bytes(b"Rar!\x1a\x07\x00" + b"x" * 100)
    return path


def _missing_results(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {k: v for k, v in f.items() if k != "results.json"})


def _unlisted(f: dict, d: Path) -> Path:
    path = d / "b.zip"
    manifest = manifest_for({k: v for k, v in f.items() if not k.startswith("thumbnails/00001")})
    write_zip(path, {**f, "manifest.json": manifest}, manifest=False)
    return path


def _listed_missing(f: dict, d: Path) -> Path:
    manifest = manifest_for({**f, "thumbnails/99999.png": b"x"})
    return write_zip(d / "b.zip", {**f, "manifest.json": manifest}, manifest=False)


def _hash_mismatch(f: dict, d: Path) -> Path:
    manifest = manifest_for(f)
    tampered = _predictions(f, lambda df: df.assign(seed=df["seed"] + 1))
    return write_zip(d / "b.zip", {**tampered, "manifest.json": manifest}, manifest=False)


def _nan_value(f: dict, d: Path) -> Path:
    text = f["results.json"].decode()
    r = _results(f)
    rec = _first(r, metric="fid")
    old = json.dumps(rec["value"])
    text = text.replace(f'"value": {old}', '"value": NaN', 1)
    return write_zip(d / "b.zip", {**f, "results.json": text.encode()})


def _out_of_range(f: dict, d: Path) -> Path:
    r = _results(f)
    _first(r, metric="fd", prompt_id=None)["value"] = 3.0
    return write_zip(d / "b.zip", _with_results(f, r))


def _tampered_metric(f: dict, d: Path) -> Path:
    r = _results(f)
    rec = _first(r, metric="fd", variant="soft", prompt_id=None, attribute="color")
    rec["value"] = max(rec["value"] - 0.05, 0.0)  # a "fairer" number than the predictions give
    return write_zip(d / "b.zip", _with_results(f, r))


def _hidden_no_subject(f: dict, d: Path) -> Path:
    r = _results(f)
    for rec in r["metrics"]:
        if rec["metric"] == "no_subject_rate":
            rec["value"], rec["ci_low"], rec["ci_high"] = 0.0, 0.0, 0.0  # "every image showed a subject"
    return write_zip(d / "b.zip", _with_results(f, r))


def _unverifiable(f: dict, d: Path) -> Path:
    r = _results(f)
    rec = dict(_first(r, metric="fd", variant="soft", prompt_id=None, attribute="color"))
    rec["variant"] = "soft-cleam"  # needs a confusion matrix the run did not record
    r["metrics"].append(rec)
    return write_zip(d / "b.zip", _with_results(f, r))


def _fd_without_classifier(f: dict, d: Path) -> Path:
    r = _results(f)
    rec = dict(_first(r, metric="fd", variant="soft", prompt_id=None, attribute="color"))
    rec.update(classifier=None, value=0.0, ci_low=0.0, ci_high=0.0)  # a fairness number posing as classifier-free
    r["metrics"].append(rec)
    return write_zip(d / "b.zip", _with_results(f, r))


def _phantom_method(f: dict, d: Path) -> Path:
    r = _results(f)
    rec = dict(_first(r, metric="fd", variant="soft", prompt_id=None, attribute="color"))
    r["metrics"].append({**rec, "method": "phantom", "value": 0.0, "ci_low": 0.0, "ci_high": 0.0})
    return write_zip(d / "b.zip", _with_results(f, r))


def _cherry_picked(f: dict, d: Path) -> Path:
    r = _results(f)
    drop = _first(r, metric="fd", variant="soft", prompt_id="glyph", attribute="color")
    r["metrics"] = [x for x in r["metrics"] if x is not drop]
    return write_zip(d / "b.zip", _with_results(f, r))


def _schema_version(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", _with_results(f, {**_results(f), "schema_version": 2}))


def _future_version(f: dict, d: Path) -> Path:
    r = _results(f)
    r["versions"]["debias-bench"] = "9.0.0"
    return write_zip(d / "b.zip", _with_results(f, r))


def _bad_run_id(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", _with_results(f, {**_results(f), "run_id": "../../outside"}))


def _wrong_type(f: dict, d: Path) -> Path:
    r = _results(f)
    _first(r, metric="fid")["value"] = "12.5"
    return write_zip(d / "b.zip", _with_results(f, r))


def _duplicate_record(f: dict, d: Path) -> Path:
    r = _results(f)
    r["metrics"].append(dict(_first(r, metric="fid")))
    return write_zip(d / "b.zip", _with_results(f, r))


def _not_json(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", {**f, "results.json": b"{'run_id': 'python-literal'}"})


def _not_simplex(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", _predictions(f, lambda df: df.assign(**{"synthclf/color/red": 0.9, "synthclf/color/blue": 0.9})))


def _nan_prob(f: dict, d: Path) -> Path:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df.loc[3, "synthclf/shade/mid"] = float("nan")
        return df

    return write_zip(d / "b.zip", _predictions(f, edit))


def _binary_column(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", _predictions(f, lambda df: df.assign(payload=[b"\x80\x04K\x01." for _ in range(len(df))])))


def _unknown_column(f: dict, d: Path) -> Path:
    return write_zip(d / "b.zip", _predictions(f, lambda df: df.assign(payload="x" * 1000)))


def _decodes_large(f: dict, d: Path) -> Path:
    # a probability-named column of one repeated long string: compresses to almost nothing
    return write_zip(d / "b.zip", _predictions(f, lambda df: df.assign(**{"world/color/padding": "x" * 100_000})))


def _huge_png(f: dict, d: Path) -> Path:
    png = bytearray(next(v for k, v in f.items() if k.endswith(".png")))
    png[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height
    return write_zip(d / "b.zip", {**f, "thumbnails/00000.png": bytes(png)})


CASES: list[Case] = [
    Case("zip-slip", "unsafe-path", "leaves the bundle", _zip_slip),
    Case("absolute-path", "unsafe-path", "absolute path", _absolute),
    Case("backslash-path", "unsafe-path", "backslash", _backslash),
    Case("zip-symlink", "link", "symbolic link", _zip_symlink),
    Case("tar-symlink", "link", "is a link", _tar_symlink),
    Case("tar-hardlink", "link", "thumbnails/hard.png", _tar_hardlink),
    Case("tar-device", "special-file", "dev.png", _tar_device),
    Case("tar-fifo", "special-file", "fifo.png", _tar_fifo),
    Case("pickle-member", "file-type", "forbidden type", _pickle),
    Case("pickle-as-parquet", "file-type", "not a parquet file", _pickle_as_parquet),
    Case("script-as-png", "file-type", "executable or script", _script_as_png),
    Case("executable-bit", "file-type", "marked executable", _executable_bit),
    Case("unexpected-file", "file-type", "not an expected file", _unexpected_file),
    Case("duplicate-member", "duplicate-member", "more than once", _duplicate_member),
    Case("zip-bomb", "compression-ratio", "archive bomb", _zip_bomb),
    Case("tar-gzip-bomb", "total-size", "uncompressed, over the limit of 2097152", _tar_bomb, Limits(max_total_bytes=2 << 20)),
    Case("too-many-members", "member-count", "more than the limit", _too_many_members, Limits(max_members=20)),
    Case("lying-size-header", "member-size", "uncompressed", _lying_size),
    Case("encrypted-member", "encrypted", "is encrypted", _encrypted),
    Case("corrupt-zip", "bundle-format", "not a readable zip", _garbage),
    Case("not-an-archive", "bundle-format", "not a .zip or .tar.gz", _not_archive),
    Case("missing-results", "missing-file", "results.json is missing", _missing_results),
    Case("unlisted-file", "unlisted-file", "not in manifest.json", _unlisted),
    Case("listed-but-absent", "missing-file", "listed in manifest.json", _listed_missing),
    Case("hash-mismatch", "hash-mismatch", "does not match the manifest", _hash_mismatch),
    Case("nan-in-results", "non-finite", "NaN", _nan_value),
    Case("fd-out-of-range", "range", "outside", _out_of_range),
    Case("tampered-fd", "metric-mismatch", "predictions.parquet gives", _tampered_metric),
    Case("hidden-no-subject-images", "metric-mismatch", "no_subject_rate", _hidden_no_subject),
    Case("unverifiable-variant", "unverifiable-metric", "cannot be recomputed", _unverifiable),
    Case("cherry-picked-prompts", "missing-metric", "not reported", _cherry_picked),
    Case("fd-without-classifier", "quality", "not a metric this leaderboard can check", _fd_without_classifier),
    Case("phantom-method", "unverifiable-metric", "have no rows", _phantom_method),
    Case("schema-version", "version", "schema_version", _schema_version),
    Case("future-version", "version", "9.0.0", _future_version),
    Case("traversal-run-id", "schema", "run_id", _bad_run_id),
    Case("string-value", "schema", "expected int or float", _wrong_type),
    Case("duplicate-record", "duplicate-record", "a second record", _duplicate_record),
    Case("results-not-json", "json", "not valid JSON", _not_json),
    Case("probabilities-not-simplex", "probabilities", "not probability distributions", _not_simplex),
    Case("nan-probability", "non-finite", "NaN or Inf probabilities", _nan_prob),
    Case("binary-column", "predictions", "only strings, integers", _binary_column),
    Case("giant-png", "thumbnail", "100000x100000", _huge_png),
    Case("unknown-column", "predictions", "unknown column 'payload'", _unknown_column),
    Case("decodes-too-large", "predictions", "decodes to", _decodes_large, Limits(max_decoded_bytes=4 << 20)),
]
