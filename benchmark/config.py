"""The run config: which profile, methods, prompt sets and classifiers, and how many images.

A config is a YAML or TOML file (or nothing: every field has a default that runs the world
suite). It is validated by pydantic; every problem becomes one line naming the file and the
field, e.g. ``run.yaml: methods[1].name: unknown method 'ddn'; known: baseline, ddm, ...``.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import tomllib
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark import yamlfile
from benchmark.errors import ConfigError
from prompts.schema import MAX_IMAGES_PER_PROMPT

MAX_CONFIG_BYTES = 1 << 20
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
BASELINE = "baseline"  # the registry's plain model; the default of RunConfig.baseline


# Fields a profile fills in when the config leaves them out (the class defaults are the world's).
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "real": {"prompt_sets": ["occupations"], "classifiers": ["fairface"], "debias_attribute": "gender"},
    # a smoke run of the loop in seconds: the baseline on its own small prompt set, scored by the weightless
    # tone classifier (each other method trains on a tiny model for minutes: name them with --methods)
    "tiny": {"methods": [{"name": "baseline"}], "prompt_sets": ["tones"], "classifiers": ["palette"],
             "debias_attribute": "tone"},
}


def all_methods() -> list[str]:
    """Every registered method, in registration order (the default run)."""
    from methods import METHODS

    return METHODS.in_order()


def _number_types(annotation: Any) -> set[Any]:
    args = typing.get_args(annotation)
    return {annotation} if not args else set().union(*(_number_types(a) for a in args))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: Any) -> Any:
        # YAML's `true` would otherwise become the number 1 (images_per_prompt: true ran one image)
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            types = _number_types(cls.model_fields[info.field_name].annotation)
            if bool not in types and types & {int, float}:
                raise ValueError("expected a number, got true/false")
        return value


class MethodSpec(_Strict):
    """One method to run; ``label`` tells two settings of one method apart in the output."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    # The key becomes part of file names (samples/<key>__...png): no path separators, no leading dot.
    label: str | None = Field(default=None, pattern=LABEL_PATTERN)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from methods import METHODS

        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS.names())}")
        return name

    @property
    def key(self) -> str:
        return self.label or self.name


class SamplerOverrides(_Strict):
    num_inference_steps: int | None = Field(default=None, ge=1, le=1000)
    guidance_scale: float | None = Field(default=None, ge=0, le=50)
    height: int | None = Field(default=None, ge=8, le=4096)
    width: int | None = Field(default=None, ge=8, le=4096)
    negative_prompt: str | None = None
    # another scheduler class on the model's own noise schedule (diffusers from_config), e.g. "ddim"
    # for DiffLens's two-pass step on SD 1.5, which ships PNDM
    scheduler: Literal["ddim", "pndm", "euler", "euler-ancestral", "dpm-solver++", "ddpm"] | None = None


class MetricsSpec(_Strict):
    bootstrap: int = Field(default=1000, ge=0, le=100_000)
    seed: int = Field(default=0, ge=0)
    fid: bool = True
    clip: bool = True


class RunConfig(_Strict):
    """Everything that decides a run's numbers. Defaults run the world suite."""

    profile: Literal["world", "real", "tiny"] = "world"
    model: str | None = None
    variant: str = "default"
    methods: list[MethodSpec] = Field(default_factory=lambda: [MethodSpec(name=m) for m in all_methods()])
    # the method key (label or name) every other is compared with: paired deltas, FID and CLIP-I
    # against it, cost ratios. The default may be absent from `methods` (then nothing is compared).
    baseline: str = Field(default=BASELINE, pattern=LABEL_PATTERN)
    prompt_sets: list[str] = Field(default_factory=lambda: ["world"])
    # the world suite's pair: the strong classifier and its deliberately weak twin (CLEAM)
    classifiers: list[str] = Field(default_factory=lambda: ["world", "world-weak"])
    debias_attribute: str | None = None
    images_per_prompt: int | None = Field(default=None, ge=1, le=MAX_IMAGES_PER_PROMPT)
    max_prompts: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=100, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    sampler: SamplerOverrides = Field(default_factory=SamplerOverrides)
    # Methods prepared with the profile's sampler plus these overrides, then sampling with `sampler`
    # (a method tuned at one guidance scale, run at another). None: prepared with `sampler`.
    prepared_with: SamplerOverrides | None = None
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    output_dir: str = Field(default="results", min_length=1)
    cache_dir: str = Field(default=".debias-cache", min_length=1)
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    reference_dir: str | None = None
    reference_stats: str | None = None  # precomputed FID statistics (.npz: clean-fid's mu/sigma, or ours)
    target_dir: str | None = None
    nontarget_dir: str | None = None
    clip_model: str | None = None
    clip_pretrained: str | None = None
    # where the world's models run ("cuda", "cuda:1"); None keeps them on the CPU. The real profile
    # picks its own device (CUDA with fp16 when present). Not part of any cache key: the same
    # model on another device gives the same images up to float rounding.
    device: str | None = None

    @field_validator("methods")
    @classmethod
    def _methods_known(cls, methods: list[MethodSpec]) -> list[MethodSpec]:
        if not methods:
            raise ValueError("at least one method is needed")
        seen: set[str] = set()
        for spec in methods:
            if spec.key in seen:
                raise ValueError(f"method {spec.key!r} listed twice; give one a distinct `label`")
            seen.add(spec.key)
        return methods

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """The real and tiny profiles' prompt set and classifier when the config names none (the world's
        would match neither a Stable Diffusion model's faces nor a random tiny model)."""
        if isinstance(data, dict) and data.get("profile") in PROFILE_DEFAULTS:
            defaults = dict(PROFILE_DEFAULTS[data["profile"]])
            if data.get("prompt_sets") is not None:  # the attribute default belongs to the default prompt set
                defaults.pop("debias_attribute", None)
            data = {**defaults, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _baseline_listed(self) -> RunConfig:
        keys = [spec.key for spec in self.methods]
        if self.baseline != BASELINE and self.baseline not in keys:
            raise ValueError(f"baseline: {self.baseline!r} is not one of the methods ({', '.join(keys)})")
        return self

    @field_validator("classifiers")
    @classmethod
    def _classifiers_known(cls, names: list[str]) -> list[str]:
        from classifiers import CLASSIFIERS

        if not names:
            raise ValueError("at least one classifier is needed")
        for name in names:
            if name not in CLASSIFIERS:
                raise ValueError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS.names())}")
        return names

    @field_validator("device")
    @classmethod
    def _device_known(cls, device: str | None) -> str | None:
        if device is not None:
            import torch

            try:
                kind = torch.device(device).type
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"{device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from exc
            if kind not in ("cpu", "cuda", "mps"):
                raise ValueError(f"{device!r}: models cannot run on a {kind!r} device; use cpu, cuda, cuda:N or mps")
        return device

    @field_validator("prompt_sets")
    @classmethod
    def _sets_nonempty(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("at least one prompt set is needed")
        return names


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validate_config(data: Any, source: str = "config") -> RunConfig:
    """A RunConfig from a mapping, or ConfigError naming ``source`` and the first bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping, got {type(data).__name__}")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise ConfigError(f"{source}: {_field_path(err['loc'])}: {_one_line(msg)}") from None
    _check_references(config, source)
    return config


def _check_references(config: RunConfig, source: str) -> None:
    """Names and values that need a registry or a file: method parameters, prompt sets, the debias
    attribute and the world variant. Checked here, before any model loads, so each mistake is one
    line naming ``source`` and the field instead of a failure minutes into a run."""
    from methods import METHODS
    from methods.base import ParamError
    from prompts import list_prompt_sets, load_prompt_set

    # Checks that import a method or the world package run only when the config sets that field:
    # loading a config stays cheap (the pytest plugin loads one to collect its items).
    for i, spec in enumerate(config.methods):
        if not spec.params:
            continue
        try:
            METHODS.get(spec.name).parse_params(spec.params)
        except ParamError as exc:
            where = f"methods[{i}].params" + (f".{exc.field}" if exc.field else "")
            raise ConfigError(f"{source}: {where}: {exc.problem}") from None
    attributes: list[str] = []
    for i, name in enumerate(config.prompt_sets):
        path = Path(name)
        is_path = name not in list_prompt_sets() and (path.suffix in (".yaml", ".yml") or len(path.parts) > 1)
        if is_path and not path.is_file():
            raise ConfigError(f"{source}: prompt_sets[{i}]: prompt file {name!r} not found")
        if not is_path and name not in list_prompt_sets():
            raise ConfigError(f"{source}: prompt_sets[{i}]: unknown prompt set {name!r}; "
                              f"known: {', '.join(list_prompt_sets())} (or a path to a .yaml file)")
        # A bad prompt file raises its own one-line error naming that file and field.
        attributes += [a for a in load_prompt_set(name).attributes if a not in attributes]
    if config.debias_attribute is not None and config.debias_attribute not in attributes:
        raise ConfigError(f"{source}: debias_attribute: unknown attribute {config.debias_attribute!r}; "
                          f"the prompt sets have: {', '.join(attributes)}")
    if config.reference_stats is not None:
        if not Path(config.reference_stats).is_file():
            raise ConfigError(f"{source}: reference_stats: statistics file {config.reference_stats!r} not found")
        from benchmark.errors import DataError
        from benchmark.metrics.fid import check_stats_file

        try:
            check_stats_file(config.reference_stats)
        except DataError as exc:
            raise ConfigError(f"{source}: reference_stats: {exc}") from None
    if config.profile == "world" and config.variant != "default":
        from benchmark.world.config import VARIANTS

        variant = Path(config.variant)
        if config.variant not in VARIANTS and not variant.suffix:
            raise ConfigError(f"{source}: variant: unknown world variant {config.variant!r}; "
                              f"known: {', '.join(VARIANTS)} (or a path to a world config .yaml)")
        if config.variant not in VARIANTS and not variant.is_file():
            raise ConfigError(f"{source}: variant: world config {config.variant!r} not found")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) file into a mapping; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file larger than {MAX_CONFIG_BYTES} bytes")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
            return data.get("tool", {}).get("debias-bench", data) if path.name == "pyproject.toml" else data
        if path.suffix in {".yaml", ".yml"}:
            return yamlfile.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "syntax"
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: {where}: invalid YAML ({_one_line(problem)})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({_one_line(exc)})") from None
    except RecursionError:  # both parsers recurse per nesting level
        raise ConfigError(f"{path}: nested too deeply to be a run config") from None
    raise ConfigError(f"{path}: unsupported config type {path.suffix!r}; use .yaml, .yml or .toml")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read ``path`` (if any), apply ``overrides`` (CLI flags; None values ignored), validate."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        loaded = read_config_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: (top level): expected a mapping, got {type(loaded).__name__}")
        data = dict(loaded or {})
        source = str(path)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "sampler":
            data["sampler"] = {**(data.get("sampler") or {}), **value}
        else:
            data[key] = value
    return validate_config(data, source)


def number_list(text: str, option: str, kind: type = float) -> list:
    """``"0,0.05"`` → ``[0.0, 0.05]`` for a command-line option; a malformed or empty list is a
    one-line :class:`ConfigError` naming ``option``."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option}: give at least one value")
    return values
