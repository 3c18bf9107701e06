"""One rule for extension names: `pack`, `build` and lint agree with `publish` (issue 9).

`sysext pack --name gtk+tools` used to succeed while the registry refused the name with 422.
The rule lives in sysext.extension_release.name_problem; the registry, transfer files and
provisioning refs apply the same answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.service.names import name_problem as registry_problem
from sysext.core.errors import SysextError
from sysext.provision.resolve import ExtensionRef
from sysext.systemd.extension_release import name_problem
from sysext.systemd.transfer import TransferSpec, render_transfer

EXAMPLES = [
    "podman",
    "docker-compose",
    "k3s",
    "a",
    "x" * 128,
    "gtk+tools",
    "x" * 129,
    "",
    "a..b",
    ".hidden",
    "-dash",
    "a/b",
    "name.raw",
    "sp ace",
    "ümlaut",
    "at@sign",
    "per%cent",
]


def _transfer_ok(name: str) -> bool:
    try:
        render_transfer(TransferSpec(name, "https://r.example"))
    except SysextError:
        return False
    return True


def _ref_ok(name: str) -> bool:
    try:
        ExtensionRef.parse(name)
    except SysextError:
        return False
    return True


def _agree(name: str) -> None:
    accepted = name_problem(name) is None
    assert (registry_problem(name) is None) == accepted, name
    assert _transfer_ok(name) == accepted, name
    if accepted:
        # Everything `pack` accepts can be provisioned by name.
        assert _ref_ok(name), name


@pytest.mark.parametrize("name", EXAMPLES)
def test_pack_publish_and_transfer_agree(name: str) -> None:
    _agree(name)


def test_the_rule() -> None:
    assert [n for n in EXAMPLES if name_problem(n) is None] == EXAMPLES[:5]
    problem = registry_problem("gtk+tools")
    assert problem is not None and problem.startswith("invalid extension name 'gtk+tools'")


@given(st.text(alphabet="ab1.-_+/@ %", max_size=12))
def test_agreement_on_arbitrary_names(name: str) -> None:
    _agree(name)
