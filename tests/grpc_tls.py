"""The TLS every test stack runs its gRPC ports with, and the one way tests open channels
to them (verified against the stack's own CA, as the CLI does)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from lapse_common.grpc_transport import GrpcTransportSettings, open_aio_channel, open_channel
from lapse_common.local_ca import LocalCertificates, ensure_local_certificates


@dataclass(frozen=True)
class StackTls:
    certificates: LocalCertificates

    @classmethod
    def make(cls, directory: Path) -> StackTls:
        """A CA of the run's own and a certificate for 127.0.0.1 and localhost."""
        return cls(ensure_local_certificates(directory))

    def env(self) -> dict[str, str]:
        """What services (their port) and clients (the CA) read; no plaintext flag."""
        return {
            "LAPSE_GRPC_TLS_CERTFILE": str(self.certificates.certfile),
            "LAPSE_GRPC_TLS_KEYFILE": str(self.certificates.keyfile),
            "LAPSE_GRPC_TLS_CAFILE": str(self.certificates.cafile),
        }

    @property
    def server(self) -> GrpcTransportSettings:
        """For a server a test runs in its own process."""
        return GrpcTransportSettings(
            tls_certfile=self.certificates.certfile, tls_keyfile=self.certificates.keyfile
        )

    @property
    def client(self) -> GrpcTransportSettings:
        return GrpcTransportSettings(tls_cafile=self.certificates.cafile)

    def aio_channel(self, port: int) -> grpc.aio.Channel:
        return open_aio_channel(f"127.0.0.1:{port}", self.client)

    def channel(self, port: int) -> grpc.Channel:
        return open_channel(f"127.0.0.1:{port}", self.client)
