"""The ``dncsim`` command line.

User mistakes (bad flags, files, data, configs) are reported as ONE line on stderr with exit
status 2; nothing is written. A run that started and then failed (training diverged, a file could
not be written) is one line and exit status 1, recorded in its run directory. Ctrl-C, SIGTERM and
SIGHUP end any command with one line and exit status 128 + the signal (130, 143, 129;
``dncsim.simulator.interrupts``). Programming errors keep their traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import List, Optional

from dncsim.common import DncsimError, printable

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help) and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """``text`` as one printable line of bounded length (:func:`dncsim.common.printable`): a message that
    quotes what the user wrote stays one short line whatever they wrote."""
    return printable(text)


def _positive_ints(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'")
    return values


def _seed(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text.strip()) or int(text) >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got '{text}'")
    return int(text)


def _out_file(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got an empty one")
    return text


def _names(text: str) -> List[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated label keys, got '{text}'")
    return names


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return v


def _nonneg_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'")
    return int(text)


def _interval_groups(text: str) -> int:
    v = _nonneg_int(text)
    if v == 1:
        raise argparse.ArgumentTypeError("expected 0 (no intervals) or at least 2 groups, got '1'")
    return v


def _ways(text: str) -> Optional[int]:
    if text == "all":
        return None
    v = _positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 or 'all', got '{text}'")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``dncsim`` subcommand."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        ver = version("dncsim")
    except PackageNotFoundError:
        ver = "unknown"
    parser = _Parser(prog="dncsim", description="Continual multitask learning simulator: directional CDNV, "
                                                "decision-axis orthogonality and interference.")
    parser.add_argument("--version", action="version", version=f"dncsim {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    a = sub.add_parser("analyze", help="geometry, few-shot bounds and orthogonality of saved features",
                       description="Directional CDNV, CDNV, few-shot NCC error against the Theorem 4.1 bound, "
                                   "and decision-axis orthogonality (Prop. 4.2) of the labelings in an .npz file "
                                   "holding 'features' (N, d) and one integer label array per labeling.")
    a.add_argument("features", metavar="FEATURES.npz", help="the .npz file")
    a.add_argument("--labels", type=_names, default=None, metavar="KEY[,KEY...]",
                   help="label arrays to analyse, in order (default: every 1-D integer array of length N)")
    a.add_argument("--shots", type=_positive_ints, default=[1, 5, 10, 20], metavar="M[,M...]",
                   help="support sizes per class for the few-shot error and bound (default: 1,5,10,20)")
    a.add_argument("--ways", type=_ways, default=2, metavar="K|all",
                   help="classes per few-shot episode (default: 2, as in the paper; 'all' for C-way)")
    a.add_argument("--episodes", type=_positive_int, default=200, help="few-shot episodes per shot count (default: "
                                                                       "200)")
    a.add_argument("--seed", type=_seed, default=0, help="seed of the episodes (default: 0)")
    a.add_argument("--ddof", type=int, choices=(0, 1), default=0,
                   help="0: population variances (default); 1: unbiased, as the authors' bound code")
    a.add_argument("--estimator", choices=("debiased", "plugin", "crossfit"), default="debiased",
                   help="estimator of dir-CDNV, CDNV, ratio and mean gap, as analysis.estimator (default: "
                        "debiased; the other labelings of the file are its strata where they form a balanced "
                        "design)")
    a.add_argument("--design", choices=("auto", "iid", "strata"), default="auto",
                   help="debiased: how the samples were drawn, as analysis.design (default: auto)")
    a.add_argument("--interval-groups", type=_interval_groups, default=20, metavar="G",
                   help="debiased: jackknife groups of the 95%% intervals, as analysis.interval_groups (default: "
                        "20; 0: none)")
    a.add_argument("--bootstrap", type=_nonneg_int, default=200, metavar="B",
                   help="plugin and crossfit: bootstrap resamples of the 95%% intervals (default: 200; 0: none)")
    a.add_argument("--float32", action="store_true", help="accumulate in float32 (faster, ~1e-6 relative)")
    a.add_argument("--json", metavar="OUT.json", type=_out_file, default=None,
                   help="also write every number to this JSON file")
    a.set_defaults(func=_cmd_analyze)

    s = sub.add_parser("scenario", help="summarise a scenario and save example images per experience",
                       description="Validate the scenario section of a YAML config, build its Avalanche stream, "
                                   "print the experiences (labelings, classes, sizes, input shape) and save a grid "
                                   "of example images per experience as a PNG.")
    s.add_argument("config", metavar="CONFIG.yaml", help="a YAML file with a 'scenario:' section")
    s.add_argument("--png", metavar="PATH", default=None,
                   help="where to save the example grid (default: <config name>_examples.png in a new "
                        "temporary directory; the path is printed)")
    s.set_defaults(func=_cmd_scenario)

    r = sub.add_parser("run", help="run a continual task-sequence scenario end to end",
                       description="Train one shared backbone over the scenario's stream and measure, after every "
                                   "experience, each task's probe accuracies, geometry (directional CDNV, CDNV, "
                                   "decision "
                                   "axes), few-shot error against Theorem 4.1, cross-task orthogonality and "
                                   "forgetting. "
                                   "Everything is written to a run directory that resumes after an interruption.")
    r.add_argument("config", metavar="CONFIG.yaml", help="the run configuration (docs: Reference, Configuration)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config key by dotted path (repeatable), e.g. --set training.epochs=2")
    r.add_argument("--out", metavar="DIR", default=None, help="run directory (default: output.dir, else runs/<name>)")
    r.add_argument("--resume", action="store_true", help="continue the unfinished run in the run directory "
                                                         "(also automatic when running into one)")
    r.add_argument("--force", action="store_true", help="start over in a dncsim run directory (its run files are "
                                                        "deleted; a folder that is not one is refused)")
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", help="the orthogonality report of a run (HTML, Markdown, JSON)",
                         description="Write the report of a run directory: decision-axis orthogonality over the "
                                     "stream, "
                                     "the Prop. 4.2 check, directional collapse, interference (accuracy matrices, "
                                     "forgetting, the interference graph), few-shot error against Theorem 4.1, and "
                                     "generated findings. --compare sets other runs side by side.")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by dncsim run")
    rep.add_argument("--out", metavar="DIR", default=None, help="output directory (default: RUN_DIR/report)")
    rep.add_argument("--compare", metavar="OTHER_RUN", nargs="+", default=[], help="other run directories to compare")
    rep.add_argument("--paper", action="store_true",
                     help="add the section that checks the paper's three claims (S1 directional collapse, S2 "
                          "Theorem 4.1, S3 near-orthogonality) claim by claim; the run's output.paper decides "
                          "otherwise (auto: joint streams only)")
    rep.set_defaults(func=_cmd_report)

    st = sub.add_parser("study", help="many runs over a grid of factors, statistics and a verdict",
                        description="Run every combination of the study's factors (resuming: finished runs are "
                                    "skipped), aggregate tidy tables, test whether low directional variability "
                                    "predicts less forgetting (Spearman, cluster bootstrap CI, permutation p) and "
                                    "write a study report. Flags override the study file's keys of the same name.")
    st.add_argument("study", metavar="STUDY.yaml", help="the study file (docs: Tutorials, A study)")
    st.add_argument("--engine", choices=("local", "dask"), default=None, help="local process pool or dask.distributed")
    st.add_argument("--workers", type=_positive_int, default=None, help="runs at once")
    st.add_argument("--scheduler", metavar="ADDRESS", default=None, help="dask scheduler address (tcp://host:8786)")
    st.add_argument("--out", metavar="DIR", default=None, help="study directory (default: studies/<name>)")
    st.add_argument("--retry-failed", action="store_true", default=None, help="run the recorded failures again")
    st.set_defaults(func=_cmd_study)

    sx = sub.add_parser("stats", help="recompute a study's statistics and verdict from its tables",
                        description="Recompute every statistic of a study from its tidy tables (tasks.csv, pairs.csv) "
                                    "without rerunning anything, and print the verdict of the primary test: "
                                    "forgetting on the standardised log directional CDNV when learned, with run, task "
                                    "and position held fixed and errors clustered by run.")
    sx.add_argument("table", metavar="STUDY_DIR_OR_TASKS_CSV", help="a study directory or its tasks.csv")
    sx.add_argument("--outcome", default=None, metavar="FORGETTING/PROBE/PROTOCOL",
                    help="the outcome column (default: the study's statistics settings, else "
                         "forgetting_max/linear/frozen)")
    sx.add_argument("--predictor", default="dir_cdnv_learned", help="the primary predictor column (default: "
                                                                    "dir_cdnv_learned)")
    sx.add_argument("--include-unlearned", action="store_true", help="keep tasks that were not learned")
    sx.add_argument("--permutations", type=_positive_int, default=None, help="run permutations for the permutation "
                                                                             "p-values (default: the study's, 2000)")
    sx.add_argument("--bootstrap", type=_positive_int, default=None,
                    help="cluster-bootstrap resamples for the descriptive intervals (default: the study's, 2000)")
    sx.add_argument("--json", metavar="OUT.json", type=_out_file, default=None,
                    help="also write every number to this JSON file")
    sx.set_defaults(func=_cmd_stats)
    return parser


# Every command checks what the user gave it (flags, config files) before it imports torch, Avalanche
# or a plotting library, so that a mistake is reported at once (tests/simulator/test_cli_imports.py).

def _cmd_analyze(args) -> int:
    from dncsim.common import output_file

    json_out = output_file(args.json, "--json") if args.json is not None else None
    to_stdout = args.json is not None and json_out is None       # the JSON is the output; the table goes aside
    import torch

    from dncsim.analysis.analyze import analyze_labelings, format_analysis
    from dncsim.scenarios.features import load_feature_file

    ff = load_feature_file(args.features, args.labels)
    for key, y in ff.labelings.items():
        if len(y) and int(y.min()) < 0:
            raise DncsimError(f"{ff.path}: label array '{key}' holds {int(y.min())}; label ids must be integers >= 0")
    result = analyze_labelings(ff.features, ff.labelings, shots=args.shots, ways=args.ways,
                               episodes=args.episodes, seed=args.seed, ddof=args.ddof,
                               dtype=torch.float32 if args.float32 else torch.float64, estimator=args.estimator,
                               design=args.design, interval_groups=args.interval_groups, bootstrap=args.bootstrap)
    result = {"file": str(ff.path), **result}
    print(format_analysis(result, title=str(ff.path)), file=sys.stderr if to_stdout else sys.stdout)
    if args.json is not None:
        _write_json(json_out, result)
    return 0


def _write_json(path: Optional[Path], obj) -> None:
    """``obj`` as strict JSON: into the file ``path`` (atomically, then "wrote PATH"), or for None onto
    standard output alone."""
    from dncsim.common import atomic_write_json

    if path is None:
        import json
        sys.stdout.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    else:
        atomic_write_json(path, obj)
        print(f"\nwrote {path}")


def _cmd_scenario(args) -> int:
    from dncsim.common import read_yaml
    from dncsim.scenarios.config import load_scenario_config

    from dncsim.simulator.config import check_memory

    cfg = load_scenario_config(args.config)
    check_memory(cfg)
    watch = (read_yaml(args.config).get("evaluation") or {}).get("watch") or []
    if not isinstance(watch, list) or not all(isinstance(w, str) for w in watch):
        raise DncsimError(f"evaluation.watch: expected a list of labeling names; got {watch!r}")
    from dncsim.common import atomic_write_bytes, output_file

    png = output_file(args.png, "--png") if args.png is not None else _temporary_png(Path(args.config).stem)
    text = sys.stderr if png is None else sys.stdout         # a PNG on standard output: the text goes aside
    from dncsim.scenarios.build import build_scenario
    from dncsim.scenarios.preview import describe, example_grid_png

    sc = build_scenario(cfg, watch=watch)
    print(describe(sc), file=text)
    image = example_grid_png(sc)
    if image is None:
        print("\ninputs are vectors: no example images", file=text)
        if args.png is None:
            png.parent.rmdir()
    elif png is None:
        sys.stdout.buffer.write(image)
        sys.stdout.flush()
    else:
        atomic_write_bytes(png, image)
        print(f"\nwrote {png}")
    return 0


def _temporary_png(stem: str) -> Path:
    """``<stem>_examples.png`` in a new temporary directory: never the current directory (a checkout's root)
    nor a run directory that ``dncsim run`` would then refuse as not a run directory."""
    import tempfile
    return Path(tempfile.mkdtemp(prefix="dncsim-scenario-")) / f"{stem}_examples.png"


def _cmd_run(args) -> int:
    from dncsim.rundir import RunDirectory
    from dncsim.simulator.config import load_run_config

    cfg = load_run_config(args.config, args.overrides)
    out = Path(args.out) if args.out else (cfg.output.dir or Path("runs") / cfg.name)
    cfg.output.dir = Path(out).resolve()
    # a finished run, another config's or a foreign directory is refused here, before torch is imported
    RunDirectory(out).plan(cfg.model_dump(mode="json"), resume=args.resume, force=args.force)
    from dncsim.simulator.run import run

    path = run(cfg, out, resume=args.resume, force=args.force, argv=sys.argv)
    print(f"\nrun directory: {path}")
    return 0


def _cmd_report(args) -> int:
    from dncsim.analysis.report import build_report

    out = build_report(args.run_dir, Path(args.out) if args.out else None, compare=args.compare,
                       paper=True if args.paper else None)
    print(f"wrote {out / 'index.html'}, {out / 'report.md'}, {out / 'summary.json'}")
    return 0


def _cmd_study(args) -> int:
    from dncsim.simulator.study import load_study_config, run_study

    cfg = load_study_config(args.study, {"engine": args.engine, "workers": args.workers, "scheduler": args.scheduler,
                                         "out": args.out, "retry_failed": args.retry_failed})
    if cfg.scheduler and cfg.engine != "dask":
        raise DncsimError("--scheduler needs --engine dask (or engine: dask in the study file)")
    run_study(cfg)
    return 0


def _cmd_stats(args) -> int:
    from dncsim.common import output_file
    from dncsim.simulator.stats_command import format_statistics, stats_for, write_json

    json_out = output_file(args.json, "--json") if args.json is not None else None
    to_stdout = args.json is not None and json_out is None
    result = stats_for(args.table, outcome=args.outcome, predictor=args.predictor,
                       include_unlearned=args.include_unlearned, permutations=args.permutations,
                       bootstrap=args.bootstrap)
    print(format_statistics(result), file=sys.stderr if to_stdout else sys.stdout)
    if args.json is not None:
        write_json(result, json_out)
        if json_out is not None:
            print(f"wrote {json_out}")
    return 0


def _interrupted(command: str, exc: KeyboardInterrupt) -> int:
    """One line for an interruption (a run's says how far it got and how to resume); 128 + the signal."""
    from dncsim.simulator.interrupts import signal_of
    message = str(exc) or "interrupted"
    # past a terminal's "^C"; a run's or study's message comes after its progress bar closed its line
    lead = "\n" if message == "interrupted" and getattr(sys.stderr, "isatty", lambda: False)() else ""
    try:
        print(f"{lead}{command}: {one_line(message)}", file=sys.stderr, flush=True)
    except OSError:                      # SIGHUP: the terminal may be gone
        pass
    return 128 + signal_of(exc)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``dncsim`` console script; returns the exit status: 0, 1 (a run that failed), 2
    (usage and config errors), 128 + the signal's number when SIGINT (Ctrl-C, 130), SIGTERM (143) or
    SIGHUP (129) interrupted it."""
    import threading

    from dncsim.simulator.interrupts import install, restore
    previous = install() if threading.current_thread() is threading.main_thread() else {}
    try:
        return _main(argv)
    finally:
        restore(previous)


def _main(argv: Optional[List[str]]) -> int:
    command = "dncsim"
    try:
        args = build_parser().parse_args(argv)
        command = f"dncsim {args.command}"
        return args.func(args)
    except DncsimError as exc:            # one line; 2 for usage, config and data errors, 1 for a failed run
        print(f"{command}: error: {one_line(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt as exc:     # Ctrl-C, SIGTERM, SIGHUP: no traceback
        return _interrupted(command, exc)
    except BrokenPipeError:          # output piped into `head` and the like: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
