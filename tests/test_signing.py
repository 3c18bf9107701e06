"""OpenPGP keys and SHA256SUMS signatures, cross-checked with the real gpg (exactly the
command line systemd 252–256 runs, spec §3.4) and with sqv."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sysext.core.errors import SysextError
from sysext.systemd.manifest import (
    EMPTY_SHA256,
    ManifestError,
    best_before_markers,
    format_manifest,
    parse_manifest,
    sha256_file,
)
from sysext.trust.signing import (
    SignatureError,
    export_public_key,
    generate_key,
    is_image_name,
    key_fingerprint,
    load_keyring,
    sign_detached,
    sign_directory,
    signature_times,
    verify_detached,
    verify_directory,
    write_signed_manifest,
)
from tests import past_keys
from tests.servers import run_cli

MANIFEST = f"{'b' * 64}  podman-5.3.1-x86-64.raw\n".encode()


def gpg_verify_like_systemd(keyring: Path, signature: bytes, data: bytes) -> int:
    """Exit status of systemd-pull's exact gpg command line (tests/past_keys.py)."""
    return past_keys.gpg_verify_like_systemd(keyring.read_bytes(), signature, data)[0]


def sqv_verify(keyring: Path, signature: Path, data: Path) -> int:
    proc = subprocess.run(
        ["sqv", "--keyring", str(keyring), str(signature), str(data)],
        capture_output=True,
        check=False,
    )
    return proc.returncode


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    out: dict[str, Path] = {}
    for name in ("main", "foreign"):
        key = base / f"{name}.key"
        generate_key(key, f"{name} <{name}@example.test>")
        pub = base / f"{name}.gpg"
        pub.write_bytes(export_public_key(key))
        out[name] = key
        out[f"{name}.pub"] = pub
    armored = base / "main.asc"
    armored.write_bytes(export_public_key(out["main"], armor=True))
    out["main.asc"] = armored
    return out


def test_generated_key_file(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    fingerprint = generate_key(key, "T <t@example.test>")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(fingerprint) == 40 and fingerprint == key_fingerprint(key)
    assert key.read_bytes().startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----")
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temporaries left


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"precious")
    with pytest.raises(SysextError, match="refusing to overwrite") as info:
        generate_key(key, "T")
    assert info.value.hint
    assert key.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_passphrase_protected_key(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    generate_key(key, "T <t@example.test>", passphrase="s3cret")
    assert b"PRIVATE KEY" not in key.read_bytes()  # the secret is not stored in clear
    with pytest.raises(SysextError, match="protected by a passphrase") as info:
        sign_detached(key, b"x")
    assert info.value.hint and "SYSEXT_KEY_PASSPHRASE" in info.value.hint
    with pytest.raises(SysextError, match="wrong passphrase"):
        sign_detached(key, b"x", passphrase="nope")
    signature = sign_detached(key, MANIFEST, passphrase="s3cret")
    public = export_public_key(key, passphrase="s3cret")
    assert verify_detached(public, MANIFEST, signature) == key_fingerprint(key, passphrase="s3cret")


def test_keys_are_v4_ed25519(tmp_path: Path, keys: dict[str, Path]) -> None:
    # gpg 2.2 and sqv reject v6 keys (DESIGN §4): ask gpg what it sees.
    proc = subprocess.run(
        ["gpg", "--homedir", str(tmp_path), "--list-packets", str(keys["main.pub"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ":public key packet:" in proc.stdout
    assert "version 4, algo 22" in proc.stdout  # 22 = EdDSA (ed25519)


@pytest.mark.parametrize("armor", [False, True])
def test_gpg_and_sqv_accept_our_signatures(
    tmp_path: Path, keys: dict[str, Path], armor: bool
) -> None:
    signature = sign_detached(keys["main"], MANIFEST, armor=armor)
    assert signature.startswith(b"-----BEGIN PGP SIGNATURE-----") == armor
    assert gpg_verify_like_systemd(keys["main.pub"], signature, MANIFEST) == 0
    sig_file, data_file = tmp_path / "SHA256SUMS.gpg", tmp_path / "SHA256SUMS"
    sig_file.write_bytes(signature)
    data_file.write_bytes(MANIFEST)
    assert sqv_verify(keys["main.pub"], sig_file, data_file) == 0
    assert verify_detached(keys["main.pub"], MANIFEST, signature) == key_fingerprint(keys["main"])


def test_tampered_manifest_fails_everywhere(tmp_path: Path, keys: dict[str, Path]) -> None:
    signature = sign_detached(keys["main"], MANIFEST)
    tampered = MANIFEST.replace(b"5.3.1", b"5.3.2")
    assert gpg_verify_like_systemd(keys["main.pub"], signature, tampered) != 0
    sig_file, data_file = tmp_path / "s.gpg", tmp_path / "d"
    sig_file.write_bytes(signature)
    data_file.write_bytes(tampered)
    assert sqv_verify(keys["main.pub"], sig_file, data_file) != 0
    with pytest.raises(SignatureError, match="BAD signature"):
        verify_detached(keys["main.pub"], tampered, signature)


def test_foreign_key_fails_everywhere(tmp_path: Path, keys: dict[str, Path]) -> None:
    signature = sign_detached(keys["foreign"], MANIFEST)
    assert gpg_verify_like_systemd(keys["main.pub"], signature, MANIFEST) != 0
    sig_file, data_file = tmp_path / "s.gpg", tmp_path / "d"
    sig_file.write_bytes(signature)
    data_file.write_bytes(MANIFEST)
    assert sqv_verify(keys["main.pub"], sig_file, data_file) != 0
    with pytest.raises(SignatureError, match="no public key") as info:
        verify_detached(keys["main.pub"], MANIFEST, signature)
    assert info.value.hint and "keyring.gpg" in info.value.hint and "vendor" in info.value.hint


def test_armored_keyring_fails_like_on_a_host(tmp_path: Path, keys: dict[str, Path]) -> None:
    signature = sign_detached(keys["main"], MANIFEST)
    assert gpg_verify_like_systemd(keys["main.asc"], signature, MANIFEST) != 0
    with pytest.raises(SignatureError, match="ASCII-armored") as info:
        verify_detached(keys["main.asc"], MANIFEST, signature)
    assert info.value.hint and "--armor" in info.value.hint


def test_missing_or_empty_signature_fails(tmp_path: Path, keys: dict[str, Path]) -> None:
    assert gpg_verify_like_systemd(keys["main.pub"], b"", MANIFEST) != 0
    with pytest.raises(SignatureError, match="0 bytes"):
        verify_detached(keys["main.pub"], MANIFEST, b"")
    with pytest.raises(SignatureError, match="not an OpenPGP detached signature"):
        verify_detached(keys["main.pub"], MANIFEST, b"garbage that is not a signature")


def test_keyring_problems(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(SignatureError, match="no such keyring"):
        load_keyring(tmp_path / "nope.gpg")
    with pytest.raises(SignatureError, match="empty"):
        load_keyring(b"")
    with pytest.raises(SignatureError, match="not an OpenPGP keyring"):
        load_keyring(b"\x00\x01garbage")
    # A keyring of several keys verifies signatures of either.
    both = keys["main.pub"].read_bytes() + keys["foreign.pub"].read_bytes()
    signature = sign_detached(keys["foreign"], MANIFEST)
    assert verify_detached(both, MANIFEST, signature) == key_fingerprint(keys["foreign"])
    ring = tmp_path / "both.gpg"
    ring.write_bytes(both)
    assert gpg_verify_like_systemd(ring, signature, MANIFEST) == 0


def test_signing_with_a_public_key_is_a_clear_error(keys: dict[str, Path]) -> None:
    with pytest.raises(SysextError, match="not an OpenPGP secret key"):
        sign_detached(keys["main.pub"], b"x")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("podman-5.3.1-x86-64.raw", True),
        ("docker-compose-2.20.0-arm64.raw", True),
        ("kubernetes-v1.29.2-x86-64.raw", True),
        ("podman-5.3.1-x86-64.raw.json", False),
        ("podman-5.3.1-x86_64.raw", False),
        ("podman-x86-64.raw", False),
        ("podman-5.3.1-amd64.raw", False),
        ("scripts-1.0.raw", True),  # architecture-independent
        ("scripts.raw", False),
        ("podman-5.3.1-x86-64.provenance.json", False),
        (".#podman-5.3.1-x86-64.raw", False),
        ("SHA256SUMS", False),
    ],
)
def test_image_names(name: str, expected: bool) -> None:
    assert is_image_name(name) is expected


def _image_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "podman-5.3.1-x86-64.raw").write_bytes(b"image one")
    (directory / "podman-5.3.0-x86-64.raw").write_bytes(b"image zero")
    (directory / "podman-5.3.1-x86-64.raw.json").write_text("{}")  # provenance sidecar
    (directory / "notes.txt").write_text("x")
    return directory


def test_sign_directory_lists_only_images(tmp_path: Path, keys: dict[str, Path]) -> None:
    directory = _image_dir(tmp_path)
    entries = sign_directory(directory, keys["main"])
    assert [e.filename for e in entries] == ["podman-5.3.0-x86-64.raw", "podman-5.3.1-x86-64.raw"]
    manifest = (directory / "SHA256SUMS").read_bytes()
    assert parse_manifest(manifest) == entries
    assert entries[1].sha256 == sha256_file(directory / "podman-5.3.1-x86-64.raw")
    signature = (directory / "SHA256SUMS.gpg").read_bytes()
    assert gpg_verify_like_systemd(keys["main.pub"], signature, manifest) == 0
    assert not [p for p in directory.iterdir() if p.name.startswith(".#")]
    # The same signature under the name systemd 258+ ask for first (one request per poll).
    assert (directory / "SHA256SUMS.sha256.asc").read_bytes() == signature
    verdict, results = verify_directory(directory, keys["main.pub"])
    assert verdict.signature.expires is None and verdict.best_before is None
    assert verdict.warnings == ()
    assert verdict.signature.signer == key_fingerprint(keys["main"]) and all(r.ok for r in results)


def test_verify_directory_finds_changed_and_missing_files(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    directory = _image_dir(tmp_path)
    sign_directory(directory, keys["main"])
    (directory / "podman-5.3.1-x86-64.raw").write_bytes(b"changed")
    (directory / "podman-5.3.0-x86-64.raw").unlink()
    _, results = verify_directory(directory, keys["main.pub"])
    problems = {r.entry.filename: r.problem for r in results}
    assert problems["podman-5.3.0-x86-64.raw"] == "listed but missing"
    assert "sha256 mismatch" in str(problems["podman-5.3.1-x86-64.raw"])


def test_verify_directory_refuses_unsigned_and_corrupt(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    directory = _image_dir(tmp_path)
    sign_directory(directory, keys["main"])
    (directory / "SHA256SUMS.gpg").unlink()
    with pytest.raises(SignatureError, match="missing"):
        verify_directory(directory, keys["main.pub"])
    sign_directory(directory, keys["main"])
    manifest = directory / "SHA256SUMS"
    manifest.write_bytes(manifest.read_bytes() + b"\n")
    with pytest.raises(SignatureError, match="BAD signature"):
        verify_directory(directory, keys["main.pub"])
    # Signed but malformed: the signature is fine, the grammar is not.
    bad = manifest.read_bytes()
    for name in ("SHA256SUMS.gpg", "SHA256SUMS.sha256.asc"):
        (directory / name).write_bytes(sign_detached(keys["main"], bad))
    with pytest.raises(ManifestError, match="line 3"):
        verify_directory(directory, keys["main.pub"])


def test_sign_empty_directory_writes_nothing(tmp_path: Path, keys: dict[str, Path]) -> None:
    (tmp_path / "README").write_text("x")
    with pytest.raises(SysextError, match="no images"):
        sign_directory(tmp_path, keys["main"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]


def test_sign_with_missing_key_writes_nothing(tmp_path: Path) -> None:
    directory = _image_dir(tmp_path)
    before = sorted(p.name for p in directory.iterdir())
    with pytest.raises(SysextError, match="no such key file"):
        sign_directory(directory, tmp_path / "missing.key")
    assert sorted(p.name for p in directory.iterdir()) == before


def test_format_manifest_matches_signed_bytes(tmp_path: Path, keys: dict[str, Path]) -> None:
    directory = _image_dir(tmp_path)
    entries = sign_directory(directory, keys["main"])
    assert (directory / "SHA256SUMS").read_bytes() == format_manifest(entries)


# --- CLI ------------------------------------------------------------------------------


def test_cli_key_sign_verify_round_trip(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    result = run_cli("key", "generate", "--output", key, "--uid", "CLI <cli@example.test>")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) == 40
    again = run_cli("key", "generate", "--output", key)
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr and "hint:" in again.stderr
    assert "Traceback" not in again.stderr

    pub = tmp_path / "import-pubring.gpg"
    assert run_cli("key", "export", key, "--output", pub).returncode == 0
    assert pub.read_bytes()[:1] != b"-"
    binary = subprocess.run(
        [sys.executable, "-m", "sysext.cli.main", "key", "export", str(key)],
        capture_output=True,
        check=False,
        env={**os.environ},
    )
    assert binary.returncode == 0 and binary.stdout == pub.read_bytes()
    armored = run_cli("key", "export", key, "--armor")
    assert armored.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")

    directory = _image_dir(tmp_path)
    signed = run_cli("sign", directory, "--key", key)
    assert signed.returncode == 0, signed.stderr
    assert "podman-5.3.1-x86-64.raw" in signed.stdout and ".json" not in signed.stdout
    ok = run_cli("verify", directory, "--keyring", pub)
    assert ok.returncode == 0, ok.stderr
    assert "podman-5.3.1-x86-64.raw: OK" in ok.stdout

    (directory / "podman-5.3.1-x86-64.raw").write_bytes(b"evil")
    bad = run_cli("verify", directory, "--keyring", pub)
    assert bad.returncode == 2
    assert "do not match SHA256SUMS" in bad.stderr and "Traceback" not in bad.stderr

    asc = tmp_path / "pub.asc"
    asc.write_text(armored.stdout)
    armored_ring = run_cli("verify", directory, "--keyring", asc)
    assert armored_ring.returncode == 2 and "ASCII-armored" in armored_ring.stderr


def test_cli_passphrase_from_environment(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    env = {"SYSEXT_KEY_PASSPHRASE": "pw"}
    assert run_cli("key", "generate", "--output", key, env=env).returncode == 0
    directory = _image_dir(tmp_path)
    missing = run_cli("sign", directory, "--key", key, env={"SYSEXT_KEY_PASSPHRASE": ""})
    assert missing.returncode == 2 and "passphrase" in missing.stderr
    assert not (directory / "SHA256SUMS").exists()
    assert run_cli("sign", directory, "--key", key, env=env).returncode == 0
    assert (directory / "SHA256SUMS.gpg").exists()


def test_cli_help_texts() -> None:
    for args in (["key", "generate"], ["key", "export"], ["sign"], ["verify"]):
        result = run_cli(*args, "--help")
        assert result.returncode == 0 and "Example" in result.stdout


def test_cli_export_refuses_binary_to_a_terminal(tmp_path: Path, keys: dict[str, Path]) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sysext.cli.main", "key", "export", str(keys["main"])],
            stdout=follower,
            stderr=subprocess.PIPE,
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2
    stderr = proc.stderr.decode()
    assert "refusing to write a binary keyring to a terminal" in stderr and "--armor" in stderr


def test_cli_key_errors_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "pub.gpg"
    missing = run_cli("key", "export", tmp_path / "nope.key", "--output", out)
    assert missing.returncode == 2 and "no such key file" in missing.stderr
    assert not out.exists()
    empty_uid = run_cli("key", "generate", "--output", tmp_path / "k.key", "--uid", " ")
    assert empty_uid.returncode == 2 and "must not be empty" in empty_uid.stderr
    assert list(tmp_path.iterdir()) == []
    no_keyring = run_cli("verify", tmp_path, "--keyring", tmp_path / "ring.gpg")
    assert no_keyring.returncode == 2 and "SHA256SUMS: missing" in no_keyring.stderr


# --- signature names and BEST-BEFORE -------------------------------------------------------


def test_sign_best_before_from_expires_and_verify_reports_it(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    directory = _image_dir(tmp_path)
    signed = run_cli(
        "sign", directory, "--key", keys["main"], "--expires", "7d", "--best-before", "expires"
    )
    assert signed.returncode == 0, signed.stderr
    manifest = (directory / "SHA256SUMS").read_bytes()
    (marker,) = best_before_markers(parse_manifest(manifest))
    signature = (directory / "SHA256SUMS.gpg").read_bytes()
    _, expires = signature_times(signature)
    # The marker is the signature's expiry day: 260+ refuse the manifest at most a day
    # before gpg refuses the signature, never after.
    assert expires is not None and marker.date == expires.date()
    assert marker.deadline <= expires < marker.deadline + dt.timedelta(days=1)
    assert f"systemd 260+ refuse it from {marker.date:%Y-%m-%d} 00:00 UTC" in signed.stderr
    assert (directory / marker.filename).read_bytes() == b""  # every listed name downloads
    assert (directory / "SHA256SUMS.sha256.asc").read_bytes() == signature
    verified = run_cli("verify", directory, "--keyring", keys["main.pub"])
    assert verified.returncode == 0, verified.stderr
    assert f"{marker.filename}: systemd 260+ refuse this manifest from" in verified.stderr
    assert "warning" not in verified.stderr
    assert marker.filename not in verified.stdout  # a marker, not a file to hash

    # Re-signed with a date: the new marker replaces the old one and its empty file.
    again = run_cli("sign", directory, "--key", keys["main"], "--best-before", "2999-01-31")
    assert again.returncode == 0, again.stderr
    assert not (directory / marker.filename).exists()
    assert (directory / "BEST-BEFORE-2999-01-31").read_bytes() == b""
    # And without one: no marker line, no marker file.
    plain = run_cli("sign", directory, "--key", keys["main"])
    assert plain.returncode == 0, plain.stderr
    assert not list(directory.glob("BEST-BEFORE-*"))
    assert b"BEST-BEFORE" not in (directory / "SHA256SUMS").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--best-before", "2000-01-01"], "--best-before 2000-01-01 is not in the future"),
        (["--best-before", "2027-02-30"], "--best-before '2027-02-30' is not a date systemd"),
        (["--best-before", "expires"], "--best-before expires needs --expires"),
        (["--best-before", "soon"], "invalid --best-before 'soon'"),
    ],
)
def test_sign_refuses_a_best_before_hosts_would_choke_on(
    tmp_path: Path, keys: dict[str, Path], args: list[str], message: str
) -> None:
    directory = _image_dir(tmp_path)
    before = sorted(p.name for p in directory.iterdir())
    result = run_cli("sign", directory, "--key", keys["main"], *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert "hint:" in result.stderr
    assert sorted(p.name for p in directory.iterdir()) == before


def test_verify_refuses_a_passed_best_before_and_warns_without_the_258_name(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    directory = _image_dir(tmp_path)
    sign_directory(directory, keys["main"])
    (directory / "SHA256SUMS.sha256.asc").unlink()
    warned = run_cli("verify", directory, "--keyring", keys["main.pub"])
    assert warned.returncode == 0, warned.stderr
    assert "SHA256SUMS.sha256.asc is missing: systemd 258+ hosts ask for it first" in (
        warned.stderr.replace("\n", " ")
    )
    manifest = (directory / "SHA256SUMS").read_bytes()
    stale = manifest + f"{EMPTY_SHA256}  BEST-BEFORE-2000-01-01\n".encode()
    write_signed_manifest(directory, stale, sign_detached(keys["main"], stale))
    refused = run_cli("verify", directory, "--keyring", keys["main.pub"])
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "error: SHA256SUMS lists BEST-BEFORE-2000-01-01: systemd 260+ refuse this manifest"
    ), refused.stderr
    assert "252–259 ignore the line" in refused.stderr
    # A second name signed by another key: the hosts that read it (258+) would fail.
    write_signed_manifest(directory, manifest, sign_detached(keys["main"], manifest))
    (directory / "SHA256SUMS.sha256.asc").write_bytes(sign_detached(keys["foreign"], manifest))
    with pytest.raises(SignatureError, match=r"SHA256SUMS.sha256.asc \(what systemd 258\+"):
        verify_directory(directory, keys["main.pub"])
