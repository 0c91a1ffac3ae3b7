"""Run configs: defaults, file formats, overrides and one-line errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.errors import ConfigError


def test_defaults_run_the_world_suite() -> None:
    config = load_config()
    assert config.profile == "world"
    # the order is part of the default run's id: registration order, the baseline first
    assert [m.name for m in config.methods] == ["baseline", "ddm", "invdiff", "selfdebias", "difflens"]
    assert config.prompt_sets == ["world"]


def test_yaml_and_toml_agree(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("methods: [{name: ddm, params: {alpha: 0.1}}]\nbatch_size: 8\n")
    (tmp_path / "run.toml").write_text('batch_size = 8\n[[methods]]\nname = "ddm"\nparams = {alpha = 0.1}\n')
    assert load_config(tmp_path / "run.yaml") == load_config(tmp_path / "run.toml")


def test_pyproject_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.debias-bench]\nseed = 7\n')
    assert load_config(tmp_path / "pyproject.toml").seed == 7


def test_cli_overrides_win_and_merge_sampler(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("seed: 1\nsampler: {guidance_scale: 2.0, num_inference_steps: 10}\n")
    config = load_config(path, {"seed": 5, "sampler": {"num_inference_steps": 4}, "batch_size": None})
    assert config.seed == 5
    assert (config.sampler.guidance_scale, config.sampler.num_inference_steps) == (2.0, 4)


BAD = [
    ("methods: [{name: ddn}]", "methods[0].name: unknown method 'ddn'"),
    ("methods: [{name: ddm, parms: {}}]", "methods[0].parms: unknown field"),
    ("methods: []", "methods: at least one method"),
    ("methods: [{name: ddm}, {name: ddm}]", "listed twice"),
    ("classifiers: [facey]", "classifiers: unknown classifier 'facey'"),
    ("batch_size: 0", "batch_size: Input should be greater than or equal to 1"),
    ("batch_size: lots", "batch_size: Input should be a valid integer"),
    ("images_per_prompt: -3", "images_per_prompt:"),
    ("profile: cloud", "profile: Input should be 'world', 'real' or 'tiny'"),
    ("seed: 1.5", "seed:"),
    ("sampler: {guidance_scale: -1}", "sampler.guidance_scale:"),
    ("sampler: {steps: 3}", "sampler.steps: unknown field"),
    ("metrics: {bootstrap: many}", "metrics.bootstrap:"),
    ("run_id: ../escape", "run_id: String should match pattern"),
    ("bogus: 1", "bogus: unknown field"),
    ("- just\n- a list", "(top level): expected a mapping"),
    ("methods: [{name: ddm}\n", "line"),
    ("prompt_sets: []", "prompt_sets: at least one prompt set"),
    ("reference_stats: /nowhere/ref.npz", "reference_stats: statistics file '/nowhere/ref.npz' not found"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_configs_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "\n" not in message


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="unsupported config type"):
        load_config(tmp_path / "run.json")


def test_the_real_profile_defaults_to_occupations_and_fairface() -> None:
    """A real-profile config that names no prompt set or classifier gets ones that fit faces (the
    world's would fail at the compatibility check); named ones are kept; the world keeps its own."""
    real = load_config(None, {"profile": "real", "model": "sd15"})
    assert (real.prompt_sets, real.classifiers, real.debias_attribute) == (["occupations"], ["fairface"], "gender")
    named = load_config(None, {"profile": "real", "model": "sd15", "prompt_sets": ["faces"], "classifiers": ["clip"]})
    assert (named.prompt_sets, named.classifiers) == (["faces"], ["clip"])
    world = load_config()
    assert (world.prompt_sets, world.classifiers, world.debias_attribute) == (["world"], ["world", "world-weak"], None)


def test_the_tiny_profile_defaults_to_a_smoke_run() -> None:
    """`--profile tiny` alone: the baseline on the shipped `tones` set (4 prompts x 8 images) scored by
    `palette`, not the world's 14,000 images and digit classifiers; named fields are kept."""
    from prompts import load_prompt_set

    tiny = load_config(None, {"profile": "tiny"})
    assert ([m.name for m in tiny.methods], tiny.prompt_sets, tiny.classifiers, tiny.debias_attribute) == (
        ["baseline"], ["tones"], ["palette"], "tone")
    tones = load_prompt_set("tones")
    assert len(tones) * tones.images_per_prompt == 32 and tones.attributes == ["tone"]
    named = load_config(None, {"profile": "tiny", "methods": [{"name": "baseline"}, {"name": "ddm"}]})
    assert [m.name for m in named.methods] == ["baseline", "ddm"] and named.prompt_sets == ["tones"]
