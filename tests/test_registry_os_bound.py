"""The registry serves OS-bound extensions with an OS-bound transfer file (issue 4).

An image bound to one OS VERSION_ID is named NAME-VERSION-VERSIONID-ARCH.raw. The served
NAME.conf / NAME.transfer must then say `MatchPattern=NAME-@v-%w-%a.raw`: the plain
NAME-@v-%a.raw would read "1.0-3815.2.0" as a version and offer every host an image its
systemd-sysext refuses (spec §1.3 step 8). One extension therefore never mixes bound and
plain images. Existing databases gain the column through migration 0002 at start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from registry.db.models import MIGRATIONS_DIR, make_engine, migrate
from sysext.systemd.patterns import HostInfo, expand_specifiers, match_pattern
from sysext.systemd.transfer import parse_transfer
from tests.registry_server import RegistryServer, build_image, running_registry
from tests.test_os_bound import ARCH, OS_VERSIONS, pack


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, registry_database: str
) -> Iterator[RegistryServer]:
    # Requesting `registry_database` (conftest.py) makes one server per database engine.
    with running_registry(tmp_path_factory.mktemp("registry") / "data") as server:
        yield server


def upload(reg: RegistryServer, image: Path, name: str) -> requests.Response:
    return requests.put(
        f"{reg.url}/api/v1/extensions/{name}/images/{image.name}",
        data=image.read_bytes(),
        headers=reg.headers(),
        timeout=60,
    )


def state(reg: RegistryServer, name: str) -> dict[str, object]:
    """Everything an upload of `name` could leave behind."""
    data = reg.data
    public = data / "public" / "extensions" / name
    return {
        "store": sorted(p.name for p in (data / "store").rglob("*") if p.is_file()),
        "tmp": sorted(p.name for p in (data / "tmp").iterdir()),
        "public": sorted(
            (p.name, p.read_bytes() if not p.name.endswith(".raw") else b"")
            for p in public.iterdir()
        ),
        "api": requests.get(f"{reg.url}/api/v1/extensions/{name}", timeout=10).json(),
    }


def served_patterns(reg: RegistryServer, name: str, kind: str) -> list[str]:
    response = requests.get(f"{reg.url}/extensions/{name}/{name}.{kind}", timeout=10)
    assert response.status_code == 200, response.text
    config = parse_transfer(response.text)
    assert config.get("Source", "Path") == f"{reg.url}/extensions/{name}"
    assert config.get("Transfer", "Verify") == "yes"
    return config.match_patterns("Source")


def test_bound_images_get_a_bound_transfer_file(registry: RegistryServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    images = {v: pack(tmp_path, out, v, name="kbound") for v in OS_VERSIONS}
    for image in images.values():
        response = upload(registry, image, "kbound")
        assert response.status_code == 200, response.text
        assert response.json()["image"]["os_version_id"] == image.name.split("-")[2]
    for kind in ("conf", "transfer"):
        patterns = served_patterns(registry, "kbound", kind)
        assert patterns == ["kbound-@v-%w-%a.raw"]
        for host_version in OS_VERSIONS:
            host = HostInfo(arch=ARCH, os_release={"ID": "flatcar", "VERSION_ID": host_version})
            pattern = expand_specifiers(patterns[0], host)
            matched = {
                v: match_pattern(pattern, image.name, strict=True) for v, image in images.items()
            }
            assert [v for v, m in matched.items() if m is not None] == [host_version]
            found = matched[host_version]
            assert found is not None and found.version == "1.0"
    # The channel alias serves the same bound pattern.
    alias = requests.get(
        f"{registry.url}/channels/stable/extensions/kbound/kbound.conf", timeout=10
    )
    assert "MatchPattern=kbound-@v-%w-%a.raw" in alias.text


def test_plain_images_keep_the_plain_transfer_file(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = build_image(tmp_path, "kplain", "1.0")
    response = upload(registry, image, "kplain")
    assert response.status_code == 200, response.text
    assert response.json()["image"]["os_version_id"] is None
    assert served_patterns(registry, "kplain", "conf") == ["kplain-@v-%a.raw"]


@pytest.mark.parametrize("first", ["bound", "plain"])
def test_one_extension_never_mixes_bound_and_plain(
    registry: RegistryServer, tmp_path: Path, first: str
) -> None:
    name = f"kmix{first}"
    bound = pack(tmp_path, tmp_path / "out", OS_VERSIONS[0], name=name)
    plain = build_image(tmp_path, name, "2.0")
    accepted, refused = (bound, plain) if first == "bound" else (plain, bound)
    assert upload(registry, accepted, name).status_code == 200
    before = state(registry, name)
    response = upload(registry, refused, name)
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert "\n" not in detail
    if first == "bound":
        expected = (
            f"{refused.name} is for any OS version, but {name} already has images bound to "
            f"one VERSION_ID ({accepted.name}); one extension cannot mix both"
        )
    else:
        expected = (
            f"{refused.name} is bound to VERSION_ID={OS_VERSIONS[0]}, but {name} already has "
            f"images for any OS version ({accepted.name}); one extension cannot mix both"
        )
    assert detail.startswith(expected), detail
    assert state(registry, name) == before
    manifest = requests.get(f"{registry.url}/extensions/{name}/SHA256SUMS", timeout=10).text
    assert refused.name not in manifest and accepted.name in manifest


def _config(engine_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine_url)
    return config


def test_a_0001_database_upgrades_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        config = _config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    assert "os_version_id" not in {c["name"] for c in inspect(engine).get_columns("images")}
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO images (name, version, arch, filename, sha256, size, format, "
                "created_at, yanked) VALUES ('old', '1.0', 'x86-64', 'old-1.0-x86-64.raw', "
                ":sha, 4096, 'squashfs', :now, 0)"
            ),
            {"sha": "0" * 64, "now": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        )
    migrate(engine)
    assert "os_version_id" in {c["name"] for c in inspect(engine).get_columns("images")}
    with engine.connect() as connection:
        head = ScriptDirectory.from_config(_config(url)).get_current_head()
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
        rows = connection.execute(text("SELECT filename, os_version_id FROM images")).all()
    assert [tuple(r) for r in rows] == [("old-1.0-x86-64.raw", None)]
    engine.dispose()


def test_the_server_starts_on_a_0001_database_and_publishes_bound_images(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'registry.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        config = _config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    image = pack(tmp_path, tmp_path / "out", OS_VERSIONS[1], name="kold")
    with running_registry(data) as reg:
        response = upload(reg, image, "kold")
        assert response.status_code == 200, response.text
        assert served_patterns(reg, "kold", "conf") == ["kold-@v-%w-%a.raw"]
