"""`lapse-agent` / `python -m lapse_agent`: run the connector agent."""

from __future__ import annotations

import asyncio
import logging
import sys

from lapse_common.runtime import configure_logging
from lapse_common.settings import KafkaSettings, TelemetrySettings
from lapse_common.telemetry import setup_telemetry
from pydantic import ValidationError

from lapse_agent.app import StartupError, run_agent
from lapse_agent.config import ConfigError
from lapse_agent.settings import AgentSettings

logger = logging.getLogger("lapse_agent")

# Distinct from a crash (1): the operator has to fix configuration, restarting won't help.
EXIT_BAD_CONFIGURATION = 2


_ENV_PREFIXES = {
    "AgentSettings": "LAPSE_AGENT_",
    "KafkaSettings": "LAPSE_KAFKA_",
    "TelemetrySettings": "LAPSE_OTEL_",
}


def _environment_problems(invalid: ValidationError) -> list[str]:
    """One line per bad setting, named as the environment variable the operator sets."""
    prefix = _ENV_PREFIXES.get(invalid.title, "")
    return [
        f"{prefix}{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
        for error in invalid.errors(include_url=False, include_input=False)
    ]


def main() -> None:
    configure_logging("agent")
    try:
        settings = AgentSettings()
        kafka = KafkaSettings()
        setup_telemetry("agent", TelemetrySettings())
        asyncio.run(run_agent(settings, kafka=kafka))
    except ValidationError as invalid:
        logger.error("invalid environment:\n  %s", "\n  ".join(_environment_problems(invalid)))
        sys.exit(EXIT_BAD_CONFIGURATION)
    except (ConfigError, StartupError) as problem:
        logger.error("%s", problem)
        sys.exit(EXIT_BAD_CONFIGURATION)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
