"""One frozen, validated configuration for a bridge process.

The CLI turns argv into a :class:`Config`; nothing else reads argv or the
environment (except the auth-token variable, resolved by the CLI too).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

__all__ = ["Config", "ConfigError"]

# The binary encodings a caller may accept (codecs.values.BINARY_ENCODINGS; not
# imported from there: the CLI builds a Config before any codec is loaded).
BINARY_ENCODINGS = ("npy", "raw", "utf8", "msgpack")

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


class ConfigError(ValueError):
    """The configuration cannot work; the message says which setting and why."""


@dataclass(frozen=True)
class Config:
    """Every setting of a bridge process (one per flag; see cli.py), validated on creation.
    (A docstring also spares @dataclass building one from the signature at import.)"""

    # Process and transport
    mode: str = "grpc"  # "grpc" or "pool-worker" (stdio)
    host: str = "127.0.0.1"
    port: int = 50051
    strict_port: bool = False
    adapter: str | None = None
    protocol: str | None = None  # stdio: "json", "msgpack" or None (negotiate)
    quiet: bool = False
    worker_id: str = ""

    # Payloads
    binary_threshold: int = 10_240
    # Binary encodings for callers whose requests name none (accept_encodings
    # empty, as Snakepit 0.3 sends): () = JSON at any size, as 0.3 got.
    default_accept_encodings: tuple[str, ...] = ()
    max_message_mb: int = 100

    # Execution
    max_workers: int = 256  # threads for sync handlers; as many again for sync generators
    stream_buffer: int = 8  # chunks a producer may run ahead of its consumer
    max_execute_chunks: int = 10_000  # Execute on a streaming command collects at most this many
    max_execute_bytes: int = 512 * 1024 * 1024  # ... and at most this many bytes of chunks
    max_stream_buffer_bytes: int = 1024 * 1024 * 1024  # chunks buffered by all open streams together

    # Sessions
    session_ttl: float = 3600.0
    max_sessions: int = 10_000
    max_session_bytes: int = 1024 * 1024 * 1024  # one session's (and the worker-global store's) state; 0 = no cap
    max_sessions_total_bytes: int = 8 * 1024 * 1024 * 1024  # all sessions together; 0 = no cap
    session_lock: bool = True

    # Pull-based generators
    generator_ttl: float = 300.0
    max_generators: int = 1_000
    max_generator_args_bytes: int = 1024 * 1024 * 1024  # arguments held by open pull generators together

    # Operations
    grace_period: float = 1.5
    malloc_keep_bytes: int = 256 * 1024 * 1024  # free memory a malloc heap keeps after a large message; 0 = glibc's defaults
    insecure: bool = False
    auth_token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    log_format: str = "console"
    log_level: str = "info"
    watch_stdin: bool = True  # gRPC mode: EOF on a piped stdin means the pool is gone
    watch_parent: bool = True  # gRPC mode: the parent process dying means the pool is gone

    # Files callers may name (built-ins): regular files under these directories only (none: no files)
    data_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("grpc", "pool-worker"):
            raise ConfigError(f"mode must be 'grpc' or 'pool-worker', not {self.mode!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if self.protocol not in (None, "json", "msgpack"):
            raise ConfigError(f"protocol must be 'json' or 'msgpack', not {self.protocol!r}")
        if self.binary_threshold < 0:
            raise ConfigError("binary threshold must be >= 0 bytes")
        unknown = set(self.default_accept_encodings) - set(BINARY_ENCODINGS)
        if unknown:
            raise ConfigError(f"default accept encodings: unknown {', '.join(sorted(unknown))}; "
                              f"expected some of {','.join(BINARY_ENCODINGS)} (or all)")
        if not 1 <= self.max_message_mb <= 2047:
            raise ConfigError("max message size must be 1..2047 MB (gRPC's limit is 2 GiB)")
        if self.max_workers < 1 or self.stream_buffer < 1 or self.max_execute_chunks < 1:
            raise ConfigError("max workers, stream buffer and max execute chunks must be >= 1")
        if self.max_execute_bytes < 1 or self.max_stream_buffer_bytes < 1:
            raise ConfigError("--max-execute-mb and --max-stream-buffer-mb must be > 0")
        if self.session_ttl <= 0 or self.max_sessions < 1 or self.max_session_bytes < 0 or self.max_sessions_total_bytes < 0:
            raise ConfigError("session ttl must be > 0, max sessions >= 1, max session bytes >= 0")
        if self.generator_ttl <= 0 or self.max_generators < 1 or self.max_generator_args_bytes < 1:
            raise ConfigError("generator ttl must be > 0 and max generators >= 1")
        if self.grace_period < 0:
            raise ConfigError("grace period must be >= 0")
        if self.malloc_keep_bytes < 0:
            raise ConfigError("--malloc-keep-mb must be >= 0")
        if self.log_format not in ("console", "json"):
            raise ConfigError(f"log format must be 'console' or 'json', not {self.log_format!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log level must be debug, info, warning or error, not {self.log_level!r}")
        for d in self.data_dirs:
            if not os.path.isdir(d):
                raise ConfigError(f"--data-dir {d!r} is not a directory")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.auth_token is not None and not self.auth_token.strip():
            raise ConfigError("the auth token is empty")
        if self.mode == "grpc" and not self.is_loopback and not (self.auth_token or self.tls_cert or self.insecure):
            raise ConfigError(
                f"refusing to listen on non-loopback host {self.host!r} without --auth-token-file, "
                "SNAKEPIT_BRIDGE_AUTH_TOKEN, --tls-cert/--tls-key, or an explicit --insecure"
            )

    @property
    def is_loopback(self) -> bool:
        host = self.host.strip("[]")
        if host in LOOPBACK_NAMES:
            return True
        import ipaddress  # here: only a non-loopback-named host needs it, not a stdio worker's start-up

        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def max_message_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    def with_(self, **changes) -> "Config":
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)
