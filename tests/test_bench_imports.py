"""bench/ runs with the project's own dependencies: no test extras (issue 25).

Each benchmark is imported in a child where the test-only packages cannot be imported;
its `main()` is not run (benchmarks are run by hand and print ratios).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import ROOT

# Packages of the `test` extra: a benchmark importing any of them needs `pip install .[test]`.
TEST_ONLY = ("pytest", "hypothesis", "schemathesis", "playwright", "pyte", "jsonschema",
             "httpx", "axe_playwright_python", "xdist")  # fmt: skip
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))

CHILD = """
import runpy, sys
for name in {blocked!r}:
    sys.modules[name] = None  # makes `import name` raise ImportError
sys.path.insert(0, {root!r})
runpy.run_path({path!r}, run_name="imported_by_a_test")
"""


@pytest.mark.parametrize("bench", BENCHES)
def test_benchmark_imports_without_test_extras(bench: str) -> None:
    code = CHILD.format(blocked=TEST_ONLY, root=str(ROOT), path=str(ROOT / "bench" / bench))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
