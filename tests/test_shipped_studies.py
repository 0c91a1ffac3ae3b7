"""Shipped studies (leaderboard/studies/*.json) were made by the shipped method artefacts and the
shipped study specs: a study whose rows name artefacts other than the shipped ones (retrained or
re-exported since) or whose spec has changed is stale and fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leaderboard.studies import DEFAULT_STUDIES, load_studies, study_view

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(DEFAULT_STUDIES.glob("*.json"))


def _shipped_manifest(method: str, key: str) -> dict | None:
    for store in sorted((ROOT / "benchmark" / "world").glob("weights*/methods")):
        path = store / method / key[:16] / "manifest.json"
        if path.is_file():
            manifest = json.loads(path.read_text())
            if manifest.get("key") == key:
                return manifest
    return None


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_study_was_made_by_the_shipped_artefacts_and_spec(path: Path) -> None:
    from benchmark.study import load_study

    study = json.loads(path.read_text())
    spec = load_study(study["study"]["name"])
    assert spec.model_dump() == study["study"], "the shipped spec changed since the study was run"
    checked = 0
    for row in study["rows"]:
        manifest = _shipped_manifest(row["method"], row["artefact_key"] or "") if row.get("artefact_key") else None
        if manifest is None:
            continue
        for name, sha in row["artefacts"].items():
            assert manifest["files"].get(f"{name}.safetensors") == sha, (row["label"], name)
        checked += 1
    assert checked, "no row of the study uses a shipped artefact: nothing ties it to the shipped code"


def test_studies_render_as_page_sections(tmp_path: Path) -> None:
    study = {"study": {"name": "s"}, "description": "d", "runs": ["r1"], "rows": [
        {"label": "baseline", "method": "baseline", "knobs": {}, "sampler": {}, "fd": 0.3, "fd_low": 0.2, "fd_high": 0.4,
         "delta_fd": None, "fid": 2.0, "clip_t": 50.0, "front_fid": True, "classifier": "world", "attribute": "color"},
        {"label": "ddm-seed0", "method": "ddm", "knobs": {"seed": 0}, "sampler": {}, "fd": 0.2, "fd_low": 0.1,
         "fd_high": 0.3, "delta_fd": -0.1, "delta_low": -0.2, "delta_high": 0.0, "fid": 3.0, "clip_t": 49.0,
         "front_fid": True, "classifier": "world", "attribute": "color"}],
        "seeds": [{"method": "ddm", "knobs": {}, "seeds": [0, 1], "fd": {"mean": 0.25, "sd": 0.07, "min": 0.2, "max": 0.3}}]}
    (tmp_path / "s.json").write_text(json.dumps(study))
    (view,) = [study_view(s) for s in load_studies(tmp_path)]
    assert view["points"][0]["rows"][0][0] == "ddm-seed0 *" and view["seeds"]["rows"][0][2].startswith("0.250 ± 0.070")
    from leaderboard.html import render_page

    html, _ = render_page([], studies=load_studies(tmp_path))
    assert '<h2 id="studies">Studies</h2>' in html and "Spread over training seeds" in html
    assert '<img alt="the profile&#39;s sampler: FD against FID" src="data:image/png;base64,' in html
    (tmp_path / "bad.json").write_text("[1]")
    from benchmark.errors import DataError

    with pytest.raises(DataError, match="not a study"):
        load_studies(tmp_path)
