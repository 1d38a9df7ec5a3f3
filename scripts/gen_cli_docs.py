"""Write docs/cli.md from the CLI app (``--check``: exit 1 when the file is stale or a rule breaks).

PYTHONPATH=src python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from histomil.cli._docs import check, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def main(argv: list[str]) -> int:
    problems = check()
    for line in problems:
        print(f"vocabulary: {line}", file=sys.stderr)
    text = render()
    if "--check" in argv:
        stale = not DOC.is_file() or DOC.read_text(encoding="utf-8") != text
        if stale:
            print(f"{DOC} is stale; run scripts/gen_cli_docs.py", file=sys.stderr)
        return int(stale or bool(problems))
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return int(bool(problems))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
