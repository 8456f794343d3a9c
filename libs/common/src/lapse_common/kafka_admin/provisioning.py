"""Bring a Lapse installation's part of the broker to what principals.py says: its topics
exist, each principal has a SCRAM credential (its password in a 0600 file), and each has
exactly its ACLs. Running it again changes nothing; a right taken out of the plan is
taken off the broker."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, for_code

from lapse_common.kafka_admin import principals as plan
from lapse_common.kafka_admin.admin_requests import (
    Acl,
    KafkaAdminRefused,
    Operation,
    PatternType,
    ResourceType,
    create_acls,
    delete_acls,
    delete_scram_users,
    describe_acls,
    set_scram_passwords,
)
from lapse_common.messaging.kafka_security import aiokafka_security_options
from lapse_common.private_files import write_private_file
from lapse_common.settings import KafkaSettings
from lapse_common.topics import Topics


@dataclass(frozen=True)
class Installation:
    """One Lapse installation on the cluster: its topic prefix (which also prefixes its
    principals' names, so installations sharing a cluster share no credential), its agents
    and its access-event producers."""

    topic_prefix: str = ""
    agents: tuple[str, ...] = ()
    producers: tuple[str, ...] = ()
    partitions: int = 3
    replication_factor: int = 1
    # False: only the agents and producers named (enrolling one agent), not the services
    # and their shared topics.
    services: bool = True

    def principals(self) -> list[plan.Principal]:
        return [
            *(plan.SERVICES if self.services else ()),
            *map(plan.agent, self.agents),
            *map(plan.access_event_producer, self.producers),
        ]

    def user(self, principal: plan.Principal) -> str:
        return f"{self.topic_prefix}{principal.name}"

    def topics(self) -> list[str]:
        topics = Topics(prefix=self.topic_prefix)
        shared = topics.shared() if self.services else []
        return [*shared, *map(topics.agent_commands, self.agents)]

    def acls(self, principal: plan.Principal) -> list[Acl]:
        who = f"User:{self.user(principal)}"
        rules = [
            self._rule(who, ResourceType.TOPIC, name, operation)
            for names, operation in (
                (principal.reads, Operation.READ),
                (principal.writes, Operation.WRITE),
            )
            for name in names
        ]
        rules += [self._rule(who, ResourceType.GROUP, g, Operation.READ) for g in principal.groups]
        return sorted(rules)

    def _rule(self, who: str, kind: ResourceType, name: str, operation: Operation) -> Acl:
        if name.endswith("*"):
            return Acl(who, kind, self.topic_prefix + name[:-1], PatternType.PREFIXED, operation)
        return Acl(who, kind, self.topic_prefix + name, PatternType.LITERAL, operation)


@dataclass
class ProvisionReport:
    topics_created: list[str] = field(default_factory=list)
    topics_existing: list[str] = field(default_factory=list)
    passwords_created: list[Path] = field(default_factory=list)
    acls_added: list[Acl] = field(default_factory=list)
    acls_removed: list[Acl] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"topics: {len(self.topics_created)} created, "
            f"{len(self.topics_existing)} already there",
            f"credentials: {len(self.passwords_created)} new password files",
            f"ACLs: {len(self.acls_added)} added, {len(self.acls_removed)} removed",
            *(f"  - removed {acl.describe()}" for acl in self.acls_removed),
        ]


@contextlib.asynccontextmanager
async def admin_client(
    settings: KafkaSettings, *, timeout: float = 60.0
) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client on the super user's credential, once the broker answers (up to
    `timeout` seconds for it to come up)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id="lapse-kafka-admin",
            **aiokafka_security_options(settings),
        )
        try:
            await admin.start()
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1.0)
            continue
        try:
            yield admin
        finally:
            await admin.close()
        return


def password_file(credentials_dir: Path, user: str) -> Path:
    return credentials_dir / f"{user}.password"


async def provision(
    settings: KafkaSettings, installation: Installation, *, credentials_dir: Path
) -> ProvisionReport:
    report = ProvisionReport()
    _private_directory(credentials_dir)
    async with admin_client(settings) as admin:
        await _create_topics(admin, installation, report)
        passwords = {
            installation.user(p): _password(credentials_dir, installation.user(p), report)
            for p in installation.principals()
        }
        await set_scram_passwords(admin, passwords)
        for principal in installation.principals():
            wanted = installation.acls(principal)
            live = await describe_acls(admin, f"User:{installation.user(principal)}")
            stale = [acl for acl in live if acl not in wanted]
            missing = [acl for acl in wanted if acl not in live]
            await delete_acls(admin, stale)
            await create_acls(admin, missing)
            report.acls_added += missing
            report.acls_removed += stale
        await _until_in_force(admin, installation)
    await _until_password_works(settings, *next(iter(passwords.items())))
    return report


async def _until_in_force(
    admin: AIOKafkaAdminClient, installation: Installation, *, timeout: float = 30.0
) -> None:
    """Credentials and ACLs reach the broker through the metadata log, a moment after the
    controller accepted them: wait until the broker lists every rule, so a process started
    right after this step is not refused."""
    wanted = {acl for p in installation.principals() for acl in installation.acls(p)}
    deadline = asyncio.get_running_loop().time() + timeout
    while not wanted <= set(await describe_acls(admin)):
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaAdminRefused(f"the broker still lacks some of the ACLs after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def _until_password_works(
    settings: KafkaSettings, user: str, password: str, *, timeout: float = 30.0
) -> None:
    """The same for SCRAM credentials: until one of them authenticates."""
    deadline = asyncio.get_running_loop().time() + timeout
    with tempfile.TemporaryDirectory() as scratch:
        secret = Path(scratch) / "password"
        write_private_file(secret, password.encode())
        as_user = settings.model_copy(update={"username": user, "password_file": secret})
        while True:
            probe = AIOKafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers.split(","),
                client_id="lapse-kafka-admin-probe",
                **aiokafka_security_options(as_user),
            )
            try:
                await probe.start()
                return
            except KafkaConnectionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise KafkaAdminRefused(
                        f"the broker does not accept the new credential of {user} after "
                        f"{timeout:.0f}s"
                    ) from None
                await asyncio.sleep(0.2)
            finally:
                await probe.close()


def _private_directory(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _password(credentials_dir: Path, user: str, report: ProvisionReport) -> str:
    """The user's password from its file, or a new random one written 0600."""
    path = password_file(credentials_dir, user)
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    write_private_file(path, password.encode())
    report.passwords_created.append(path)
    return password


async def _create_topics(
    admin: AIOKafkaAdminClient, installation: Installation, report: ProvisionReport
) -> None:
    existing = set(await admin.list_topics())
    wanted = installation.topics()
    missing = [t for t in wanted if t not in existing]
    report.topics_existing += [t for t in wanted if t in existing]
    if not missing:
        return
    with contextlib.suppress(TopicAlreadyExistsError):
        response = await admin.create_topics(
            [
                NewTopic(
                    t,
                    num_partitions=installation.partitions,
                    replication_factor=installation.replication_factor,
                )
                for t in missing
            ]
        )
        problems = [
            f"{topic}: {for_code(code).__name__}{f' ({message})' if message else ''}"
            for topic, code, message in _topic_errors(response.topic_errors)
            if code and for_code(code) is not TopicAlreadyExistsError
        ]
        if problems:
            raise KafkaAdminRefused("the broker refused to create topics: " + "; ".join(problems))
    report.topics_created += missing


def _topic_errors(errors: Iterable[tuple[object, ...]]) -> Iterable[tuple[str, int, str | None]]:
    for entry in errors:
        topic, code, *rest = entry
        yield str(topic), int(str(code)), (str(rest[0]) if rest and rest[0] else None)


async def remove_principal(
    settings: KafkaSettings, installation: Installation, principal: plan.Principal
) -> int:
    """Take a principal off the broker: its ACLs and its SCRAM credential (a disabled agent
    can no longer connect). Returns how many ACLs were removed."""
    user = installation.user(principal)
    async with admin_client(settings) as admin:
        live = await describe_acls(admin, f"User:{user}")
        await delete_acls(admin, live)
        await delete_scram_users(admin, [user])
    return len(live)
