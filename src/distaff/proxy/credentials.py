"""WorkerCredentials: the TLS material of a pool, and how callers prove who they are."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import grpc


@dataclasses.dataclass(frozen=True, repr=False)
class WorkerCredentials:
    """TLS material shared by a pool's callers and workers (PEM bytes).

    Workers serve with ``cert``/``key`` and callers verify them against
    ``ca``. Callers authenticate to workers in one of two ways: with
    ``mutual``, workers demand a client certificate signed by ``ca`` and
    callers present ``cert``/``key``; with ``token``, callers send it as a
    bearer token (over TLS only) and workers compare it with their own in
    constant time before reading anything else. A caller using a token needs
    only ``ca``. The key and the token never travel inside a pickled proxy.

    Attributes:
        ca: the certificate authority that signs the pool's certificates.
        cert: this party's certificate chain (empty for a token-only caller).
        key: this party's private key (empty for a token-only caller).
        mutual: require client certificates on workers.
        token: the pool's shared bearer token, or None.
        server_name: the name to expect in workers' certificates instead of
            the address dialled (workers dialled by IP, certificate for a
            service name).
    """

    ca: bytes
    cert: bytes = b""
    key: bytes = b""
    mutual: bool = False
    token: str | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if not isinstance(value, bytes):
                raise TypeError(
                    f"{name} must be PEM bytes, not {type(value).__name__}; to read files "
                    "use WorkerCredentials.from_files(ca, cert, key)"
                )
            if (value or name == "ca") and b"-----BEGIN " not in value:
                raise ValueError(f"{name} is not PEM data (no '-----BEGIN ' line)")
        if not isinstance(self.mutual, bool):
            raise TypeError(f"mutual must be True or False, not {self.mutual!r}")
        if self.token is not None and (not self.token or not self.token.isprintable()):
            raise ValueError("the token must be a non-empty line of printable characters")
        if self.mutual and not (self.cert and self.key):
            raise ValueError("mutual TLS needs this party's cert and key")

    @classmethod
    def from_files(
        cls,
        ca: str | pathlib.Path,
        cert: str | pathlib.Path | None = None,
        key: str | pathlib.Path | None = None,
        *,
        mutual: bool = False,
        token_file: str | pathlib.Path | None = None,
        server_name: str | None = None,
    ) -> WorkerCredentials:
        """Read PEM files, and a token file (its first line).

        Raises:
            OSError: a file is missing or unreadable (naming it).
            ValueError: a file holds no PEM data, or the token file is empty
                (naming it).
        """
        token = None
        if token_file is not None:
            lines = pathlib.Path(token_file).read_text().splitlines()
            token = lines[0].strip() if lines else ""
            if not token:
                raise ValueError(f"token file {str(token_file)!r} is empty")
        data = {}
        for name, path in (("ca", ca), ("cert", cert), ("key", key)):
            data[name] = b"" if path is None else pathlib.Path(path).read_bytes()
            if path is not None and b"-----BEGIN " not in data[name]:
                raise ValueError(f"{name} file {str(path)!r} holds no PEM data")
        return cls(**data, mutual=mutual, token=token, server_name=server_name)

    @property
    def authenticates_callers(self) -> bool:
        """True if a worker serving with these credentials authenticates its callers."""
        return self.mutual or self.token is not None

    def server_credentials(self) -> Any:
        """gRPC server credentials for a worker."""
        if not (self.cert and self.key):
            raise ValueError("a worker needs its own cert and key to serve TLS")
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.mutual else None,
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> Any:
        """gRPC channel credentials for a caller: client cert when mutual, token when set."""
        if self.mutual:
            channel = grpc.ssl_channel_credentials(
                root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
            )
        else:
            channel = grpc.ssl_channel_credentials(root_certificates=self.ca)
        if self.token is None:
            return channel
        return grpc.composite_channel_credentials(
            channel, grpc.access_token_call_credentials(self.token)
        )

    def channel_options(self) -> tuple[tuple[str, Any], ...]:
        """gRPC channel options these credentials need (the target-name override)."""
        if self.server_name is None:
            return ()
        return (("grpc.ssl_target_name_override", self.server_name),)

    def __repr__(self) -> str:
        token = ", token=<hidden>" if self.token is not None else ""
        name = f", server_name={self.server_name!r}" if self.server_name else ""
        return f"WorkerCredentials(mutual={self.mutual}{token}{name}, key=<hidden>)"
