# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19 (the lowest supported, make test-matrix)
    from unittest import mock

    from ansible.module_utils import basic

    def patch_module_args(args=None):
        return mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode())

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_module import ErlangNodeModule
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError


def fake_erl_call(tmp_path):
    path = tmp_path / "erl_call"
    path.write_text(u"#!/bin/sh\nexit 1\n")
    path.chmod(0o755)
    return str(path)


def result_of(capsys, call):
    """Run call (which exits the module) and return the module's JSON result."""
    with pytest.raises(SystemExit):
        call()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def make_module():
    """make_module(args, **kwargs): an ErlangNodeModule given args; they stay patched in until the test ends."""
    patches = []

    def make(args, **kwargs):
        patch = patch_module_args(args)
        patch.__enter__()
        patches.append(patch)
        return ErlangNodeModule(**kwargs)
    yield make
    for patch in reversed(patches):
        patch.__exit__(None, None, None)


def test_folds_the_fragment_spec_into_the_module_spec(tmp_path, make_module):
    module = make_module({"node": "w@10.0.0.5", "cookie": "Cookie-Value-1", "erl_call": fake_erl_call(tmp_path), "extra": "x"},
                         argument_spec=dict(extra=dict(type="str")), supports_check_mode=True)
    assert module.params["timeout"] == 10 and module.params["extra"] == "x"
    assert module.params["cookie_file"] is None
    assert module.node.node == "w@10.0.0.5" and module.node.timeout == 10


def test_cookie_and_cookie_file_stay_mutually_exclusive(capsys, make_module):
    result = result_of(capsys, lambda: make_module({"node": "w@h", "cookie": "Cookie-Value-1", "cookie_file": "/tmp/x"}))
    assert result["failed"] and "mutually exclusive" in result["msg"]


def test_a_module_option_may_not_shadow_a_fragment_option(make_module):
    with pytest.raises(ValueError, match="timeout"):
        make_module({"node": "w@h"}, argument_spec=dict(timeout=dict(type="int")))


def test_a_bad_node_fails_with_the_one_error_shape(capsys, make_module):
    module = make_module({"node": "not-a-node", "cookie": "Cookie-Value-1"})
    result = result_of(capsys, lambda: module.node)
    assert result["failed"] and result["error"]["kind"] == "bad_argument"
    assert result["msg"] == result["error"]["message"]


def test_fail_json_node_keeps_the_error_and_adds_the_result(capsys, make_module):
    module = make_module({"node": "w@h", "cookie": "Cookie-Value-1"})
    exc = ErlangNodeError("timeout", "node w@h did not answer within 10s")
    result = result_of(capsys, lambda: module.fail_json_node(exc, msg="cannot restart w@h", before={"a": 1}))
    assert result["msg"] == "cannot restart w@h" and result["before"] == {"a": 1}
    assert result["error"] == {"kind": "timeout", "message": "node w@h did not answer within 10s"}


@pytest.mark.parametrize("finish", ["exit_json", "fail_json"])
def test_the_node_is_closed_on_exit(capsys, tmp_path, finish, make_module):
    module = make_module({"node": "w@h", "cookie": "secret", "erl_call": fake_erl_call(tmp_path)})
    home = module.node._private_home()
    assert os.path.exists(os.path.join(home, ".erlang.cookie"))
    result = result_of(capsys, lambda: getattr(module, finish)(msg="done"))
    assert "secret" not in json.dumps(result)
    assert not os.path.exists(home)
