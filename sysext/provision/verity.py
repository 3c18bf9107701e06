"""Signed verity extensions on a provisioned host (issue 22, docs/verity.md).

The registry's verity certificates (its /verity.crt) go to /etc/verity.d/, one file each:
systemd reads the first certificate of every `*.crt` there and accepts a DDI whose root
hash one of them signed (`PKCS7_verify`, userspace; the kernel keyring is the other way).
During a certificate rotation the registry serves two, and hosts provisioned then trust
both.

`--require-signed` adds an image policy under which systemd-sysext merges nothing else
(`root=signed+absent:usr=signed+absent`: a root or usr partition must be verity-protected
with a signed root hash, or absent). How it reaches systemd-sysext depends on the version:

* 255–258: the stock systemd-sysext.service runs `systemd-sysext refresh`; a drop-in
  replaces ExecStart= and ExecReload= with the same command plus `--image-policy=`.
  A direct `systemd-sysext refresh` does not read it, so `--on-update refresh` is refused.
* 259+: `ImagePolicy=` in the [Sysext] section of /etc/systemd/sysext.conf.d/*.conf
  (sysext.conf(5), systemd PR 38250), which every systemd-sysext invocation reads.
* below 255: refused. 252 has no image policy, and 254 merges usr-type DDIs without
  verity (issue 22); a config that looked strict but was not would be worse than none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sysext.core.errors import SysextError
from sysext.provision.model import Dropin, File, InlineContents, OnUpdate

VERITY_CERTS_PATH = "verity.crt"  # the registry's bundle, next to keyring.gpg
VERITY_DIR = "/etc/verity.d"
SIGNED_ONLY = "root=signed+absent:usr=signed+absent"
MIN_SYSTEMD = 255
CONF_SYSTEMD = 259  # first version with ImagePolicy= in sysext.conf
POLICY_NAME = "50-sysext-require-signed.conf"
POLICY_CONF = f"/etc/systemd/sysext.conf.d/{POLICY_NAME}"
SYSEXT_UNIT = "systemd-sysext.service"
_VERSIONS_HINT = (
    "pass the hosts' systemd version, e.g. --systemd-version 257 (Flatcar stable 4593), "
    "255 (Flatcar LTS 4081), 260 (Flatcar beta); `systemctl --version` on a host says it"
)


def check_require_signed(
    require_signed: bool, systemd_version: int | None, on_update: OnUpdate
) -> None:
    """Refuse, before any download, what would give hosts a weaker policy than asked."""
    if not require_signed:
        return
    if systemd_version is None:
        raise SysextError(
            "--require-signed writes a systemd-version-specific policy", _VERSIONS_HINT
        )
    if systemd_version < MIN_SYSTEMD:
        raise SysextError(
            f"systemd {systemd_version} cannot be made to refuse unsigned extensions: image "
            "policies start in 254, and 254 merges usr-type images without verity",
            "hosts need systemd 255 or newer for --require-signed; drop it for these hosts "
            "(signed images still get verity from the certificate in /etc/verity.d)",
        )
    if systemd_version < CONF_SYSTEMD and on_update is OnUpdate.REFRESH:
        raise SysextError(
            f"--on-update refresh runs `systemd-sysext refresh` directly, which on systemd "
            f"{systemd_version} does not see the image policy of systemd-sysext.service",
            "use --on-update restart (the default) with --require-signed",
        )


def served_certificates(bundle: bytes | None) -> list[tuple[str, bytes]]:
    """(fingerprint, PEM) of each certificate in the registry's /verity.crt (none: [])."""
    if not bundle:
        return []
    # Imported here: `sysext transfer` reaches this module through compose.py and never
    # parses a certificate, so it need not load cryptography.
    from sysext.trust.x509 import certificate_pem, fingerprint, parse_certificates

    certificates = parse_certificates(bundle, f"the registry's /{VERITY_CERTS_PATH}")
    return [(fingerprint(c), certificate_pem(c)) for c in certificates]


def check_signed(signers: Mapping[str, str | None], trusted: Sequence[tuple[str, bytes]]) -> None:
    """Every image (label → its signer) must be signed by a served certificate: under the
    policy a host would refuse it at boot, silently (systemd-sysext merge exits 0)."""
    if not trusted:
        raise SysextError(
            f"--require-signed: the registry serves no /{VERITY_CERTS_PATH}, so hosts could "
            "verify no image",
            "the registry's operator sets --verity-cert (SYSEXT_VERITY_CERTS)",
        )
    fingerprints = {fp for fp, _ in trusted}
    for label, signer in signers.items():
        if signer is None:
            raise SysextError(
                f"{label} is not a signed verity image: a host with --require-signed would "
                "refuse it",
                "publish it built with --verity (sysext build/pack), or drop --require-signed",
            )
        if signer not in fingerprints:
            raise SysextError(
                f"{label} is signed by certificate {signer[:16]}…, which the registry no "
                "longer serves in /verity.crt",
                "republish it signed with a current certificate",
            )


def certificate_files(trusted: Sequence[tuple[str, bytes]]) -> list[File]:
    return [
        File(
            f"{VERITY_DIR}/sysext-{fp[:16]}.crt",
            InlineContents(pem),
            comment=f"Verity certificate of the registry (SHA-256 {fp}): systemd-sysext "
            "accepts DDIs whose root hash it signed.",
        )
        for fp, pem in trusted
    ]


def policy_conf() -> File:
    text = (
        "# Generated by sysext butane --require-signed: merge only extensions whose dm-verity\n"
        f"# root hash is signed by a certificate in {VERITY_DIR}/ (sysext.conf(5)).\n"
        "[Sysext]\n"
        f"ImagePolicy={SIGNED_ONLY}\n"
    )
    return File(POLICY_CONF, InlineContents(text.encode()))


def policy_dropin() -> Dropin:
    command = f"systemd-sysext refresh --image-policy={SIGNED_ONLY}"
    return Dropin(
        POLICY_NAME,
        "# Generated by sysext butane --require-signed: merge only extensions whose dm-verity\n"
        f"# root hash is signed by a certificate in {VERITY_DIR}/ (systemd.image-policy(7)).\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={command}\n"
        "ExecReload=\n"
        f"ExecReload={command}\n",
    )


def policy_note(systemd_version: int) -> str:
    where = (
        f"ImagePolicy= in {POLICY_CONF}"
        if systemd_version >= CONF_SYSTEMD
        else f"a drop-in for {SYSEXT_UNIT} (--image-policy=)"
    )
    return (
        f"Only signed verity images merge ({SIGNED_ONLY}, systemd {systemd_version}: "
        f"{where}); certificates in {VERITY_DIR}/."
    )
