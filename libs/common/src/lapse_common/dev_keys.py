"""`python -m lapse_common.dev_keys DIR`: create the local key pairs a dev run needs.

dev-token: signs `lapse login --dev` tokens; command-signing: signs agent commands.
Existing keys are kept, so tokens and the agent's trust survive a restart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lapse_common.auth import ensure_keypair


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lapse_common.dev_keys DIR")
    directory = Path(sys.argv[1])
    for name in ("dev-token", "command-signing"):
        private, public = ensure_keypair(directory, name)
        print(f"{name}: {private} / {public}")


if __name__ == "__main__":
    main()
