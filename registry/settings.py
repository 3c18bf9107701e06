"""Registry settings: command-line flags over `SYSEXT_…` environment over a config file.

Zero configuration works: everything lives under one data directory (default
`./sysext-data`): the SQLite database, the content-addressed store, the signing key and
the materialized public tree that the app, nginx or a CDN serve.
"""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from registry.trust.keys import SigningPolicy
from sysext.core.durations import parse_duration
from sysext.core.errors import SysextError
from sysext.core.urls import DEFAULT_CHANNEL

DEFAULT_DATA_DIR = Path("sysext-data")
DEFAULT_CHANNELS = (DEFAULT_CHANNEL, "beta", "alpha")
CONFIG_NAME = "registry.toml"
# uvicorn's listen backlog (`sysext serve`): up to this many connections are accepted in
# one go, before the connection cap can close any idle one to make room.
LISTEN_BACKLOG = 256
# Large enough for any real extension (a full Kubernetes sysext is ~300 MiB), small enough
# that a runaway upload cannot fill the disk.
DEFAULT_MAX_UPLOAD = 4 << 30


@dataclass(frozen=True)
class Settings:
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8080
    # None: one worker process per CPU this process may run on (`worker_count`).
    workers: int | None = None
    # Externally visible base URL (what hosts put in Path=); else derived from host:port.
    public_url: str | None = None
    admin_token: str | None = field(default=None, repr=False)
    database_url: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    # Old snapshots of an extension directory kept for readers still mid-request.
    keep_snapshots: int = 3
    # How long a SHA256SUMS signature stays valid ("never" turns expiry off), how often
    # manifests are re-signed, and how long each key-rotation phase lasts (keys.py).
    signature_lifetime: str = "7d"
    resign_interval: str = "1d"
    key_overlap: str = "7d"
    # The OpenPGP signing key; replicas share one file (docs/registry.md). None: DATA/keys.
    signing_key: Path | None = None
    # Object storage (registry/storage/s3.py): with a bucket set, images and the public
    # tree live in S3 instead of DATA/store and DATA/public.
    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    # Else boto3's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials).
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    # Staged rollouts (docs/rollouts.md): how often each worker writes the host sightings
    # it buffered (seconds; 0: at once), and how often rollout schedules, canary gates and
    # auto-pause windows are checked. fleet_queue: sightings each worker holds between
    # two writes; beyond that they are dropped and counted (a poll never waits).
    fleet_flush: int = 5
    fleet_queue: int = 100_000
    rollout_tick: int = 60
    # Host reports (POST /api/v1/extensions/NAME/reports) each worker accepts per client
    # address and minute; hosts report once per update run, every few hours.
    report_rate: int = 120
    # PEM certificates whose signatures make a verity DDI acceptable (registry/trust/verity.py);
    # empty: DDIs are refused.
    verity_certs: tuple[Path, ...] = ()
    # Certificates retired by a rotation (docs/verity.md): neither served nor trusted; an
    # upload signed by one is refused with a line saying so.
    verity_retired_certs: tuple[Path, ...] = ()

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        return max(1, len(os.sched_getaffinity(0)))

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_bucket)

    @property
    def s3_key_prefix(self) -> str:
        """The key prefix with exactly one trailing slash, or "" (the bucket's root)."""
        prefix = self.s3_prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    # Client limits (registry/http/guard.py, docs/registry.md "Limits"): the request line and
    # headers must arrive within header_timeout seconds and max_header_bytes; each worker
    # keeps at most max_connections (0: what its file-descriptor limit allows, at most
    # 1024, see connection_cap); kept-alive connections close after keepalive_timeout
    # idle seconds or max_keepalive_requests requests. A request body must keep up with
    # min_rate bytes/s after stall_timeout seconds of grace and be complete within
    # upload_timeout; after the answer, the rest of it is read for at most linger_timeout;
    # a client that does not take its response at min_rate (after stall_timeout) is cut.
    header_timeout: int = 10
    max_header_bytes: int = 64 << 10
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: a
    # comma-separated list of addresses or networks. Empty (the default): nobody's, so the
    # client address in the audit trail and the access log is always the TCP peer. uvicorn
    # alone would trust 127.0.0.1, letting any local client forge it (issue 19, finding 7).
    forwarded_allow_ips: str = ""
    max_connections: int = 0
    keepalive_timeout: int = 5
    max_keepalive_requests: int = 1000
    # An hour: 4 GiB (max_upload_bytes) at 1.2 MB/s, a 300 MiB image at 85 KB/s.
    upload_timeout: int = 3600
    # 1 KiB/s is far below any real link; a client trickling one byte every 3 s (issue
    # 19) is cut after stall_timeout.
    min_rate: int = 1024
    stall_timeout: int = 10
    # nginx's lingering_time: enough for a client to finish sending what it had in flight.
    linger_timeout: int = 30

    @property
    def connection_cap(self) -> int:
        if self.max_connections:
            return self.max_connections
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # A connection holds two descriptors while it sends an image (its socket and the
        # file), a full listen backlog arrives before anything can be closed, and the rest
        # is the database, logs and the key. Out of descriptors, libuv accepts and closes
        # new connections at once: honest clients would get resets (issue 19).
        return max(8, min(1024, (soft - LISTEN_BACKLOG - 32) // 2))

    @property
    def public_dir(self) -> Path:
        return self.data_dir / "public"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def key_path(self) -> Path:
        return self.signing_key or self.data_dir / "keys" / "signing.pgp"

    @property
    def signing_policy(self) -> SigningPolicy:
        lifetime = (
            None
            if self.signature_lifetime.strip().lower() in NEVER
            else parse_duration(self.signature_lifetime, what="signature_lifetime")
        )
        interval = parse_duration(self.resign_interval, what="resign_interval")
        if lifetime is not None and interval * 2 > lifetime:
            raise SysextError(
                f"resign_interval {self.resign_interval} is more than half of"
                f" signature_lifetime {self.signature_lifetime}",
                "re-sign well before signatures expire, e.g. lifetime 7d, interval 1d",
            )
        return SigningPolicy(lifetime, interval)

    @property
    def key_overlap_duration(self) -> dt.timedelta:
        return parse_duration(self.key_overlap, what="key_overlap")

    @property
    def served_url_path(self) -> Path:
        """The base URL the last start wrote into transfer files (`sysext registry check`
        compares against it when not given one)."""
        return self.data_dir / "served-base-url"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / ".lock"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def base_url(self) -> str:
        """Base URL written into transfer files and shown in the catalogue."""
        if self.public_url:
            return self.public_url.rstrip("/")
        if self.uses_s3 and self.s3_endpoint:
            # Hosts read the bucket itself (path-style URL) unless told otherwise.
            return f"{self.s3_endpoint.rstrip('/')}/{self.s3_bucket}/{self.s3_key_prefix}".rstrip(
                "/"
            )
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


# setting name → environment variable
ENV_NAMES = {
    "data_dir": "SYSEXT_DATA",
    "host": "SYSEXT_HOST",
    "port": "SYSEXT_PORT",
    "workers": "SYSEXT_WORKERS",
    "public_url": "SYSEXT_PUBLIC_URL",
    "admin_token": "SYSEXT_ADMIN_TOKEN",
    "database_url": "SYSEXT_DATABASE_URL",
    "max_upload_bytes": "SYSEXT_MAX_UPLOAD_BYTES",
    "channels": "SYSEXT_CHANNELS",
    "keep_snapshots": "SYSEXT_KEEP_SNAPSHOTS",
    "signature_lifetime": "SYSEXT_SIGNATURE_LIFETIME",
    "resign_interval": "SYSEXT_RESIGN_INTERVAL",
    "key_overlap": "SYSEXT_KEY_OVERLAP",
    "signing_key": "SYSEXT_SIGNING_KEY",
    "s3_endpoint": "SYSEXT_S3_ENDPOINT",
    "s3_bucket": "SYSEXT_S3_BUCKET",
    "s3_prefix": "SYSEXT_S3_PREFIX",
    "s3_region": "SYSEXT_S3_REGION",
    "s3_access_key_id": "SYSEXT_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "SYSEXT_S3_SECRET_ACCESS_KEY",
    "header_timeout": "SYSEXT_HEADER_TIMEOUT",
    "max_header_bytes": "SYSEXT_MAX_HEADER_BYTES",
    "max_connections": "SYSEXT_MAX_CONNECTIONS",
    "keepalive_timeout": "SYSEXT_KEEPALIVE_TIMEOUT",
    "max_keepalive_requests": "SYSEXT_MAX_KEEPALIVE_REQUESTS",
    "upload_timeout": "SYSEXT_UPLOAD_TIMEOUT",
    "min_rate": "SYSEXT_MIN_RATE",
    "stall_timeout": "SYSEXT_STALL_TIMEOUT",
    "linger_timeout": "SYSEXT_LINGER_TIMEOUT",
    "forwarded_allow_ips": "SYSEXT_FORWARDED_ALLOW_IPS",
    "fleet_flush": "SYSEXT_FLEET_FLUSH",
    "fleet_queue": "SYSEXT_FLEET_QUEUE",
    "rollout_tick": "SYSEXT_ROLLOUT_TICK",
    "report_rate": "SYSEXT_REPORT_RATE",
    "verity_certs": "SYSEXT_VERITY_CERTS",
    "verity_retired_certs": "SYSEXT_VERITY_RETIRED_CERTS",
}
NEVER = ("never", "off", "0", "none")
_INTEGERS = frozenset(
    {
        "port", "workers", "max_upload_bytes", "keep_snapshots", "header_timeout",
        "max_header_bytes", "max_connections", "keepalive_timeout", "max_keepalive_requests",
        "upload_timeout", "min_rate", "stall_timeout", "linger_timeout",
        "fleet_flush", "fleet_queue", "rollout_tick", "report_rate",
    }
)  # fmt: skip
_ZERO_OK = frozenset({"port", "max_connections", "fleet_flush"})


def _coerce(name: str, value: Any, source: str) -> Any:
    try:
        if name in _INTEGERS:
            number = int(value)
            if number < (0 if name in _ZERO_OK else 1):
                raise ValueError
            return number
        if name in ("data_dir", "signing_key"):
            return Path(value)
        if name in ("verity_certs", "verity_retired_certs"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(Path(str(p).strip()) for p in items if str(p).strip())
        if name in ("signature_lifetime", "resign_interval", "key_overlap"):
            text = str(value)
            if not (name == "signature_lifetime" and text.strip().lower() in NEVER):
                parse_duration(text, what=name)
            return text
        if name == "forwarded_allow_ips":
            return _proxy_list(value)
        if name == "channels":
            items = value.split(",") if isinstance(value, str) else list(value)
            channels = tuple(str(c).strip() for c in items if str(c).strip())
            if DEFAULT_CHANNEL not in channels:
                channels = (DEFAULT_CHANNEL, *channels)
            for channel in channels:
                if not channel.isascii() or not channel.replace("-", "").isalnum():
                    raise ValueError
            return channels
        return str(value) if value is not None else None
    except (TypeError, ValueError):
        raise SysextError(
            f"{source}: invalid value {value!r} for {name}",
            "ports and sizes are positive integers; channels are a comma-separated list "
            "of names made of letters, digits and '-'",
        ) from None


def _proxy_list(value: Any) -> str:
    """Validate a list of proxy addresses/networks; normalized to "a,b" ("" for none)."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise SysextError(
                f"forwarded_allow_ips: {item!r} is not an IP address or network",
                "name the reverse proxies, e.g. 127.0.0.1 or 10.0.0.0/8 ('*' is not "
                "accepted: every client could then forge its address)",
            ) from None
    return ",".join(out)


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Settings from (lowest to highest priority) defaults, config file, env, `overrides`.

    The config file is `--config`/`SYSEXT_REGISTRY_CONFIG`, else `DATA/registry.toml` if present;
    its keys are the field names of `Settings` (`public_url = "https://…"`).
    """
    env = os.environ if env is None else env
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    from_env = {
        name: _coerce(name, env[var], var)
        for name, var in ENV_NAMES.items()
        if env.get(var) not in (None, "")
    }
    data_dir = Path(overrides.get("data_dir") or from_env.get("data_dir") or DEFAULT_DATA_DIR)
    config_path = config_file or (
        Path(env["SYSEXT_REGISTRY_CONFIG"]) if env.get("SYSEXT_REGISTRY_CONFIG") else None
    )
    if config_path is None and (data_dir / CONFIG_NAME).is_file():
        config_path = data_dir / CONFIG_NAME
    if config_path is not None:
        try:
            table = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SysextError(
                f"cannot read config file {config_path}: {exc}", "it must be TOML"
            ) from None
        for key, value in table.items():
            if key not in known:
                raise SysextError(
                    f"{config_path}: unknown setting {key!r}",
                    "known settings: " + ", ".join(sorted(known)),
                )
            values[key] = _coerce(key, value, str(config_path))
    values.update(from_env)
    values.update({k: _coerce(k, v, "option") for k, v in overrides.items()})
    return replace(Settings(), **values)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes `load_settings()` in a worker process yield `settings`."""
    out: dict[str, str] = {}
    for name, var in ENV_NAMES.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if name == "channels":
            value = ",".join(value)
        elif name in ("verity_certs", "verity_retired_certs"):
            if not value:
                continue
            value = ",".join(str(Path(p).resolve()) for p in value)
        elif name in ("data_dir", "signing_key"):
            value = str(Path(value).resolve())
        out[var] = str(value)
    return out
