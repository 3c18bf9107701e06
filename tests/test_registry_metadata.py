"""The registry stores what each image says about itself and serves it in the API (issue 9).

Each image's extension-release fields (among them the catalogue fields X_SYSEXT_DESCRIPTION,
_HOMEPAGE, _LICENSE, _UPSTREAM_VERSION, _REPLACES), the commands and the units it ships are
read from the image at upload and stored (migration 0004); images published before that
migration are read from the store when the registry starts on the old database.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select, text

from registry.db.models import MIGRATIONS_DIR, Image, make_engine
from registry.service.core import RegistryService
from registry.settings import Settings
from registry.storage.blobs import blob_path
from sysext.image.read import read_image
from sysext.image.summary import summarize
from tests.catalogue_images import make_image
from tests.registry_server import RegistryServer, running_registry

FIELDS = {
    "X_SYSEXT_DESCRIPTION": "Daemonless container engine <b>with</b> pods",
    "X_SYSEXT_HOMEPAGE": "https://podman.io/",
    "X_SYSEXT_LICENSE": "Apache-2.0",
    "X_SYSEXT_UPSTREAM_VERSION": "v5.3.1",
    "X_SYSEXT_REPLACES": "podman-flatcar containers-flatcar",
}


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, registry_database: str
) -> Iterator[RegistryServer]:
    # Requesting `registry_database` (conftest.py) makes one server per database engine.
    with running_registry(tmp_path_factory.mktemp("registry") / "data") as server:
        yield server


def upload(reg: RegistryServer, image: Path, name: str, channel: str = "stable") -> None:
    response = requests.put(
        f"{reg.url}/api/v1/extensions/{name}/images/{image.name}",
        params={"channel": channel},
        data=image.read_bytes(),
        headers=reg.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text


def test_the_api_shows_release_fields_commands_and_units(
    registry: RegistryServer, tmp_path: Path
) -> None:
    image = make_image(
        tmp_path,
        "podmeta",
        "5.3.1",
        extra=FIELDS,
        units=["podman.socket", "podman.service"],
        commands=["podman", "podman-remote"],
    )
    upload(registry, image, "podmeta")
    detail = requests.get(f"{registry.url}/api/v1/extensions/podmeta", timeout=10).json()
    assert detail["description"] == FIELDS["X_SYSEXT_DESCRIPTION"]
    assert detail["homepage"] == "https://podman.io/"
    assert detail["license"] == "Apache-2.0"
    assert detail["upstream_version"] == "v5.3.1"
    assert detail["replaces"] == ["podman-flatcar", "containers-flatcar"]
    (info,) = detail["images"]
    assert info["binaries"] == ["podman", "podman-remote"]
    assert info["units"] == ["podman.service", "podman.socket"]
    assert info["release"]["SYSEXT_ID"] == "podmeta"
    assert info["release"]["SYSEXT_VERSION_ID"] == "5.3.1"
    assert info["release"]["X_SYSEXT_LICENSE"] == "Apache-2.0"
    # Units make pack set EXTENSION_RELOAD_MANAGER; the stored release is the image's own.
    assert info["release"] == dict(read_image(image).release_files["podmeta"])


def test_fields_are_optional_and_absent_means_unknown(
    registry: RegistryServer, tmp_path: Path
) -> None:
    upload(registry, make_image(tmp_path, "plainmeta", "1.0"), "plainmeta")
    detail = requests.get(f"{registry.url}/api/v1/extensions/plainmeta", timeout=10).json()
    assert detail["description"] is None and detail["license"] is None
    assert detail["replaces"] == []
    assert detail["images"][0]["units"] == []
    assert detail["images"][0]["binaries"] == ["plainmeta"]


def test_search_matches_descriptions_too(registry: RegistryServer, tmp_path: Path) -> None:
    image = make_image(
        tmp_path, "zz-searchable", "1.0", extra={"X_SYSEXT_DESCRIPTION": "A Mesh VPN daemon"}
    )
    upload(registry, image, "zz-searchable")
    for path in ("api/v1/search", "api/v1/extensions"):
        found = requests.get(f"{registry.url}/{path}", params={"q": "mesh vpn"}, timeout=10)
        assert [e["name"] for e in found.json()] == ["zz-searchable"]
        assert found.json()[0]["description"] == "A Mesh VPN daemon"


def _config(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: SQLite, or one on the session's throw-away PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'registry.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.create_database())


def _old_database(url: str, data: Path, images: list[Path]) -> None:
    """A registry database at revision 0002 holding `images` (stored, but not described)."""
    engine = make_engine(url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0002")
    assert "release" not in {c["name"] for c in inspect(engine).get_columns("images")}
    with engine.begin() as connection:
        for number, image in enumerate(images, start=1):
            name, version, arch = image.stem.split("-", 2)
            sha256 = _sha256(image)
            target = blob_path(data / "store", sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
            connection.execute(
                text(
                    "INSERT INTO images (id, name, version, arch, filename, sha256, size, "
                    "format, created_at, yanked) VALUES (:id, :name, :version, :arch, "
                    ":filename, :sha256, :size, 'squashfs', :created, false)"
                ),
                {
                    "id": number,
                    "name": name,
                    "version": version,
                    "arch": arch,
                    "filename": image.name,
                    "sha256": sha256,
                    "size": image.stat().st_size,
                    "created": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                },
            )
            connection.execute(
                text(
                    "INSERT INTO image_channels (image_id, channel, added_at) "
                    "VALUES (:id, 'stable', :created)"
                ),
                {"id": number, "created": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
            )
    engine.dispose()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migration_0004_fills_rows_from_the_stored_images(
    tmp_path: Path, database_url: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    described = make_image(tmp_path / "out", "olddesc", "2.0", extra=FIELDS, units=["a.service"])
    plain = make_image(tmp_path / "out", "oldplain", "1.0")
    _old_database(database_url, data, [described, plain])
    service = RegistryService(Settings(data_dir=data, database_url=database_url))
    service.prepare()
    with service.sessions() as session:
        rows = {i.name: i for i in session.scalars(select(Image))}
    assert rows["olddesc"].release == dict(read_image(described).release_files["olddesc"])
    assert rows["olddesc"].summary == summarize(read_image(described), "olddesc")
    assert rows["olddesc"].summary.description == FIELDS["X_SYSEXT_DESCRIPTION"]
    assert rows["olddesc"].units == ["a.service"]
    assert rows["oldplain"].binaries == ["oldplain"]
    assert rows["oldplain"].summary.description is None
    service.engine.dispose()


def test_an_unreadable_stored_image_leaves_its_row_unknown(
    tmp_path: Path, database_url: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    image = make_image(tmp_path / "out", "oldbroken", "1.0")
    _old_database(database_url, data, [image])
    blob = blob_path(data / "store", _sha256(image))
    blob.write_bytes(b"not an image any more")
    service = RegistryService(Settings(data_dir=data, database_url=database_url))
    service.prepare()
    with service.sessions() as session:
        (row,) = session.scalars(select(Image))
    assert row.release is None and row.binaries is None and row.units is None
    assert row.summary.description is None
    service.engine.dispose()
