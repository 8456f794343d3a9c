"""`python -m lapse_common.dev_keys DIR`: create the local key pairs a dev run needs.

dev-token: signs `lapse login --dev` tokens; chatops-token: signs the chat front end's
tokens (trusted for the subject only, LAPSE_AUTH_SUBJECT_ONLY_ISSUERS); command-signing:
signs agent commands; audit-checkpoint: signs the audit chain head checkpoints; services/:
each calling service's own key (services/request.key signs the request service's calls to
approval; approval trusts services/*.pub); producers/: keys of
the demo access-event producers and the registry the request service trusts them by. Existing
keys are kept, so tokens and the agent's trust survive a restart.

Every folder gets a LAPSE-DEV-KEYS marker: a service in production mode refuses to start
with a token key from such a folder (lapse_common.dev_trust).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lapse_common.auth import ensure_keypair
from lapse_common.dev_trust import DEV_KEYS_MARKER


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lapse_common.dev_keys DIR")
    directory = Path(sys.argv[1])
    for name in ("dev-token", "chatops-token", "command-signing", "audit-checkpoint"):
        private, public = ensure_keypair(directory, name)
        print(f"{name}: {private} / {public}")
    services = directory / "services"
    for service in CALLING_SERVICES:
        private, public = ensure_keypair(services, service)
        print(f"service {service}: {private} / {public}")
    for folder in (directory, services):
        (folder / DEV_KEYS_MARKER).write_text(
            "Keys made by python -m lapse_common.dev_keys: for dev runs only.\n"
        )
    producers = directory / "producers"
    registry = "# Demo access-event producers (python -m lapse_common.access_events publish).\n"
    registry += "producers:\n"
    for producer, rights in DEMO_PRODUCERS.items():
        ensure_keypair(producers, producer)
        registry += f"  {producer}:\n    public_key_file: {producer}.pub\n    {rights}\n"
    (producers / "registry.yaml").write_text(registry)
    print(f"access-event producers: {producers / 'registry.yaml'}")


# Services that call other services, each with its own key pair.
CALLING_SERVICES = ("request",)
# Who may publish which access events in a dev run.
DEMO_PRODUCERS = {
    "hr-offboarding": "events: [user_offboarded]",
    "incident-bot": "events: [incident_declared, incident_resolved]",
    "ci-pipelines": "events: [access_requested]\n    machine_identities: [ci-deploy]",
}


if __name__ == "__main__":
    main()
