"""`python -m lapse_common.dev_keys DIR`: create the local key pairs a dev run needs.

dev-token: signs `lapse login --dev` tokens; command-signing: signs agent commands;
audit-checkpoint: signs the audit chain head checkpoints;
producers/: keys of the demo access-event producers and the registry the request service
trusts them by. Existing keys are kept, so tokens and the agent's trust survive a restart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lapse_common.auth import ensure_keypair


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lapse_common.dev_keys DIR")
    directory = Path(sys.argv[1])
    for name in ("dev-token", "command-signing", "audit-checkpoint"):
        private, public = ensure_keypair(directory, name)
        print(f"{name}: {private} / {public}")
    producers = directory / "producers"
    registry = "# Demo access-event producers (python -m lapse_common.access_events publish).\n"
    registry += "producers:\n"
    for producer, rights in DEMO_PRODUCERS.items():
        ensure_keypair(producers, producer)
        registry += f"  {producer}:\n    public_key_file: {producer}.pub\n    {rights}\n"
    (producers / "registry.yaml").write_text(registry)
    print(f"access-event producers: {producers / 'registry.yaml'}")


# Who may publish which access events in a dev run.
DEMO_PRODUCERS = {
    "hr-offboarding": "events: [user_offboarded]",
    "incident-bot": "events: [incident_declared, incident_resolved]",
    "ci-pipelines": "events: [access_requested]\n    machine_identities: [ci-deploy]",
}


if __name__ == "__main__":
    main()
