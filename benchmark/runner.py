"""The loop: for each method × prompt × seed batch, generate, classify, score.

The runner only wires stages together; each stage is a plain function of plain values:
:mod:`methods` make images, :mod:`classifiers` make per-image probabilities,
:mod:`benchmark.scoring` turns them into metric records, :mod:`benchmark.cache` keeps every
image and prediction so a second run (or a resumed one) recomputes nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import platform
import shutil
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from benchmark import progress as training_bars
from benchmark import shipped
from benchmark.cache import Cache, atomic_write, png_bytes
from benchmark.cell import Cell
from benchmark.components import Components
from benchmark.config import BASELINE, MethodSpec, RunConfig, SamplerOverrides
from benchmark.counting import count_unet_evaluations
from benchmark.distributed import my_share, process_state
from benchmark.errors import BenchError, CacheError, ConfigError, DataError
from benchmark.hashing import hash_file, hash_value
from benchmark.profiles import Profile, load_profile
from benchmark.quality import FEATURES_FILE, save_vectors
from benchmark.seeding import image_seeds
from classifiers import CLASSIFIERS, Classifier
from methods import METHODS, Method
from methods.base import MethodData
from prompts import PromptSet, load_prompt_set

log = logging.getLogger(__name__)
PROBE_SEED = 2**31 - 1  # the cost probe's seed, outside the range of image seeds in practice

SCHEMA_VERSION = 1
# Every package whose version can change a number in results.json: the samplers and models, the
# array maths, PNG coding and resizing (pillow) and tokenization (tokenizers).
VERSIONED_PACKAGES = ["torch", "torchvision", "diffusers", "transformers", "tokenizers", "open_clip_torch",
                      "clean-fid", "numpy", "scipy", "scikit-learn", "pandas", "pillow", "peft", "accelerate",
                      "safetensors"]
THUMBNAILS_PER_PROMPT = 8
# results.json fields that describe one execution (timings, when, where artefacts came from): two runs
# of one config agree on everything else, bit for bit on one machine
EXECUTION_FIELDS = frozenset({"cost", "created", "execution"})


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "debias-bench": _version("debias-bench")}
    versions.update({name: _version(name) for name in VERSIONED_PACKAGES})
    return versions


def machine_info() -> dict[str, Any]:
    """Where a run's timings were measured (cost figures from different machines do not compare)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "system": platform.system()}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _by_content(clf: Any) -> dict[str, Any]:
    """A classifier's per-content confusion matrices for results.json (only where it has any), and the
    labelled images per true class behind its matrices' rows (``confusion_n`` pooled,
    ``confusion_n_by_content``; only where they were recorded): with them the ``*-cleam`` intervals
    include the matrices' sampling error, and ``confusion_error`` says whether they do."""
    out: dict[str, Any] = {}
    for kind in ("confusion_by_content", "soft_confusion_by_content", "confusion_n_by_content"):
        by = getattr(clf, kind, {})
        if by:
            out[kind] = {a: {g: np.asarray(m).tolist() for g, m in v.items()} for a, v in by.items()}
    counts = getattr(clf, "confusion_n", {})
    if counts:
        out["confusion_n"] = {a: np.asarray(n).tolist() for a, n in counts.items()}
    if getattr(clf, "confusion", {}) or getattr(clf, "soft_confusion", {}):
        out["confusion_error"] = ("propagated: each resample of a *-cleam interval is corrected with its own matrix "
                                  "drawn from the calibration counts (confusion_n)" if counts else
                                  "not propagated: no calibration counts, the matrices are taken as exact")
    return out


SCHEDULERS = {"ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "euler": "EulerDiscreteScheduler",
              "euler-ancestral": "EulerAncestralDiscreteScheduler", "dpm-solver++": "DPMSolverMultistepScheduler",
              "ddpm": "DDPMScheduler"}


def scheduler_from(name: str, current: Any) -> Any:
    """The scheduler class ``name`` on ``current``'s configuration (its noise schedule, prediction type)."""
    import diffusers

    return getattr(diffusers, SCHEDULERS[name]).from_config(current.config)


def default_run_id(config: RunConfig) -> str:
    """Deterministic: the same config writes (and resumes) the same run directory.

    Defaults are resolved first (images per prompt from the prompt sets, each method's full
    parameters), so a config that spells out a default and one that leaves it out get one id."""
    return f"{config.profile}-{hash_value(resolved_config(config))[:12]}"


def resolved_config(config: RunConfig) -> dict[str, Any]:
    """The config as the run will use it, without the fields that cannot change a number."""
    data = config.model_dump(exclude={"run_id", "output_dir", "cache_dir", "device", "images_per_prompt"})
    for name, default in (("baseline", BASELINE), ("prepared_with", None)):
        if data[name] == default:  # the default: ids stay those of runs made before the field existed
            del data[name]
    for sampler in (data["sampler"], data.get("prepared_with") or {}):
        if sampler.get("scheduler", 0) is None:
            del sampler["scheduler"]
    data["methods"] = [{"name": spec.name, "label": spec.key,
                        "params": dataclasses.asdict(METHODS.get(spec.name).parse_params(spec.params))}
                       for spec in config.methods]
    data["images_per_prompt"] = {name: config.images_per_prompt or load_prompt_set(name).images_per_prompt
                                 for name in config.prompt_sets}
    return data


class Runner:
    """Runs one :class:`RunConfig`; ``run()`` returns the run directory."""

    def __init__(self, config: RunConfig, profile: Profile | None = None, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        training_bars.set_enabled(progress)
        started = time.perf_counter()
        # Prompt files and classifiers first: their mistakes surface before a model is loaded.
        # Methods are prepared on the full sets; --max-prompts only limits what is evaluated.
        self.full_prompt_sets = [load_prompt_set(name) for name in config.prompt_sets]
        self.prompt_sets = [self._evaluated(ps) for ps in self.full_prompt_sets]
        self.classifiers: dict[str, Classifier] = {name: CLASSIFIERS.get(name)() for name in config.classifiers}
        _check_compatible(self.prompt_sets, self.classifiers)
        _check_writable(Path(config.cache_dir), "cache directory")  # before minutes of loading, not after
        self.profile = profile if profile is not None else load_profile(config)
        self.cache = Cache(config.cache_dir)
        self.failures: list[dict[str, str]] = []
        self.cost: dict[str, dict[str, Any]] = {}
        # wall seconds per phase (`debias-bench perf`, results.json's "execution"); prepare and
        # generate are summed over methods here and kept per method in ``cost``
        self.phase_seconds: dict[str, float] = {"load": time.perf_counter() - started, "prepare": 0.0,
                                                "generate": 0.0, "classify": 0.0, "score": 0.0, "write": 0.0}
        self.method_info: dict[str, dict[str, Any]] = {}
        self.artefacts_source: dict[str, str] = {}  # method key -> "shipped", "cached" or "trained"
        self.workdirs: dict[str, Path] = {}  # method key -> its artefact folder in the cache
        # method key -> a method whose preparation waits for the first missing image (_prepared_method)
        self._deferred: dict[str, tuple] = {}
        # per-image prediction entries are written by one background thread while the run goes on
        # (hundreds of small files per cell); _flush_writes waits for them before the run's files
        self._writer: ThreadPoolExecutor | None = None
        self._writes: list[Future] = []

    # -- set-up --------------------------------------------------------------------------------
    def _evaluated(self, ps: PromptSet) -> PromptSet:
        changes: dict[str, Any] = {}
        if self.config.max_prompts is not None:
            changes["prompts"] = ps.prompts[: self.config.max_prompts]
        if self.config.images_per_prompt is not None:
            changes["images_per_prompt"] = self.config.images_per_prompt
        return dataclasses.replace(ps, **changes) if changes else ps

    def components(self, sampler: SamplerOverrides | None = None) -> Components:
        """The profile's base model with the run's sampler (or ``sampler``'s overrides)."""
        base = self.profile.components
        chosen = self.config.sampler if sampler is None else sampler
        overrides = {k: v for k, v in chosen.model_dump().items() if v is not None}
        scheduler = overrides.pop("scheduler", None)
        if scheduler is not None:
            base = base.replace(scheduler=scheduler_from(scheduler, base.scheduler),
                                fingerprint=hash_value({"base": base.fingerprint, "scheduler": scheduler}))
        if overrides:
            base = base.replace(sampler=dataclasses.replace(base.sampler, **overrides))
        return base

    def preparation_base(self, method: Method, run_base: Components) -> Components:
        """Where ``method`` is prepared: at ``config.prepared_with`` (where it was tuned) when given, else
        at the run's sampler. A method with per-step artefacts (``per_step``) takes the run's step count
        there, since it cannot sample any other; the others keep the tuned one, so a grid over step
        counts never retrains them."""
        chosen = self.config.prepared_with
        if chosen is None:
            return run_base
        if method.per_step:
            chosen = chosen.model_copy(update={"num_inference_steps": run_base.sampler.num_inference_steps})
        return self.components(chosen)

    def run_dir(self) -> Path:
        return Path(self.config.output_dir) / (self.config.run_id or default_run_id(self.config))

    # -- the loop ------------------------------------------------------------------------------
    def prepare(self, export_to: Path | None = None) -> dict[str, Path]:
        """Prepare every method (train or load its artefacts) without generating; with ``export_to``,
        copy each prepared folder there (:func:`benchmark.shipped.export`). Returns the folders."""
        base = self.components()
        folders = {}
        for spec in self.config.methods:
            self._prepare(spec, base, defer=False)
            folders[spec.key] = self.workdirs[spec.key]
            if export_to is not None:
                folders[spec.key] = shipped.export(self.workdirs[spec.key], export_to, spec.name)
        return folders

    def plan(self) -> str:
        """What ``run`` would do, without generating or training: where the results go, the work,
        and for each method whether its artefacts are cached, shipped, or must be trained."""
        base = self.components()
        self.check_methods(base)
        run_dir = self.run_dir()
        s = base.sampler
        lines = [f"run {run_dir.name} -> {run_dir}" + (" (exists: finished images are reused)" if run_dir.exists() else ""),
                 f"profile {self.profile.name}: {base.name}, {s.num_inference_steps} steps, guidance {s.guidance_scale:g}, "
                 f"{s.height}x{s.width}",
                 "classifiers: " + ", ".join(self.classifiers)]
        images = 0
        for ps in self.prompt_sets:
            lines.append(f"prompt set {ps.name}: {len(ps.prompts)} prompts x {ps.images_per_prompt} images")
            images += len(ps.prompts) * ps.images_per_prompt
        lines.append(f"images: {images * len(self.config.methods):,} ({images:,} per method; cached ones are read back)")
        for spec in self.config.methods:
            method = METHODS.get(spec.name).from_config(spec.params)
            key = self.artefact_key(method, self.preparation_base(method, base))
            if not method.trains:
                status = "nothing to train"
            elif shipped.read_manifest(self.cache.artefact_dir(spec.name, key)) is not None:
                status = "artefacts cached"
            elif shipped.find(self.profile.artefact_stores, spec.name, key) is not None:
                status = "artefacts shipped (loaded, not trained)"
            else:
                status = "TRAINS: " + _training_notice(spec.key, key, self.profile.artefact_stores, spec.name).split(": ", 1)[1]
            lines.append(f"  {spec.key:<14} {status}")
        return "\n".join(lines)

    def check_methods(self, base: Components) -> None:
        """Every method's parameters against the base model (``Method.check``), before any work. A method
        prepared before with the same inputs (a valid record, see ``_prepare``) passed this check then,
        and is not checked again: the check may need the base model loaded, which a warm re-score avoids."""
        for spec in self.config.methods:
            method = METHODS.get(spec.name).from_config(spec.params)
            prep = self.preparation_base(method, base)
            key = self.artefact_key(method, prep)
            path = self._prepared_path(method, key, prep, base)
            if self._prepared_record(path, self.cache.artefact_dir(spec.name, key)) is None:
                method.check(base)

    def run(self) -> Path:
        try:
            return self._run()
        finally:
            self._flush_writes()

    def _flush_writes(self) -> None:
        """Wait for the background prediction writes (the thread ends with them); the first error is raised."""
        writes, self._writes = self._writes, []
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)
        for future in writes:
            future.result()

    def _run(self) -> Path:
        run_dir = self.run_dir()
        base = self.components()
        self.check_methods(base)
        _check_writable(run_dir)
        state = process_state()
        if state is not None:
            self._run_shard(state, base)
            self._flush_writes()
            state.wait_for_everyone()
            if not state.is_main_process:
                return run_dir
            self.cost, self.failures = {}, []
        cells: list[Cell] = []
        total = sum(len(ps.prompts) * ps.images_per_prompt for ps in self.prompt_sets)
        for spec in self.config.methods:
            method = self._prepare(spec, base)
            with tqdm(total=total, unit="img", desc=spec.key, disable=not self.progress) as bar:
                for ps in self.prompt_sets:
                    for prompt in ps.prompts:
                        cell = Cell(spec.key, ps.name, prompt.id, prompt.text,
                                    image_seeds(self.config.seed, prompt.id, ps.images_per_prompt))
                        bar.set_postfix_str(f"{ps.name}/{prompt.id}", refresh=False)
                        self._generate(method, cell, base, bar)
                        if not cell.failed:
                            t0 = time.perf_counter()
                            self._classify(cell)
                            self.phase_seconds["classify"] += time.perf_counter() - t0
                        cells.append(cell)
        from benchmark.scoring import cost_records, score, score_truth

        t0 = time.perf_counter()
        records = score(cells, self.prompt_sets, self.classifiers, self.profile, self.config, self.failures,
                        cache_root=self.cache.root)
        records += cost_records(self.cost, [ps.name for ps in self.prompt_sets], self.config.baseline)
        self.truth = score_truth(cells, self.prompt_sets, self.classifiers, self.profile.truth, self.config)
        t1 = time.perf_counter()
        self.phase_seconds["score"] = t1 - t0
        self._flush_writes()
        self._write(run_dir, cells, records, base)
        self.phase_seconds["write"] = time.perf_counter() - t1
        return run_dir

    def _run_shard(self, state: Any, base: Components) -> None:
        """This process's share of generation and classification (see benchmark.distributed)."""
        for spec in self.config.methods:
            if state.is_main_process:
                method = self._prepare(spec, base)
            state.wait_for_everyone()
            if not state.is_main_process:
                method = self._prepare(spec, base)
            cells = [(ps, p) for ps in self.prompt_sets for p in ps.prompts]
            with tqdm(total=len(cells), unit="prompt", desc=f"{spec.key} [rank {state.process_index}]",
                      disable=not self.progress) as bar:
                for index, (ps, prompt) in enumerate(cells):
                    if my_share(index, state):
                        cell = Cell(spec.key, ps.name, prompt.id, prompt.text,
                                    image_seeds(self.config.seed, prompt.id, ps.images_per_prompt))
                        self._generate(method, cell, base, tqdm(disable=True))
                        if not cell.failed:
                            self._classify(cell)
                    bar.update(1)

    def method_data(self) -> MethodData:
        """The profile's method data, with this run's classifier, attribute, and the prompts that leave
        that attribute open (plain prompts and those naming only other attributes).

        A prompt that names another attribute ("a zero on a mid background") is still scored on the
        debiased one, so per-prompt methods (SelfDebias's modes) must be prepared on it too; with
        plain prompts only, SelfDebias left those prompts at the baseline's bias."""
        data = self.profile.method_data
        data.classifier = next(iter(self.classifiers.values()))
        data.attribute = self.config.debias_attribute or self.full_prompt_sets[0].attributes[0]
        data.prompts = [p.text for ps in self.full_prompt_sets for p in ps.prompts if data.attribute not in p.named]
        return data

    def artefact_key(self, method: Method, base: Components, data_fingerprint: str | None = None) -> str:
        """Everything a method's preparation depends on, hashed: its artefact folder's name.
        ``data_fingerprint``: the method data's fingerprint over ``method.reads``, when the caller
        has already computed it (``_prepare`` records the same value in the folder's manifest)."""
        if data_fingerprint is None:
            data_fingerprint = self.method_data().fingerprint(method.reads)
        return hash_value({"method": method.name, "params": method.training_params(),
                           "base": base.fingerprint, "sampler": dataclasses.asdict(base.sampler),
                           "data": data_fingerprint})

    def _prepare(self, spec: MethodSpec, run_base: Components, defer: bool = True) -> Method:
        """Load (or train) ``spec``'s artefacts. With ``defer``, a method prepared before with the same
        inputs and artefact files (the record kept in the cache's ``prepared/``) is not prepared now:
        its recorded fingerprint keys the image cache, and :meth:`_prepared_method` prepares it when an
        image is missing. A warm re-score then never loads the generator."""
        method = METHODS.get(spec.name).from_config(spec.params)
        base = self.preparation_base(method, run_base)
        data = self.method_data()
        data_fingerprint = data.fingerprint(method.reads)
        key = self.artefact_key(method, base, data_fingerprint)
        workdir = self.workdirs[spec.key] = self.cache.artefact_dir(spec.name, key)
        source = shipped.seed_from(self.profile.artefact_stores, spec.name, key, workdir)
        if source is not None:
            log.info("%s: artefacts from %s", spec.key, source)
        before = shipped.read_manifest(workdir)
        fresh = not (workdir.is_dir() and any(workdir.iterdir()))
        if before is None and method.trains:
            self._announce(_training_notice(spec.key, key, self.profile.artefact_stores, spec.name))
        start = time.perf_counter()
        record_path = self._prepared_path(method, key, base, run_base)
        record = self._prepared_record(record_path, workdir) if defer else None
        if record is None:
            log.info("preparing %s", spec.key)
            method.prepare(base, data, workdir)
            if run_base.sampler != base.sampler:
                method.use_sampler(run_base.sampler)
        else:  # prepared on the first image that is not in the cache (none, on a warm re-score)
            log.info("%s: prepared before (%s); preparing again only if an image is missing", spec.key, record_path.name)
            self._deferred[spec.key] = (method, base, data, workdir, run_base.sampler, record_path, record)
        seconds = time.perf_counter() - start
        self.phase_seconds["prepare"] += seconds
        self.artefacts_source[spec.key] = ("shipped" if source is not None else "cached" if before is not None
                                           else "trained" if method.trains else "none")
        # the count kept beside the artefacts is the preparation sampler's; another one is counted afresh
        evals = self._unet_evaluations(spec.key, method, workdir / "unet-evals.json" if run_base.sampler == base.sampler else None)
        # Training time is measured once, when the folder is first filled, and kept in its manifest;
        # a folder filled before manifests existed has no known training time.
        train_seconds = before.get("train_seconds") if before else (round(seconds, 3) if fresh else None)
        files = shipped.artefact_files(workdir) if workdir.is_dir() else None
        if files is not None and (before is None or files != before["files"]):
            info = {"method": spec.name, "key": key, "params": dataclasses.asdict(method.params),
                    "base": base.fingerprint, "sampler": dataclasses.asdict(base.sampler), "data": data_fingerprint,
                    "train_seconds": train_seconds, "device": str(base.device), "versions": package_versions()}
            shipped.write_manifest(workdir, before or info)
        self.cost[spec.key] = {"prepare_seconds": round(seconds, 3), "train_seconds": train_seconds,
                               "generate_seconds": 0.0, "generated": 0, "image_seconds": 0.0, "timed_images": 0,
                               "unet_evals_per_image": evals}
        if spec.key in self._deferred:
            fingerprint, artefacts = record["fingerprint"], dict(record["artefacts"])
        else:
            fingerprint, artefacts = method.fingerprint(), dict(method.artefacts)
            if files is not None:
                self._write_prepared_record(record_path, fingerprint, artefacts, shipped.artefact_files(workdir))
        self.method_info[spec.key] = {"method": spec.name, "fingerprint": fingerprint,
                                      "params": dataclasses.asdict(method.params), "artefacts": artefacts,
                                      "artefact_key": key}
        return method

    # -- preparation records: a method prepared before is prepared again only when an image is missing --
    def _prepared_path(self, method: Method, key: str, base: Components, run_base: Components) -> Path:
        """Where the result of preparing ``method`` (its fingerprint and artefact hashes) is recorded,
        keyed by everything preparation reads besides the artefact folder's files (checked on reading):
        the artefact key, all parameters, both base models and samplers, and the method's code."""
        code = [hash_file(Path(inspect.getfile(cls))) for cls in type(method).__mro__
                if cls.__module__.startswith("methods.")]
        return self.cache.root / "prepared" / method.name / (hash_value({
            "version": 1, "artefact_key": key, "method": method.name, "params": dataclasses.asdict(method.params),
            "base": base.fingerprint, "sampler": dataclasses.asdict(base.sampler), "run_base": run_base.fingerprint,
            "run_sampler": dataclasses.asdict(run_base.sampler), "code": code})[:32] + ".json")

    @staticmethod
    def _prepared_record(path: Path, workdir: Path) -> dict[str, Any] | None:
        """The record at ``path`` when the artefact folder still holds exactly the files it was made
        from (same names, same sha256), else None (prepare as usual)."""
        try:
            record = json.loads(path.read_text())
            if not (isinstance(record.get("fingerprint"), str) and isinstance(record.get("artefacts"), dict)
                    and isinstance(record.get("files"), dict)):
                return None
        except (OSError, ValueError, AttributeError):
            return None
        if not workdir.is_dir() or shipped.artefact_files(workdir) != record["files"]:
            return None
        return record

    @staticmethod
    def _write_prepared_record(path: Path, fingerprint: str, artefacts: dict[str, str], files: dict[str, str]) -> None:
        try:
            atomic_write(path, json.dumps({"fingerprint": fingerprint, "artefacts": artefacts, "files": files},
                                          indent=1, sort_keys=True).encode())
        except CacheError as exc:  # only a shortcut for later runs: not worth failing this one
            log.warning("cannot record the preparation: %s", exc)

    def _prepared_method(self, label: str, method: Method) -> Method:
        """``method`` ready to generate: a method whose preparation was skipped is prepared now, and its
        fingerprint must be the recorded one that the cached images are keyed by."""
        deferred = self._deferred.pop(label, None)
        if deferred is None:
            return method
        method, base, data, workdir, sampler, path, record = deferred
        t0 = time.perf_counter()
        log.info("preparing %s (an image is missing from the cache)", label)
        method.prepare(base, data, workdir)
        if sampler != base.sampler:
            method.use_sampler(sampler)
        seconds = time.perf_counter() - t0
        self.phase_seconds["prepare"] += seconds
        self.cost[label]["prepare_seconds"] = round(self.cost[label]["prepare_seconds"] + seconds, 3)
        if method.fingerprint() != record["fingerprint"] or dict(method.artefacts) != record["artefacts"]:
            path.unlink(missing_ok=True)
            raise CacheError(f"{path}: {label}'s preparation gave another fingerprint than the one recorded for "
                             "its cached images (the record is now removed); run again")
        return method

    def _announce(self, line: str) -> None:
        """One line on stderr, above any progress bar (also when progress bars are off)."""
        tqdm.write(line, file=sys.stderr)

    def _unet_evaluations(self, label: str, method: Method, path: Path | None) -> int | None:
        """UNet evaluations for one image of the first prompt, counted on one probe image and kept
        next to the method's artefacts, so the count is known when every image comes from the cache."""
        probe = self.prompt_sets[0].prompts[0].text
        try:
            known = json.loads(path.read_text()) if path is not None else {}
            if known.get("prompt") == probe:
                return int(known["unet_evals_per_image"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        method = self._prepared_method(label, method)
        try:
            _, count = count_unet_evaluations(lambda: method.generate([probe], [PROBE_SEED]))
        except DataError:
            return None
        if path is not None:
            atomic_write(path, json.dumps({"prompt": probe, "unet_evals_per_image": count}).encode())
        return count

    def _generate(self, method: Method, cell: Cell, base: Components, bar: tqdm) -> None:
        fp = self.method_info[cell.method]["fingerprint"]
        sampler = dataclasses.asdict(base.sampler)
        cell.keys = [self.cache.image_key(fp, cell.prompt, s, sampler) for s in cell.seeds]
        cost = self.cost[cell.method]
        whole = self.cache.get_cell_images(cell.keys)
        if whole is not None:
            cell.images, cell.shas = whole[0], whole[1]
            timed = [t for t in whole[2] if t is not None]
            cost["image_seconds"] += sum(timed)
            cost["timed_images"] += len(timed)
            bar.update(len(cell.keys))
            return
        images: list[np.ndarray | None] = [None] * len(cell.seeds)
        shas: list[str] = [""] * len(cell.seeds)
        seconds_of: list[float | None] = [None] * len(cell.seeds)
        for i, key in enumerate(cell.keys):
            hit = self.cache.get_image(key)
            if hit is not None:
                images[i], shas[i], seconds_of[i] = hit.image, hit.sha256, hit.seconds
                if hit.seconds is not None:
                    cost["image_seconds"] += hit.seconds
                    cost["timed_images"] += 1
        missing = [i for i, img in enumerate(images) if img is None]
        bar.update(len(images) - len(missing))
        if missing:
            method = self._prepared_method(cell.method, method)
        for start in range(0, len(missing), self.config.batch_size):
            batch = missing[start : start + self.config.batch_size]
            t0 = time.perf_counter()
            try:
                out = method.generate([cell.prompt] * len(batch), [cell.seeds[i] for i in batch])
            except DataError as exc:
                self._fail(cell, "generate", str(exc))
                bar.update(len(missing) - start)
                return
            seconds = time.perf_counter() - t0
            self.phase_seconds["generate"] += seconds
            cost["generate_seconds"] += seconds
            cost["generated"] += len(batch)
            cost["image_seconds"] += seconds
            cost["timed_images"] += len(batch)
            for i, image in zip(batch, out, strict=True):
                shas[i] = self.cache.put_image(cell.keys[i], image, seconds / len(batch))
                images[i], seconds_of[i] = image, seconds / len(batch)
            bar.update(len(batch))
        cell.images = np.stack(images)  # type: ignore[arg-type]
        cell.shas = shas
        self.cache.put_cell_images(cell.keys, cell.images, shas, seconds_of)

    def _classify(self, cell: Cell) -> None:
        assert cell.images is not None
        for name, clf in self.classifiers.items():
            whole = self.cache.get_cell_predictions(clf.fingerprint, cell.shas)
            if whole is not None and all(f"p.{a}" in whole for a in clf.attributes) and "subject" in whole:
                cell.predictions[name] = {a: whole[f"p.{a}"].astype(np.float64) for a in clf.attributes}
                cell.has_subject[name] = whole["subject"].astype(bool)
                continue
            cached = [self.cache.get_predictions(clf.fingerprint, sha) for sha in cell.shas]
            missing = [i for i, c in enumerate(cached) if c is None]
            if missing:
                subset = cell.images[missing]
                try:
                    probs = clf.predict(subset)
                    subject = np.asarray(clf.detect(subset), dtype=bool)
                    _check_probs(probs, clf, len(missing))
                except DataError as exc:
                    self._fail(cell, "classify", f"{name}: {exc}")
                    return
                entries = []
                for j, i in enumerate(missing):
                    payload = {"probs": {a: p[j].tolist() for a, p in probs.items()}, "subject": bool(subject[j])}
                    entries.append((cell.shas[i], payload))
                    cached[i] = payload
                self._write_later(self.cache.put_many_predictions, clf.fingerprint, entries)
            cell.predictions[name] = {a: np.array([c["probs"][a] for c in cached], dtype=np.float64)
                                      for a in clf.attributes}
            cell.has_subject[name] = np.array([c["subject"] for c in cached], dtype=bool)
            self.cache.put_cell_predictions(clf.fingerprint, cell.shas, {
                **{f"p.{a}": p for a, p in cell.predictions[name].items()}, "subject": cell.has_subject[name]})

    def _write_later(self, fn: Any, *args: Any) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="debias-bench-cache")
        self._writes.append(self._writer.submit(fn, *args))

    def _fail(self, cell: Cell, stage: str, error: str) -> None:
        cell.failed = True
        log.error("%s failed for %s on %s/%s: %s", stage, cell.method, cell.prompt_set, cell.prompt_id, error)
        self.failures.append({"method": cell.method, "prompt_set": cell.prompt_set, "prompt_id": cell.prompt_id,
                              "stage": stage, "error": error})

    # -- output --------------------------------------------------------------------------------
    @staticmethod
    def _cost_entry(c: dict[str, Any]) -> dict[str, Any]:
        """``generate_seconds``/``generated``: this run's own work. ``seconds_per_image``: the mean over
        every image of the run of the time recorded when it was generated (the cache keeps it), so a
        run served from the cache still reports what its images cost."""
        entry = {k: v for k, v in c.items() if k != "image_seconds"}
        timed = c["timed_images"]
        return {**entry, "generate_seconds": round(c["generate_seconds"], 3),
                "seconds_per_image": round(c["image_seconds"] / timed, 5) if timed else None}

    def _write(self, run_dir: Path, cells: list[Cell], records: list[dict], base: Components) -> None:
        rows = []
        for cell in cells:
            if cell.failed:
                continue
            for i, seed in enumerate(cell.seeds):
                row: dict[str, Any] = {"method": cell.method, "prompt_set": cell.prompt_set,
                                       "prompt_id": cell.prompt_id, "prompt": cell.prompt, "index": i,
                                       "seed": seed, "image_key": cell.keys[i], "image_sha256": cell.shas[i]}
                for cname, preds in cell.predictions.items():
                    row[f"{cname}/has_subject"] = bool(cell.has_subject[cname][i])
                    for attr, probs in preds.items():
                        for k, cls in enumerate(self.classifiers[cname].attributes[attr]):
                            row[f"{cname}/{attr}/{cls}"] = float(probs[i, k])
                rows.append(row)
        results = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_dir.name,
            "config": self.config.model_dump(),
            "versions": package_versions(),
            "models": {
                "base": {"name": base.name, "fingerprint": base.fingerprint, "sampler": base.sampler.__dict__},
                "methods": self.method_info,
                # the matrices CLEAM used, so that the corrected numbers can be recomputed from this file
                "classifiers": {n: {"fingerprint": c.fingerprint, "attributes": c.attributes,
                                    "confusion": {a: np.asarray(m).tolist() for a, m in c.confusion.items()},
                                    "soft_confusion": {a: np.asarray(m).tolist() for a, m in c.soft_confusion.items()},
                                    **_by_content(c),
                                    "accuracy_by_content": c.accuracy_by_content,
                                    "cleam_assumption": c.cleam_assumption(),
                                    "confusion_source": c.confusion_source} for n, c in self.classifiers.items()},
                "profile": self.profile.name,
                "profile_info": self.profile.info,
            },
            "prompt_sets": {ps.name: {"fingerprint": ps.fingerprint, "attributes": ps.attributes,
                                      "classes": ps.classes, "images_per_prompt": ps.images_per_prompt,
                                      "target": {a: np.asarray(t).tolist() for a, t in ps.target.items()},
                                      "prompts": [{"id": p.id, "text": p.text, "named": p.named} for p in ps.prompts]}
                            for ps in self.prompt_sets},
            "failures": self.failures,
            "metrics": records,
            "truth": self.truth,
            "cost": {k: self._cost_entry(v) for k, v in self.cost.items()},
            # how this execution went: like cost, it may differ between runs with equal numbers
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "execution": {"artefacts": dict(self.artefacts_source),
                          "phase_seconds": {k: round(v, 3) for k, v in self.phase_seconds.items() if k != "write"},
                          "machine": machine_info()},
        }
        # Everything is written into a private staging folder first and only then renamed into place
        # (results.json last), so a full disk or a read-only folder leaves the earlier results whole
        # and two runs writing one run directory never share a temporary file.
        _remove_dead_staging(run_dir)
        staging = run_dir / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        committing = False
        try:
            staging.mkdir()
            pd.DataFrame(rows).to_parquet(staging / "predictions.parquet", index=False)
            scored = [c for c in cells if not c.failed]
            has_vectors = save_vectors(
                staging / FEATURES_FILE, [c.vectors for c in scored if c.vectors is not None]
                if all(c.vectors is not None for c in scored) else [], [c.prompt for c in scored],
                getattr(self.profile.features, "fingerprint", None), getattr(self.profile.embedder, "fingerprint", None))
            samples = self._write_samples(staging, cells, run_dir / "samples")
            atomic_write(staging / "results.json", json.dumps(results, indent=1, sort_keys=True, default=str).encode())
            committing = True  # renames only from here on: no new blocks needed on the disk
            (run_dir / "samples").mkdir(exist_ok=True)
            for name in samples:
                os.replace(staging / "samples" / name, run_dir / "samples" / name)
            os.replace(staging / "predictions.parquet", run_dir / "predictions.parquet")
            if has_vectors:
                os.replace(staging / FEATURES_FILE, run_dir / FEATURES_FILE)
            else:
                (run_dir / FEATURES_FILE).unlink(missing_ok=True)
            os.replace(staging / "results.json", run_dir / "results.json")
        except (OSError, CacheError) as exc:
            reason = (exc.strerror or exc) if isinstance(exc, OSError) else exc
            state = ("results there may be partly updated; run again" if committing
                     else "earlier results there are unchanged")
            raise CacheError(f"{run_dir}: cannot write the results ({reason}); {state}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        from benchmark.report import write_report

        write_report(run_dir)


    def _write_samples(self, run_dir: Path, cells: list[Cell], current: Path | None = None) -> list[str]:
        """Thumbnails into ``run_dir/samples``; the names written. One whose bytes are already in
        ``current`` (the run directory's samples, on a re-score) is not written again."""
        names = []
        for cell in cells:
            if cell.failed or cell.images is None:
                continue
            for i in range(min(THUMBNAILS_PER_PROMPT, len(cell.images))):
                name = f"{cell.method}__{cell.prompt_set}__{cell.prompt_id}__{i}.png"
                data = png_bytes(cell.images[i])
                try:
                    if current is not None and (current / name).read_bytes() == data:
                        continue
                except OSError:
                    pass
                atomic_write(run_dir / "samples" / name, data)
                names.append(name)
        return names


def _training_notice(label: str, key: str, stores: list[Path], method: str) -> str:
    """The line printed before a method trains inside a run: which, why, and how long it took where
    it was shipped (the manifests of the stores record it)."""
    where = ", ".join(str(s) for s in stores) or "no artefact store for this profile"
    known = [m.get("train_seconds") for store in stores for folder in sorted((Path(store) / method).glob("*"))
             if folder.is_dir() and (m := shipped.read_manifest(folder)) is not None]
    known = [float(t) for t in known if isinstance(t, (int, float))]
    expect = (f"its shipped artefacts took {max(known) / 60:.1f} min to train on the machine that made them"
              if known else "no recorded training time to go by")
    return (f"training {label}: no prepared artefacts for key {key[:16]} (looked in the cache and in {where}); "
            f"{expect}")


def _check_probs(probs: dict[str, np.ndarray], clf: Classifier, n: int) -> None:
    for attr, classes in clf.attributes.items():
        p = np.asarray(probs.get(attr))
        if p.shape != (n, len(classes)):
            raise DataError(f"attribute {attr!r}: expected probabilities of shape {(n, len(classes))}, got {p.shape}")
        if not np.isfinite(p).all():
            raise DataError(f"attribute {attr!r}: {int((~np.isfinite(p)).any(axis=1).sum())} predictions are NaN/Inf")


def _check_compatible(prompt_sets: list[PromptSet], classifiers: dict[str, Classifier]) -> None:
    """Each prompt set shares an attribute with a classifier, with the same class labels; otherwise
    the run would generate every image and then fail at scoring (or score nothing)."""
    for ps in prompt_sets:
        label = str(ps.path) if ps.path is not None else ps.name
        shared = [a for a in ps.attributes if any(a in c.attributes for c in classifiers.values())]
        if not shared:
            predicted = sorted({a for c in classifiers.values() for a in c.attributes})
            raise ConfigError(f"{label}: attributes: none of {', '.join(ps.attributes)} is predicted by the "
                              f"classifiers {', '.join(classifiers)} (they predict: {', '.join(predicted)})")
        for name, clf in classifiers.items():
            for attr in shared:
                if attr in clf.attributes and sorted(clf.attributes[attr]) != sorted(ps.classes[attr]):
                    raise ConfigError(f"{label}: classes.{attr}: {ps.classes[attr]} do not match the classes of "
                                      f"classifier {name!r}: {clf.attributes[attr]}")


def _remove_dead_staging(run_dir: Path) -> None:
    """Staging folders of writers that died (killed mid-write) are removed; a live writer's is kept."""
    for folder in run_dir.glob(".staging-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
            os.kill(pid, 0)  # raises when no such process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue  # not ours to judge (another user's process, or a name we did not write)


def _check_writable(run_dir: Path, what: str = "output directory") -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique: runs may share a folder
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CacheError(f"{run_dir}: {what} is not writable ({exc.strerror or exc})") from None


def run(config: RunConfig, profile: Profile | None = None, progress: bool = True) -> Path:
    """Run a config end to end; returns the run directory."""
    return Runner(config, profile=profile, progress=progress).run()


__all__ = ["BenchError", "Cell", "Runner", "run"]
