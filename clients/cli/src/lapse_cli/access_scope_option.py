"""`--scope KEY=VALUE` (repeatable) and `--everything`: which access a scoped revoke, panic
or lockdown reaches. The server enforces who may use which scope; this only parses."""

from __future__ import annotations

from lapse_common.pb.lapse.v1 import common_pb2

from lapse_cli.session import fail

SCOPE_KEYS = {
    "integration": "integration_id",
    "resource": "resource",
    "permission": "permission",
    "user": "user",
    "group": "group",
    "flow": "flow",
}
SCOPE_HELP = (
    "KEY=VALUE, repeatable, all must match: "
    + ", ".join(SCOPE_KEYS)
    + " (e.g. integration=demo-pg)"
)


def parse_scope(pairs: list[str], *, everything: bool) -> common_pb2.AccessScope:
    scope = common_pb2.AccessScope(everything=everything)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.strip():
            raise fail(f"--scope {pair!r} must look like KEY=VALUE, e.g. integration=demo-pg", 2)
        field = SCOPE_KEYS.get(key.strip())
        if field is None:
            raise fail(f"--scope {key!r} is not one of: {', '.join(SCOPE_KEYS)}", 2)
        if getattr(scope, field):
            raise fail(f"--scope {key} given twice", 2)
        setattr(scope, field, value.strip())
    return scope


def describe(scope: common_pb2.AccessScope) -> str:
    if scope.everything:
        return "ALL access"
    return ", ".join(
        f"{key}={getattr(scope, field)}"
        for key, field in SCOPE_KEYS.items()
        if getattr(scope, field)
    )
