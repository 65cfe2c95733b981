# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Changing the cookie of a running node without restarting it (the node_cookie module; docs/design.md, "The cookie").

The Erlang handshake: each side proves it holds the cookie it keeps *for the other node*
(``erlang:get_cookie(Other)``: a per-node cookie set with ``erlang:set_cookie/2``, else the node's own).
So during a rotation, a node that switches (step ``switched``):

1. pins the OLD cookie for every peer that does not use the new one yet (``set_cookie(Peer, Old)``),
   so that those peers and it still open connections to each other;
2. takes the new cookie as its own (``erlang:set_cookie/1``): unknown nodes (erl_call, a new worker) use it;
3. tells every peer already on the new cookie to use the new one for it (their pin for it was the old one).

Once every node is switched, step ``final`` removes the peers' pins (all equal to the new cookie by then,
so nothing changes for a connection), leaving the node as if it had started with the new cookie: a later
rotation or a new host reusing a peer's name is not held back by a stale pin. Existing connections are
never touched: the cookie is only checked when a connection is set up.

Cookies never leave the node: the expression compares them there and answers booleans and node names.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import tempfile

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import literal

STEP_SWITCHED = "switched"
STEP_FINAL = "final"
STEPS = (STEP_SWITCHED, STEP_FINAL)
COOKIE_FILE_MODE = 0o400
# How long a peer may take to answer get_cookie/set_cookie over an existing connection (ms).
PEER_CALL_MS = 5000

# Skw* names: unlikely to clash with the erlang_node wrapper's own variables.
_EXPRESSION = """
SkwNew = binary_to_atom(%(new)s, utf8),
SkwPeers = [binary_to_atom(SkwP, utf8) || SkwP <- %(peers)s] -- [node()],
SkwFinal = %(final)s, SkwCheck = %(check)s,
SkwOld = erlang:get_cookie(),
SkwWasNew = SkwOld =:= SkwNew,
SkwConnected = nodes(),
SkwPeerOn = fun(SkwP) ->
    lists:member(SkwP, SkwConnected) andalso
        (try erpc:call(SkwP, erlang, get_cookie, [], %(peer_ms)d) =:= SkwNew catch _:_ -> false end)
end,
SkwOn = [SkwP || SkwP <- SkwPeers, SkwPeerOn(SkwP)],
SkwOff = SkwPeers -- SkwOn,
SkwTab = case catch sys:get_state(auth, %(peer_ms)d) of {state, _, SkwT} -> SkwT; _ -> undefined end,
SkwPins = fun() -> case SkwTab of undefined -> []; _ -> [SkwN || {SkwN, _} <- ets:tab2list(SkwTab), lists:member(SkwN, SkwPeers)] end end,
SkwPinsBefore = SkwPins(),
SkwPinOld = case SkwWasNew orelse SkwFinal of true -> []; false -> SkwOff end,
SkwRepair = case SkwWasNew of true -> [SkwP || SkwP <- SkwOn, erlang:get_cookie(SkwP) =/= SkwNew]; false -> [] end,
SkwTold = case SkwCheck orelse SkwWasNew of
    true -> [];
    false ->
        [erlang:set_cookie(SkwP, SkwOld) || SkwP <- SkwPinOld],
        erlang:set_cookie(SkwNew),
        [SkwP || SkwP <- SkwOn,
                 (try erpc:call(SkwP, erlang, set_cookie, [node(), SkwNew], %(peer_ms)d) catch _:_ -> false end) =:= true]
end,
SkwCheck orelse [erlang:set_cookie(SkwP, SkwNew) || SkwP <- SkwRepair],
SkwUnpinned = case SkwFinal andalso not SkwCheck of
    false -> [];
    true when SkwTab =:= undefined -> [erlang:set_cookie(SkwP, SkwNew) || SkwP <- SkwPeers], [];
    true ->
        SkwGone = SkwPins(),
        sys:replace_state(auth, fun(SkwS) -> [ets:delete(SkwTab, SkwN) || SkwN <- SkwGone], SkwS end, %(peer_ms)d),
        SkwGone
end,
SkwB = fun(SkwL) -> [atom_to_binary(SkwN, utf8) || SkwN <- SkwL] end,
#{was_new => SkwWasNew, is_new => erlang:get_cookie() =:= SkwNew,
  peers_on_new => SkwB(SkwOn), peers_not_on_new => SkwB(SkwOff),
  pinned_old => SkwB(SkwPinOld), told => SkwB(SkwTold), repaired => SkwB(SkwRepair),
  pins_before => SkwB(SkwPinsBefore), unpinned => SkwB(SkwUnpinned),
  pins_after => SkwB(case SkwCheck of true -> SkwPinsBefore; false -> SkwPins() end),
  pins_readable => SkwTab =/= undefined}
"""


def switch_expression(new_cookie, peers, step=STEP_SWITCHED, check=False):
    """The Erlang expression that moves a node to new_cookie (see the module docstring); check: change nothing."""
    if step not in STEPS:
        raise ValueError("step must be one of %s, got %r" % (", ".join(STEPS), step))
    return _EXPRESSION % dict(
        new=literal(new_cookie), peers=literal([str(peer) for peer in peers]),
        final=literal(step == STEP_FINAL), check=literal(bool(check)), peer_ms=PEER_CALL_MS,
    )


def interpret(answer, step, check=False):
    """The node's answer as the module reports it: switched, pins, changed (what changed, or would in check mode)."""
    facts = to_text(answer)
    switched = not facts["was_new"]
    if step == STEP_FINAL:
        pins_changed = bool(facts["pins_before"]) if check else bool(facts["unpinned"])
    else:
        pins_changed = bool(facts["repaired"]) or (bool(facts["pinned_old"]) and switched)
    return dict(
        switched=switched,
        pinned_old=sorted(facts["pinned_old"]) if switched else [],
        peers_told=sorted(facts["told"]),
        pins_repaired=sorted(facts["repaired"]),
        pins_removed=sorted(facts["unpinned"] if not check else (facts["pins_before"] if step == STEP_FINAL else [])),
        pins=sorted(facts["pins_after"]),
        peers_on_new_cookie=sorted(facts["peers_on_new"]),
        peers_not_on_new_cookie=sorted(facts["peers_not_on_new"]),
        changed=switched or pins_changed,
    )


def attempt_order(step, same=False):
    """Which cookie to reach the node with first: the old one while switching, the new one afterwards
    (a refused attempt is logged by the node: try the likelier one first). same: the old one is the new one."""
    if same:
        return ["new"]
    return ["old", "new"] if step == STEP_SWITCHED else ["new", "old"]


# ---------------------------------------------------------------------------
# The cookie file: compared, then replaced atomically (temporary file + rename)
# ---------------------------------------------------------------------------

def file_state(path, cookie, uid, gid):
    """What differs between the file at path and (cookie, uid, gid, 0400): a dict of booleans, never the cookie."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return dict(exists=False, content=False, owner=False, mode=False)
    with open(path, "rb") as handle:
        same = handle.read() == cookie.encode("ascii")
    return dict(exists=True, content=same, owner=(info.st_uid, info.st_gid) == (uid, gid),
                mode=(info.st_mode & 0o7777) == COOKIE_FILE_MODE)


def file_up_to_date(state):
    return state["exists"] and state["content"] and state["owner"] and state["mode"]


def write_atomically(path, cookie, uid, gid):
    """Replace path by a file holding exactly cookie (no newline: what the erlang role writes), mode 0400,
    owned uid:gid. The content is written to a temporary file in the same directory, made durable, then
    renamed over path: a reader (a node starting) sees the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, COOKIE_FILE_MODE)
        os.fchown(fd, uid, gid)
        os.write(fd, cookie.encode("ascii"))
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.rename(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
