"""Registry commands: `serve`, `publish`, `yank`, `promote`, `token create|list|revoke`.

The server side lives in `registry/` and is imported only inside `serve`, so the rest of
the CLI (and the sysext library) never depends on it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from sysext.client.api import REGISTRY_ENV, TOKEN_ENV, RegistryClient
from sysext.core.errors import SysextError
from sysext.core.steps import byte_progress, console
from sysext.core.urls import DEFAULT_CHANNEL

if TYPE_CHECKING:
    from rich.progress import TaskID

T = TypeVar("T")

REGISTRY_OPTION = typer.Option(
    None, "--registry", "-r", help=f"Registry base URL (default: ${REGISTRY_ENV})."
)

token_app = typer.Typer(
    help=(
        "Manage scoped upload tokens (needs the server's admin token in $SYSEXT_TOKEN).\n\n"
        "Example: SYSEXT_TOKEN=$ADMIN sysext token create --scope podman --scope 'k*' "
        "--registry http://127.0.0.1:8080"
    ),
    no_args_is_help=True,
)


registry_app = typer.Typer(
    help=(
        "Check or repair a registry's data directory (run on the server).\n\n"
        "Example: sysext registry check --data /srv/sysext"
    ),
    no_args_is_help=True,
)
DATA_OPTION = typer.Option(
    None, "--data", "-d", help="Data directory (default ./sysext-data, or $SYSEXT_DATA)."
)
CONFIG_OPTION = typer.Option(
    None, "--config", help="TOML settings file (default DATA/registry.toml if present)."
)


def _offline_service(data: Path | None, config: Path | None) -> Any:
    from registry.db.models import migrate
    from registry.service.core import RegistryService
    from registry.settings import load_settings

    settings = load_settings({"data_dir": data}, config_file=config)
    if settings.public_url is None and settings.served_url_path.is_file():
        # The transfer files must keep naming the URL the server uses, not a default.
        served = settings.served_url_path.read_text().strip()
        settings = load_settings({"data_dir": data, "public_url": served}, config_file=config)
    if settings.database_url is None and not (settings.data_dir / "registry.db").is_file():
        raise SysextError(
            f"{settings.data_dir}: no registry database (registry.db) here",
            "pass --data DIR naming the directory `sysext serve --data` uses",
        )
    service = RegistryService(settings)
    # The server's writer lock (PostgreSQL: the advisory lock of everything), so that
    # replicas starting meanwhile do not migrate at the same time.
    with service.writing(None) as session:
        migrate(session.connection(), service._stored_summary)
        session.commit()
    return service


def _storage_errors(action: Callable[[], T]) -> T:
    """Run `action`; an object store that fails (registry/storage/s3.py) is one line."""
    from registry.errors import RegistryError

    try:
        return action()
    except RegistryError as exc:
        raise SysextError(
            exc.detail, "check SYSEXT_S3_ENDPOINT, the bucket and the credentials"
        ) from None


@registry_app.command("check")
def registry_check(data: Path = DATA_OPTION, config: Path = CONFIG_OPTION) -> None:
    """Explain where the public tree and the database disagree (exit 1 if they do).

    Reports rows that can never be served (e.g. a file name over 255 bytes, a missing
    stored file), directories that differ from the database, published directories the
    database does not know, and rows today's upload rules would refuse. Changes nothing.

    A registry on PostgreSQL and S3 is checked with the replicas' settings (SYSEXT_DATABASE_URL,
    SYSEXT_S3_*, SYSEXT_SIGNING_KEY): stored images, listings and signatures in the bucket.

    Example: sysext registry check --data /srv/sysext
    """
    from registry.service.repair import check

    service = _offline_service(data, config)
    problems = _storage_errors(lambda: check(service))
    for problem in problems:
        print(problem.line())
    if problems:
        console.print(f"{len(problems)} problem(s); `sysext registry repair` fixes them")
        raise typer.Exit(1)
    print("consistent: the public tree serves exactly what the database holds")


@registry_app.command("repair")
def registry_repair(data: Path = DATA_OPTION, config: Path = CONFIG_OPTION) -> None:
    """Make the public tree serve the database again (no SQL needed).

    Deletes rows that can never be served (no manifest ever listed them), rebuilds every
    extension directory from the database and unpublishes directories it does not know.
    Safe while `sysext serve` runs (it takes the writer lock).

    Example: sysext registry repair --data /srv/sysext
    """
    from registry.service.repair import repair

    service = _offline_service(data, config)
    actions = _storage_errors(lambda: repair(service))
    for action in actions:
        print(action)
    if any(a.startswith("NOT FIXED") for a in actions):
        raise typer.Exit(1)
    print("consistent" if actions else "nothing to repair: already consistent")


def serve(
    data: Path = typer.Option(
        None, "--data", "-d", help="Data directory (default ./sysext-data, or $SYSEXT_DATA)."
    ),
    host: str = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", "-p", help="Port (default 8080)."),
    workers: int = typer.Option(
        None,
        "--workers",
        "-w",
        help="Worker processes (default: one per CPU this process may use).",
    ),
    public_url: str = typer.Option(
        None,
        "--public-url",
        help="Base URL hosts use (written into NAME.conf); default http://HOST:PORT.",
    ),
    max_upload: int = typer.Option(
        None, "--max-upload", help="Largest accepted image in bytes (default 4 GiB)."
    ),
    config: Path = typer.Option(
        None, "--config", help="TOML settings file (default DATA/registry.toml if present)."
    ),
    header_timeout: int = typer.Option(
        None, "--header-timeout", help="Seconds a client has to send its request headers (10)."
    ),
    max_connections: int = typer.Option(
        None,
        "--max-connections",
        help="Connections per worker; beyond it the oldest idle one is closed (default: "
        "what the file-descriptor limit allows, at most 1024).",
    ),
    upload_timeout: int = typer.Option(
        None, "--upload-timeout", help="Seconds a request body may take in all (3600)."
    ),
    min_rate: int = typer.Option(
        None,
        "--min-rate",
        help="Bytes/s a client must send its body and take its response at, after the "
        "stall timeout (1024).",
    ),
    stall_timeout: int = typer.Option(
        None,
        "--stall-timeout",
        help="Seconds of grace before --min-rate applies to a body or a response (10).",
    ),
    forwarded_allow_ips: str = typer.Option(
        None,
        "--forwarded-allow-ips",
        help="Reverse proxies (comma-separated addresses or networks) whose "
        "X-Forwarded-For is believed; default none: the client address is the TCP peer.",
    ),
    verity_cert: list[Path] = typer.Option(
        [],
        "--verity-cert",
        help="PEM certificate whose signatures make a verity DDI acceptable (repeatable; "
        "two during a rotation); served at /verity.crt. Default: $SYSEXT_VERITY_CERTS; "
        "without any, DDI uploads are refused.",
    ),
    verity_retired_cert: list[Path] = typer.Option(
        [],
        "--verity-retired-cert",
        help="PEM certificate a rotation retired (repeatable): not served, and uploads "
        "signed by it are refused saying so. Default: $SYSEXT_VERITY_RETIRED_CERTS.",
    ),
) -> None:
    """Run the registry: signed extensions in systemd-sysupdate's layout, and an API.

    Zero configuration: SQLite metadata, files and a signing key (created on first
    start) under --data. Settings come from flags, then SYSEXT_* environment variables
    (SYSEXT_DATA, SYSEXT_PUBLIC_URL, SYSEXT_ADMIN_TOKEN, SYSEXT_MAX_UPLOAD_BYTES,
    SYSEXT_CHANNELS…), then the config file. Set SYSEXT_ADMIN_TOKEN to allow uploads.
    Client limits (header deadline and size, body and send deadlines and minimum rate,
    connection cap, keep-alive) have safe defaults for facing clients directly
    (docs/registry.md, "Limits").

    Scaling out (docs/registry.md): SYSEXT_DATABASE_URL=postgresql+psycopg://… for metadata
    shared by replicas, SYSEXT_S3_ENDPOINT + SYSEXT_S3_BUCKET [+ SYSEXT_S3_PREFIX] to keep
    images and the public tree in an S3 bucket hosts read directly, SYSEXT_SIGNING_KEY for
    the key file every replica shares.

    Example: SYSEXT_ADMIN_TOKEN=secret sysext serve -d /srv/sysext --public-url https://ext.example.com
    """
    import uvicorn
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from registry.service.core import RegistryService
    from registry.settings import LISTEN_BACKLOG, load_settings, settings_env

    settings = load_settings(
        {
            "data_dir": data,
            "host": host,
            "port": port,
            "workers": workers,
            "public_url": public_url,
            "max_upload_bytes": max_upload,
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "upload_timeout": upload_timeout,
            "min_rate": min_rate,
            "stall_timeout": stall_timeout,
            "forwarded_allow_ips": forwarded_allow_ips,
            "verity_certs": verity_cert or None,
            "verity_retired_certs": verity_retired_cert or None,
        },
        config_file=config,
    )
    _check_listen_address(settings.host, settings.port)
    from registry.trust.verity import check_rotation

    # Before anything is created (the signing key, the tree): a wrong rotation step stops
    # the start with one line, not half-way.
    current, retired = check_rotation(settings.verity_certs, settings.verity_retired_certs)
    try:
        service = RegistryService(settings)
        fingerprint, created = service.prepare()
    except OSError as exc:
        raise SysextError(
            f"cannot use data directory {settings.data_dir}: {exc.strerror or exc}",
            "pass --data DIR (or SYSEXT_DATA) naming a writable directory",
        ) from None
    except OperationalError as exc:
        shown = make_url(settings.db_url).render_as_string(hide_password=True)
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise SysextError(
            f"cannot use database {shown}: {reason}",
            "check SYSEXT_DATABASE_URL (postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB) "
            "and that the server is up",
        ) from None
    for problem in service.broken:
        console.print(f"[red]broken extension, not updated:[/red] {problem.line()}", soft_wrap=True)
    console.print(
        f"signing key {fingerprint} ({'created' if created else 'existing'}, "
        f"{settings.key_path}); hosts install {settings.base_url}/keyring.gpg"
    )
    if current or retired:
        from sysext.trust.x509 import fingerprint as cert_fingerprint

        trusted = ", ".join(cert_fingerprint(c)[:16] for c in current)
        console.print(f"verity DDIs signed by {trusted} accepted; certificates at /verity.crt")
        if retired:
            gone = ", ".join(cert_fingerprint(c)[:16] for c in retired)
            console.print(f"verity certificates retired (uploads signed by them refused): {gone}")
    if not settings.admin_token:
        console.print("[yellow]note:[/yellow] SYSEXT_ADMIN_TOKEN is not set: nobody can upload")
    tree = (
        f"bucket {settings.s3_bucket} at {settings.s3_endpoint}"
        if settings.uses_s3
        else str(settings.public_dir)
    )
    console.print(
        f"serving {tree} on http://{settings.host}:{settings.port} "
        f"({settings.worker_count} worker{'s' if settings.worker_count > 1 else ''})"
    )
    # Workers are separate processes: they read the very same settings from the environment.
    os.environ.update(settings_env(settings))
    uvicorn.run(
        "registry.http.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.worker_count,
        access_log=False,  # our middleware logs one structured line per request
        log_level="warning",
        timeout_graceful_shutdown=5,
        # Client limits (registry/http/guard.py): header deadline and size, connection cap,
        # keep-alive; the protocol class is uvicorn's httptools one with those added.
        http="registry.http.guard:GuardedHttpToolsProtocol",
        timeout_keep_alive=settings.keepalive_timeout,
        backlog=LISTEN_BACKLOG,
        # Always explicit: uvicorn's default trusts X-Forwarded-For from 127.0.0.1, so any
        # local client (or a proxy passing the header through) could name any address.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def _check_listen_address(host: str, port: int) -> None:
    """Fail before touching the data directory when HOST:PORT cannot be listened on.

    uvicorn reports a busy port only after our start-up lines, as its own log line with
    exit status 3; checking first gives the one-line error and hint every command promises.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SysextError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "pass --host with an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # The same option uvicorn sets, so a port in TIME_WAIT is not reported as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise SysextError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                "another process may be using the port: pass --port N (or SYSEXT_PORT)",
            ) from None


def _extension_name(image: Path) -> str:
    from sysext.image.read import read_image

    contents = read_image(image)
    names = sorted(contents.release_files)
    if len(names) != 1:
        raise SysextError(
            f"{image}: {len(names)} extension-release files inside, exactly one is needed",
            "build images with `sysext pack` or `sysext build`",
        )
    if not image.name.startswith(names[0] + "-") or not image.name.endswith(".raw"):
        raise SysextError(
            f"{image.name}: not named {names[0]}-VERSION-ARCH.raw after its "
            f"extension-release.{names[0]}",
            "hosts match images by name; keep the file name `sysext build` produced",
        )
    return names[0]


def publish(
    images: list[Path] = typer.Argument(
        None, help="Image files NAME-VERSION-ARCH.raw.", show_default=False
    ),
    all_in: Path | None = typer.Option(
        None,
        "--all",
        metavar="DIR",
        help="Publish every image listed in DIR/SHA256SUMS that the registry does not have.",
    ),
    registry: str = REGISTRY_OPTION,
    channel: str = typer.Option(DEFAULT_CHANNEL, "--channel", "-c", help="Channel to publish in."),
) -> None:
    """Upload images to a registry and publish them in a channel (signed SHA256SUMS).

    The token comes from $SYSEXT_TOKEN. Uploading the same bytes again is harmless;
    the same file name with other bytes is refused (versions are immutable).

    With --all DIR, the registry is asked which images it has: only the missing ones are
    uploaded, the rest reported as already published; safe to re-run after a failure.

    Example: SYSEXT_TOKEN=… sysext publish out/podman-4.9.4-x86-64.raw -r https://ext.example.com

    Example: SYSEXT_TOKEN=… sysext publish --all out/ -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry)
    if all_in is not None:
        if images:
            raise SysextError("pass image files or --all DIR, not both", "drop one of them")
        _publish_directory(client, all_in, channel)
        return
    if not images:
        raise SysextError("no image given", "pass image files, or --all DIR")
    for image in images:
        if not image.is_file():
            raise SysextError(f"{image}: no such file", "pass the image files `sysext build` wrote")
    # Checked up front: a server refusing a huge body mid-stream looks like a broken
    # connection to the client, not like a clear 413.
    limit = int(client.request("GET", "status")["max_upload_bytes"])
    for image in images:
        if image.stat().st_size > limit:
            raise SysextError(
                f"{image.name}: {image.stat().st_size} bytes is more than the registry accepts "
                f"({limit} bytes)",
                "ask the registry operator to raise SYSEXT_MAX_UPLOAD_BYTES (--max-upload)",
            )
    for image in images:
        name = _extension_name(image)
        with byte_progress() as progress:
            task = progress.add_task(f"uploading {image.name}", total=image.stat().st_size)

            def advance(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            result = client.upload(image, name, channel, advance)
        info = result["image"]
        state = "published" if result["created"] else "already published (identical)"
        print(
            f"{state}: {info['filename']} sha256 {info['sha256']} in {', '.join(info['channels'])}"
        )


def _publish_directory(client: RegistryClient, directory: Path, channel: str) -> None:
    from sysext.client.publishing import Publisher
    from sysext.systemd.manifest import MANIFEST_NAME, read_manifest_file

    if not (directory / MANIFEST_NAME).is_file():
        raise SysextError(
            f"{directory}: no {MANIFEST_NAME}", "pass the --output directory of `sysext build`"
        )
    entries = read_manifest_file(directory / MANIFEST_NAME)
    publisher = Publisher(client, channel)
    publisher.check()
    failed = 0
    for entry in entries:
        image = directory / entry.filename
        try:
            if not image.is_file():
                raise SysextError(f"{image}: listed in {MANIFEST_NAME} but missing")
            outcome = publisher.publish(image, _extension_name(image), entry.sha256)
        except SysextError as exc:
            failed += 1
            print(f"failed: {entry.filename}: {exc.message}")
            continue
        print(f"{outcome.state.value}: {entry.filename} ({outcome.detail})")
    if failed:
        console.print(f"{failed} of {len(entries)} image(s) failed", markup=False)
        raise typer.Exit(1)


def _print_images(action: str, images: list[dict[str, Any]]) -> None:
    for info in images:
        print(f"{action}: {info['filename']} (channels: {', '.join(info['channels'])})")


def yank(
    name: str = typer.Argument(..., help="Extension name."),
    version: str = typer.Argument(..., help="Version to yank."),
    arch: str = typer.Option(None, "--arch", "-a", help="Only this architecture."),
    undo: bool = typer.Option(False, "--undo", help="List the version again."),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Drop a version from every channel's SHA256SUMS (files stay for direct links).

    Example: sysext yank podman 4.9.4 -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry)
    action = "unyank" if undo else "yank"
    images = client.request(
        "POST", f"extensions/{name}/versions/{version}/{action}", params={"arch": arch}
    )
    _print_images("unyanked" if undo else "yanked", images)


def promote(
    name: str = typer.Argument(..., help="Extension name."),
    version: str = typer.Argument(..., help="Version to promote."),
    to: str = typer.Option(..., "--to", help="Channel to add the version to, e.g. stable."),
    arch: str = typer.Option(None, "--arch", "-a", help="Only this architecture."),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Add a published version to another channel (e.g. beta → stable).

    Example: sysext promote podman 4.9.4 --to stable -r https://ext.example.com
    """
    client = RegistryClient.from_env(registry)
    images = client.request(
        "POST",
        f"extensions/{name}/versions/{version}/promote",
        params={"channel": to, "arch": arch},
    )
    _print_images(f"promoted to {to}", images)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`30d`, `12h`, `2w`, `90m`, `45s`, or an ISO date/time (UTC unless it says otherwise)."""
    now = now or dt.datetime.now(dt.UTC)
    text = text.strip()
    if len(text) > 1 and text[-1] in _UNITS and text[:-1].isascii() and text[:-1].isdigit():
        return now + dt.timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SysextError(
            f"--expires {text!r} is neither a duration nor a date",
            "use e.g. 30d, 12h, 2w, or 2026-12-31 / 2026-12-31T18:00:00+01:00",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@token_app.command("create")
def token_create(
    scope: list[str] = typer.Option(
        ..., "--scope", "-s", help="Extension names (globs) the token may write; repeatable."
    ),
    channel: list[str] = typer.Option(
        [],
        "--channel",
        "-c",
        help="Channel it may publish, yank and promote in; repeatable (default: all).",
    ),
    expires: str = typer.Option(
        None, "--expires", help="Lifetime (30d, 12h, 2w) or an ISO date; default: never."
    ),
    description: str = typer.Option("", "--description", help="Who or what uses it."),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Create a token; prints it once on stdout (the server keeps only its hash).

    A CI token that may publish to beta only, for 30 days (promotion to stable then needs
    a token allowed in stable):

    Example: SYSEXT_TOKEN=$ADMIN sysext token create --scope podman --channel beta --expires 30d -r http://127.0.0.1:8080
    """
    body: dict[str, Any] = {"scopes": scope, "description": description}
    if channel:
        body["channels"] = channel
    if expires:
        body["expires_at"] = parse_expiry(expires).isoformat()
    client = RegistryClient.from_env(registry)
    created = client.request("POST", "tokens", json=body)
    limits = f" in {', '.join(created['channels'])}" if created.get("channels") else ""
    until = f", expires {created['expires']}" if created.get("expires") else ""
    console.print(f"token {created['id']} for {', '.join(created['scopes'])}{limits}{until}:")
    print(created["token"])


@token_app.command("list")
def token_list(registry: str = REGISTRY_OPTION) -> None:
    """List tokens: id, scopes, channels, expiry, description, created, revoked.

    Example: SYSEXT_TOKEN=$ADMIN sysext token list -r http://127.0.0.1:8080
    """
    from rich.table import Table

    client = RegistryClient.from_env(registry)
    table = Table("id", "scopes", "channels", "expires", "description", "created", "revoked")
    for token in client.request("GET", "tokens"):
        table.add_row(
            str(token["id"]),
            " ".join(token["scopes"]),
            " ".join(token.get("channels") or ["all"]),
            token.get("expires") or "never",
            token["description"],
            token["created"],
            token["revoked"] or "",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="Token id (see `sysext token list`)."),
    registry: str = REGISTRY_OPTION,
) -> None:
    """Revoke a token: it stops working immediately.

    Example: SYSEXT_TOKEN=$ADMIN sysext token revoke 3 -r http://127.0.0.1:8080
    """
    client = RegistryClient.from_env(registry)
    try:
        client.request("DELETE", f"tokens/{token_id}")
    except SysextError as exc:
        # The client's generic 404 hint talks about extensions; here the id is what is wrong.
        if "answered 404" in exc.message:
            raise SysextError(exc.message, "see the ids with `sysext token list`") from None
        raise
    print(f"revoked token {token_id}")


def register(app: typer.Typer) -> None:
    """Add the registry commands to the main app."""
    app.command()(serve)
    app.command()(publish)
    app.command()(yank)
    app.command()(promote)
    app.add_typer(token_app, name="token")
    app.add_typer(registry_app, name="registry")


__all__ = ["TOKEN_ENV", "register"]
