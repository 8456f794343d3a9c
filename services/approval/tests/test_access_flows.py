"""Access Flow files: validation that names file, flow and field; policy decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lapse_approval.flows import FlowFileError, load_catalog, parse_duration
from lapse_approval.operations.check_request import check_request
from lapse_common.refusals import Refusal, Refused

REPO = Path(__file__).resolve().parents[3]

VALID = """
integrations:
  - id: demo-pg
    agent: demo-agent
    resources: {appdb: [read, write], billing: [read]}
    principals: {alice: [alice], shared_ro: [alice, bob]}
flows:
  - name: eng-read
    requestors: {groups: [engineering]}
    targets: [{integration: demo-pg, resources: [appdb], permissions: [read]}]
    approval: {mode: auto}
    default_duration: 15m
    max_duration: 1h
  - name: sre-write
    requestors: {users: [alice]}
    targets: [{integration: demo-pg, resources: ["*"], permissions: [read, write]}]
    approval: {mode: auto}
    default_duration: 30m
    max_duration: 4h
    justification_required: true
"""


def write(tmp_path: Path, text: str, name: str = "flows.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_demo_flow_file_is_valid() -> None:
    catalog = load_catalog([REPO / "deploy" / "demo" / "flows.yaml"])
    assert "demo-pg" in catalog.integrations


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            VALID.replace(
                "mode: auto}\n    default_duration: 15m", "mode: maybe}\n    default_duration: 15m"
            ),
            "flow 'eng-read': field approval.mode",
        ),
        (
            VALID.replace("max_duration: 1h", "max_duration: 1 hour"),
            "flow 'eng-read': field max_duration",
        ),
        (
            VALID.replace("default_duration: 15m", "default_duration: 2h"),
            "flow 'eng-read': field (whole entry): Value error, default_duration is longer than max_duration",
        ),
        (
            VALID.replace(
                "integration: demo-pg, resources: [appdb]", "integration: nope, resources: [appdb]"
            ),
            "flow 'eng-read': field targets.0.integration: unknown integration 'nope'",
        ),
        (
            VALID.replace(
                "resources: [appdb], permissions: [read]", "resources: [appdb], permissions: [drop]"
            ),
            "flow 'eng-read': field targets.0.permissions: 'drop' is not offered",
        ),
        (
            VALID.replace("agent: demo-agent", "agent: Demo Agent"),
            "integration 'demo-pg': field agent",
        ),
        (
            VALID.replace("name: sre-write", "name: eng-read"),
            "flow 'eng-read': field name: defined twice",
        ),
        (
            VALID.replace(
                "    approval: {mode: auto}\n    default_duration: 30m",
                "    aproval: {mode: auto}\n    default_duration: 30m",
            ),
            "flow 'sre-write': field aproval: Extra inputs are not permitted",
        ),
        (
            VALID.replace(
                "    approval: {mode: auto}\n    default_duration: 30m",
                "    approval: {mode: auto}\n    extensions_need_approval: true\n"
                "    max_extensions: 1\n    default_duration: 30m",
            ),
            "flow 'sre-write': field (whole entry): Value error, extensions_need_approval needs "
            "an approval mode with approvers",
        ),
    ],
)
def test_errors_name_file_flow_and_field(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FlowFileError) as refused:
        load_catalog([path])
    assert any(p.startswith(str(path)) and problem in p for p in refused.value.problems), (
        refused.value.problems
    )


def test_unreadable_yaml_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "flows: [unclosed")
    with pytest.raises(FlowFileError, match="cannot read YAML"):
        load_catalog([path])


def check(catalog_text: str, tmp_path: Path, **overrides: object) -> object:
    catalog = load_catalog([write(tmp_path, catalog_text)])
    arguments: dict[str, object] = {
        "subject": "bob",
        "groups": ("engineering",),
        "integration_id": "demo-pg",
        "resource": "appdb",
        "permission": "read",
        "principal": "shared_ro",
        "duration": None,
        "justification": "",
        "now": datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
    }
    arguments.update(overrides)
    return check_request(catalog=catalog, **arguments)  # type: ignore[arg-type]


def test_default_duration_and_agent_come_from_policy(tmp_path: Path) -> None:
    allowed = check(VALID, tmp_path)
    assert allowed.flow.name == "eng-read"  # type: ignore[attr-defined]
    assert allowed.duration == timedelta(minutes=15)  # type: ignore[attr-defined]
    assert allowed.agent_id == "demo-agent"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("overrides", "kind", "message"),
    [
        (
            {"groups": ("sales",)},
            Refusal.FORBIDDEN,
            "no Access Flow lets bob request read on demo-pg/appdb",
        ),
        ({"permission": "write"}, Refusal.FORBIDDEN, "no Access Flow lets bob request write"),
        (
            {"duration": timedelta(hours=2)},
            Refusal.INVALID,
            "duration 2h exceeds the maximum of 1h allowed by flow 'eng-read'",
        ),
        ({"principal": "root"}, Refusal.NOT_FOUND, "unknown principal 'root'"),
        (
            {"principal": "alice"},
            Refusal.FORBIDDEN,
            "bob may not receive access as principal 'alice'",
        ),
        ({"integration_id": "prod-pg"}, Refusal.NOT_FOUND, "unknown integration 'prod-pg'"),
        ({"resource": "ledger"}, Refusal.NOT_FOUND, "has no resource 'ledger'"),
        (
            {"subject": "alice", "principal": "alice", "permission": "write"},
            Refusal.INVALID,
            "flow 'sre-write' requires a justification",
        ),
    ],
)
def test_refusals(
    tmp_path: Path, overrides: dict[str, object], kind: Refusal, message: str
) -> None:
    with pytest.raises(Refused) as refused:
        check(VALID, tmp_path, **overrides)
    assert refused.value.kind == kind
    assert message in refused.value.message


def test_the_most_generous_matching_flow_serves(tmp_path: Path) -> None:
    allowed = check(
        VALID,
        tmp_path,
        subject="alice",
        principal="alice",
        duration=timedelta(hours=3),
        justification="incident",
    )
    assert allowed.flow.name == "sre-write"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("4h", 14400), ("2d", 172800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["0s", "-5m", "5", "1w", "four hours"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
