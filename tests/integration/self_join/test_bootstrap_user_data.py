"""The bootstrap escript reads user data as cluster.parse_user_data does: the shared cases, run through `escript`.

The cases are tests/unit/plugins/module_utils/user_data_cases.json (the unit test feeds them to the Python
reader). The escript reads the format (marker and patterns) from the file the node_image role renders from
the contract; this test renders it with the role's own template. Needs no cluster: escript and ansible only.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
ESCRIPT = REPO / "roles/node_image/files/bootstrap.escript"
TEMPLATE = REPO / "roles/node_image/templates/bootstrap.format.j2"
CASES = json.loads((REPO / "tests/unit/plugins/module_utils/user_data_cases.json").read_text(encoding="utf-8"))["cases"]

pytestmark = pytest.mark.skipif(shutil.which("escript") is None, reason="needs escript (Erlang/OTP)")


@pytest.fixture(scope="module")
def format_file(tmp_path_factory):
    dest = tmp_path_factory.mktemp("format") / "bootstrap.escript.format"
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(REPO / ".collections")))
    ansible = shutil.which("ansible", path=os.path.dirname(sys.executable)) or "ansible"
    proc = subprocess.run([ansible, "localhost", "-c", "local", "-m", "ansible.builtin.template",
                           "-a", "src=%s dest=%s" % (TEMPLATE, dest)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def escript_read(format_file, path):
    proc = subprocess.run(["escript", str(ESCRIPT), "--parse-user-data", str(path), "--format-file", str(format_file)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode == 1:
        assert "FAILED" in proc.stderr, proc.stderr
        return "error"
    assert proc.returncode == 0, proc.stderr
    if proc.stdout == "not ours\n":
        return None
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_escript_reads_the_case_as_python_does(case, format_file, tmp_path):
    path = tmp_path / "user-data"
    path.write_bytes(case["text"].encode("utf-8"))
    expected = "error" if case.get("error") else case["result"]
    assert escript_read(format_file, path) == expected


def test_escript_reads_an_invalid_utf8_value_as_an_error(format_file, tmp_path):
    path = tmp_path / "user-data"
    path.write_bytes(b"# erlang-ec2 user-data v1\nERLANG_CLUSTER=caf\xe9\n")
    assert escript_read(format_file, path) == "error"


def test_escript_without_its_format_file_refuses_to_run(tmp_path):
    path = tmp_path / "user-data"
    path.write_text("# erlang-ec2 user-data v1\n")
    proc = subprocess.run(["escript", str(ESCRIPT), "--parse-user-data", str(path), "--format-file", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "cannot read the user-data format" in proc.stderr
