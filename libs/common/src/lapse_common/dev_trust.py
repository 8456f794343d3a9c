"""What only a dev run may trust: the dev issuer and the keys lapse_common.dev_keys makes.

Whoever holds a dev private key mints any token, admin included, and dev keys are made in
places (a repository checkout, a Docker volume) that production secrets never are. So a
service refuses to start in production mode (LAPSE_AUTH_DEV_MODE unset) when it would trust
either; a forgotten dev setting then stops a deployment instead of opening it.
"""

from __future__ import annotations

from pathlib import Path

from lapse_common.settings import AuthSettings

DEV_ISSUER = "lapse-dev"
# lapse_common.dev_keys writes this file next to the keys it makes.
DEV_KEYS_MARKER = "LAPSE-DEV-KEYS"
# Names of the dev key pairs that sign tokens (`<name>.key` / `<name>.pub`).
DEV_TOKEN_KEY_NAMES = frozenset({"dev-token", "chatops-token"})


class DevTrustRefused(Exception):
    pass


def is_dev_key(path: Path) -> bool:
    resolved = path.expanduser().resolve()
    if resolved.stem in DEV_TOKEN_KEY_NAMES:
        return True
    folders = [resolved, *resolved.parents[:1]] if resolved.is_dir() else [*resolved.parents[:2]]
    return any((folder / DEV_KEYS_MARKER).exists() for folder in folders)


def refuse_dev_trust_in_production(settings: AuthSettings) -> None:
    if settings.dev_mode:
        return
    issuers = [settings.issuer, *settings.subject_only_issuer_keys()]
    if DEV_ISSUER in issuers:
        raise DevTrustRefused(
            f"the dev issuer {DEV_ISSUER!r} is trusted (LAPSE_AUTH_ISSUER or "
            "LAPSE_AUTH_SUBJECT_ONLY_ISSUERS) but LAPSE_AUTH_DEV_MODE is off: set your identity "
            "provider's issuer, or LAPSE_AUTH_DEV_MODE=true for a dev run"
        )
    keys = {
        "LAPSE_AUTH_PUBLIC_KEY_FILE": settings.public_key_file,
        "LAPSE_AUTH_JWKS_FILE": settings.jwks_file,
        "LAPSE_AUTH_SERVICE_KEY_FILE": settings.service_key_file,
    }
    keys |= {
        f"LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES ({path.stem})": path
        for path in settings.service_public_key_paths()
    }
    keys |= {
        f"LAPSE_AUTH_SUBJECT_ONLY_ISSUERS ({issuer})": Path(key)
        for issuer, key in settings.subject_only_issuer_keys().items()
        if "://" not in key
    }
    for setting, path in keys.items():
        if path is not None and is_dev_key(path):
            raise DevTrustRefused(
                f"{setting} {path} is a dev key (lapse_common.dev_keys) but LAPSE_AUTH_DEV_MODE "
                "is off: whoever has its private key mints any token. Configure your identity "
                "provider's keys, or LAPSE_AUTH_DEV_MODE=true for a dev run"
            )
