"""WorkerCredentials: the TLS material of a pool."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import grpc


@dataclasses.dataclass(frozen=True, repr=False)
class WorkerCredentials:
    """TLS material shared by a pool's callers and workers (PEM bytes).

    Workers serve with ``cert``/``key`` and callers verify them against
    ``ca``. With ``mutual``, workers also demand a client certificate signed
    by ``ca`` and callers present ``cert``/``key``: a caller without one runs
    nothing. The key never travels inside a pickled proxy.

    Attributes:
        ca: the certificate authority that signs the pool's certificates.
        cert: this party's certificate chain.
        key: this party's private key.
        mutual: require client certificates on workers.
    """

    ca: bytes
    cert: bytes
    key: bytes
    mutual: bool = False

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if not isinstance(value, bytes):
                raise TypeError(
                    f"{name} must be PEM bytes, not {type(value).__name__}; to read files "
                    "use WorkerCredentials.from_files(ca, cert, key)"
                )
            if b"-----BEGIN " not in value:
                raise ValueError(f"{name} is not PEM data (no '-----BEGIN ' line)")
        if not isinstance(self.mutual, bool):
            raise TypeError(f"mutual must be True or False, not {self.mutual!r}")

    @classmethod
    def from_files(
        cls,
        ca: str | pathlib.Path,
        cert: str | pathlib.Path,
        key: str | pathlib.Path,
        *,
        mutual: bool = False,
    ) -> WorkerCredentials:
        """Read PEM files.

        Raises:
            OSError: a file is missing or unreadable (naming it).
            ValueError: a file holds no PEM data (naming it).
        """
        data = {}
        for name, path in (("ca", ca), ("cert", cert), ("key", key)):
            data[name] = pathlib.Path(path).read_bytes()
            if b"-----BEGIN " not in data[name]:
                raise ValueError(f"{name} file {str(path)!r} holds no PEM data")
        return cls(**data, mutual=mutual)

    def server_credentials(self) -> Any:
        """gRPC server credentials for a worker."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.mutual else None,
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> Any:
        """gRPC channel credentials for a caller (client cert when mutual)."""
        if self.mutual:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
            )
        return grpc.ssl_channel_credentials(root_certificates=self.ca)

    def __repr__(self) -> str:
        return f"WorkerCredentials(mutual={self.mutual}, key=<hidden>)"
