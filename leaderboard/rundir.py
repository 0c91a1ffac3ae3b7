"""Reading a run directory (``results.json``, ``predictions.parquet``, ``samples/``) as plain values.

The schema is described in ``docs/results-format.md``. Loading never executes anything stored in the
files: JSON is parsed with :mod:`json` and parquet is read with pyarrow after its pandas metadata
(which could name arbitrary extension types) has been dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from benchmark.errors import DataError

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.parquet"
SAMPLES_DIR = "samples"
MAX_RESULTS_BYTES = 20 << 20

# Direction is carried by every record; these families only group metrics into tables.
FAMILIES: dict[str, str] = {
    "fd": "fairness",
    "spd": "fairness",
    "entropy": "fairness",
    "kl": "fairness",
    "deviation_ratio": "fairness",
    "invdiff_bias": "fairness",
    "fid": "quality",
    "kid": "quality",
    "clip_t": "alignment",
    "clip_i": "alignment",
    "no_subject_rate": "coverage",
    "unet_evals": "cost",
    "seconds_per_image": "cost",
}
METRIC_ORDER = list(FAMILIES)
RECORD_COLUMNS = [
    "method",
    "prompt_set",
    "prompt_id",
    "classifier",
    "attribute",
    "metric",
    "variant",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "higher_is_better",
]


@dataclass
class Run:
    """One run (or one leaderboard entry): its results and where its files are."""

    path: Path
    results: dict[str, Any]
    entry_id: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.results.get("run_id") or self.path.name)

    @property
    def label(self) -> str:
        return self.entry_id or self.run_id

    def metrics(self) -> pd.DataFrame:
        """The long metric table (one row per record), typed, with ``entry`` naming this run."""
        return metrics_frame(self.results.get("metrics") or [], entry=self.label)

    def predictions(self) -> pd.DataFrame | None:
        path = self.path / PREDICTIONS_FILE
        return read_predictions(path) if path.is_file() else None

    def samples_dir(self) -> Path:
        thumbs = self.path / "thumbnails"
        return thumbs if thumbs.is_dir() else self.path / SAMPLES_DIR


def metrics_frame(records: list[dict[str, Any]], entry: str = "") -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
    for col in ("value", "ci_low", "ci_high"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["higher_is_better"] = frame["higher_is_better"].astype(bool)
    frame["entry"] = entry
    return frame


def read_results(path: Path) -> dict[str, Any]:
    """Parse a ``results.json``; DataError naming the file for anything but a JSON object."""
    if not path.is_file():
        raise DataError(f"{path}: not found")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise DataError(f"{path}: larger than {MAX_RESULTS_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read ``predictions.parquet`` without its pandas metadata (nothing in the file is executed)."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: unreadable parquet ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return table.replace_schema_metadata(None).to_pandas()


def load_run(path: str | Path) -> Run:
    """A :class:`Run` from a run directory or a path to its ``results.json``."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    return Run(path=path, results=read_results(path / RESULTS_FILE))


def probability_columns(columns: list[str]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``c/a/k`` columns grouped by (classifier, attribute): [(class, column), ...] in file order."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for col in columns:
        parts = col.split("/")
        if len(parts) == 3 and all(parts):
            groups.setdefault((parts[0], parts[1]), []).append((parts[2], col))
    return groups
