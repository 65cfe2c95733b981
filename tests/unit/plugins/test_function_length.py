# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""No Python function (or method) in plugins/ is longer than 60 lines (issue 16)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import os

import pytest

MAX_LINES = 60
PLUGINS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "plugins"))


def plugin_files():
    found = []
    for root, dirs, files in os.walk(PLUGINS):
        dirs.sort()
        found.extend(os.path.join(root, name) for name in sorted(files) if name.endswith(".py"))
    return found


def long_functions(path):
    """[(qualified name, first line, length)] of the functions of path over MAX_LINES lines (decorators included)."""
    with open(path, "rb") as handle:
        tree = ast.parse(handle.read(), filename=path)
    found = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name + "."
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                length = child.end_lineno - first + 1
                if length > MAX_LINES:
                    found.append((name[:-1], first, length))
            walk(child, name)
    walk(tree, "")
    return found


def test_the_plugins_are_found():
    files = plugin_files()
    assert any(f.endswith(os.path.join("modules", "node_info.py")) for f in files)
    assert any(f.endswith(os.path.join("inventory", "ec2.py")) for f in files)


@pytest.mark.parametrize("path", plugin_files(), ids=lambda path: os.path.relpath(path, PLUGINS))
def test_no_function_is_over_60_lines(path):
    too_long = long_functions(path)
    assert not too_long, "functions over %d lines in %s: %s" % (
        MAX_LINES, os.path.relpath(path, PLUGINS), ", ".join("%s (line %d, %d lines)" % f for f in too_long))


def test_the_check_sees_a_long_function(tmp_path):
    source = tmp_path / "long.py"
    source.write_text(u"class C:\n    def f(self):\n" + u"        x = 1\n" * MAX_LINES + u"\n\ndef g():\n    return 1\n")
    assert long_functions(str(source)) == [("C.f", 2, MAX_LINES + 1)]
