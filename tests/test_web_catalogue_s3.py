"""The catalogue and the provisioning API when the public tree lives in an S3 bucket.

With object storage (registry/storage/s3.py) the registry keeps no local public tree: the
configs on the extension page and from /api/v1/extensions/NAME/butane|ignition|commands are
resolved through the storage (provision_routes.StorageCatalog), so they name the bucket's
files and hashes. Uses the session's real Ceph radosgw and PostgreSQL (conftest.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import requests

from tests.catalogue_images import make_image
from tests.ceph_rgw import CephRgw
from tests.pg_cluster import PostgresCluster
from tests.registry_server import RegistryServer, free_port
from tests.test_registry_scale import bucket_env
from tests.test_web_catalogue import snippet


def test_configs_come_from_the_bucket(
    tmp_path: Path, pg_cluster: PostgresCluster, ceph_rgw: CephRgw
) -> None:
    env = bucket_env(tmp_path, pg_cluster, ceph_rgw, "sysext-web")
    server = RegistryServer(data=tmp_path / "data", port=free_port(), env=env, args=("-w", "1"))
    server.start()
    try:
        image = make_image(tmp_path, "bucketed", "1.0", extra={"X_SYSEXT_LICENSE": "MIT"})
        response = requests.put(
            f"{server.url}/api/v1/extensions/bucketed/images/{image.name}",
            data=image.read_bytes(),
            headers=server.headers(),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        page = requests.get(f"{server.url}/catalog/bucketed", timeout=30)
        assert page.status_code == 200
        assert "Cannot generate" not in page.text
        butane = snippet(page.text, "butane")
        api = requests.get(f"{server.url}/api/v1/extensions/bucketed/butane", timeout=30)
        assert api.status_code == 200 and api.text == butane
        assert f"sha256-{hashlib.sha256(image.read_bytes()).hexdigest()}" in butane
        assert ">MIT<" in page.text
        commands = requests.get(f"{server.url}/api/v1/extensions/bucketed/commands", timeout=30)
        assert commands.status_code == 200 and commands.text == snippet(page.text, "shell")
    finally:
        server.stop()
