"""A mistake in ``node.yaml`` is one line naming the file, the setting and the rule.

Found in a fresh-clone trial: ``capacity: many`` was reported as "unexpected ValueError ...
this is a bug in fades", bad YAML as an unexpected ParserError, ``capacity: 2.5`` silently
became 2, and ``capacity: 100000`` was accepted (one sandbox process per slot: the command
hung).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fades.errors import OrchestratorError
from fades.node import MAX_CAPACITY, NodeConfig

FADES = str(Path(sys.executable).with_name("fades"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("capacity: many\n", r"capacity must be an integer from 1 to 64 .*not 'many'"),
        ("capacity: [1]\n", r"capacity must be an integer .*not \[1\]"),
        ("capacity: 2.5\n", r"capacity must be an integer .*not 2\.5"),
        ("capacity: true\n", r"capacity must be an integer .*not True"),
        ("capacity: '3'\n", r"capacity must be an integer .*not '3'"),
        ("capacity: 0\n", r"capacity must be an integer from 1"),
        (f"capacity: {MAX_CAPACITY + 1}\n", r"capacity must be an integer from 1 to 64"),
        ("capacity: [\n", r"node\.yaml: not valid YAML: while parsing"),
        ("\udcff\udcfebad\n", r"node\.yaml: not valid YAML: 'utf-8' codec can't decode"),
        ("scheduling: [fifo]\n", r"scheduling must be a name"),
        ("connectors: 5\n", r"connectors must map each name to its options"),
        ("connectors: {lab: 5}\n", r"connectors must map each name to its options"),
        ("python_pool: 5\n", r"python_pool must be a mapping"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(OrchestratorError, match=expected) as err:
        NodeConfig.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_good_settings_still_load(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(f"capacity: {MAX_CAPACITY}\nscheduling: edf\npython_pool: {{max: 2}}\n")
    conf = NodeConfig.load(path)
    assert (conf.capacity, conf.scheduling, conf.python_pool) == (MAX_CAPACITY, "edf", {"max": 2})
    assert NodeConfig.load(tmp_path / "absent.yaml").capacity == 2


def test_the_cli_says_which_setting_and_works_once_it_is_fixed(tmp_path: Path) -> None:
    home = tmp_path / "node"
    home.mkdir()
    (home / "node.yaml").write_text("capacity: many\n")
    env = dict(os.environ, FADES_HOME=str(home), COLUMNS="200")

    def task_list() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FADES, "task", "list"], capture_output=True, text=True, env=env, timeout=180
        )

    bad = task_list()
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error (OrchestratorError): ") and "capacity must be" in bad.stderr
    assert "bug in fades" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    (home / "node.yaml").write_text("capacity: 1\n")
    good = task_list()
    assert good.returncode == 0, good.stderr
