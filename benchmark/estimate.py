"""A rough time estimate for ``debias-bench run --dry-run``, from timings a finished run recorded.

The reference is the newest leaderboard entry of the same profile (the project ships one for the
world): its seconds per image for each method, the training time recorded with each method's
artefacts, and its loading and scoring time per image. An estimate says whose machine those timings
come from; a profile with no such entry gets none (a run records its own in ``results.json → cost``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENTRIES = Path(__file__).resolve().parents[1] / "leaderboard" / "entries"


def reference_run(profile: str, entries: Path = ENTRIES) -> dict[str, Any] | None:
    """The newest entry's results.json whose run used ``profile`` and recorded its cost."""
    found = []
    for path in sorted(entries.glob("*/results.json")) if entries.is_dir() else []:
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (isinstance(results, dict) and (results.get("config") or {}).get("profile") == profile
                and isinstance(results.get("cost"), dict)):
            found.append(results)
    return max(found, key=lambda r: str(r.get("created", ""))) if found else None


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def estimate(profile: str, images_per_method: int, methods: list[tuple[str, str, bool]],
             reference: dict[str, Any] | None) -> str:
    """One line: the time from an empty cache for ``methods`` [(key, method name, trains)] with
    ``images_per_method`` images each, at ``reference``'s timings (see :func:`reference_run`)."""
    if reference is None:
        return (f"estimated time: none (no finished {profile}-profile run on the leaderboard to take timings "
                "from; a run records its own in results.json → cost)")
    cost = reference["cost"]
    base = cost.get((reference.get("config") or {}).get("baseline", "baseline")) or {}
    generate = train = 0.0
    guessed = []
    for key, name, trains in methods:
        own = cost.get(name) if isinstance(cost.get(name), dict) else {}
        per_image = _number(own.get("seconds_per_image")) or _number(base.get("seconds_per_image"))
        if per_image is None or name not in cost:
            guessed.append(key)
        generate += (per_image or 0.0) * images_per_method
        if trains:
            seconds = _number(own.get("train_seconds"))
            if seconds is None:
                guessed.append(f"{key} training")
            train += seconds or 0.0
    phases = (reference.get("execution") or {}).get("phase_seconds") or {}
    scored = sum(_number(c.get("timed_images")) or 0.0 for c in cost.values() if isinstance(c, dict))
    per_scored = sum(_number(phases.get(p)) or 0.0 for p in ("classify", "score")) / scored if scored else 0.0
    rest = (_number(phases.get("load")) or 0.0) + per_scored * images_per_method * len(methods)
    machine = (reference.get("execution") or {}).get("machine") or {}
    where = ", ".join(str(x) for x in (machine.get("cpu"), f"{machine.get('cores')} cores" if machine.get("cores") else None,
                                       machine.get("gpu")) if x) or "a machine not recorded"
    line = (f"estimated time from an empty cache: about {_duration(generate + train + rest)} (generation "
            f"{_duration(generate)}, training {_duration(train)}, loading and scoring {_duration(rest)}), at the "
            f"timings of run {reference.get('run_id')} on {where}; cached images and artefacts take less")
    if guessed:
        line += f"; not timed there, counted at the baseline's speed or as no training: {', '.join(guessed)}"
    return line
