"""After aiokafka gives up on its idempotent producer (OutOfOrderSequenceNumber once a broker
restart lost its sequence numbers), the publisher starts a new producer instead of failing
every publish until the process restarts. Real local Kafka."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber
from lapse_common.kafka_admin.provisioning import Installation
from lapse_common.messaging.broker import create_broker
from lapse_common.messaging.publishing import BrokerPublisher
from lapse_common.topics import Topics

from tests.integration.kafka_records import read_all
from tests.kafka_principals import ADMIN, provisioned

pytestmark = [pytest.mark.integration]


async def test_a_producer_aiokafka_gave_up_on_is_replaced(tmp_path: Path) -> None:
    kafka = await provisioned(
        Installation(topic_prefix=f"it-pub-{uuid.uuid4().hex[:8]}."), tmp_path
    )
    topic = Topics(prefix=kafka.installation.topic_prefix).grants
    broker = create_broker(kafka.settings("lapse-revoker"), client_id="it-publisher")
    await broker.connect()
    publisher = BrokerPublisher(broker)
    try:
        await publisher.publish(topic=topic, key="k", value=b"first", headers={})
        dead = broker.config.producer._producer.producer
        # What aiokafka's sender does when the broker answers OutOfOrderSequenceNumber: every
        # later send fails with it.
        dead._message_accumulator.fail_all(OutOfOrderSequenceNumber())
        with pytest.raises(OutOfOrderSequenceNumber):
            await publisher.publish(topic=topic, key="k", value=b"lost", headers={})
        await publisher.publish(topic=topic, key="k", value=b"after", headers={})
        assert broker.config.producer._producer.producer is not dead
        values = [record.value for record in await read_all(kafka.settings(ADMIN), topic)]
        assert values == [b"first", b"after"]
    finally:
        await broker.stop()
        await kafka.delete_topics()
