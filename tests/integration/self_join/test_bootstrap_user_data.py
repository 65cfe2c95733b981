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


WORKER = "# erlang-ec2 user-data v1\nERLANG_CLUSTER=demo\nERLANG_ROLE=worker\nERLANG_NODE_NAME=worker\n"


def escript_check(format_file, tmp_path, text):
    """What the bootstrap takes from a worker's user data ({KEY: value}), or ("error", message)."""
    path = tmp_path / "user-data"
    path.write_text(text)
    proc = subprocess.run(["escript", str(ESCRIPT), "--check-user-data", str(path), "--format-file", str(format_file)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode == 1:
        assert "FAILED" in proc.stderr, proc.stderr
        return ("error", proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def test_escript_takes_every_boot_server_of_the_user_data(format_file, tmp_path):
    got = escript_check(format_file, tmp_path, WORKER + "ERLANG_BOOT_SERVER_IP=10.0.0.4\nERLANG_BOOT_NODE=boot@10.0.0.4\n"
                        "ERLANG_BOOT_SERVER_IPS=10.0.0.4,10.0.16.4\nERLANG_BOOT_NODES=boot@10.0.0.4,boot@10.0.16.4\n")
    assert (got["ERLANG_BOOT_SERVER_IPS"], got["ERLANG_BOOT_NODES"]) == ("10.0.0.4,10.0.16.4", "boot@10.0.0.4,boot@10.0.16.4")


def test_escript_takes_the_single_pair_of_older_user_data_as_a_list_of_one(format_file, tmp_path):
    got = escript_check(format_file, tmp_path, WORKER + "ERLANG_BOOT_SERVER_IP=10.0.0.4\nERLANG_BOOT_NODE=bs@10.0.0.4\n")
    assert (got["ERLANG_BOOT_SERVER_IPS"], got["ERLANG_BOOT_NODES"]) == ("10.0.0.4", "bs@10.0.0.4")


@pytest.mark.parametrize("lines, message", [
    ("ERLANG_BOOT_SERVER_IPS=10.0.0.4,10.0.16.4\n", "has ERLANG_BOOT_SERVER_IPS without ERLANG_BOOT_NODES"),
    ("ERLANG_BOOT_NODES=boot@10.0.0.4\n", "has ERLANG_BOOT_NODES without ERLANG_BOOT_SERVER_IPS"),
    ("ERLANG_BOOT_SERVER_IPS=10.0.0.4,10.0.16.4\nERLANG_BOOT_NODES=boot@10.0.16.4,boot@10.0.0.4\n",
     "boot node 'boot@10.0.16.4' is not <node name>@10.0.0.4"),
    ("ERLANG_BOOT_SERVER_IPS=10.0.0.4,10.0.16.4\nERLANG_BOOT_NODES=boot@10.0.0.4\n", "lists 2 boot server address(es) but 1 boot node(s)"),
    ("ERLANG_BOOT_SERVER_IPS=10.0.0.4,10.0.0.4\nERLANG_BOOT_NODES=boot@10.0.0.4,boot@10.0.0.4\n", "lists a boot server address twice"),
    ("ERLANG_BOOT_SERVER_IPS=10.0.0.4,\nERLANG_BOOT_NODES=boot@10.0.0.4,\n", "address '' is not a dotted-quad IPv4 address"),
    ("ERLANG_BOOT_SERVER_IP=10.0.16.4\nERLANG_BOOT_NODE=boot@10.0.16.4\n"
     "ERLANG_BOOT_SERVER_IPS=10.0.0.4,10.0.16.4\nERLANG_BOOT_NODES=boot@10.0.0.4,boot@10.0.16.4\n",
     "ERLANG_BOOT_SERVER_IP=10.0.16.4 is not the first of the list (10.0.0.4)"),
    ("", "user data has no ERLANG_BOOT_SERVER_IP"),
])
def test_escript_refuses_inconsistent_boot_servers_with_a_clear_message(format_file, tmp_path, lines, message):
    """The shared cases say accepted or refused; this says why, as the journal shows it."""
    got = escript_check(format_file, tmp_path, WORKER + lines)
    assert got[0] == "error" and message in got[1], got
