"""S3 object storage (Ceph RGW, MinIO, AWS…): blobs and the public tree in one bucket.

Keys (under the optional SYSEXT_S3_PREFIX):

    store/sha256/ab/abcdef…                 validated uploads, content-addressed, private
    keyring.gpg, keyring.asc                public
    extensions/NAME/…, channels/C/extensions/NAME/…
                                            the public tree, in the very layout of DATA/public

The bucket policy lets anyone GET the public keys (never list, never the store), so hosts
read SHA256SUMS, its signature, the images and the transfer files straight from the object
store or a CDN in front of it, with no registry process in their path.

Consistency for readers while a publish is in flight. S3 makes each PUT of one object
atomic and (since 2020 on AWS, always on RGW) immediately visible, but offers nothing
across two objects. So the writes go in this order:

1. the image: copied server-side from its blob into every directory listing it, before
   any manifest names it, and never deleted afterwards (yanked images stay too), so every
   SHA256SUMS a reader may hold, old or new, only names images that download;
2. the transfer files;
3. the signature under each of its names (SHA256SUMS.gpg, SHA256SUMS.sha256.asc), then
   SHA256SUMS, back to back.

**No 403 on the verification path.** systemd-pull 258+ ask for SHA256SUMS.sha256.asc first
and try the next signature name only after a 404, but a bucket that lets anonymous readers
GET objects without listing the bucket answers 403 for a missing key, which ends the
update. So the signature is always there under that name too (one request per poll, on
every version), and the policy stays GET-only. Granting anonymous ListBucket would turn
the 403s into 404s, but on Ceph RGW (checked, as on AWS) a GET of a missing key is judged
without an `s3:prefix`, so only an unconditional grant does it, and that lets anyone list
the private store/ keys as well: not worth it when no host needs a 404.

What remains possible: a reader that fetches the two manifest objects on either side of
step 3 (or from a CDN that cached them at different moments) holds a new SHA256SUMS with the
old signature or the reverse. Verification then fails, sysupdate installs nothing in that
run and the next run succeeds; a wrong image is never accepted. A replica killed between
the two PUTs leaves exactly that pair behind, and the next start (or the next publish of
that extension) writes a matching pair again (`materialize` re-signs whenever the stored
pair does not verify).

Uploads are streamed to a local temporary file first (validation reads the squashfs/erofs
image at random offsets), then sent to the bucket as a multipart upload straight from that
file: no image is ever held in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from registry.errors import RegistryError
from registry.failpoints import failpoint
from registry.settings import Settings
from registry.storage.layout import cache_control, content_type
from registry.storage.materialize import (
    DIFFERS,
    NOT_PUBLISHED,
    PLACEHOLDER_NAME,
    DirectoryContent,
    marker_files,
    served_is_current,
    served_manifest,
    served_refused,
    split_served,
)
from registry.storage.rollout_tree import RolloutContent
from registry.trust.keys import Signer
from registry.trust.verity import VERITY_CERTS_NAME, bundle, load_trusted
from sysext.core.errors import SysextError
from sysext.core.logfmt import log_value
from sysext.core.urls import DEFAULT_CHANNEL, KEYRING_ARMORED, KEYRING_BINARY, extension_url_path
from sysext.systemd.manifest import BEST_BEFORE_PREFIX, MANIFEST_NAME, SIGNATURE_NAMES
from sysext.trust.signing import load_keyring

log = logging.getLogger("registry")

MIB = 1 << 20
PUBLIC_PATTERNS = (
    "extensions/*", "channels/*", "rollouts/*", KEYRING_BINARY, KEYRING_ARMORED,
    VERITY_CERTS_NAME,
)  # fmt: skip


def _md5(data: bytes) -> str:
    """The ETag S3 gives an object written by one PUT (not a security check)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class S3Storage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = str(settings.s3_bucket)
        self.prefix = settings.s3_key_prefix
        credentials: dict[str, Any] = {}
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            credentials = {
                "aws_access_key_id": settings.s3_access_key_id,
                "aws_secret_access_key": settings.s3_secret_access_key,
            }
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            config=Config(
                # Path-style (ENDPOINT/BUCKET/KEY) works with any endpoint and any DNS.
                s3={"addressing_style": "path"},
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
            **credentials,
        )
        # 8 MiB parts, four at a time: an image streams from its file in bounded memory.
        self.transfer = TransferConfig(
            multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4
        )

    # -- keys -----------------------------------------------------------------------

    def _key(self, relative: str) -> str:
        return self.prefix + relative

    def _blob_key(self, sha256: str) -> str:
        return self._key(f"store/sha256/{sha256[:2]}/{sha256}")

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """A storage failure in a request is a one-line 503; the client may retry."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            log.warning("event=s3-error what=%s error=%s", log_value(what), log_value(exc))
            raise RegistryError(
                503, f"object storage {self.settings.s3_endpoint} failed ({what}): {exc}"
            ) from None

    def _get(self, relative: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(relative))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def _put(self, relative: str, data: bytes) -> None:
        name = relative.rsplit("/", 1)[-1]
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(relative),
            Body=data,
            ContentType=content_type(name),
            CacheControl=cache_control(name),
        )

    def _list(self, relative_prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(relative_prefix)):
            yield from page.get("Contents", [])

    def _subdirs(self, relative_prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []
        start = self._key(relative_prefix)
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.append(common["Prefix"][len(start) :].rstrip("/"))
        return found

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    # -- Storage --------------------------------------------------------------------

    def prepare(self, signer: Signer) -> None:
        try:
            self._ensure_bucket()
            self._ensure_policy()
            self._publish_keyrings(signer)
            self._publish_verity_certs()
        except (BotoCoreError, ClientError) as exc:
            raise SysextError(
                f"cannot use bucket {self.bucket!r} at {self.settings.s3_endpoint}: {exc}",
                "check SYSEXT_S3_ENDPOINT and the credentials (AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or s3_access_key_id/s3_secret_access_key)",
            ) from None

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if not _missing(exc):
                raise
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.info("event=bucket-created bucket=%s", self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def policy(self) -> dict[str, Any]:
        """Anonymous GET of the public tree and the keyring; nothing else, no listing."""
        resources = [f"arn:aws:s3:::{self.bucket}/{self._key(p)}" for p in PUBLIC_PATTERNS]
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "sysext-public-tree",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": resources,
                }
            ],
        }

    def _ensure_policy(self) -> None:
        try:
            current = self.client.get_bucket_policy(Bucket=self.bucket)["Policy"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucketPolicy":
                raise
            current = None
        wanted = self.policy()
        if current is not None and json.loads(current) != wanted:
            # An operator's own policy (e.g. a CDN origin identity) wins; say so once.
            log.warning("event=bucket-policy-kept bucket=%s", self.bucket)
            return
        if current is None:
            self.client.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(wanted))

    def _publish_keyrings(self, signer: Signer) -> None:
        keyring = signer.public_keyring()
        existing = self._get(KEYRING_BINARY)
        if existing is not None and existing != keyring:
            ours = {c.fingerprint for c in load_keyring(keyring)}
            theirs = {c.fingerprint for c in load_keyring(existing)}
            if not ours & theirs:
                # Two keys behind one bucket would make every other publish fail to verify.
                # (A key rotation always keeps one key in common between its phases.)
                raise SysextError(
                    f"bucket {self.bucket!r} publishes the keyring of key "
                    f"{', '.join(sorted(theirs))}, but this registry signs with "
                    f"{', '.join(sorted(ours))}",
                    "give every replica the same key file (SYSEXT_SIGNING_KEY); to rotate "
                    "the key on purpose, delete keyring.gpg from the bucket first",
                )
        if existing != keyring:
            self._put(KEYRING_BINARY, keyring)
        armored = signer.public_keyring(armor=True)
        if self._get(KEYRING_ARMORED) != armored:
            self._put(KEYRING_ARMORED, armored)

    def _publish_verity_certs(self) -> None:
        data = bundle(load_trusted(self.settings.verity_certs))
        existing = self._get(VERITY_CERTS_NAME)
        if data is None and existing is not None:
            self._delete([self._key(VERITY_CERTS_NAME)])
        elif data is not None and existing != data:
            self._put(VERITY_CERTS_NAME, data)

    def ingest(self, staged: Path, sha256: str) -> None:
        key = self._blob_key(sha256)
        with self._errors("storing the image"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if not _missing(exc):
                    raise
                self.client.upload_file(
                    str(staged),
                    self.bucket,
                    key,
                    ExtraArgs={
                        "Metadata": {"sha256": sha256},
                        "ContentType": "application/octet-stream",
                    },
                    Config=self.transfer,
                )
        staged.unlink(missing_ok=True)

    def collect_garbage(self, referenced: set[str]) -> int:
        stale = [
            obj["Key"]
            for obj in self._list("store/sha256/")
            if obj["Key"].rsplit("/", 1)[-1] not in referenced
        ]
        self._delete(stale)
        return len(stale)

    @staticmethod
    def directories(name: str, channel: str) -> list[str]:
        """The public directories of (name, channel); stable has the short alias too."""
        alias = f"channels/{channel}/extensions/{name}"
        main = extension_url_path(name, channel)
        return [alias] if main == alias else [alias, main]

    def materialize(self, signer: Signer, content: DirectoryContent) -> None:
        directories = self.directories(content.name, content.channel)
        with self._errors("materializing the public tree"):
            # One listing per directory; an object whose ETag is the MD5 of the wanted
            # bytes (single-part PUT) is already right, so a restart rewrites nothing.
            present = {
                d: {o["Key"]: o["ETag"].strip('"') for o in self._list(d + "/")}
                for d in directories
            }
            for directory in directories:
                for filename, sha256 in content.images:
                    key = self._key(f"{directory}/{filename}")
                    if key not in present[directory]:
                        self._copy_blob(sha256, key, filename)
                for filename, data in content.texts:
                    key = self._key(f"{directory}/{filename}")
                    if present[directory].get(key) != _md5(data):
                        self._put(f"{directory}/{filename}", data)
            stale = [
                d
                for d in directories
                if not self._pair_matches(d, content.manifest, signer, present[d])
            ]
            if not stale:
                return
            failpoint("before-swap")
            manifest = served_manifest(content.manifest, signer.best_before())
            signature = signer.sign(manifest)
            markers = marker_files(manifest)
            for index, directory in enumerate(stale):
                if index:
                    failpoint("between-swaps")
                for name in markers:
                    if self._key(f"{directory}/{name}") not in present[directory]:
                        self._put(f"{directory}/{name}", b"")
                for name in SIGNATURE_NAMES:
                    self._put(f"{directory}/{name}", signature)
                failpoint("between-signature-and-manifest")
                self._put(f"{directory}/{MANIFEST_NAME}", manifest)
                # Markers of earlier manifests: listed nowhere now and never fetched by
                # systemd, so they go (the directory would otherwise grow one a day).
                outdated = [
                    key
                    for key in present[directory]
                    if key.rsplit("/", 1)[-1].startswith(BEST_BEFORE_PREFIX)
                    and key.rsplit("/", 1)[-1] not in markers
                ]
                self._delete(outdated)

    def materialize_rollouts(self, signer: Signer, content: RolloutContent) -> None:
        """The bucket directories (rollout_tree.py) as objects, in the same order as
        `materialize`: images first (never deleted), then signature and manifest of each
        directory whose manifest changed. One listing of the whole rollout tree; images are
        server-side copies (on Ceph RGW a copy shares the stored data)."""
        base = content.url_path
        with self._errors("materializing the rollout tree"):
            present = {o["Key"]: o["ETag"].strip('"') for o in self._list(base + "/")}
            signed: dict[bytes, bytes] = {}
            best_before = signer.best_before()
            for slot in content.slots:
                directory = f"{base}/{slot.path}"
                for filename, sha256 in slot.images:
                    if self._key(f"{directory}/{filename}") not in present:
                        self._copy_blob(sha256, self._key(f"{directory}/{filename}"), filename)
                if slot.placeholder and self._key(f"{directory}/{PLACEHOLDER_NAME}") not in present:
                    self._put(f"{directory}/{PLACEHOLDER_NAME}", b"")
                if self._pair_matches(directory, slot.manifest, signer, present):
                    continue
                # With the BEST-BEFORE line of the channel directories (`materialize`).
                manifest = served_manifest(slot.manifest, best_before)
                if manifest not in signed:
                    signed[manifest] = signer.sign(manifest)
                markers = marker_files(manifest)
                for name in markers:
                    if self._key(f"{directory}/{name}") not in present:
                        self._put(f"{directory}/{name}", b"")
                for name in SIGNATURE_NAMES:
                    self._put(f"{directory}/{name}", signed[manifest])
                self._put(f"{directory}/{MANIFEST_NAME}", manifest)
                self._delete(
                    [
                        key
                        for key in present
                        if key.startswith(self._key(f"{directory}/{BEST_BEFORE_PREFIX}"))
                        and key.rsplit("/", 1)[-1] not in markers
                    ]
                )

    def _copy_blob(self, sha256: str, key: str, filename: str) -> None:
        # Server-side (multipart for big images): the bytes never pass through us.
        self.client.copy(
            {"Bucket": self.bucket, "Key": self._blob_key(sha256)},
            self.bucket,
            key,
            ExtraArgs={
                "ContentType": content_type(filename),
                "CacheControl": cache_control(filename),
                "Metadata": {"sha256": sha256},
                "MetadataDirective": "REPLACE",
            },
            Config=self.transfer,
        )

    def _served(self, directory: str, listing: bytes, etags: dict[str, str]) -> bytes | None:
        """The stored SHA256SUMS of `directory` (None: none); read only when its ETag says
        it is not `listing` itself (a BEST-BEFORE line makes it differ)."""
        etag = etags.get(self._key(f"{directory}/{MANIFEST_NAME}"))
        if etag is None:
            return None
        if etag == _md5(listing):
            return listing
        return self._get(f"{directory}/{MANIFEST_NAME}")

    def _signatures(self, directory: str, etags: dict[str, str]) -> dict[str, bytes | None]:
        """The stored signature under each name: the first read, the others compared with
        it by ETag (single-part PUTs of the same bytes)."""
        first_name, *others = SIGNATURE_NAMES
        first = self._get(f"{directory}/{first_name}")
        found: dict[str, bytes | None] = {first_name: first}
        for name in others:
            same = first is not None and etags.get(self._key(f"{directory}/{name}")) == _md5(first)
            found[name] = first if same else self._get(f"{directory}/{name}")
        return found

    def _pair_matches(
        self, directory: str, listing: bytes, signer: Signer, etags: dict[str, str]
    ) -> bool:
        """True when the stored SHA256SUMS lists `listing` with the marker the policy asks
        for and its signature (the same under every name) is current (by the active key,
        not due for renewal: materialize.served_is_current)."""
        served = self._served(directory, listing, etags)
        if served is None or split_served(served)[0] != listing:
            return False
        return served_is_current(served, self._signatures(directory, etags), listing, signer)

    def remove_unknown(self, known: set[tuple[str, str]]) -> None:
        doomed: list[str] = []
        for name in self._subdirs("extensions/"):
            if (name, DEFAULT_CHANNEL) not in known:
                doomed.append(f"extensions/{name}/")
        for channel in self._subdirs("channels/"):
            for name in self._subdirs(f"channels/{channel}/extensions/"):
                if (name, channel) not in known:
                    doomed.append(f"channels/{channel}/extensions/{name}/")
        for prefix in doomed:
            self._delete([o["Key"] for o in self._list(prefix)])

    def read_public(self, url_path: str) -> bytes | None:
        with self._errors("reading the public tree"):
            return self._get(url_path)

    # -- read-only views for `sysext registry check` ---------------------------------

    def stored_size(self, sha256: str) -> int | None:
        with self._errors("reading the blob store"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._blob_key(sha256))
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        return int(head["ContentLength"])

    def drift(self, content: DirectoryContent, keyring: bytes) -> str | None:
        """The local check (materialize.snapshot_matches) over both directories of a
        stable extension: the same manifest, transfer files and image names, and a
        signature `keyring` verifies. Manifests and transfer files are compared by the
        ETag of their single-part PUT (their MD5), as `materialize` does."""
        with self._errors("reading the public tree"):
            for directory in self.directories(content.name, content.channel):
                start = self._key(directory + "/")
                listed = list(self._list(directory + "/"))
                etags = {o["Key"][len(start) :]: o["ETag"].strip('"') for o in listed}
                if MANIFEST_NAME not in etags:
                    return NOT_PUBLISHED
                if any(etags.get(name) != _md5(data) for name, data in content.texts):
                    return DIFFERS
                images = {name for name in etags if name.endswith(".raw")}
                if images != {name for name, _ in content.images}:
                    return DIFFERS
                full = {o["Key"]: o["ETag"].strip('"') for o in listed}
                served = self._served(directory, content.manifest, full)
                if served is None or split_served(served)[0] != content.manifest:
                    return DIFFERS
                if served_refused(served, self._signatures(directory, full), keyring):
                    return DIFFERS
        return None

    def published(self) -> set[tuple[str, str]]:
        with self._errors("listing the public tree"):
            found = {(name, DEFAULT_CHANNEL) for name in self._subdirs("extensions/")}
            for channel in self._subdirs("channels/"):
                found |= {(n, channel) for n in self._subdirs(f"channels/{channel}/extensions/")}
        return found
