"""Access Flows as code: the YAML an admin writes, validated into typed policy.

A validation error names the file, the flow (or integration) and the field, so an admin
can fix it without guessing; a file with any error is rejected whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from lapse_common.machine_identity import machine_name
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

# A flow file is policy an admin writes by hand: 256 KiB is far more than any real one and
# small enough that parsing it cannot hold the approval service's event loop for long.
MAX_FLOW_FILE_BYTES = 256 * 1024
MAX_FLOW_FILES = 64
# An error report is for a person to read; past this many problems the rest are counted,
# and no single problem quotes more than a short piece of the input back.
MAX_REPORTED_PROBLEMS = 50
MAX_PROBLEM_CHARS = 300


def parse_duration(text: str | int) -> timedelta:
    """'90s', '15m', '4h', '2d' (or a number of seconds) as a timedelta."""
    if isinstance(text, int):
        seconds = text
    else:
        match = _DURATION.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a duration like 90s, 15m, 4h or 2d")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IntegrationSpec(_Strict):
    id: str
    agent: str
    # resource -> the permissions it offers
    resources: dict[str, list[str]]
    # target login -> the subjects allowed to receive access as that login
    principals: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("id", "agent")
    @classmethod
    def _is_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return value


class Requestors(_Strict):
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    # Machine identities (CI pipelines) that ask through an AccessRequested access event;
    # they appear as subject `machine:<name>` (principals list them that way too).
    machines: list[str] = Field(default_factory=list)


class TargetSelector(_Strict):
    integration: str
    resources: list[str]
    permissions: list[str]


class Approvers(_Strict):
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)

    def include(self, *, subject: str, groups: tuple[str, ...]) -> bool:
        return subject in self.users or bool(set(self.groups) & set(groups))


class EscalationTier(_Strict):
    # How long after submission these approvers are asked too.
    after: str
    approvers: Approvers

    @field_validator("after")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class ApprovalPolicy(_Strict):
    """auto; any_of (one approver); all_of (every listed user); n_of_m (`required` of them).
    Escalation tiers add approvers after their interval (one of them suffices); any
    rejection rejects; a request nobody decides within `timeout` is APPROVAL_EXPIRED."""

    mode: Literal["auto", "any_of", "all_of", "n_of_m"]
    approvers: Approvers = Field(default_factory=Approvers)
    required: int = Field(default=1, ge=1)
    escalation: list[EscalationTier] = Field(default_factory=list)
    timeout: str = "24h"
    approver_reason_required: bool = False
    requester_cannot_approve_self: bool = True

    @field_validator("timeout")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalPolicy:
        if self.mode == "auto":
            if self.approvers.users or self.approvers.groups or self.escalation:
                raise ValueError("an auto policy takes no approvers or escalation")
            return self
        if not (self.approvers.users or self.approvers.groups):
            raise ValueError(f"mode {self.mode} needs approvers (users or groups)")
        if self.mode == "all_of" and self.approvers.groups:
            raise ValueError("all_of needs named users: 'every member of a group' is not checkable")
        if self.mode == "n_of_m":
            if self.required < 2:
                raise ValueError("n_of_m needs required >= 2 (use any_of for one)")
            if not self.approvers.groups and self.required > len(self.approvers.users):
                count = len(self.approvers.users)
                raise ValueError(f"required {self.required} is more than the {count} approvers")
        afters = [parse_duration(t.after) for t in self.escalation]
        if afters != sorted(afters) or any(a >= parse_duration(self.timeout) for a in afters):
            raise ValueError("escalation tiers must come in order and before the timeout")
        return self


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class TimeWindow(_Strict):
    """When requests may be made (UTC): on these days, from start to end."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]]
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _is_clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"{value!r} is not a time of day like 08:00 (UTC)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if not self.days:
            raise ValueError("a time window needs at least one day")
        if self.end <= self.start:
            raise ValueError("end must be after start (windows do not cross midnight)")
        return self

    def contains(self, moment: datetime) -> bool:
        moment = moment.astimezone(UTC)
        return (
            _WEEKDAYS[moment.weekday()] in self.days
            and self.start <= moment.strftime("%H:%M") < self.end
        )

    def describe(self) -> str:
        return f"{','.join(self.days)} {self.start}-{self.end} UTC"


class AutoApproveBudget(_Strict):
    """At most `max` automatic approvals per requester per `per` under this flow."""

    max: int = Field(ge=1)
    per: str = "1d"

    @field_validator("per")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class FlowSpec(_Strict):
    name: str
    requestors: Requestors
    targets: list[TargetSelector]
    approval: ApprovalPolicy
    default_duration: str = "1h"
    max_duration: str = "4h"
    justification_required: bool = False
    max_extensions: int = Field(default=0, ge=0)
    # How much one extension adds; defaults to default_duration.
    extension_duration: str | None = None
    # False: an extension within the limits is granted at once. True: the flow's approvers
    # decide each extension like a request (same policy, timeout and reason rules).
    extensions_need_approval: bool = False
    time_windows: list[TimeWindow] = Field(default_factory=list)
    auto_approve_budget: AutoApproveBudget | None = None

    @field_validator("name")
    @classmethod
    def _is_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lowercase letters, digits, '.', '_' or '-'")
        return value

    @field_validator("default_duration", "max_duration", "extension_duration")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _default_within_max(self) -> FlowSpec:
        if parse_duration(self.default_duration) > parse_duration(self.max_duration):
            raise ValueError("default_duration is longer than max_duration")
        if self.auto_approve_budget is not None and self.approval.mode != "auto":
            raise ValueError("auto_approve_budget only applies to approval mode auto")
        if self.extensions_need_approval and self.approval.mode == "auto":
            raise ValueError("extensions_need_approval needs an approval mode with approvers")
        if self.extensions_need_approval and self.max_extensions == 0:
            raise ValueError("extensions_need_approval is set but max_extensions is 0")
        return self


class FlowFile(_Strict):
    integrations: list[IntegrationSpec] = Field(default_factory=list)
    flows: list[FlowSpec] = Field(default_factory=list)


class FlowFileError(Exception):
    """Everything wrong with one flow file, each problem naming file, item and field."""

    def __init__(self, problems: list[str]) -> None:
        shown = [_shorten(p) for p in problems[:MAX_REPORTED_PROBLEMS]]
        if len(problems) > MAX_REPORTED_PROBLEMS:
            shown.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more problems")
        super().__init__("\n".join(shown))
        self.problems = shown


def _shorten(problem: str) -> str:
    if len(problem) <= MAX_PROBLEM_CHARS:
        return problem
    return problem[: MAX_PROBLEM_CHARS - 1] + "\u2026"


def _read_yaml(text: str) -> Any:
    """The document, refusing anchors and aliases: a few lines of nested aliases expand
    into millions of nodes (the "billion laughs"), and flow files never need them."""
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            line = event.start_mark.line + 1 if event.start_mark else "?"
            raise FlowYamlRefused(
                f"line {line}: YAML anchors and aliases (&name, *name) are not allowed "
                "in flow files; write each entry out"
            )
    return yaml.load(text, Loader=yaml.CSafeLoader)


class FlowYamlRefused(Exception):
    pass


@dataclass(frozen=True)
class Flow:
    name: str
    approval: str
    policy: ApprovalPolicy
    requestor_users: frozenset[str]
    requestor_groups: frozenset[str]
    requestor_machines: frozenset[str]
    targets: tuple[TargetSelector, ...]
    default_duration: timedelta
    max_duration: timedelta
    justification_required: bool
    max_extensions: int = 0
    extension_duration: timedelta = timedelta(hours=1)
    extensions_need_approval: bool = False
    time_windows: tuple[TimeWindow, ...] = ()
    auto_approve_budget: AutoApproveBudget | None = None

    def open_at(self, moment: datetime) -> bool:
        return not self.time_windows or any(w.contains(moment) for w in self.time_windows)

    def allows_requestor(self, *, subject: str, groups: tuple[str, ...]) -> bool:
        machine = machine_name(subject)
        if machine is not None:
            # A machine never qualifies through users or groups, only by name.
            return machine in self.requestor_machines
        return subject in self.requestor_users or bool(self.requestor_groups & set(groups))

    def covers(self, *, integration: str, resource: str, permission: str) -> bool:
        return any(
            t.integration == integration
            and (resource in t.resources or "*" in t.resources)
            and permission in t.permissions
            for t in self.targets
        )


@dataclass(frozen=True)
class Catalog:
    """The integrations and flows the approval service serves."""

    integrations: dict[str, IntegrationSpec]
    flows: tuple[Flow, ...]


def _describe(path: Path, document: dict[str, Any], error: ValidationError) -> list[str]:
    problems = []
    for issue in error.errors():
        location = list(issue["loc"])
        where = ""
        if len(location) >= 2 and location[0] in ("flows", "integrations"):
            section, index = location[0], location[1]
            items = document.get(section) or []
            label = "flow" if section == "flows" else "integration"
            key = "name" if section == "flows" else "id"
            name = (
                items[index].get(key, f"#{index + 1}")
                if isinstance(index, int) and isinstance(items[index], dict)
                else f"#{index}"
            )
            where = f"{label} {name!r}: "
            location = location[2:]
        field_path = ".".join(str(p) for p in location) or "(whole entry)"
        problems.append(f"{path}: {where}field {field_path}: {issue['msg']}")
    return problems


def load_catalog(paths: list[Path]) -> Catalog:
    """Load and cross-check flow files; raise FlowFileError listing every problem."""
    texts: list[tuple[Path, str]] = []
    problems: list[str] = []
    for path in paths:
        try:
            texts.append((path, path.read_text()))
        except OSError as error:
            problems.append(f"{path}: cannot read: {error}")
    if problems:
        raise FlowFileError(problems)
    return parse_catalog(texts)


def parse_catalog(files: list[tuple[Path, str]]) -> Catalog:
    """Validate flow file contents (name, YAML text) into one catalog, or raise
    FlowFileError listing every problem with its file, flow and field."""
    problems: list[str] = []
    integrations: dict[str, IntegrationSpec] = {}
    flow_specs: list[tuple[Path, FlowSpec]] = []
    if len(files) > MAX_FLOW_FILES:
        raise FlowFileError([f"{len(files)} flow files given; the limit is {MAX_FLOW_FILES}"])
    for path, text in files:
        size = len(text.encode())
        if size > MAX_FLOW_FILE_BYTES:
            limit = MAX_FLOW_FILE_BYTES
            problems.append(f"{path}: {size} bytes; a flow file may be at most {limit}")
            continue
        try:
            document = _read_yaml(text) or {}
        except FlowYamlRefused as refusal:
            problems.append(f"{path}: {refusal}")
            continue
        except yaml.YAMLError as error:
            problems.append(f"{path}: cannot read YAML: {error}")
            continue
        if not isinstance(document, dict):
            problems.append(f"{path}: top level must be a mapping with 'integrations' and 'flows'")
            continue
        try:
            parsed = FlowFile.model_validate(document)
        except ValidationError as error:
            problems.extend(_describe(path, document, error))
            continue
        for integration in parsed.integrations:
            if integration.id in integrations:
                problems.append(f"{path}: integration {integration.id!r}: field id: defined twice")
            integrations[integration.id] = integration
        flow_specs.extend((path, flow) for flow in parsed.flows)
    names: set[str] = set()
    flows: list[Flow] = []
    # Computed once per integration, so checking a flow is linear in the size of the file.
    offered_by = {
        integration.id: {p for perms in integration.resources.values() for p in perms}
        for integration in integrations.values()
    }
    for path, spec in flow_specs:
        if spec.name in names:
            problems.append(f"{path}: flow {spec.name!r}: field name: defined twice")
        names.add(spec.name)
        for index, target in enumerate(spec.targets):
            known = integrations.get(target.integration)
            prefix = f"{path}: flow {spec.name!r}: field targets.{index}"
            if known is None:
                problems.append(f"{prefix}.integration: unknown integration {target.integration!r}")
                continue
            integration = known
            for resource in target.resources:
                if resource != "*" and resource not in integration.resources:
                    problems.append(
                        f"{prefix}.resources: {resource!r} is not a resource of {integration.id!r}"
                    )
            offered = offered_by[integration.id]
            for permission in target.permissions:
                if permission not in offered:
                    problems.append(
                        f"{prefix}.permissions: {permission!r} is not offered by {integration.id!r}"
                    )
        flows.append(
            Flow(
                name=spec.name,
                approval=spec.approval.mode,
                policy=spec.approval,
                requestor_users=frozenset(spec.requestors.users),
                requestor_groups=frozenset(spec.requestors.groups),
                requestor_machines=frozenset(spec.requestors.machines),
                targets=tuple(spec.targets),
                default_duration=parse_duration(spec.default_duration),
                max_duration=parse_duration(spec.max_duration),
                justification_required=spec.justification_required,
                max_extensions=spec.max_extensions,
                extension_duration=parse_duration(spec.extension_duration or spec.default_duration),
                extensions_need_approval=spec.extensions_need_approval,
                time_windows=tuple(spec.time_windows),
                auto_approve_budget=spec.auto_approve_budget,
            )
        )
    if problems:
        raise FlowFileError(problems)
    return Catalog(integrations=integrations, flows=tuple(flows))
