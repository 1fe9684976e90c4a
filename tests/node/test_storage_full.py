"""A node whose task store cannot grow (a full disk, a file-size limit) says so in one line,
and takes small tasks again afterwards; a failed burst commit never hides its cause."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from fades.errors import NodeStorageFull
    from fades.node.taskstore import TaskStore

    store = TaskStore(sys.argv[1])
    assert store.accept_many([("warm", "t", "{}")]) == [True]
    limit = 2_000_000  # bytes any file of this process may reach from now on
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    big = "x" * 600_000
    try:
        store.accept_many([(f"big{i}", "t", big) for i in range(6)])  # ~3.6 MB in one commit
    except NodeStorageFull as exc:
        print("REFUSED", exc)
    else:
        print("STORED")
    print("SMALL", store.accept_many([("small", "t", "{}")]))
    print("HELD", [r for r in ("big0", "small") if store.exists(r)])
    """
)


def test_a_burst_that_cannot_be_written_names_the_full_store_and_small_tasks_still_land(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tasks.db"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(db)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    refused = [line for line in lines if line.startswith("REFUSED")]
    # before: "cannot rollback - no transaction is active" (the failed COMMIT had rolled back)
    assert refused, proc.stdout + proc.stderr[-2000:]
    assert "tasks.db cannot be written" in refused[0] and "disk" in refused[0]
    assert "SMALL [True]" in lines
    assert "HELD ['small']" in lines  # the refused burst left nothing behind
