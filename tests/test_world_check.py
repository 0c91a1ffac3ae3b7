"""`debias-bench world check`: this machine's renders against the shipped record."""

from __future__ import annotations

import pytest

from benchmark.cli import main
from benchmark.errors import ModelLoadError
from benchmark.world import data as world_data
from benchmark.world import weights_dir
from benchmark.world.check import RENDERED_FILE, check_rendered
from benchmark.world.config import load_world_config


def test_the_shipped_record_matches_the_sets_a_world_run_uses(capsys) -> None:
    """The recorded recipe fingerprints are the ones the world renders now (the record is not stale);
    a record of another recipe is refused. Pixel differences are not asserted: they depend on the CPU."""
    assert main(["world", "check"]) == 0 and main(["world", "check", "--variant", "alt"]) == 0
    out = capsys.readouterr().out
    assert "train        20000" in out and "heldout       3000" in out


def test_a_record_of_another_recipe_is_refused(tmp_path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shipped = weights_dir("default") / RENDERED_FILE
    with safe_open(str(shipped), framework="pt") as f:
        sets = json.loads(f.metadata()["sets"])
    sets["train"]["fingerprint"] = "0" * 64
    save_file(load_file(str(shipped)), str(tmp_path / RENDERED_FILE), metadata={"sets": json.dumps(sets)})
    with pytest.raises(ModelLoadError, match="not the one this world renders"):
        check_rendered(load_world_config("default"), tmp_path)


def test_a_changed_pixel_is_counted_with_its_size(monkeypatch) -> None:
    render = world_data.render

    def off_by_three(*args, **kwargs):
        images = render(*args, **kwargs).copy()
        images[1, 2, 3, 0] = images[1, 2, 3, 0] + 3 if images[1, 2, 3, 0] < 250 else images[1, 2, 3, 0] - 3
        return images

    monkeypatch.setattr(world_data, "render", off_by_three)
    rows = {r["set"]: r for r in check_rendered(load_world_config("default"), weights_dir("default"))}
    for row in rows.values():
        assert (row["differ"], row["pixels_differ"], row["max_levels"]) == (1, 1, 3)


def test_a_missing_record_is_one_line_naming_it(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=f"{RENDERED_FILE}: cannot read the recorded renders"):
        check_rendered(load_world_config("default"), tmp_path)
    (tmp_path / RENDERED_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="world build"):
        check_rendered(load_world_config("default"), tmp_path)
