"""The load-test tool is optional: `editor` imports without it, and `manage.py loadtest` without
the bench extra says in one line what to install (pyproject.toml, docs/dependencies.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Makes these modules unimportable, as in an install without the bench extra (or without bench).
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def python(code: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings"}
    return subprocess.run(
        [sys.executable, "-c", f"BLOCKED = {blocked!r}\n{BLOCK}\n{code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def loadtest(blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    return python(
        "from django.core.management import execute_from_command_line\n"
        "execute_from_command_line(['manage.py', 'loadtest', 'fanout',"
        " '--url', 'ws://127.0.0.1:9/ws/documents'])",
        blocked,
    )


@pytest.mark.parametrize("missing", ["websockets", "psutil", "bench"])
def test_it_names_the_extra_in_one_line_when_a_part_is_missing(missing):
    result = loadtest(blocked=(missing,))

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("CommandError: loadtest needs the bench extra: ")
    assert "pip install 'collab[bench]'" in line
    assert repr(missing) in line


def test_it_names_the_extra_to_call_command_too():
    result = python(
        "import django; django.setup()\n"
        "from django.core.management import CommandError, call_command\n"
        "try:\n"
        "    call_command('loadtest', 'fanout', '--url', 'ws://127.0.0.1:9/ws/documents')\n"
        "except CommandError as exc:\n"
        "    print(exc)\n",
        blocked=("websockets",),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loadtest needs the bench extra: pip install 'collab[bench]'")


def test_it_imports_every_editor_module_without_bench():
    result = python(
        "import django, importlib, json, pkgutil, sys\n"
        "django.setup()\n"
        "import editor\n"
        "names = [m.name for m in pkgutil.walk_packages(editor.__path__, 'editor.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "loaded = [m for m in sys.modules if m.partition('.')[0] in"
        " ('bench', 'websockets', 'psutil')]\n"
        "print(json.dumps({'imported': names, 'loaded': loaded}))\n",
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "editor.management.commands.loadtest" in report["imported"]
    assert "editor.realtime.consumer" in report["imported"]
    assert report["loaded"] == []
