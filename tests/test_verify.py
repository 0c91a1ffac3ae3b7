"""`debias-bench verify`: re-run an entry's recorded configuration and hold it to the stated tolerance."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.runner import run
from benchmark.verify import MAX_RELATIVE, MIN_INSIDE, compare
from methods.baseline import Baseline


def _record(metric: str, value: float, lo: float | None = None, hi: float | None = None, prompt: str = "p") -> dict:
    return {"method": "m", "prompt_set": "s", "prompt_id": prompt, "classifier": "c", "attribute": "a",
            "metric": metric, "variant": "v", "value": value, "ci_low": lo, "ci_high": hi}


def test_compare_applies_the_documented_tolerance() -> None:
    entry = {"metrics": [_record("fd", 0.3, 0.2, 0.4, prompt=str(i)) for i in range(20)]
             + [_record("fid", 4.0, prompt=None), _record("seconds_per_image", 1.0, prompt=None)]}
    same = compare(entry, entry)
    assert same.passed and same.summary()["identical"] == 21  # wall-clock records are not compared

    rerun = json.loads(json.dumps(entry))
    rerun["metrics"][0]["value"] = 0.45  # one of 20 outside: 95 % inside, still within tolerance
    rerun["metrics"][20]["value"] = 4.0 * (1 + MAX_RELATIVE / 2)
    rerun["metrics"][21]["value"] = 50.0
    v = compare(entry, rerun)
    assert v.inside_share == 0.95 >= MIN_INSIDE and v.passed
    rerun["metrics"][1]["value"] = 0.1  # a second one outside: 90 %
    assert not compare(entry, rerun).passed
    rerun["metrics"][1]["value"] = 0.3
    rerun["metrics"][20]["value"] = 4.0 * (1 + 2 * MAX_RELATIVE)  # FID has no interval: relative tolerance
    assert not compare(entry, rerun).passed
    del rerun["metrics"][5]
    rerun["metrics"][19]["value"] = 4.0
    v = compare(entry, rerun)
    assert len(v.missing) == 1 and not v.passed


def test_verify_reruns_an_entry_from_an_empty_cache(tiny_config, tmp_path, capsys, monkeypatch) -> None:
    entry = run(tiny_config, progress=False)
    generated = []
    original = Baseline.generate
    monkeypatch.setattr(Baseline, "generate", lambda self, p, s: generated.extend(s) or original(self, p, s))
    out = tmp_path / "verify"
    assert main(["verify", str(entry), "--output-dir", str(out), "--quiet", "--json", str(tmp_path / "v.json")]) == 0
    text = capsys.readouterr().out
    assert "verify: PASS" in text
    summary = json.loads((tmp_path / "v.json").read_text())["summary"]
    assert summary["records"] == summary["identical"] > 0  # same machine: bit-identical
    assert len(generated) == 4 * 4 + 1  # every image again (plus the cost probe): nothing came from the entry's cache

    results = json.loads((entry / "results.json").read_text())
    for record in results["metrics"]:
        if record["ci_low"] is not None:
            record["value"] = record["ci_high"] + 1.0  # a forged entry: every value outside its own interval
    (entry / "results.json").write_text(json.dumps(results))
    assert main(["verify", str(entry), "--output-dir", str(out), "--quiet"]) == 1
    assert "verify: FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [(None, "no results.json"), ("{", "unreadable results"),
                                               ("[]", "no recorded configuration")])
def test_a_bad_entry_is_one_line(tmp_path, capsys, content, message) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
