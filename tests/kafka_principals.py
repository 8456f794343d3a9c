"""An installation's principals on the test broker: the admin step run for it, and client
settings for each of its principals (or the super user, to observe)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from lapse_common.kafka_admin.provisioning import Installation, password_file, provision
from lapse_common.messaging.kafka_security import aiokafka_security_options
from lapse_common.settings import KafkaSettings

from tests.infrastructure import LOCAL_KAFKA, kafka_admin_settings

ADMIN = "admin"


@dataclass(frozen=True)
class InstallationCredentials:
    admin: KafkaSettings
    installation: Installation
    credentials_dir: Path

    async def provision(self) -> None:
        """The admin step: topics, a SCRAM credential per principal, their ACLs."""
        await provision(self.admin, self.installation, credentials_dir=self.credentials_dir)

    def settings(self, principal: str) -> KafkaSettings:
        """Client settings of `principal` (e.g. `lapse-agent-far-agent`), or the super
        user's for ADMIN, under the installation's topic prefix."""
        prefix = self.installation.topic_prefix
        if principal == ADMIN:
            return self.admin.model_copy(update={"topic_prefix": prefix})
        user = prefix + principal
        return self.admin.model_copy(
            update={
                "topic_prefix": prefix,
                "username": user,
                "password_file": password_file(self.credentials_dir, user),
            }
        )

    def env(self, principal: str) -> dict[str, str]:
        """LAPSE_KAFKA_* for a process that is `principal` (the prefix and the bootstrap
        servers are the caller's)."""
        kafka = self.settings(principal)
        env = {
            "LAPSE_KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
            "LAPSE_KAFKA_SASL_MECHANISM": kafka.sasl_mechanism,
            "LAPSE_KAFKA_USERNAME": kafka.username,
            "LAPSE_KAFKA_PASSWORD_FILE": str(kafka.password_file),
        }
        if kafka.ssl_cafile is not None:
            env["LAPSE_KAFKA_SSL_CAFILE"] = str(kafka.ssl_cafile)
        return env

    async def delete_topics(self) -> None:
        """Cleanup only: a leftover test topic harms nothing, so a failure is printed."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.admin.bootstrap_servers,
            **aiokafka_security_options(self.admin),
        )
        await admin.start()
        try:
            await admin.delete_topics(self.installation.topics())
        except Exception as error:
            print(f"could not delete test topics: {error}")
        finally:
            await admin.close()


async def provisioned(installation: Installation, credentials_dir: Path) -> InstallationCredentials:
    """The admin step run for `installation` on the test broker (KAFKA_BOOTSTRAP_SERVERS,
    else the local one), for tests that run without a whole stack."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or LOCAL_KAFKA
    credentials = InstallationCredentials(
        admin=kafka_admin_settings(bootstrap),
        installation=installation,
        credentials_dir=credentials_dir,
    )
    await credentials.provision()
    return credentials
