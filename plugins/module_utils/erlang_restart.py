# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restarting one node and waiting until it is back: shared by node_restart and cluster_restart.

- ``Waiter(node, incarnation, expected_nodes, expected_version, poll_ms, loaded_only=())``: polls a restarting
  node (``step()``), keeps what it saw (``state()``, ``downtime_ms()``).
- ``poll(waiter, deadline_ms)``, ``not_back(name, restart_timeout, waiter, before)``: wait, and say why not.
- ``local_files_problem(node, timeout, before)``: None, or (message, missing files) when the release the node
  would boot lacks files on its own disk (the node is left untouched).
- ``unseen_peers(before, peers)``: the peers a running node does not see (the pre-restart health check).
- ``RESTART`` (init:restart/0) and ``NEW_VM`` (init:stop(1): systemd's Restart=on-failure starts a new VM).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import posixpath
import time

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import probe
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    KIND_BAD_ARGUMENT,
    KIND_NO_COOKIE,
    KIND_SYNTAX,
    ErlangNodeError,
    epmd_lookup,
)
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.layout import DEFAULT_LAYOUT

# The worker's command that copies a release's local files (roles/erlang installs it).
LOCAL_FILES_COMMAND = posixpath.basename(DEFAULT_LAYOUT["local_files_script"])

# init:restart/0 replies ok before the node goes down; a call cut by the restart is fine too.
RESTART = "init:restart()"
# A clean stop with exit status 1: the worker unit (Restart=on-failure) starts a new VM, which reads the
# release's vm.args again (init:restart/0 keeps the VM and its flags).
NEW_VM = "init:stop(1)"

# The files of the release the node would boot (its -boot path, on its boot server) that are
# missing or differ on its own disk; `none` when the boot server has no manifest for it;
# `boot_server_unreachable` when the node's loader gets no answer in time (the boot server is down:
# a restart now would hang in the loader).
LOCAL_FILES_CHECK = r"""
SkwForms = fun SkwF(SkwText, SkwAcc) ->
    case erl_scan:tokens([], SkwText, 1) of
        {done, {ok, SkwT, _}, SkwRest} -> {ok, SkwTerm} = erl_parse:parse_term(SkwT), SkwF(SkwRest, [SkwTerm | SkwAcc]);
        _ -> lists:reverse(SkwAcc)
    end
end,
SkwHex = fun(SkwB) -> lists:flatten([io_lib:format("~2.16.0b", [X]) || <<X>> <= erlang:md5(SkwB)]) end,
SkwBad = fun({file, SkwP, SkwSize, _Mode, SkwMd5}) ->
             case file:read_file(SkwP) of
                 {ok, SkwB} -> byte_size(SkwB) =/= SkwSize orelse SkwHex(SkwB) =/= SkwMd5;
                 _ -> true
             end;
            (_) -> false
         end,
SkwSelf = self(),
SkwAsk = fun(SkwBoot) ->
    SkwPid = spawn(fun() -> SkwSelf ! {self(), erl_prim_loader:get_file(SkwBoot ++ ".local_files")} end),
    receive {SkwPid, SkwGot} -> SkwGot after %(wait_ms)d -> unreachable end
end,
case init:get_argument(boot) of
    {ok, [[SkwBoot | _] | _]} ->
        case SkwAsk(SkwBoot) of
            {ok, SkwBin, _} ->
                [unicode:characters_to_binary(element(2, E)) || E <- SkwForms(binary_to_list(SkwBin), []), SkwBad(E)];
            error -> none;
            unreachable -> boot_server_unreachable
        end;
    _ -> none
end
"""


def now_ms():
    return int(time.monotonic() * 1000)


def node_alive(name):
    """A node counts as running while epmd on its host knows its name."""
    short, host = name.split("@", 1)
    try:
        return epmd_lookup(host, short, timeout=1.0)
    except (OSError, IOError):
        return False


class Waiter(object):
    """Polls a restarting node and keeps what was seen, for the result or the failure message."""

    def __init__(self, node, incarnation, expected_nodes, expected_version, poll_ms, loaded_only=()):
        self.node = node
        self.incarnation = incarnation
        self.expected_nodes = list(expected_nodes)
        self.expected_version = expected_version
        self.poll_ms = poll_ms
        self.last_ok_ms = now_ms()
        self.back_ms = None
        self.last = None
        self.last_error = None
        self.missing = list(expected_nodes)
        self.dead_nodes = []
        self._next_liveness_ms = 0
        # Applications already loaded-but-not-running before the restart (e.g. {runtime_tools, load}).
        self.loaded_only = set(loaded_only)
        # False for a node that systemd restarts by itself: a boot that dies is followed by another.
        self.exit_is_final = True

    def answered_again(self):
        return self.back_ms is not None

    def step(self):
        """One probe: True when done, raises ValueError for a definitive wrong outcome."""
        try:
            seen = probe(self.node, timeout=1)
        except ErlangNodeError as exc:
            # While it restarts anything can fail for a moment (epmd may even list a node that refuses
            # connections, which looks like a cookie problem); only our own mistakes end the wait.
            if exc.kind in (KIND_BAD_ARGUMENT, KIND_NO_COOKIE, KIND_SYNTAX):
                raise
            self.last_error = exc.message
            if self.exit_is_final and self.back_ms is not None and not node_alive(self.node.node):
                # The new boot answered, then its VM exited (an application failed to start): not coming back.
                raise ValueError("node %s answered again (release %s, init status %s) but then its VM exited: %s; a release "
                                 "whose applications fail to start makes the VM exit" % (
                                     self.node.node, (self.last or {}).get("release_version"), (self.last or {}).get("init_status"),
                                     exc.message))
            return False
        moment = now_ms()
        self.last = seen
        self.last_error = None
        if seen.get("incarnation") == self.incarnation or seen.get("init_status") != "started":
            # Still the old boot shutting down, or the new one starting.
            if self.back_ms is None and seen.get("incarnation") == self.incarnation:
                self.last_ok_ms = moment
            elif self.back_ms is None:
                self.back_ms = moment
            return False
        if self.back_ms is None:
            self.back_ms = moment
        if self.expected_version and seen.get("release_version") != self.expected_version:
            raise ValueError(
                "node %s came back running release %s %s, expected version %s"
                % (self.node.node, seen.get("release_name"), seen.get("release_version"), self.expected_version)
            )
        seen["applications_not_running"] = [a for a in seen.get("applications_not_running") or [] if a not in self.loaded_only]
        if seen["applications_not_running"]:
            return False
        connected = set(seen.get("connected_nodes") or [])
        self.missing = [n for n in self.expected_nodes if n not in connected]
        if self.missing and moment >= self._next_liveness_ms:
            # Only wait for nodes that still run (checked at most once a second).
            self._next_liveness_ms = moment + 1000
            gone = [n for n in self.missing if not node_alive(n)]
            self.dead_nodes.extend(gone)
            self.expected_nodes = [n for n in self.expected_nodes if n not in gone]
            self.missing = [n for n in self.missing if n not in gone]
        return not self.missing

    def downtime_ms(self):
        if self.back_ms is None:
            return None
        return self.back_ms - self.last_ok_ms

    def state(self):
        last = self.last or {}
        return dict(
            answered_again=self.answered_again(),
            init_status=last.get("init_status") if self.answered_again() else None,
            release_version=last.get("release_version") if self.answered_again() else None,
            applications_not_running=last.get("applications_not_running") if self.answered_again() else None,
            missing_nodes=self.missing,
            last_error=self.last_error,
        )


def hang_hint(before):
    if before.get("loader") == "inet":
        hosts = ", ".join(before.get("boot_hosts") or []) or "?"
        return (
            "; a diskless node whose boot server %s is unreachable hangs in the loader (its VM never exits and "
            "ignores SIGTERM: stop it with SIGKILL), and a release whose applications fail to start makes the VM exit" % hosts
        )
    return "; a release whose applications fail to start makes the VM exit"


def poll(waiter, deadline):
    """Probe every poll_ms until done or the deadline: (done, failure message or None)."""
    while True:
        tick = now_ms()
        try:
            if waiter.step():
                return True, None
        except ValueError as exc:
            return False, str(exc)
        except ErlangNodeError as exc:
            return False, "node %s: %s" % (waiter.node.node, exc.message)
        if now_ms() >= deadline:
            return False, None
        time.sleep(max(0, waiter.poll_ms - (now_ms() - tick)) / 1000.0)


def not_back(name, restart_timeout, waiter, before):
    """Why a node that was polled until the deadline is not back as expected."""
    state = waiter.state()
    if not waiter.answered_again():
        return "node %s did not answer again within %ds%s (last error: %s)" % (
            name, restart_timeout, hang_hint(before), waiter.last_error)
    if waiter.last_error:
        return ("node %s answered again (release %s, init status %s%s) but then stopped answering (%s); "
                "a release whose applications fail to start makes the VM exit" % (
                    name, state["release_version"], state["init_status"],
                    ", applications not running: %s" % ", ".join(state["applications_not_running"])
                    if state["applications_not_running"] else "", waiter.last_error))
    if state["applications_not_running"]:
        return "node %s booted release %s but its applications %s were not running after %ds" % (
            name, state["release_version"], ", ".join(state["applications_not_running"]), restart_timeout)
    if state["init_status"] != "started":
        return "node %s answered again but did not finish starting within %ds (init status %s)" % (
            name, restart_timeout, state["init_status"])
    return "node %s is back (release %s) but did not re-join %s within %ds" % (
        name, state["release_version"], ", ".join(waiter.missing), restart_timeout)


def local_files_problem(node, timeout, before):
    """None, or (message, missing files): the release the node would boot lacks files on its own disk."""
    wait_ms = max(1000, (timeout - 2) * 1000)
    missing = to_text(node.call(LOCAL_FILES_CHECK % dict(wait_ms=wait_ms)))
    if missing == "boot_server_unreachable":
        return ("refusing to restart %s: its boot server (%s) does not answer its loader within %d ms (the release's "
                "local-files manifest could not be read), so a restart now would hang in the loader. The node was not "
                "restarted." % (node.node, ", ".join(before.get("boot_hosts") or []) or "?", wait_ms), [])
    if missing != "none" and missing:
        return ("refusing to restart %s: the release it would boot needs these files on its own disk, missing or "
                "different there: %s. Copy them first (on the host: %s <boot server ip> <release> "
                "sync; the rolling_restart playbook does it). The node was not restarted."
                % (node.node, ", ".join(missing), LOCAL_FILES_COMMAND), missing)
    return None


def unseen_peers(before, peers):
    """The peers a running node does not see: it must see them all before it goes down."""
    connected = set(before.get("connected_nodes") or [])
    return [peer for peer in peers if peer != before.get("node") and peer not in connected]
