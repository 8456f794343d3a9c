"""`lapse-approval` / `python -m lapse_approval`: run the approval service."""

from __future__ import annotations

import asyncio
import sys

from lapse_approval.app import run
from lapse_approval.flows import FlowFileError


def main() -> None:
    try:
        asyncio.run(run())
    except FlowFileError as error:
        print("lapse-approval: refusing to start, the flow files are invalid:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
