"""The shipped nginx server block (registry/http/nginx/sysext-registry.conf), adapted.

Tests and bench/serve.py run nginx with exactly the documented block, only with `listen`,
`root` and the upstream replaced, wrapped in a minimal standalone main config.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx" / "sysext-registry.conf"
REPLICAS_TEMPLATE = Path(__file__).resolve().parent / "nginx" / "sysext-replicas.conf"


def server_block(public_dir: Path, listen: str, upstream: str, fleet_mirror: bool = True) -> str:
    """The block with its listen address, `root` and the app's address (`upstream`, an
    http://HOST:PORT URL) replaced. `fleet_mirror=False` drops the `mirror` lines, as a
    static-only server would: bench/rollout.py measures what the fleet copies cost."""
    text = TEMPLATE.read_text()
    address = upstream.split("://", 1)[-1].rstrip("/")
    replacements = {
        "listen 80;": f"listen {listen};",
        "root /srv/sysext-data/public;": f"root {public_dir.resolve()};",
        "    server 127.0.0.1:8080;\n": f"    server {address};\n",
    }
    if not fleet_mirror:
        replacements[MIRROR] = ""
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"{TEMPLATE.name} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


MIRROR = "        mirror /_sysext_fleet;\n"


def replicas_block(listen: str, replicas: list[str], bucket_url: str) -> str:
    """The replicas block with its listen address, upstream servers (HOST:PORT) and the
    bucket's path-style URL replaced."""
    text = REPLICAS_TEMPLATE.read_text()
    default_upstream = (
        "    server 127.0.0.1:8081 max_fails=1 fail_timeout=5s;\n"
        "    server 127.0.0.1:8082 max_fails=1 fail_timeout=5s;\n"
    )
    endpoint, _, path = bucket_url.split("://", 1)[1].partition("/")
    replacements = {
        "listen 80;": f"listen {listen};",
        default_upstream: "".join(
            f"    server {r} max_fails=1 fail_timeout=5s;\n" for r in replicas
        ),
        "    server 127.0.0.1:7480;\n": f"    server {endpoint};\n",
        "http://sysext_bucket/sysext/": f"http://sysext_bucket/{path.strip('/')}/",
        "proxy_set_header Host 127.0.0.1:7480;": f"proxy_set_header Host {endpoint};",
    }
    for old, new in replacements.items():
        if old not in text:
            raise ValueError(f"{REPLICAS_TEMPLATE.name} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


def standalone_config(prefix: Path, server: str, workers: int = 1) -> str:
    """A main nginx.conf running in the foreground with everything under `prefix`."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return f"""
# root only: the test data lives in 0700 temp directories
user root;
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{server}
}}
"""
