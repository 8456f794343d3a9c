"""A whole Lapse system for tests: every service as its own OS process against real Kafka
and PostgreSQL, isolated from other runs by a topic prefix, a fresh database and
throwaway roles in the target."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from lapse_common.auth import ensure_keypair, mint_token
from lapse_common.kafka_admin.provisioning import Installation
from lapse_common.pb.lapse.v1 import revoker_service_pb2, revoker_service_pb2_grpc
from lapse_common.settings import KafkaSettings

from tests.grpc_tls import StackTls
from tests.infrastructure import Infrastructure
from tests.integration.waiting import ProgressWatch
from tests.kafka_principals import ADMIN, InstallationCredentials

SERVICES = ("audit", "approval", "request", "grant-scheduler", "revoker", "agent")
# Resources on demo-pg with a flow of their own (permission `read`): the flow's approval
# policy and any further flow fields, one per policy feature the tests exercise.
GATED_FLOWS: dict[str, tuple[str, str]] = {
    "g-any": ("{mode: any_of, approvers: {users: [approver-a, approver-b]}}", ""),
    "g-all": ("{mode: all_of, approvers: {users: [approver-a, approver-b]}}", ""),
    "g-2of3": (
        "{mode: n_of_m, required: 2, approvers: {users: [approver-a, approver-b, approver-c]}}",
        "",
    ),
    "g-esc": (
        "{mode: any_of, approvers: {users: [approver-a]}, "
        "escalation: [{after: 3s, approvers: {users: [manager-1]}}]}",
        "",
    ),
    "g-timeout": ("{mode: any_of, approvers: {users: [approver-a]}, timeout: 4s}", ""),
    "g-self": ("{mode: any_of, approvers: {groups: [engineering]}}", ""),
    "g-budget": ("{mode: auto}", "auto_approve_budget: {max: 1, per: 1h}"),
    # Open for one minute, twelve hours from when the stack starts: closed during the tests.
    "g-window": (
        "{mode: auto}",
        "time_windows: [{days: [mon, tue, wed, thu, fri, sat, sun], start: '{window_start}', end: '{window_end}'}]",
    ),
    "g-extend": ("{mode: auto}", "max_extensions: 1\n    extension_duration: 30s"),
    # Requestable by named users only, so a policy change can drop one of them.
    "g-policy": ("{mode: auto}", "requestors_users: [u05, u06]"),
    "g-policy-gated": (
        "{mode: any_of, approvers: {users: [approver-a]}}",
        "requestors_users: [u05, u06]",
    ),
    # Requestors and approvers known only from the directory file (DIRECTORY_GROUPS).
    "g-dir": (
        "{mode: any_of, approvers: {groups: [db-approvers]}}",
        "requestors_groups: [contractors]",
    ),
    # Requested by a CI pipeline through an AccessRequested access event.
    "g-machine": ("{mode: auto}", "requestors_machines: [ci-deploy]"),
    "g-ext-approval": (
        "{mode: any_of, approvers: {users: [approver-a]}}",
        "max_extensions: 2\n    extension_duration: 30s\n    extensions_need_approval: true",
    ),
}
# Access-event producers the request service trusts, and the event kinds each may send.
PRODUCERS = {
    "hr-offboarding": "events: [user_offboarded]",
    "incident-bot": "events: [incident_declared, incident_resolved]",
    "ci-pipelines": "events: [access_requested]\n    machine_identities: [ci-deploy]",
}
# The target login a machine identity receives access as.
MACHINE_LOGINS = {"ci": "machine:ci-deploy"}
# LAPSE_AUTH_DIRECTORY_FILE: groups these people are in although their tokens do not say so.
# u02 and u03 file requests from chat, whose tokens name the subject only.
DIRECTORY_GROUPS = {
    "contractors": ["u07"],
    "db-approvers": ["approver-d"],
    "engineering": ["u02", "u03"],
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """One service process; its output goes to a log file and is watched for readiness."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._lines = 0

    def start(self) -> None:
        self._ready.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with self.log_path.open("a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                self._lines += 1
                if line.strip().endswith("ready"):
                    self._ready.set()

    def wait_ready(self) -> None:
        """Until the process says it is ready; a starting process that keeps logging may take
        as long as the machine needs, one that goes quiet (or exits) fails with its log."""
        watch = ProgressWatch()
        while not self._ready.wait(0.2):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            watch.observe(self._lines)
            why = watch.exhausted()
            if why is not None:
                raise RuntimeError(f"{self.name} not ready: {why}:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


@dataclass
class LapseStack:
    infra: Infrastructure
    workdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    # Who may request (each gets a login `it_<run>_<user>` in the target).
    users: tuple[str, ...] = ("alice", "bob")
    # Extra resources r00.. on demo-pg, each with one `read` role, for bulk tests.
    bulk_resources: int = 0
    # A second agent serving integration far-pg (resource fardb, permission read).
    far_agent: bool = False
    # More agents, each serving integration `<agent>-pg` with the bulk resources r00.. .
    extra_agents: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)

    # Derived names, isolated per run.
    @property
    def topic_prefix(self) -> str:
        return f"it-{self.run_id}."

    @property
    def database_name(self) -> str:
        return f"lapse_it_{self.run_id}"

    @property
    def read_role(self) -> str:
        return f"it_{self.run_id}_read"

    @property
    def write_role(self) -> str:
        return f"it_{self.run_id}_write"

    def login_for(self, user: str) -> str:
        return f"it_{self.run_id}_{user}"

    def logins(self) -> list[str]:
        return [self.login_for(u) for u in (*self.users, *MACHINE_LOGINS)]

    def extra_role(self, agent: str, index: int) -> str:
        return f"it_{self.run_id}_{agent.replace('-', '_')}_r{index:02d}"

    def bulk_role(self, index: int) -> str:
        return f"it_{self.run_id}_r{index:02d}"

    @property
    def far_role(self) -> str:
        return f"it_{self.run_id}_far_read"

    def gated_role(self, resource: str) -> str:
        return f"it_{self.run_id}_{resource.replace('-', '_')}"

    def target_roles(self) -> list[str]:
        roles = [self.read_role, self.write_role, *map(self.gated_role, GATED_FLOWS)]
        roles += [self.bulk_role(i) for i in range(self.bulk_resources)]
        roles += [
            self.extra_role(agent, i)
            for agent in self.extra_agents
            for i in range(self.bulk_resources)
        ]
        return roles + ([self.far_role] if self.far_agent else [])

    @property
    def database_url(self) -> str:
        base, _, _ = self.infra.database_url.rpartition("/")
        return f"{base}/{self.database_name}"

    @property
    def admin_database_dsn(self) -> str:
        return self.infra.database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def create_databases(self) -> None:
        """A fresh Lapse database and throwaway roles and logins in the target."""
        admin = await asyncpg.connect(self.admin_database_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database_name}"')
        finally:
            await admin.close()
        target = await asyncpg.connect(self.infra.target_admin_dsn)
        try:
            for role in self.target_roles():
                await target.execute(f'CREATE ROLE "{role}" NOLOGIN')
            for login in self.logins():
                await target.execute(f"CREATE ROLE \"{login}\" LOGIN PASSWORD 'x'")
        finally:
            await target.close()

    async def drop_databases(self) -> None:
        target = await asyncpg.connect(self.infra.target_admin_dsn)
        try:
            for role in [*self.logins(), *self.target_roles()]:
                await target.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await target.close()
        admin = await asyncpg.connect(self.admin_database_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
        finally:
            await admin.close()

    @property
    def agents(self) -> list[str]:
        return ["demo-agent", *(["far-agent"] if self.far_agent else []), *self.extra_agents]

    @property
    def kafka(self) -> InstallationCredentials:
        return InstallationCredentials(
            admin=self.infra.kafka_admin,
            installation=Installation(
                topic_prefix=self.topic_prefix,
                agents=tuple(self.agents),
                producers=tuple(PRODUCERS),
            ),
            credentials_dir=self.workdir / "kafka-credentials",
        )

    async def provision_kafka(self) -> None:
        await self.kafka.provision()

    def kafka_as(self, principal: str) -> KafkaSettings:
        return self.kafka.settings(principal)

    def kafka_env(self, principal: str) -> dict[str, str]:
        return self.kafka.env(principal)

    @property
    def observer(self) -> KafkaSettings:
        """How tests read topics: as an operator's tools would, with the super user."""
        return self.kafka.settings(ADMIN)

    def prepare(self) -> None:
        keys = self.workdir / "keys"
        self.dev_key, self.dev_public = ensure_keypair(keys, "dev-token")
        self.signing_key, self.signing_public = ensure_keypair(keys, "command-signing")
        self.chatops_key, self.chatops_public = ensure_keypair(keys, "chatops-token")
        self.request_service_key, self.request_service_public = ensure_keypair(
            keys / "services", "request"
        )
        self.checkpoint_key, self.checkpoint_public = ensure_keypair(keys, "audit-checkpoint")
        self.checkpoint_dir = self.workdir / "audit-checkpoints"
        self.ports = {name: free_port() for name in ("request", "approval", "audit", "revoker")}
        self.tls = StackTls.make(self.workdir / "tls")
        principals = "\n".join(
            [f"      {self.login_for(user)}: [{user}]" for user in self.users]
            + [f'      {self.login_for(login)}: ["{who}"]' for login, who in MACHINE_LOGINS.items()]
        )
        bulk = "".join(f", r{i:02d}: [read]" for i in range(self.bulk_resources))
        bulk += "".join(f", {gated}: [read]" for gated in GATED_FLOWS)
        self_service = ", ".join(["appdb", *(f"r{i:02d}" for i in range(self.bulk_resources))])
        opens = (datetime.now(UTC) + timedelta(hours=12)).replace(second=0, microsecond=0)
        opens = min(opens, opens.replace(hour=23, minute=58))
        window = {
            "{window_start}": opens.strftime("%H:%M"),
            "{window_end}": (opens + timedelta(minutes=1)).strftime("%H:%M"),
        }
        gated_flows = ""
        for gated, (policy, more) in GATED_FLOWS.items():
            extra = more
            for placeholder, value in window.items():
                extra = extra.replace(placeholder, value)
            requestors = "{groups: [engineering]}"
            for kind in ("users", "groups", "machines"):
                if extra.startswith(f"requestors_{kind}:"):
                    requestors = f"{{{kind}: " + extra.split(":", 1)[1].strip() + "}"
                    extra = ""
            gated_flows += f"""
  - name: flow-{gated}
    requestors: {requestors}
    targets:
      - {{integration: demo-pg, resources: [{gated}], permissions: [read]}}
    approval: {policy}
    default_duration: 1h
    max_duration: 1h""" + (f"\n    {extra}" if extra else "")
        far_integration = (
            f"""
  - id: far-pg
    agent: far-agent
    resources: {{fardb: [read]}}
    principals:
{principals}"""
            if self.far_agent
            else ""
        )
        far_target = (
            "\n      - {integration: far-pg, resources: [fardb], permissions: [read]}"
            if self.far_agent
            else ""
        )
        bulk_names = ", ".join(f"r{i:02d}" for i in range(self.bulk_resources))
        for agent in self.extra_agents:
            far_integration += f"""
  - id: {agent}-pg
    agent: {agent}
    resources: {{{", ".join(f"r{i:02d}: [read]" for i in range(self.bulk_resources))}}}
    principals:
{principals}"""
            far_target += (
                f"\n      - {{integration: {agent}-pg, resources: [{bulk_names}], "
                "permissions: [read]}"
            )
        self.flows_file = self.workdir / "flows.yaml"
        self.flows_file.write_text(
            f"""
integrations:
  - id: demo-pg
    agent: demo-agent
    resources: {{appdb: [read, write]{bulk}}}
    principals:
{principals}{far_integration}
flows:
  - name: engineering-self-service
    requestors: {{groups: [engineering]}}
    targets:
      - {{integration: demo-pg, resources: [{self_service}], permissions: [read, write]}}{far_target}
    approval: {{mode: auto}}
    default_duration: 10m
    max_duration: 1h{gated_flows}
"""
        )
        bulk_permissions = "".join(
            f"""
      r{i:02d}:
        permissions:
          read: {self.bulk_role(i)}"""
            for i in range(self.bulk_resources)
        ) + "".join(
            f"""
      {gated}:
        permissions:
          read: {self.gated_role(gated)}"""
            for gated in GATED_FLOWS
        )
        self.agent_file = self.workdir / "agent.yaml"
        self.agent_file.write_text(
            f"""
integrations:
  - id: demo-pg
    kind: postgres
    dsn: {self.infra.target_admin_dsn}
    resources:
      appdb:
        permissions:
          read: {self.read_role}
          write: {self.write_role}{bulk_permissions}
"""
        )
        self.far_agent_file = self.workdir / "far-agent.yaml"
        self.far_agent_file.write_text(
            f"""
integrations:
  - id: far-pg
    kind: postgres
    dsn: {self.infra.target_admin_dsn}
    resources:
      fardb:
        permissions:
          read: {self.far_role}
"""
        )
        self.directory_file = self.workdir / "directory.yaml"
        self.directory_file.write_text(
            "groups:\n"
            + "".join(
                f"  {group}: [{', '.join(people)}]\n" for group, people in DIRECTORY_GROUPS.items()
            )
        )
        for agent in self.extra_agents:
            roles = "".join(
                f"""
      r{i:02d}:
        permissions:
          read: {self.extra_role(agent, i)}"""
                for i in range(self.bulk_resources)
            )
            (self.workdir / f"{agent}.yaml").write_text(
                f"""
integrations:
  - id: {agent}-pg
    kind: postgres
    dsn: {self.infra.target_admin_dsn}
    resources:{roles}
"""
            )
        self.producer_keys = self.workdir / "producers"
        registry = "producers:\n"
        for producer, rights in PRODUCERS.items():
            ensure_keypair(self.producer_keys, producer)
            registry += f"  {producer}:\n    public_key_file: {producer}.pub\n    {rights}\n"
        # A key pair nobody registered: its events must be refused.
        ensure_keypair(self.producer_keys, "intruder")
        self.producers_file = self.producer_keys / "registry.yaml"
        self.producers_file.write_text(registry)
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAPSE_")}
        env.update(
            {
                "LAPSE_KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka_bootstrap,
                "LAPSE_KAFKA_TOPIC_PREFIX": self.topic_prefix,
                "LAPSE_DATABASE_URL": self.database_url,
                # Dev mode: the dev issuer and dev keys are trusted (never in production).
                "LAPSE_AUTH_DEV_MODE": "true",
                "LAPSE_AUTH_PUBLIC_KEY_FILE": str(self.dev_public),
                # The chat front end's tokens say who someone is, nothing more.
                "LAPSE_AUTH_SUBJECT_ONLY_ISSUERS": f"lapse-chatops={self.chatops_public}",
                # request -> approval with the request service's own credential.
                "LAPSE_AUTH_SERVICE_PUBLIC_KEY_FILES": str(self.request_service_public),
                "LAPSE_AUTH_SERVICE_KEY_FILE": str(self.request_service_key),
                "LAPSE_AUTH_DIRECTORY_FILE": str(self.directory_file),
                "LAPSE_REQUEST_ACCESS_EVENT_PRODUCERS_FILE": str(self.producers_file),
                "LAPSE_APPROVAL_FLOW_FILES": str(self.flows_file),
                "LAPSE_APPROVAL_GRPC_ADDRESS": f"127.0.0.1:{self.ports['approval']}",
                "LAPSE_REQUEST_GRPC_ADDRESS": f"127.0.0.1:{self.ports['request']}",
                "LAPSE_REQUEST_APPROVAL_ADDRESS": f"127.0.0.1:{self.ports['approval']}",
                "LAPSE_AUDIT_GRPC_ADDRESS": f"127.0.0.1:{self.ports['audit']}",
                "LAPSE_AUDIT_CHECKPOINT_KEY_FILE": str(self.checkpoint_key),
                "LAPSE_AUDIT_CHECKPOINT_DIR": str(self.checkpoint_dir),
                # A checkpoint within a test's patience.
                "LAPSE_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "2",
                "LAPSE_REVOKER_GRPC_ADDRESS": f"127.0.0.1:{self.ports['revoker']}",
                "LAPSE_SCHEDULER_COMMAND_SIGNING_KEY_FILE": str(self.signing_key),
                # Expiry reminders within a test's patience (a 1m grant: 15 s before).
                "LAPSE_SCHEDULER_EXPIRY_NOTICE_SECONDS": "20",
                "LAPSE_REVOKER_COMMAND_SIGNING_KEY_FILE": str(self.signing_key),
                "LAPSE_REVOKER_ACK_DEADLINE_SECONDS": "10",
                "LAPSE_REVOKER_ADDRESS": f"127.0.0.1:{self.ports['revoker']}",
                "LAPSE_AGENT_AGENT_ID": "demo-agent",
                "LAPSE_AGENT_CONFIG_FILE": str(self.agent_file),
                "LAPSE_AGENT_COMMAND_PUBLIC_KEY_FILE": str(self.signing_public),
                "LAPSE_AGENT_STATE_PATH": str(self.workdir / "agent-state.db"),
                "LAPSE_AGENT_HEARTBEAT_INTERVAL_SECONDS": "2",
                "LAPSE_REQUEST_ADDRESS": f"127.0.0.1:{self.ports['request']}",
                "LAPSE_AUDIT_ADDRESS": f"127.0.0.1:{self.ports['audit']}",
                "LAPSE_APPROVAL_ADDRESS": f"127.0.0.1:{self.ports['approval']}",
                "LAPSE_DEV_TOKEN_KEY_FILE": str(self.dev_key),
                "LAPSE_CLI_HOME": str(self.workdir / "cli-home"),
                "LAPSE_LOG_LEVEL": "INFO",
                **self.tls.env(),
            }
        )
        env.update(self.extra_env)
        return env

    def agent_key(self, agent: str) -> tuple[Path, Path]:
        """The agent's own signing key pair (private, public)."""
        return ensure_keypair(self.workdir / "keys" / "agents", agent)

    def start_all(self) -> None:
        """The central services, then the agents' enrollment (as an admin would, with
        `lapse agents enroll`), then the agents."""
        env = self.environment()
        for name in SERVICES:
            if name == "agent":
                continue
            module = "lapse_" + name.replace("-", "_")
            process = ServiceProcess(
                name, module, {**env, **self.kafka_env(f"lapse-{name}")}, self.log_dir
            )
            self.processes[name] = process
            process.start()
        for process in self.processes.values():
            process.wait_ready()
        self.enroll_agents()
        agents = {
            "agent": ("demo-agent", self.agent_file),
            **({"far-agent": ("far-agent", self.far_agent_file)} if self.far_agent else {}),
            **{agent: (agent, self.workdir / f"{agent}.yaml") for agent in self.extra_agents},
        }
        for name, (agent, config) in agents.items():
            agent_env = {
                **env,
                **self.kafka_env(f"lapse-agent-{agent}"),
                "LAPSE_AGENT_AGENT_ID": agent,
                "LAPSE_AGENT_CONFIG_FILE": str(config),
                "LAPSE_AGENT_STATE_PATH": str(self.workdir / f"{agent}-state.db"),
                "LAPSE_AGENT_SIGNING_KEY_FILE": str(self.agent_key(agent)[0]),
            }
            process = ServiceProcess(name, "lapse_agent", agent_env, self.log_dir)
            self.processes[name] = process
            process.start()
        for name in agents:
            self.processes[name].wait_ready()

    def enroll_agents(self) -> None:
        admin = [("authorization", f"Bearer {self.token('ops', roles=('admin',))}")]
        with self.channel("revoker") as channel:
            registry = revoker_service_pb2_grpc.RevokerServiceStub(channel)
            for agent in self.agents:
                registry.EnrollAgent(
                    revoker_service_pb2.EnrollAgentRequest(
                        agent_id=agent, public_key_pem=self.agent_key(agent)[1].read_text()
                    ),
                    metadata=admin,
                    timeout=30,
                )

    def aio_channel(self, service: str) -> grpc.aio.Channel:
        """A TLS channel to `service`'s gRPC port, verified against the stack's CA."""
        return self.tls.aio_channel(self.ports[service])

    def channel(self, service: str) -> grpc.Channel:
        """The blocking kind of `aio_channel`."""
        return self.tls.channel(self.ports[service])

    def restart(self, name: str) -> None:
        process = self.processes[name]
        process.start()
        process.wait_ready()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()

    def token(
        self, user: str, *, groups: tuple[str, ...] = ("engineering",), roles: tuple[str, ...] = ()
    ) -> str:
        return mint_token(
            private_key_pem=self.dev_key.read_bytes(),
            subject=user,
            groups=list(groups),
            roles=list(roles),
            ttl_seconds=3600,
        )

    def logs(self) -> Iterator[str]:
        for process in self.processes.values():
            yield f"===== {process.name} =====\n{process.tail(80)}"
