# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""No role task file is longer than 80 lines (issue 16): a longer one is split by concern."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

MAX_LINES = 80
ROLES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "roles"))


def task_files():
    found = []
    for role in sorted(os.listdir(ROLES)):
        tasks = os.path.join(ROLES, role, "tasks")
        if os.path.isdir(tasks):
            found.extend(os.path.join(tasks, name) for name in sorted(os.listdir(tasks)) if name.endswith((".yml", ".yaml")))
    return found


def line_count(path):
    with open(path, "rb") as handle:
        return len(handle.read().splitlines())


def test_the_task_files_are_found():
    files = task_files()
    assert any(f.endswith(os.path.join("worker", "tasks", "main.yml")) for f in files)
    assert any(f.endswith(os.path.join("boot_server", "tasks", "main.yml")) for f in files)


@pytest.mark.parametrize("path", task_files(), ids=lambda path: os.path.relpath(path, ROLES))
def test_no_task_file_is_over_80_lines(path):
    lines = line_count(path)
    assert lines <= MAX_LINES, "%s has %d lines (at most %d): split it by concern" % (os.path.relpath(path, ROLES), lines, MAX_LINES)


def test_the_check_counts_lines(tmp_path):
    tasks = tmp_path / "long.yml"
    tasks.write_text(u"---\n" + u"- name: A task\n  ansible.builtin.debug:\n" * 41)
    assert line_count(str(tasks)) == 83
