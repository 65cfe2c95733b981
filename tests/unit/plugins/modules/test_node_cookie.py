# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_cookie's pure parts (module_utils/erlang_cookie.py): the expression, the answer, the order of attempts and
the cookie file (compared, replaced atomically). The Erlang side runs for real in tests/integration/e2e."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils import erlang_cookie
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom

NEW = "n3w'Cookie\"\\x"


def answer(was_new=False, on=(), off=(), pinned=(), told=(), repaired=(), before=(), unpinned=(), after=()):
    """An answer as the node's ETF decodes: atom keys, binaries for node names."""
    def nodes(items):
        return [item.encode() for item in items]
    return {Atom("was_new"): was_new, Atom("is_new"): True, Atom("peers_on_new"): nodes(on), Atom("peers_not_on_new"): nodes(off),
            Atom("pinned_old"): nodes(pinned), Atom("told"): nodes(told), Atom("repaired"): nodes(repaired),
            Atom("pins_before"): nodes(before), Atom("unpinned"): nodes(unpinned), Atom("pins_after"): nodes(after),
            Atom("pins_readable"): True}


def test_the_expression_quotes_the_cookie_and_the_peers_and_sets_the_flags():
    text = erlang_cookie.switch_expression(NEW, ["w@10.0.0.5", "boot@10.0.0.4"], "final", check=True)
    # One Erlang literal each (erlang_terms.literal): quotes and backslashes escaped.
    assert '<<"n3w\'Cookie\\"\\\\x"/utf8>>' in text
    assert '[<<"w@10.0.0.5"/utf8>>, <<"boot@10.0.0.4"/utf8>>]' in text
    assert "SkwFinal = true, SkwCheck = true," in text
    switched = erlang_cookie.switch_expression(NEW, [], "switched")
    assert "SkwFinal = false, SkwCheck = false," in switched and "SkwPeers = [binary_to_atom(SkwP, utf8) || SkwP <- []]" in switched


def test_an_unknown_step_is_refused():
    with pytest.raises(ValueError, match="step must be one of switched, final"):
        erlang_cookie.switch_expression(NEW, [], "later")


def test_a_switch_reports_the_pins_and_the_peers_told():
    result = erlang_cookie.interpret(answer(on=["boot@a"], off=["w@b"], pinned=["w@b"], told=["boot@a"], after=["w@b"]), "switched")
    assert result == dict(switched=True, pinned_old=["w@b"], peers_told=["boot@a"], pins_repaired=[], pins_removed=[], pins=["w@b"],
                          peers_on_new_cookie=["boot@a"], peers_not_on_new_cookie=["w@b"], changed=True)


def test_a_node_already_switched_changes_nothing_unless_a_pin_is_repaired():
    assert erlang_cookie.interpret(answer(was_new=True, on=["boot@a"], pinned=["w@b"]), "switched")["changed"] is False
    repaired = erlang_cookie.interpret(answer(was_new=True, on=["boot@a"], repaired=["boot@a"]), "switched")
    assert repaired["changed"] is True and repaired["pins_repaired"] == ["boot@a"]
    # pinned_old is only what this run pinned: a node already on the new cookie pins nothing.
    assert erlang_cookie.interpret(answer(was_new=True, pinned=["w@b"]), "switched")["pinned_old"] == []


def test_the_final_step_changes_when_pins_are_removed_or_would_be_in_check_mode():
    assert erlang_cookie.interpret(answer(was_new=True, before=["w@b"], unpinned=["w@b"]), "final")["changed"] is True
    assert erlang_cookie.interpret(answer(was_new=True), "final")["changed"] is False
    checked = erlang_cookie.interpret(answer(was_new=True, before=["w@b"], after=["w@b"]), "final", check=True)
    assert checked["changed"] is True and checked["pins_removed"] == ["w@b"] and checked["pins"] == ["w@b"]


def test_the_order_of_attempts():
    assert erlang_cookie.attempt_order("switched") == ["old", "new"]
    assert erlang_cookie.attempt_order("final") == ["new", "old"]
    assert erlang_cookie.attempt_order("switched", same=True) == ["new"]


def ids():
    return os.getuid(), os.getgid()


def test_a_missing_file_is_written_with_mode_0400_and_exactly_the_cookie(tmp_path):
    path = str(tmp_path / ".erlang.cookie")
    uid, gid = ids()
    state = erlang_cookie.file_state(path, "abc", uid, gid)
    assert state == dict(exists=False, content=False, owner=False, mode=False)
    assert not erlang_cookie.file_up_to_date(state)
    erlang_cookie.write_atomically(path, "abc", uid, gid)
    with open(path, "rb") as handle:
        assert handle.read() == b"abc"  # no newline: what the erlang role's copy writes, so site sees no change
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
    assert erlang_cookie.file_up_to_date(erlang_cookie.file_state(path, "abc", uid, gid))
    assert os.listdir(str(tmp_path)) == [".erlang.cookie"]  # no temporary file left


def test_the_file_is_replaced_by_a_rename_not_rewritten_in_place(tmp_path):
    path = str(tmp_path / ".erlang.cookie")
    uid, gid = ids()
    erlang_cookie.write_atomically(path, "old", uid, gid)
    inode = os.stat(path).st_ino
    state = erlang_cookie.file_state(path, "new", uid, gid)
    assert state == dict(exists=True, content=False, owner=True, mode=True)
    erlang_cookie.write_atomically(path, "new", uid, gid)
    assert os.stat(path).st_ino != inode
    with open(path) as handle:
        assert handle.read() == "new"


def test_a_wrong_mode_or_owner_is_a_difference(tmp_path):
    path = str(tmp_path / ".erlang.cookie")
    uid, gid = ids()
    erlang_cookie.write_atomically(path, "abc", uid, gid)
    os.chmod(path, 0o644)
    assert erlang_cookie.file_state(path, "abc", uid, gid)["mode"] is False
    assert erlang_cookie.file_state(path, "abc", uid + 1, gid)["owner"] is False


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = str(tmp_path / ".erlang.cookie")
    uid, gid = ids()
    erlang_cookie.write_atomically(path, "old", uid, gid)

    def refuse(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(erlang_cookie.os, "fsync", refuse)
    with pytest.raises(OSError):
        erlang_cookie.write_atomically(path, "new", uid, gid)
    with open(path) as handle:
        assert handle.read() == "old"
    assert os.listdir(str(tmp_path)) == [".erlang.cookie"]
