"""debias-bench: measure how fair text-to-image diffusion models are, and how well debiasing methods fix them.

    debias-bench run [CONFIG] [--methods baseline,ddm] [--images-per-prompt 50] ...
    debias-bench prepare [CONFIG] [--export DIR]   (train or load artefacts only; DIR receives copies)
    debias-bench list [profiles|methods|classifiers|prompts|studies]
    debias-bench report RUN_DIR
    debias-bench world build [...]
    debias-bench study SPEC              (a grid over methods' knobs and the sampler: fronts, robustness)
    debias-bench method NAME ARGS...     (a method's diagnostics, e.g. `method difflens features`)
    debias-bench submit / leaderboard / gate

User errors print one line (``error: ...``) and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from benchmark.errors import BenchError


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default, except an unset one (None: the help text says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with the harness's error style: one ``error:`` line on stderr, exit status 2
    (argparse's own prints the whole usage block first); help shows every flag's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run methods × prompt sets, classify, score, write results/<run-id>/",
                       description="Generate, classify and score; flags override the config file's fields. "
                                   "Unset flags (None) keep the config's value or its default.")
    p.add_argument("config", nargs="?", help="run config (.yaml/.yml/.toml); default: the world suite")
    p.add_argument("--profile", choices=["world", "real", "tiny"], help="base model family (config default: world)")
    p.add_argument("--model", help="real profile: diffusers model id (in the local HF cache) or local path")
    p.add_argument("--variant", help="world variant: default or alt")
    p.add_argument("--methods", type=_csv, help="comma-separated method names (`debias-bench list methods`); "
                                                "default: all five")
    p.add_argument("--prompt-sets", type=_csv, help="comma-separated prompt-set names or YAML paths (default: world)")
    p.add_argument("--classifiers", type=_csv, help="comma-separated classifier names (default: world,world-weak)")
    p.add_argument("--debias-attribute", help="attribute methods debias (default: the first prompt set's first)")
    p.add_argument("--images-per-prompt", type=int, help="images per prompt (default: the prompt set's own)")
    p.add_argument("--max-prompts", type=int, help="evaluate only the first N prompts of each set (quick runs; "
                                                   "methods stay prepared on the full sets)")
    p.add_argument("--batch-size", type=int, help="images per generation batch (default: 100)")
    p.add_argument("--seed", type=int, help="image seed base (default: 0)")
    p.add_argument("--steps", type=int, help="number of inference steps (default: the profile's sampler)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the profile's sampler)")
    p.add_argument("--scheduler", choices=["ddim", "pndm", "euler", "euler-ancestral", "dpm-solver++", "ddpm"],
                   help="another scheduler on the model's noise schedule (default: the model's own)")
    p.add_argument("--bootstrap", type=int, help="bootstrap resamples for intervals, 0 for none (default: 1000)")
    p.add_argument("--output-dir", help="where results/<run-id>/ goes (default: results)")
    p.add_argument("--cache-dir", help="image, prediction and artefact cache (default: .debias-cache)")
    p.add_argument("--run-id", help="name of the run folder (default: profile + hash of the resolved config)")
    p.add_argument("--device", help="where the world's models run (cuda, cuda:1); default: the CPU")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true", help="print the plan (methods, prompts, images, what is loaded, "
                                                          "cached or trained) and an estimated time; run nothing")
    p.set_defaults(func=_cmd_run)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="train or load every method's artefacts without generating; --export ships them")
    p.add_argument("config", nargs="?", help="run config (.yaml/.yml/.toml); default: the world suite")
    p.add_argument("--variant", help="world variant: default or alt")
    p.add_argument("--methods", type=_csv, help="comma-separated method names (default: all five)")
    p.add_argument("--cache-dir", help="artefact cache (default: .debias-cache)")
    p.add_argument("--device", help="where the world's models run (cuda, cuda:1); default: the CPU")
    p.add_argument("--export", metavar="DIR",
                   help="copy each prepared artefact folder with its manifest to DIR/<method>/<key>/ "
                        "(the world's store: benchmark/world/weights[-VARIANT]/methods)")
    p.set_defaults(func=_cmd_prepare)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmark.config import load_config
    from benchmark.runner import Runner

    over = {k: getattr(args, k) for k in ("variant", "cache_dir", "device")}
    if args.methods is not None:
        over["methods"] = [{"name": m} for m in args.methods]
    runner = Runner(load_config(args.config, over), progress=False)
    folders = runner.prepare(Path(args.export) if args.export else None)
    for key, folder in folders.items():
        train = runner.cost[key].get("train_seconds")
        print(f"{key:<12} {folder}  (training {'unknown' if train is None else f'{train:.1f} s'})")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    over = {k: getattr(args, k) for k in ("profile", "model", "variant", "prompt_sets", "classifiers",
                                          "debias_attribute", "images_per_prompt", "max_prompts", "batch_size",
                                          "seed", "output_dir", "cache_dir", "run_id", "device")}
    if args.methods is not None:
        over["methods"] = [{"name": m} for m in args.methods]
    sampler = {"num_inference_steps": args.steps, "guidance_scale": args.guidance, "scheduler": args.scheduler}
    over["sampler"] = {k: v for k, v in sampler.items() if v is not None} or None
    if args.bootstrap is not None:
        over["metrics"] = {"bootstrap": args.bootstrap}
    return over


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmark.config import load_config
    from benchmark.headline import headline_table
    from benchmark.report import load_results
    from benchmark.runner import run

    config = load_config(args.config, _overrides(args))
    if args.dry_run:
        from benchmark.estimate import estimate, reference_run
        from benchmark.runner import Runner

        runner = Runner(config, progress=False)
        plan = runner.plan()
        print(plan)
        status = {line.split()[0]: line for line in plan.splitlines() if line.startswith("  ") and line.split()}
        methods = [(m.key, m.name, "TRAINS" in status.get(m.key, "")) for m in config.methods]
        images = sum(len(ps.prompts) * ps.images_per_prompt for ps in runner.prompt_sets)
        print(estimate(config.profile, images, methods, reference_run(config.profile)))
        return 0
    run_dir = run(config, progress=not args.quiet)
    results = load_results(run_dir)
    print(headline_table(results))
    for failure in results.get("failures", []):
        print(f"FAILED {failure['stage']}: {failure['method']} on {failure['prompt_set']}/{failure['prompt_id']}: "
              f"{failure['error']}")
    truth = "; measured vs configured shares (world): results.json → truth" if config.profile == "world" else ""
    print(f"\nevery metric: `debias-bench report {run_dir}`{truth}\nresults: {run_dir}/results.json\n"
          f"report:  {run_dir}/report.html")
    return 0


PROFILES_DESCRIBED = {
    "world": "the embedded controlled-bias world (default): shipped weights and method artefacts",
    "real": "Stable Diffusion 1.x/2.x/XL from a diffusers id or folder (--model)",
    "tiny": "a random tiny SD model: a smoke run of the loop in seconds, nothing to download",
}
# The attributes each profile's classifiers predict: which prompt sets a profile can score.
PROFILE_ATTRIBUTES = {"world": {"color", "shade", "digit"}, "real": {"gender", "race", "age"}, "tiny": {"tone"}}
LIST_WHAT = ("profiles", "methods", "classifiers", "prompts", "studies")


def _list_lines(what: str) -> list[str]:
    """One line per item: its name, what it is, and (where it applies) size, attributes and profiles."""
    if what == "prompts":
        from prompts import PROMPT_SETS, load_prompt_set

        lines = []
        for name in PROMPT_SETS:
            ps = load_prompt_set(name)
            fits = [p for p, attrs in PROFILE_ATTRIBUTES.items() if attrs & set(ps.attributes)]
            lines.append(f"{name:<12} {len(ps):>3} prompts x {ps.images_per_prompt:<3} images  "
                         f"attributes: {', '.join(ps.attributes)}  profiles: {', '.join(fits) or '-'}  "
                         f"- {' '.join(ps.description.split())}")
        return lines
    if what == "studies":
        import yaml

        from studies import STUDIES

        lines = []
        for name, resource in STUDIES.items():
            raw = yaml.safe_load(resource.read_text(encoding="utf-8")) or {}
            lines.append(f"{name:<18} {' '.join(str(raw.get('description', '')).split())}")
        return lines
    if what == "profiles":
        from benchmark.config import PROFILE_DEFAULTS, RunConfig

        world = RunConfig.model_fields
        lines = []
        for name, text in PROFILES_DESCRIBED.items():
            own = PROFILE_DEFAULTS.get(name, {})
            prompts = own.get("prompt_sets") or world["prompt_sets"].default_factory()
            classifiers = own.get("classifiers") or world["classifiers"].default_factory()
            lines.append(f"{name:<12} {text}; defaults: prompts {', '.join(prompts)}, "
                         f"classifiers {', '.join(classifiers)}")
        return lines
    if what == "methods":
        from methods import METHODS

        store = Path(__file__).resolve().parent / "world"
        lines = []
        for name in METHODS.names():
            variants = [v for v, d in (("default", "weights"), ("alt", "weights-alt")) if (store / d / "methods" / name).is_dir()]
            shipped = f"; world artefacts shipped ({', '.join(variants)})" if variants else ""
            lines.append(f"{name:<12} {METHODS.descriptions.get(name, '')}; any profile{shipped}")
        return lines
    from classifiers import CLASSIFIERS

    return [f"{name:<12} {CLASSIFIERS.descriptions.get(name, '')}" for name in CLASSIFIERS.names()]


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what is not None:
        print("\n".join(_list_lines(args.what)))
        return 0
    for i, what in enumerate(LIST_WHAT):
        print(("\n" if i else "") + f"{what}:")
        print("\n".join("  " + line for line in _list_lines(what)))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from benchmark.headline import headline_table
    from benchmark.report import load_results, summary_table, write_report

    path = write_report(Path(args.run_dir))
    if args.all:
        print(summary_table(Path(args.run_dir)))
    else:  # the headline, as after a run (fits 100 columns); the wide table of every metric on request
        results = load_results(Path(args.run_dir))
        print(headline_table(results))
        for failure in results.get("failures", []):
            print(f"FAILED {failure['stage']}: {failure['method']} on {failure['prompt_set']}/{failure['prompt_id']}: "
                  f"{failure['error']}")
        print(f"\nevery set-level metric: `debias-bench report {args.run_dir} --all`, or the report's tables")
    print(f"\nreport: {path}")
    return 0


def _cmd_cleam_check(args: argparse.Namespace) -> int:
    from benchmark.cleam_check import check, table

    if not Path(args.run_dir).is_dir():
        raise BenchError(f"{args.run_dir}: run folder not found")
    print(table(check(args.run_dir, args.weak, args.strong), args.weak, args.strong))
    return 0


def _cmd_world(args: argparse.Namespace) -> int:
    if args.action == "check":
        from benchmark.world.check import main as check_main

        return int(check_main(args.rest) or 0)
    from benchmark.world.build import main as build_main

    return int(build_main(args.rest) or 0)


def _cmd_method(args: argparse.Namespace) -> int:
    from benchmark.diagnostics import DIAGNOSTICS
    from methods import METHODS

    METHODS.get(args.name)  # unknown names fail here with the list of known ones
    if args.name not in DIAGNOSTICS:
        raise BenchError(f"method {args.name!r} has no diagnostics of its own (those that do: "
                         f"{', '.join(DIAGNOSTICS.names())}); compare settings with `debias-bench study`")
    return int(DIAGNOSTICS.get(args.name)(list(args.rest)) or 0)


def _cmd_study(args: argparse.Namespace) -> int:
    from benchmark.study import dry_run, load_study, run_study

    spec = load_study(args.spec)
    over = {k: getattr(args, k) for k in ("images_per_prompt", "max_prompts", "cache_dir", "device")}
    if args.dry_run:
        print(dry_run(spec, over, str(args.spec)))
        return 0
    folder = run_study(spec, over, args.output_dir, progress=not args.quiet, source=str(args.spec))
    print((folder / "study.txt").read_text(), end="")
    print(f"\nstudy: {folder}/study.json")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    import json

    from benchmark.verify import KEY_FIELDS, format_summary, verify

    result, run_dir = verify(args.entry, cache_dir=args.cache_dir, output_dir=args.output_dir, progress=not args.quiet)
    print(format_summary(result))
    if run_dir is not None:
        print(f"rerun: {run_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result.summary(), "records": [
            {**r, "key": dict(zip(KEY_FIELDS, r["key"], strict=True))} for r in result.rows]}, indent=1))
    return 0 if result.passed else 1


def _cmd_perf(args: argparse.Namespace) -> int:
    if args.harness:
        from benchmark.perf_harness import report as harness_report

        return harness_report(args)
    from benchmark.perf import report

    return report(args)


def build_parser() -> argparse.ArgumentParser:
    from benchmark import __version__

    parser = _Parser(prog="debias-bench", description=__doc__.splitlines()[0] if __doc__ else None,
                     epilog="Each command has its own --help. Errors print one line and exit with status 2.")
    parser.add_argument("--version", action="version", version=f"debias-bench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_prepare(sub)
    p = sub.add_parser("list", help="list profiles, methods, classifiers, prompt sets and studies, one line each")
    p.add_argument("what", nargs="?", choices=LIST_WHAT, help="one kind only (default: every kind, each under a heading)")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("report", help="(re)write a run's report.html and print its headline")
    p.add_argument("run_dir", help="a run folder, results/<run-id>")
    p.add_argument("--all", action="store_true", help="print every set-level metric of every method (a wide table) "
                                                      "instead of the headline")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("cleam-check", help="how far a classifier's CLEAM correction holds on a run, with a stronger "
                                           "classifier's labels as the truth")
    p.add_argument("run_dir", help="a run folder or leaderboard entry where both classifiers labelled the images")
    p.add_argument("--weak", default="world-weak", help="the corrected classifier (default: world-weak)")
    p.add_argument("--strong", default="world", help="the classifier taken as the label (default: world)")
    p.set_defaults(func=_cmd_cleam_check)
    p = sub.add_parser("world", help="the controlled-bias world: `world build` rebuilds its weights, "
                                     "`world check` compares this machine's renders with the shipped ones")
    p.add_argument("action", choices=["build", "check"], help="build: retrain the world's weights; "
                                                                 "check: compare renders with the shipped ones")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the action's own options (`world build --help`)")
    p.set_defaults(func=_cmd_world)
    p = sub.add_parser("study", help="run a study: methods over a grid of their knobs and the sampler "
                                     "(fronts, hypervolume, robustness)")
    p.add_argument("spec", help="a shipped study (`debias-bench list studies`) or a study .yaml file")
    p.add_argument("--images-per-prompt", type=int, help="override the study's image budget")
    p.add_argument("--max-prompts", type=int, help="evaluate only the first N prompts of each set")
    p.add_argument("--output-dir", default="results", help="where study-<name>-<hash>/ goes")
    p.add_argument("--cache-dir", help="image, prediction and artefact cache (default: .debias-cache)")
    p.add_argument("--device", help="where the world's models run (cuda, cuda:1); default: the CPU")
    p.add_argument("--dry-run", action="store_true", help="print the points and settings; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_study)
    p = sub.add_parser("verify", help="re-run a leaderboard entry's recorded configuration from an empty cache "
                                      "and check every number against it (exit 1 beyond the tolerance)")
    p.add_argument("entry", help="a leaderboard entry or run folder (or its results.json)")
    p.add_argument("--cache-dir", help="cache for the rerun (default: a new empty folder)")
    p.add_argument("--output-dir", help="where the rerun's results go (default: a temporary folder)")
    p.add_argument("--json", metavar="FILE", help="also write the summary and every record's comparison to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("perf", help="throughput of the harness vs a bare diffusers loop")
    from benchmark.perf import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_perf)
    p = sub.add_parser("method", help="a method's diagnostics, e.g. `method difflens features`")
    p.add_argument("name", help="a method with diagnostics (e.g. difflens)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the diagnostic and its options (`method difflens --help`)")
    p.set_defaults(func=_cmd_method)
    try:
        from leaderboard.cli import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def _quiet_libraries() -> None:
    """The model libraries' own chatter (weight-loading bars, dtype advice, deprecation notices of their
    internals) says nothing about the benchmark; ``-v`` keeps it. Set before they are imported."""
    import os
    import warnings

    for name, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(name, value)
    for module in ("transformers", "diffusers", "peft", "open_clip", "timm", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already printed as one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except BenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished images and predictions are kept in the cache; run again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
