"""Prompt sets: shipped files, the loader's validation errors, round trips, fingerprints, registry."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmark.errors import ConfigError, UnknownNameError
from prompts import PROMPT_SETS, Prompt, list_prompt_sets, load_prompt_set, slugify

OWN_SETS = ["activities", "adjectives", "faces", "occupations"]

VALID_TEMPLATE = """\
name: NAME
description: a small set
source: project-made
attributes: [gender, age]
classes:
  gender: [male, female]
  age: [young, adult, old]
prompts:
  - {id: nurse, text: "a photo of a nurse"}
  - {id: man, text: "a photo of a man", named: {gender: male}}
"""


def valid(name: str) -> str:
    return VALID_TEMPLATE.replace("NAME", name)


VALID = valid("bad")


def write(folder: Path, text: str, stem: str = "bad") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- shipped sets ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_prompt_sets())
def test_every_shipped_set_loads(name: str) -> None:
    ps = load_prompt_set(name)
    assert ps.name == name and len(ps) > 0
    for attr in ps.attributes:
        assert len(ps.target[attr]) == len(ps.classes[attr])
        assert ps.target[attr].sum() == pytest.approx(1.0)
    assert all("{}" not in p.text for p in ps.prompts)


@pytest.mark.parametrize("name", OWN_SETS)
def test_social_sets_measure_gender_race_age_with_clip_templates(name: str) -> None:
    ps = load_prompt_set(name)
    assert ps.classes == {
        "gender": ["male", "female"],
        "race": ["white", "black", "asian", "indian"],
        "age": ["young", "adult", "old"],
    }
    for attr in ps.attributes:
        assert list(ps.templates[attr]) == ps.classes[attr]
    np.testing.assert_allclose(ps.target["race"], [0.25] * 4)
    assert ps.source.strip() and ps.description.strip()


def test_occupations_has_100_plus_with_cited_source_and_right_articles() -> None:
    ps = load_prompt_set("occupations")
    assert len(ps) >= 100
    assert "Bureau of Labor Statistics" in ps.source
    for p in ps.prompts:
        article, noun = re.fullmatch(r"a photo of (an?) (.+)", p.text).groups()
        assert (article == "an") == (noun[0] in "aeiou"), p.text
        assert p.id == slugify(noun)


def test_faces_has_neutral_and_gender_conditional_prompts() -> None:
    ps = load_prompt_set("faces")
    named_gender = {p.named.get("gender") for p in ps.prompts}
    assert {None, "male", "female"} <= named_gender
    assert {p.text for p in ps.prompts} >= {"a photo of a person", "a portrait of a face"}


@pytest.mark.parametrize(
    "name, pattern", [("adjectives", "a photo of a person who is "), ("activities", "a photo of a person ")]
)
def test_adjective_and_activity_sets(name: str, pattern: str) -> None:
    ps = load_prompt_set(name)
    assert len(ps) >= 20
    assert all(p.text.startswith(pattern) and not p.named for p in ps.prompts)


# --- registry --------------------------------------------------------------------------------


def test_registry_lists_the_shipped_sets() -> None:
    assert set(OWN_SETS) <= set(list_prompt_sets())
    assert list_prompt_sets() == sorted(PROMPT_SETS)
    for name, resource in PROMPT_SETS.items():
        assert resource.name == f"{name}.yaml" and resource.is_file()


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_prompt_set("ocupations")
    message = str(info.value)
    assert "'ocupations'" in message
    assert all(name in message for name in list_prompt_sets())


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: prompt file not found"):
        load_prompt_set(tmp_path / "nope.yaml")


def test_loads_a_user_file_by_path_string_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, valid("mine"), stem="mine")
    by_str, by_path = load_prompt_set(str(path)), load_prompt_set(path)
    assert by_str.fingerprint == by_path.fingerprint
    assert by_path.path == path
    assert by_path.prompts == [
        Prompt("nurse", "a photo of a nurse"),
        Prompt("man", "a photo of a man", {"gender": "male"}),
    ]
    np.testing.assert_allclose(by_path.target["age"], [1 / 3] * 3)
    assert by_path.images_per_prompt == 100


# --- validation errors -------------------------------------------------------------------------

MALFORMED = {
    # case: (file text, text the one-line message must contain after "<file>: ")
    "yaml-syntax": ("name: bad\nattributes: [gender\nclasses: {}\n", "line 3: invalid YAML"),
    "yaml-tab": ("name: bad\n\tdescription: x\n", "line 2: invalid YAML"),
    "empty-file": ("", "file is empty"),
    "top-level-list": ("- a\n- b\n", "top level: expected a mapping, got list"),
    "unknown-field": (VALID + "colour: red\n", "colour: unknown field"),
    "misspelled-field": (VALID.replace("classes:", "klasses:"), "klasses: unknown field"),
    "missing-classes": (
        VALID.replace("classes:\n  gender: [male, female]\n  age: [young, adult, old]\n", ""),
        "classes: missing required field",
    ),
    "missing-source": (VALID.replace("source: project-made\n", ""), "source: missing required field"),
    "name-mismatch": (valid("other"), "name: 'other' does not match the file name 'bad'"),
    "attributes-not-list": (VALID.replace("[gender, age]", "gender"), "attributes: expected a list, got string"),
    "attributes-duplicate": (
        VALID.replace("[gender, age]", "[gender, age, gender]"),
        "attributes[2]: duplicate attribute 'gender'",
    ),
    "classes-missing-attribute": (VALID.replace("  age: [young, adult, old]\n", ""), "classes.age: missing"),
    "classes-unknown-attribute": (
        VALID.replace("  age: [young", "  hair: [a, b]\n  age: [young"),
        "classes.hair: unknown attribute 'hair'",
    ),
    "classes-duplicate": (VALID.replace("[male, female]", "[male, male]"), "classes.gender[1]: duplicate class 'male'"),
    "classes-too-few": (VALID.replace("[male, female]", "[male]"), "classes.gender: needs at least 2 entries, got 1"),
    "class-not-slug": (
        VALID.replace("[male, female]", "[Male, female]"),
        "classes.gender[0]: class 'Male' is not slug-safe",
    ),
    "prompts-empty": (VALID.split("prompts:")[0] + "prompts: []\n", "prompts: empty list"),
    "prompts-missing": (VALID.split("prompts:")[0], "prompts: missing"),
    "duplicate-id": (VALID.replace("id: man", "id: nurse"), "prompts[1].id: duplicate id 'nurse'"),
    "id-not-slug": (VALID.replace("id: nurse", "id: Nurse One"), "prompts[0].id: id 'Nurse One' is not slug-safe"),
    "id-path-traversal": (VALID.replace("id: nurse", "id: ../nurse"), "prompts[0].id: id '../nurse' is not slug-safe"),
    "id-number": (VALID.replace("id: nurse", "id: 7"), "prompts[0].id: expected a string, got int"),
    "prompt-missing-text": (
        VALID.replace(', text: "a photo of a nurse"', ""),
        "prompts[0].text: missing required field",
    ),
    "prompt-unknown-key": (VALID.replace('text: "a photo of a nurse"', "txt: x"), "prompts[0].txt: unknown field"),
    "prompt-not-mapping": (VALID + "  - a photo of a cat\n", "prompts[2]: expected a mapping, got string"),
    "named-unknown-class": (
        VALID.replace("gender: male}", "gender: man}"),
        "prompts[1].named.gender: unknown class 'man'; known: male, female",
    ),
    "named-unknown-attribute": (
        VALID.replace("gender: male}", "hair: red}"),
        "prompts[1].named.hair: unknown attribute 'hair'",
    ),
    "target-sum": (VALID + "target: {gender: {male: 0.6, female: 0.3}}\n", "target.gender: probabilities sum to 0.9"),
    "target-unknown-class": (
        VALID + "target: {gender: {male: 0.5, man: 0.5}}\n",
        "target.gender.man: unknown class 'man'",
    ),
    "target-negative": (
        VALID + "target: {gender: {male: 1.5, female: -0.5}}\n",
        "target.gender.female: negative probability",
    ),
    "target-string": (
        VALID + "target: {gender: {male: half, female: 0.5}}\n",
        "target.gender.male: expected a finite number",
    ),
    "target-nan": (
        VALID + "target: {gender: {male: .nan, female: 0.5}}\n",
        "target.gender.male: expected a finite number",
    ),
    "target-unknown-attribute": (VALID + "target: {race: {white: 1}}\n", "target.race: unknown attribute 'race'"),
    "images-zero": (VALID + "images_per_prompt: 0\n", "images_per_prompt: expected a positive integer, got 0"),
    "images-string": (VALID + "images_per_prompt: '10'\n", "images_per_prompt: expected a positive integer"),
    "images-bool": (VALID + "images_per_prompt: true\n", "images_per_prompt: expected a positive integer, got True"),
    "templates-missing-class": (
        VALID + "templates: {gender: {male: a man}}\n",
        "templates.gender: missing classes: female",
    ),
    "templates-unknown-class": (
        VALID + "templates: {gender: {male: a, female: b, other: c}}\n",
        "templates.gender.other: unknown class",
    ),
    "template-without-items": (
        VALID + "template: 'a photo of a {}'\n",
        "template: template and items must be given together",
    ),
    "template-no-slot": (VALID + "template: 'a photo'\nitems: [cat]\n", "template: must contain '{}' exactly once"),
    "item-bool": (VALID + "template: 'a photo of a {}'\nitems: [cat, no]\n", "items[1]: expected a string, got bool"),
    "item-duplicate-id": (VALID + "template: 'a photo of a {}'\nitems: [Nurse]\n", "items[0]: duplicate id 'nurse'"),
    "item-no-slug": (
        VALID + "template: 'a photo of a {}'\nitems: ['???']\n",
        "items[0]: item '???' gives no usable id",
    ),
    "description-multiline": (
        VALID.replace("description: a small set", "description: |\n  one\n  two"),
        "description: must be one line",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_gives_one_line_error_naming_file_and_field(tmp_path: Path, case: str) -> None:
    text, expected = MALFORMED[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_prompt_set(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {expected}"), message


def test_file_larger_than_1_mb_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "# " + "x" * 1_000_000 + "\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: file larger than 1 MB"):
        load_prompt_set(path)


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(VALID.encode() + b"# \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text"):
        load_prompt_set(path)


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    # safe_load only: a python/object tag must never be constructed.
    path = write(tmp_path, VALID + "x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 11: invalid YAML"):
        load_prompt_set(path)


# --- compact and explicit forms, round trip ---------------------------------------------------

COMPACT = """\
name: jobs
description: compact form
source: project-made
attributes: [gender]
classes: {gender: [male, female]}
target: {gender: {male: 0.25, female: 0.75}}
images_per_prompt: 8
templates: {gender: {male: "a man", female: "a woman"}}
template: "a photo of a {}"
items: [doctor, Police Officer, café owner]
"""

EXPLICIT = """\
name: jobs
description: explicit form, same content
source: project-made
attributes: [gender]
classes: {gender: [male, female]}
target: {gender: {female: 0.75, male: 0.25}}
images_per_prompt: 8
templates: {gender: {female: "a woman", male: "a man"}}
prompts:
  - {id: doctor, text: "a photo of a doctor"}
  - {id: police-officer, text: "a photo of a Police Officer"}
  - {id: cafe-owner, text: "a photo of a café owner"}
"""


def test_compact_form_resolves_to_ids_and_texts(tmp_path: Path) -> None:
    ps = load_prompt_set(write(tmp_path, COMPACT, stem="jobs"))
    assert [(p.id, p.text) for p in ps.prompts] == [
        ("doctor", "a photo of a doctor"),
        ("police-officer", "a photo of a Police Officer"),
        ("cafe-owner", "a photo of a café owner"),
    ]
    np.testing.assert_array_equal(ps.target["gender"], [0.25, 0.75])
    assert ps.templates == {"gender": {"male": "a man", "female": "a woman"}}
    assert ps.images_per_prompt == 8


def test_compact_and_explicit_forms_give_the_same_set(tmp_path: Path) -> None:
    compact = load_prompt_set(write(tmp_path, COMPACT, stem="jobs"))
    explicit = load_prompt_set(write(tmp_path / "explicit", EXPLICIT, stem="jobs"))
    assert explicit.prompts == compact.prompts
    assert explicit.fingerprint == compact.fingerprint


def test_combined_form_lists_explicit_prompts_first(tmp_path: Path) -> None:
    text = COMPACT.replace("template:", 'prompts: [{id: man, text: "a man", named: {gender: male}}]\ntemplate:')
    ps = load_prompt_set(write(tmp_path, text, stem="jobs"))
    assert [p.id for p in ps.prompts] == ["man", "doctor", "police-officer", "cafe-owner"]
    assert ps.prompts[0].named == {"gender": "male"}


@pytest.mark.parametrize("source", [COMPACT, EXPLICIT, valid("jobs")])
def test_round_trip_through_to_dict(tmp_path: Path, source: str) -> None:
    first = load_prompt_set(write(tmp_path, source, stem="jobs"))
    dumped = yaml.safe_dump(first.to_dict(), sort_keys=False, allow_unicode=True)
    again = load_prompt_set(write(tmp_path / "again", dumped, stem="jobs"))
    assert again.to_dict() == first.to_dict()
    assert again.fingerprint == first.fingerprint
    for attr in first.attributes:
        np.testing.assert_array_equal(again.target[attr], first.target[attr])


# --- fingerprint ------------------------------------------------------------------------------


def _fingerprint(tmp_path: Path, text: str, sub: str) -> str:
    return load_prompt_set(write(tmp_path / sub, text, stem="jobs")).fingerprint


def test_fingerprint_ignores_formatting_key_order_comments_and_prose(tmp_path: Path) -> None:
    reformatted = """\
    # same content, block style, other key order, other quoting
    items:
      - 'doctor'
      - Police Officer
      - café owner
    template: 'a photo of a {}'
    name: "jobs"
    source: elsewhere, reworded
    description: other words
    images_per_prompt: 8
    target:
      gender:
        female: 0.75
        male: 0.25
    classes:
      gender:
        - male
        - female
    attributes:
      - gender
    templates: {gender: {female: a woman, male: a man}}
    """
    assert _fingerprint(tmp_path, COMPACT, "a") == _fingerprint(tmp_path, reformatted, "b")


@pytest.mark.parametrize(
    "old, new",
    [
        ("[doctor,", "[surgeon,"),  # a prompt text (and id)
        ('"a photo of a {}"', '"a picture of a {}"'),  # every text
        ("male: 0.25, female: 0.75", "male: 0.5, female: 0.5"),  # target
        ("images_per_prompt: 8", "images_per_prompt: 9"),
        ('male: "a man"', 'male: "a male"'),  # a CLIP template
        ("[male, female]}\ntarget", "[female, male]}\ntarget"),  # class order = classifier output order
    ],
)
def test_fingerprint_changes_with_content(tmp_path: Path, old: str, new: str) -> None:
    assert old in COMPACT
    assert _fingerprint(tmp_path, COMPACT, "a") != _fingerprint(tmp_path, COMPACT.replace(old, new), "b")


def test_fingerprint_changes_when_one_prompt_text_changes_but_not_its_id(tmp_path: Path) -> None:
    changed = valid("jobs").replace('"a photo of a nurse"', '"a photo of a nurse at work"')
    assert _fingerprint(tmp_path, valid("jobs"), "a") != _fingerprint(tmp_path, changed, "b")


def test_slugify() -> None:
    assert slugify("Police Officer") == "police-officer"
    assert slugify("  café/owner!! ") == "cafe-owner"
    assert slugify("???") == ""
