"""The method interface: ``prepare`` (train or load artefacts) then ``generate``.

A method receives the base model's :class:`~benchmark.components.Components` and a
:class:`MethodData`; it never asks which profile built them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, TypeAdapter, ValidationError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchmark.cache import atomic_write
from benchmark.components import Components, SamplerConfig
from benchmark.errors import ConfigError, ModelLoadError
from benchmark.hashing import hash_file, hash_value
from benchmark.images import ImageSet


class ParamError(ConfigError):
    """A bad method parameter. ``field`` names it ("" when the problem involves several), so a run
    config can report ``run.yaml: methods[0].params.alpha: ...``."""

    def __init__(self, method: str, param: str, problem: str) -> None:
        self.method, self.field, self.problem = method, param, problem
        super().__init__(f"method {method!r}: params{'.' + param if param else ''}: {problem}")


# Ranges of method parameters, declared once on each Params field (pydantic reads them): a value out of
# range is a one-line ParamError naming the field before anything loads, not a failure deep in training.
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Dropout = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # also Adam's betas


@functools.cache
def _params_adapter(params_type: type) -> TypeAdapter:
    return TypeAdapter(params_type)


@dataclass
class MethodData:
    """What a profile offers methods for preparation. Each method takes only what it needs.

    target:      the biased training set (images + captions); labels only for oracle variants.
    nontarget:   a small unrelated set (DDM's non-target images).
    prompts:     the prompts being evaluated (methods that sample vanilla images use them).
    classifier:  an attribute classifier for pseudo-labels (DiffLens probes), or None.
    attribute:   the attribute to debias (a key of ``classifier.attributes``).
    embedder:    an image/text embedder (CLIP space; SelfDebias), or None.
    """

    target: ImageSet | None = None
    nontarget: ImageSet | None = None
    prompts: list[str] = field(default_factory=list)
    classifier: Any | None = None
    attribute: str | None = None
    embedder: Any | None = None

    def fingerprint(self, fields: Sequence[str] | None = None) -> str:
        """Hash of the named fields (all when None): what a preparation that reads them depends on."""
        parts = {
            "target": self.target.fingerprint if self.target is not None else None,
            "nontarget": self.nontarget.fingerprint if self.nontarget is not None else None,
            "prompts": self.prompts,
            "classifier": getattr(self.classifier, "fingerprint", None),
            "attribute": self.attribute,
            "embedder": getattr(self.embedder, "fingerprint", None),
        }
        if fields is not None:
            unknown = sorted(set(fields) - set(parts))
            if unknown:
                raise ValueError(f"MethodData has no field(s) {unknown}; fields: {sorted(parts)}")
            parts = {name: parts[name] for name in sorted(fields)}
        return hash_value(parts)


class Method(ABC):
    """Base class. Subclasses set ``name`` and ``Params`` (a dataclass of hyper-parameters), and
    ``reads``: the :class:`MethodData` fields their preparation uses (None: all of them). The runner's
    artefact key hashes only those, so a new prompt set does not retrain a method that never sees prompts."""

    name: ClassVar[str]
    Params: ClassVar[type]
    reads: ClassVar[tuple[str, ...] | None] = None
    trains: ClassVar[bool] = True  # False: preparation only loads the base (the runner announces training)
    # what the method's paper/code sampled with (model, scheduler, steps, guidance, resolution), for the record
    paper_sampling: ClassVar[dict[str, Any] | None] = None
    per_step: ClassVar[bool] = False  # artefacts indexed by sampler step (probes, modes): see use_sampler
    batch_independent: ClassVar[bool] = True  # False: images guided as a group depend on their batch-mates

    def __init__(self, params: Any | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.components: Components | None = None
        self.artefacts: dict[str, str] = {}
        self.workdir: Path | None = None

    @classmethod
    def from_config(cls, params: dict[str, Any] | None) -> Method:
        """Build from a config mapping; unknown or ill-typed fields are one-line errors."""
        return cls(cls.parse_params(params))

    @classmethod
    def parse_params(cls, params: Any) -> Any:
        """``Params`` from a config mapping, type-checked field by field (pydantic, lax mode: YAML's
        ``1e-5`` string becomes a float, ``2.5`` for an int is refused); raises :class:`ParamError`.

        Without the type check a wrong type is accepted here and fails deep inside training
        with a traceback (e.g. ``lora_rank: 2.5`` in ``torch.empty``)."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ParamError(cls.name, "", f"expected a mapping, got {type(params).__name__}")
        names = sorted(f.name for f in dataclasses.fields(cls.Params))
        unknown = sorted(str(k) for k in set(params) - set(names))
        if unknown:
            raise ParamError(cls.name, unknown[0], f"unknown parameter; known: {', '.join(names) or 'none'}")
        try:
            parsed = _params_adapter(cls.Params).validate_python(params)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"])
            raise ParamError(cls.name, where, " ".join(err["msg"].removeprefix("Value error, ").split())) from None
        except (TypeError, ValueError) as exc:  # raised by a Params.__post_init__ outside pydantic's wrapping
            raise ParamError(cls.name, "", " ".join(str(exc).split())) from None
        for f in dataclasses.fields(parsed):
            value = getattr(parsed, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ParamError(cls.name, f.name, f"expected a finite number, got {value!r}")
        return parsed

    def training_params(self) -> dict[str, Any]:
        """The parameters the preparation depends on (all by default). The runner's artefact key
        hashes only these, so changing a sampling-time setting reuses the trained artefacts."""
        return dataclasses.asdict(self.params)

    # -- the two stages -------------------------------------------------------------------
    def check(self, base: Components) -> None:
        """Refuse parameters this base model cannot take (ConfigError, one line); the runner calls it
        for every method before any work. Default: nothing to check."""
        return None

    @abstractmethod
    def prepare(self, base: Components, data: MethodData, workdir: Path) -> None:
        """Train or load artefacts into ``workdir`` (idempotent) and set ``self.components``."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """One uint8 (H, W, 3) image per (prompt, seed); returns (N, H, W, 3)."""

    def use_sampler(self, sampler: SamplerConfig) -> None:
        """Sample from now on with ``sampler`` (prepared with another one: a method tuned at one guidance
        scale, run at another). A method with per-step artefacts (``per_step``) needs the step count and
        the classifier-free guidance branches it was prepared with."""
        assert self.components is not None, "call prepare() first"
        before = self.components.sampler
        if self.per_step and (sampler.num_inference_steps != before.num_inference_steps
                              or (sampler.guidance_scale > 1) != (before.guidance_scale > 1)):
            raise ConfigError(f"{self.name}: prepared for {before.num_inference_steps} steps at guidance "
                              f"{before.guidance_scale:g}; its artefacts are per step and per CFG branch, so it "
                              f"cannot sample {sampler.num_inference_steps} steps at guidance {sampler.guidance_scale:g}")
        self.components = self.components.replace(sampler=sampler)

    # -- identity ---------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of everything that determines this method's images besides prompt and seed."""
        base = self.components.fingerprint if self.components is not None else None
        return hash_value({"method": self.name, "params": dataclasses.asdict(self.params),
                           "artefacts": self.artefacts, "base": base})

    # -- artefact helpers (safetensors only) -------------------------------------------------
    def save_tensors(self, name: str, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
        assert self.workdir is not None, "prepare() must set self.workdir first"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{name}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"meta": json.dumps(meta or {})})
        tmp.replace(path)
        self.artefacts[name] = hash_file(path)
        return path

    def save_report(self, name: str, value: dict[str, Any]) -> Path:
        """A JSON report beside the artefacts (``name``.json, written atomically): what preparation
        found and how long it took. It is not an artefact: images never depend on it."""
        assert self.workdir is not None, "prepare() must set self.workdir first"
        path = self.workdir / f"{name}.json"
        atomic_write(path, json.dumps(value, indent=2, sort_keys=True, default=str).encode())
        return path

    def tensor_meta(self, name: str) -> dict[str, Any]:
        """The ``meta`` saved with :meth:`save_tensors` (without loading the tensors)."""
        assert self.workdir is not None
        with safe_open(str(self.workdir / f"{name}.safetensors"), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("meta", "{}"))

    def load_tensors(self, name: str) -> dict[str, torch.Tensor] | None:
        """Saved tensors, or None when absent. A corrupt file is an error naming it."""
        assert self.workdir is not None
        path = self.workdir / f"{name}.safetensors"
        if not path.exists():
            return None
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise ModelLoadError(f"{path}: corrupt artefact ({exc}); delete it to retrain") from None
        self.artefacts[name] = hash_file(path)
        return tensors
