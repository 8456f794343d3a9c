"""Access events on lapse.access-events.v1: signed facts from internal services (HR
offboarding, incident tooling, CI pipelines) that drive the access lifecycle.

Producers publish with AccessEventPublisher; consumers check every record with
AccessEventVerifier against the ProducerRegistry they load from YAML.
"""

from lapse_common.access_events.kinds import (
    EVENT_KINDS,
    AccessEventPayload,
    AccessRequested,
    IncidentDeclared,
    IncidentResolved,
    UserOffboarded,
)
from lapse_common.access_events.producer_registry import (
    ProducerRegistry,
    ProducerRegistryError,
    RegisteredProducer,
)
from lapse_common.access_events.publisher import AccessEventPublisher
from lapse_common.access_events.signing import AccessEventSigner
from lapse_common.access_events.verification import AccessEventRefused, AccessEventVerifier

__all__ = [
    "EVENT_KINDS",
    "AccessEventPayload",
    "AccessEventPublisher",
    "AccessEventRefused",
    "AccessEventSigner",
    "AccessEventVerifier",
    "AccessRequested",
    "IncidentDeclared",
    "IncidentResolved",
    "ProducerRegistry",
    "ProducerRegistryError",
    "RegisteredProducer",
    "UserOffboarded",
]
