"""Mutation testing of the result-deciding modules with mutmut (issue 22). Not run in CI.

Each module is mutated in its own scratch copy of the repository (``--work``, default
``/tmp/histomil-mutation/<module>``) with only the test files that cover it, so every mutant
runs seconds of tests instead of the whole suite, and the working tree is never touched.

    pip install -e '.[mutation]'            # mutmut
    nice python scripts/mutation.py --list
    nice python scripts/mutation.py objectives/rank.py evaluation/stats.py --out mut.json
    nice python scripts/mutation.py --all --out mut.json   # hours on 2 cores
    nice python scripts/mutation.py training/splits.py --rerun  # survivors + unchecked, again
    nice python scripts/mutation.py annotations/overlap.py --mutant-timeout 10  # looping mutants

``--rerun`` copies today's src/ and tests/ into the module's scratch copy and runs its survivors
and unchecked mutants, then, in a second pass, the mutants mutmut made for functions changed
since (they appear only after the first pass). Stopping the script (Ctrl-C, SIGTERM, --timeout)
ends mutmut and all its workers.

The summary (killed / survived / timeout / no tests per module, and the surviving mutants' names)
is printed and, with ``--out``, written as JSON; ``mutmut show <name>`` inside the module's
scratch copy prints a mutant's diff. Results are recorded in docs/results/*-mutation.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "src/histomil"

# module (relative to src/histomil) -> the test files that cover it (mutmut further narrows each
# mutant to the tests that call the mutated function)
MODULES: dict[str, list[str]] = {
    "objectives/rank.py": ["tests/objectives/test_rank.py", "tests/objectives/test_rank_pinned.py"],
    "objectives/survival.py": [
        "tests/objectives/test_survival.py",
        "tests/objectives/test_survival_pinned.py",
    ],
    "objectives/slide.py": [
        "tests/objectives/test_slide_objectives.py",
        "tests/objectives/test_slide_pinned.py",
    ],
    "objectives/registry.py": [
        "tests/objectives/test_slide_objectives.py",
        "tests/objectives/test_slide_pinned.py",
        "tests/objectives/test_registry_base_pinned.py",
    ],
    "objectives/base.py": [
        "tests/objectives/test_slide_objectives.py",
        "tests/objectives/test_slide_pinned.py",
        "tests/objectives/test_objective_contract.py",
        "tests/training/test_resolved_defaults.py",
        "tests/objectives/test_registry_base_pinned.py",
    ],
    "objectives/mhim/scoring.py": ["tests/objectives/mhim/test_mhim_pinned.py"],
    "objectives/mhim/masking.py": [
        "tests/objectives/mhim/test_masking.py",
        "tests/objectives/mhim/test_masking_pinned.py",
    ],
    "objectives/mhim/teacher.py": [
        "tests/objectives/mhim/test_teacher_recycle.py",
        "tests/objectives/mhim/test_teacher_recycle_pinned.py",
    ],
    "objectives/mhim/recycle.py": [
        "tests/objectives/mhim/test_teacher_recycle.py",
        "tests/objectives/mhim/test_teacher_recycle_pinned.py",
        "tests/perf/test_recycle_factored.py",  # the factored attention against torch's
    ],
    "objectives/mhim/config.py": [
        "tests/objectives/mhim/test_strategy.py",
        "tests/objectives/mhim/test_config_pinned.py",
    ],
    "objectives/mhim/strategy.py": [
        "tests/objectives/mhim/test_strategy.py",
        "tests/objectives/mhim/test_mhim_pinned.py",
        "tests/objectives/mhim/test_regime.py",
        "tests/objectives/mhim/test_recycle_checkpoint.py",
        "tests/objectives/mhim/test_strategy_pinned.py",
        "tests/training/test_resolved_defaults.py",
    ],
    "evaluation/metrics.py": [
        "tests/evaluation/test_metrics.py",
        "tests/evaluation/test_metrics_pinned.py",
        "tests/training/test_prob_columns_order.py",
    ],
    "evaluation/stats.py": [
        "tests/evaluation/test_stats.py",
        "tests/evaluation/test_stats_pinned.py",
    ],
    "evaluation/survival.py": [
        "tests/evaluation/test_survival.py",
        "tests/evaluation/test_survival_pinned.py",
    ],
    "evaluation/localization.py": [
        "tests/evaluation/test_localization.py",
        "tests/evaluation/test_localization_pinned.py",
    ],
    "training/splits.py": ["tests/training/test_splits.py", "tests/training/test_splits_pinned.py"],
    # test_run.py trains whole runs (minutes per mutant): only the pinned fold test here
    "training/fold.py": [
        "tests/training/test_fold_pinned.py",
        "tests/training/test_epoch_bar.py",
        "tests/training/test_run_fold_pinned.py",
        "tests/training/test_fold_resume.py",
    ],
    # test_precision.py (a 30 s bfloat16 fit) is too slow per mutant
    "training/trainer.py": [
        "tests/training/test_trainer.py",
        "tests/training/test_schedule_resume.py",
        "tests/training/test_host_sync.py",
        "tests/training/test_trainer_pinned.py",
    ],
    "annotations/overlap.py": [
        "tests/annotations/test_overlap.py",
        "tests/annotations/test_overlap_pinned.py",
    ],
    "annotations/labelling.py": [
        "tests/annotations/test_labelling.py",
        "tests/annotations/test_label_reruns.py",
        "tests/annotations/test_labelling_pinned.py",
    ],
    "slides/tiling.py": ["tests/slides/test_tiling.py", "tests/slides/test_tiling_pinned.py"],
    "bags/io.py": ["tests/bags/test_io.py", "tests/bags/test_io_pinned.py"],
    # test_contract.py (100k-instance bags for every model) is too slow per mutant
    "models/base.py": [
        "tests/models/test_threshold.py",
        "tests/models/test_base_pinned.py",
        "tests/models/test_threshold_pinned.py",
    ],
    # beyond the list: the other result-deciding code with pinned tests
    "models/dsmil.py": [
        "tests/models/test_aux_pinned.py",
        "tests/models/test_architecture_pinned.py",
        "tests/models/test_models_specific.py",
        "tests/models/test_dsmil_class_aware.py",
    ],
    "models/clam.py": [
        "tests/models/test_aux_pinned.py",
        "tests/models/test_architecture_pinned.py",
        "tests/models/test_models_specific.py",
    ],
    "models/dtfd.py": [
        "tests/models/test_aux_pinned.py",
        "tests/models/test_architecture_pinned.py",
        "tests/models/test_models_specific.py",
        "tests/models/test_dtfd_regroup.py",
    ],
    # the fused projection and the dropout mask of every model (issue 17)
    "nn/projection.py": ["tests/nn/test_projection.py"],
    "nn/dropout.py": ["tests/nn/test_dropout.py", "tests/nn/test_projection.py"],
    # TransMIL, its Nystrom attention and MHIM's reuse of its first layer (issue 17)
    "nn/nystrom.py": [
        "tests/nn/test_nystrom_layout.py",
        "tests/nn/test_ppeg.py",
        "tests/nn/test_blocks.py",
        "tests/models/test_architecture_pinned.py",
    ],
    "models/transmil.py": [
        "tests/models/test_transmil_first_layer.py",
        "tests/models/test_transmil_pinned.py",
        "tests/models/test_architecture_pinned.py",
        "tests/models/test_models_specific.py",
        "tests/objectives/mhim/test_class_aware.py",
    ],
    "experiments/tables.py": [
        "tests/experiments/test_tables.py",
        "tests/experiments/test_tables_pinned.py",
    ],
    # native bfloat16, the allocator setting of training and the allocator peak (issue 17)
    "hardware.py": ["tests/test_hardware.py"],
}

STATUS = (
    "killed",
    "survived",
    "timeout",
    "no tests",
    "suspicious",
    "skipped",
    "segfault",
    "not checked",
)


def _pyproject(
    src: str, module: str, tests: list[str], isolation: str, per_mutant: float = 60.0
) -> str:
    """The repository's pyproject.toml with a [tool.mutmut] section for one module."""
    text = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", src)
    quoted = ", ".join(json.dumps(t) for t in tests)
    return (
        text.rstrip()
        + "\n\n[tool.mutmut]\n"
        + 'source_paths = ["src"]\n'
        + f'only_mutate = ["{PKG}/{module}"]\n'
        + f"pytest_add_cli_args_test_selection = [{quoted}]\n"
        + 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
        + f'process_isolation = "{isolation}"\n'
        + "use_git_change_detection = false\n"
        # on a shared, loaded machine a niced test run takes many times its unloaded time; a
        # tight timeout would count slow (surviving) mutants as killed
        + f"timeout_constant = {float(per_mutant)}\n"
        + "timeout_multiplier = 15.0\n"
    )


def prepare(
    module: str, work: Path, isolation: str = "forkserver", per_mutant: float = 60.0
) -> Path:
    """A scratch copy of src/, tests/ and pyproject.toml configured for ``module``."""
    tests = [t for t in MODULES[module] if (ROOT / t).is_file()]
    if not tests:
        raise SystemExit(f"{module}: none of its test files exist: {MODULES[module]}")
    dest = work / module.replace("/", "__").removesuffix(".py")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("src", "tests"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text()
    (dest / "pyproject.toml").write_text(_pyproject(text, module, tests, isolation, per_mutant))
    return dest


def refresh(module: str, work: Path, per_mutant: float = 60.0) -> Path:
    """The module's existing scratch copy with today's src/, tests/ and test map (mutmut keeps
    the results of unchanged functions and regenerates the mutants of changed files)."""
    dest = work / module.replace("/", "__").removesuffix(".py")
    if not (dest / "mutants").is_dir():
        raise SystemExit(f"{module}: no earlier run in {dest}; run it without --rerun first")
    tests = [t for t in MODULES[module] if (ROOT / t).is_file()]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("src", "tests"):
        shutil.rmtree(dest / folder)
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    text = (ROOT / "pyproject.toml").read_text()
    old = (dest / "pyproject.toml").read_text()
    isolation = re.search(r'process_isolation = "(\w+)"', old)
    (dest / "pyproject.toml").write_text(
        _pyproject(
            text, module, tests, isolation.group(1) if isolation else "forkserver", per_mutant
        )
    )
    return dest


def _results(dest: Path, env: dict) -> dict[str, str]:
    """mutant name -> status from ``mutmut results``."""
    res = subprocess.run(
        [*_mutmut(), "results", "--all", "true"], cwd=dest, env=env, capture_output=True, text=True
    )
    out = {}
    for line in res.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if status in STATUS:
            out[name] = status
    return out


def _mutmut() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.is_file():
        raise SystemExit("mutmut is not installed: pip install -e '.[mutation]'")
    return [str(exe)]


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s, to the process group of ``proc`` (mutmut and its
    workers); nothing when it already ended."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _env() -> dict[str, str]:
    """The mutmut run's environment: no PYTHONPATH (the scratch copy's src/ must win), one BLAS
    thread per worker, ``HISTOMIL_MUTATION=1``, and ``HISTOMIL_SHARED_DATA`` pointing at this
    repository's real data: the scratch copy has no ``../shared`` beside it, so without it every
    test on the real slide or the CAMELYON16 polygons would be skipped and its mutants survive."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HISTOMIL_MUTATION="1")
    shared = Path(env.get("HISTOMIL_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
    if shared.is_dir():
        env["HISTOMIL_SHARED_DATA"] = str(shared)
    return env


def _run_mutmut(dest: Path, env: dict, children: int, names: list[str], timeout: float):
    """One ``mutmut run`` of ``names`` (all mutants when empty) in ``dest``; its exit code, or
    "timeout". mutmut runs in its own process group, ended as a whole on timeout or when this
    script is stopped: killing only mutmut's main process left its workers running, and an
    orphaned run kept writing the module's results file beside the next run in that folder."""
    with (dest / "mutmut-run.log").open("a") as log:
        proc = subprocess.Popen(
            [*_mutmut(), "run", "--max-children", str(children), *names],
            cwd=dest,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"
        finally:
            _end_group(proc)


def run_module(
    module: str,
    work: Path,
    children: int,
    timeout: float,
    isolation: str,
    only: list[str],
    rerun: bool = False,
    per_mutant: float = 60.0,
) -> dict:
    """Mutate one module (only the mutants matching the ``only`` globs, when given; with
    ``rerun`` only the earlier run's survivors); returns counts per status and the surviving
    mutants' names."""
    env = _env()
    globs = list(only)
    again = ("survived", "no tests", "not checked")

    def pending() -> list[str]:  # the survivors and unchecked mutants matching the globs
        return [
            n
            for n, st in _results(dest, env).items()
            if st in again and (not globs or any(fnmatch.fnmatch(n, g) for g in globs))
        ]

    names = list(only)  # mutmut's own selection: names or globs, all mutants when empty
    if rerun:  # the survivors and unchecked mutants of the earlier run, against today's tests
        dest = refresh(module, work, per_mutant)
        names = pending()
        if not names:
            raise SystemExit(f"{module}: no survivors or unchecked mutants in {dest}")
    else:
        dest = prepare(module, work, isolation, per_mutant)
    start = time.monotonic()
    code: int | str = 0
    tried: list[str] = []
    # A rerun's names come from the earlier results; mutmut makes new mutants for the functions
    # that changed since, which only show up (unchecked) after this run: a second pass runs them.
    for attempt in range(2 if rerun else 1):
        left = timeout - (time.monotonic() - start)
        if left <= 0 or (attempt and not names):
            break
        code = _run_mutmut(dest, env, children, names, left)
        tried += names
        if code != 0:
            break
        done = set(tried)
        names = [n for n in pending() if n not in done]
    counts = dict.fromkeys(STATUS, 0)
    survivors: list[str] = []
    for name, status in _results(dest, env).items():
        counts[status] += 1
        if status in ("survived", "no tests", "suspicious"):
            survivors.append(f"{name} ({status})")
    tested = counts["killed"] + counts["timeout"] + counts["survived"] + counts["no tests"]
    score = (counts["killed"] + counts["timeout"]) / tested if tested else float("nan")
    return {
        "module": module,
        "tests": MODULES[module],
        "exit": code,
        "seconds": round(time.monotonic() - start),
        "counts": counts,
        "score": score,
        "tested": tested,
        "only": tried,
        "survivors": survivors,
        "work": str(dest),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("modules", nargs="*", help="modules relative to src/histomil (see --list)")
    ap.add_argument("--all", action="store_true", help="every configured module")
    ap.add_argument("--list", action="store_true", help="print the module -> tests map")
    ap.add_argument("--work", type=Path, default=Path("/tmp/histomil-mutation"))
    ap.add_argument("--children", type=int, default=1, help="parallel mutant workers")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per module")
    ap.add_argument(
        "--mutant-timeout",
        type=float,
        default=60.0,
        help="mutmut's timeout_constant: seconds a mutant may take beyond 15x its tests' time "
        "before it counts as a timeout (killed); lower it for modules whose mutants loop, "
        "e.g. overlap.py's grid cutting",
    )
    ap.add_argument(
        "--isolation",
        choices=("fork", "forkserver"),
        default="forkserver",
        help="mutmut process_isolation (fork hangs with torch threads here)",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        help="mutant-name glob (repeatable), e.g. '*read_patch*': run only those mutants",
    )
    ap.add_argument(
        "--rerun",
        action="store_true",
        help="continue the earlier run in --work with today's src and tests: its survivors "
        "and unchecked mutants only",
    )
    ap.add_argument("--out", type=Path, help="append each module's summary to this JSON file")
    args = ap.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            print(f"{module}: {' '.join(tests)}")
        return 0
    modules = list(MODULES) if args.all else args.modules
    unknown = [m for m in modules if m not in MODULES]
    if unknown or not modules:
        ap.error(f"unknown or no module(s) {unknown}; see --list")
    # a SIGTERM (kill, a job queue's stop) ends the run like Ctrl-C, so that the mutmut group
    # of the module in progress is ended by run_module's cleanup
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = []
    if args.out and args.out.is_file():
        results = json.loads(args.out.read_text())
    for module in modules:
        r = run_module(
            module,
            args.work,
            args.children,
            args.timeout,
            args.isolation,
            args.only,
            args.rerun,
            args.mutant_timeout,
        )
        c = r["counts"]
        print(
            f"{module}: {c['killed'] + c['timeout']}/{r['tested']} killed "
            f"({r['score']:.1%}), {c['survived']} survived, {c['no tests']} without tests, "
            f"{r['seconds']} s",
            flush=True,
        )
        for s in r["survivors"]:
            print(f"    {s}", flush=True)
        results = [x for x in results if x["module"] != module] + [r]
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
