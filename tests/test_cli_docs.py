"""docs/cli.md is generated from the app, and the vocabulary rules hold (issue 19)."""

from __future__ import annotations

from pathlib import Path

from histomil.cli._docs import check, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_docs_are_current():
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is stale; run `PYTHONPATH=src python scripts/gen_cli_docs.py`"
    )


def test_vocabulary_rules_hold():
    assert check() == []


def test_vocabulary_rules_catch_old_spellings():
    """The checks fail on the old surface: a visible --mpp, a --workers meaning patch readers,
    a command without --out, --cpus-per-task speaking of extraction on train."""
    import typer

    from histomil.cli._app import cpus_per_task_option

    old = typer.Typer()

    @old.command()
    def preprocess(mpp: float = typer.Option(0.5, "--mpp")) -> None:
        pass

    @old.command()
    def extract(
        out: str = typer.Option(..., "--out", metavar="DIR"),
        workers: int = typer.Option(2, "--workers", help="Patch-reading worker processes."),
    ) -> None:
        pass

    @old.command()
    def train(
        out: str = typer.Option(..., "--out", metavar="DIR"),
        cpus: float = typer.Option(1.0, "--cpus-per-task", help="e.g. 8 for extraction"),
    ) -> None:
        pass

    del cpus_per_task_option
    problems = "\n".join(check(old))
    assert "preprocess: --mpp is a retired spelling" in problems
    assert "preprocess: writes files but has no --out DIR" in problems
    assert "extract: --workers must mean parallel tasks" in problems
    assert "train: --cpus-per-task help speaks of extraction" in problems
