"""The matrix side of `sysext build` (several recipes, --all, --publish): plan, show
progress, build, publish, summarize. The work itself is sysext.build.matrix."""

from __future__ import annotations

from sysext.build.matrix import MatrixRequest, plan, run_matrix
from sysext.cli.matrix_view import MatrixProgress, summary_line, summary_table
from sysext.client.api import RegistryClient
from sysext.client.publishing import Publisher
from sysext.core.download import Downloader
from sysext.core.errors import SysextError
from sysext.core.steps import console, quiet_steps


def run_matrix_command(request: MatrixRequest, publish: str | None, channel: str) -> bool:
    """Run the matrix and print its summary; True when any row failed."""
    publisher = None
    if publish is not None:
        # Token, reachability and channel are checked before anything is built.
        publisher = Publisher(RegistryClient.from_env(publish), channel)
        publisher.check()
    settings = request.settings
    downloader = Downloader(settings.cache_dir, settings.mirrors, refresh=request.refresh)
    planned = plan(request, downloader)
    for note in planned.notes:
        console.print(f"note: {note}", markup=False)
    if not planned.rows:
        raise SysextError(
            "nothing to build: no recipe supports the requested architectures",
            "check --arch against the recipes' `architectures`",
        )
    try:
        with quiet_steps(), MatrixProgress(planned.rows) as view:
            results = run_matrix(request, planned.rows, view, publisher)
    except KeyboardInterrupt:
        # The live view cleared itself, and Typer exits 130 without a word: say where the
        # build stands, or an interrupted run leaves an empty screen.
        console.print(
            f"interrupted: rows in progress stopped and left nothing in {request.output_dir}; "
            "run the same command to finish (finished images come out as unchanged)",
            markup=False,
            soft_wrap=True,
        )
        raise
    console.print(summary_table(results, f"{len(results)} image(s) in {request.output_dir}"))
    console.print(summary_line(results), markup=False)
    for item in results:
        if item.image is not None:
            print(item.image.path)
    return any(item.failed for item in results)
