# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A rolling restart driven from one place: batches of nodes, health gates, stop at the first failure.

Used by the cluster_restart module (the rolling_restart playbook runs it once, on the boot server host).

- ``check_gates(params)``: the error messages of bad health-gate options (empty when they are fine); checked
  before anything changes.
- ``Rollout(params, make_node, log)``: ``run()`` restarts ``params["nodes"]`` a batch of ``params["serial"]`` at a
  time and returns ``(report, failure)``: one entry per node (``node``, ``action`` restarted / rolled_back / failed /
  not_reached, ``unavailable_ms``, ``elapsed_ms``, ``before_version``, ``after_version``, ``message``, ``touched``: it
  was restarted, or waited for when down), and the
  failure message or None. ``make_node(name)`` gives an ErlangNode.
  With ``params["only_stale"]`` (a run resumed by another boot server), the running nodes already on
  ``expected_version`` are left alone (action ``up_to_date``, not touched); nodes down or still starting are waited
  for first, one at a time, before any other is touched.
- ``Rollout(...).plan()``: per node, without changing anything: running, the local files to copy, needs a new VM.
- ``current_release(link)``: (name, version) of the release a boot server's `current` link points at.
- ``http_gate(url, params)``, ``mfa_gate(node, params)``: None when the gate passes, else why not.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import ConnectionError as UrlConnectionError, open_url

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom, to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import probe
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import UNAVAILABLE_KINDS, ErlangNodeError
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_restart import (
    LOCAL_FILES_CHECK,
    NEW_VM,
    RESTART,
    Waiter,
    local_files_problem,
    node_alive,
    not_back,
    now_ms,
    unseen_peers,
)
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import TermSyntaxError, consult, literal

NAME_RE = re.compile(r"^[a-z][A-Za-z0-9_@]*$")
BODY_LIMIT = 65536

# What a running node needs before its restart, read on the node (nothing changes): the local files of the release
# it would boot that are missing or differ (to copy first), and whether that release's vm.args differs from the one
# the VM was started with (the worker's <current>/vm.args: erl reads it with -args_file at start), so that only a new
# VM takes its flags.
PLAN_EXPRESSION = LOCAL_FILES_CHECK.replace(
    "[unicode:characters_to_binary(element(2, E)) || E <- SkwForms(binary_to_list(SkwBin), []), SkwBad(E)];",
    """SkwEntries = SkwForms(binary_to_list(SkwBin), []),
                SkwMd5 = fun(SkwF) -> case file:read_file(SkwF) of {ok, SkwB} -> SkwHex(SkwB); _ -> none end end,
                SkwNew = [SkwM || {file, SkwP, _, _, SkwM} <- SkwEntries, filename:basename(SkwP) =:= "vm.args"],
                #{missing => [unicode:characters_to_binary(element(2, E)) || E <- SkwEntries, SkwBad(E)],
                  new_vm => SkwNew =/= [] andalso SkwNew =/= [SkwMd5(%(vm_args)s)]};""").replace(
    "error -> none;", "error -> #{missing => [], new_vm => false};")

# The user's MFA on the node: `true`, or what it returned (or raised) as text.
MFA_EXPRESSION = """
case catch %s:%s(%s) of
    true -> true;
    SkwOther -> unicode:characters_to_binary(io_lib:format("~0tp", [SkwOther]))
end
"""


def current_release(link):
    """(release name, version) of the release `link` (a boot server's `current`) points at, or (None, None)."""
    if not os.path.islink(link):
        return None, None
    target = os.path.realpath(link)
    rels = sorted(name[:-4] for name in os.listdir(target) if name.endswith(".rel")) if os.path.isdir(target) else []
    return (rels[0] if rels else None), os.path.basename(target)


def check_gates(params):
    """Error messages for bad gate options (the playbook validates the same before any change)."""
    errors = []
    for entry in params.get("nodes") or []:
        url = entry.get("health_url")
        if url and not re.match(r"^https?://[^/\s]+", url):
            errors.append("health_url of %s must be an http:// or https:// URL, got %r" % (entry.get("node"), url))
    if not 100 <= params["health_status"] <= 599:
        errors.append("health_status must be an HTTP status code (100-599), got %d" % params["health_status"])
    if params["health_body"]:
        try:
            re.compile(params["health_body"])
        except re.error as exc:
            errors.append("health_body is not a valid regular expression (%s): %r" % (exc, params["health_body"]))
    for name in ("health_retries", "health_timeout", "serial"):
        if params[name] < 1:
            errors.append("%s must be at least 1, got %d" % (name, params[name]))
    if params["pause"] < 0:
        errors.append("pause must be 0 or more seconds, got %s" % params["pause"])
    errors.extend(check_mfa(params.get("health_mfa")))
    return errors


def check_mfa(mfa):
    if not mfa:
        return []
    errors = ["health_mfa.%s must be an Erlang atom name (lower case first), got %r" % (key, mfa.get(key))
              for key in ("module", "function") if not NAME_RE.match(mfa.get(key) or "")]
    for arg in mfa.get("args") or []:
        try:
            if len(consult("%s." % arg)) != 1:
                raise TermSyntaxError("one term expected")
        except (TermSyntaxError, ValueError) as exc:
            errors.append("health_mfa.args: %r is not one Erlang term (%s)" % (arg, exc))
    return errors


def http_gate(url, params):
    """GET url until it answers health_status (and its body matches health_body), health_retries times."""
    why = None
    for attempt in range(params["health_retries"]):
        if attempt:
            time.sleep(params["health_delay"])
        try:
            response = open_url(url, timeout=params["health_timeout"])
            status, body = response.getcode(), response.read(BODY_LIMIT)
        except HTTPError as exc:
            status, body = exc.code, exc.read(BODY_LIMIT) if exc.fp else b""
        except (URLError, UrlConnectionError, OSError, ValueError) as exc:
            why = "GET %s failed: %s" % (url, getattr(exc, "reason", exc))
            continue
        text = body.decode("utf-8", "replace")
        if status != params["health_status"]:
            why = "GET %s answered %d, expected %d" % (url, status, params["health_status"])
        elif params["health_body"] and not re.search(params["health_body"], text):
            why = "GET %s answered %d but its body does not match %r: %s" % (url, status, params["health_body"], text[:200])
        else:
            return None
    return "health check failed after %d attempts: %s" % (params["health_retries"], why)


def mfa_gate(node, params):
    """Evaluate the user's M:F(Args) on the node until it returns true, health_retries times."""
    mfa = params["health_mfa"]
    expression = MFA_EXPRESSION % (literal(Atom(mfa["module"])), literal(Atom(mfa["function"])), ", ".join(mfa.get("args") or []))
    call = "%s:%s(%s)" % (mfa["module"], mfa["function"], ", ".join(mfa.get("args") or []))
    why = None
    for attempt in range(params["health_retries"]):
        if attempt:
            time.sleep(params["health_delay"])
        try:
            answer = to_text(node.call(expression, timeout=params["health_timeout"]))
        except ErlangNodeError as exc:
            why = "%s could not be called on %s: %s" % (call, node.node, exc.message)
            continue
        if answer is True:
            return None
        why = "%s returned %s on %s, not true" % (call, answer, node.node)
    return "health check failed after %d attempts: %s" % (params["health_retries"], why)


class Rollout(object):
    """Restart the nodes a batch at a time; see the module docstring."""

    def __init__(self, params, make_node, log=None):
        self.params = params
        self.make_node = make_node
        self.log = log or (lambda text: None)
        self.entries = params["nodes"]
        self.names = [entry["node"] for entry in self.entries]
        self.action = "rolled_back" if params["rollback"] else "restarted"
        self.report = [dict(node=name, action="not_reached", unavailable_ms=None, elapsed_ms=None, before_version=None,
                            after_version=None, message="", touched=False, modules=[]) for name in self.names]
        self.nodes = {}
        self.done_batches = []

    def node(self, name):
        if name not in self.nodes:
            self.nodes[name] = self.make_node(name)
        return self.nodes[name]

    def close(self):
        for node in self.nodes.values():
            node.close()

    def entry(self, name):
        return self.report[self.names.index(name)]

    def fail(self, name, message, **fields):
        self.entry(name).update(action="failed", message=message, **fields)
        return message

    def run(self):
        """(report, failure message or None)."""
        batches = self.done_batches = self.batches()
        first_failure = None
        for number, batch in enumerate(batches):
            if number and self.params["pause"]:
                self.log("bake time: %s s before the next batch" % self.params["pause"])
                time.sleep(self.params["pause"])
            failure = self.run_batch(batch)
            # A rollback goes on: every node back on one release matters more than stopping.
            if failure and not self.params["rollback"]:
                return self.report, failure
            first_failure = first_failure or failure
        return self.report, first_failure

    def batches(self):
        """Nodes that are down first (one batch each: systemd brings them back onto current), then the rest."""
        down = [name for name in self.names if not self.answers(name)]
        running = [name for name in self.names if name not in down]
        if self.params.get("only_stale"):
            starting, running = self.stale(running)
            down += starting
        size = self.params["serial"]
        return [[name] for name in down] + [running[i:i + size] for i in range(0, len(running), size)]

    def stale(self, running):
        """only_stale: (nodes not yet started, to wait for first; nodes on another release than expected_version).
        A node already on expected_version is reported up_to_date and not touched (a resumed run restarted it)."""
        starting, stale = [], []
        for name in running:
            # None: it stopped answering, or is mid-restart (not started yet): waited for before any other goes down.
            facts = self.before(name)
            if facts is None:
                starting.append(name)
            elif facts.get("release_version") == self.params["expected_version"]:
                version = facts.get("release_version")
                self.entry(name).update(action="up_to_date", before_version=version, after_version=version)
            else:
                stale.append(name)
        return starting, stale

    def answers(self, name):
        """A node counts as running while epmd on its host knows it (one TCP round trip, no Erlang call)."""
        return node_alive(name)

    def plan(self):
        """Per node, nothing changed: running, the local files to copy first, whether it needs a new VM."""
        wait_ms = max(1000, (self.params["timeout"] - 2) * 1000)
        # The worker's own `current` is at the same path as its boot server's (one host layout).
        vm_args = literal(os.path.join(self.params["current_link"] or "/nonexistent", "vm.args"))
        expression = PLAN_EXPRESSION % dict(wait_ms=wait_ms, vm_args=vm_args)
        for name in self.names:
            self.node(name)
        # Read-only calls, independent of each other: all nodes at once (a few erl_call processes at a time).
        with ThreadPoolExecutor(max_workers=min(8, len(self.names) or 1)) as pool:
            return list(pool.map(lambda name: self.plan_node(name, expression, wait_ms), self.names))

    def plan_node(self, name, expression, wait_ms):
        entry = dict(node=name, running=False, missing_local_files=[], new_vm=False, message="")
        try:
            seen = to_text(self.nodes[name].call(expression)) if self.answers(name) else None
        except ErlangNodeError as exc:
            seen, entry["message"] = None, exc.message
        if seen == "boot_server_unreachable":
            entry["message"] = "its boot server does not answer its loader within %d ms" % wait_ms
        elif isinstance(seen, dict):
            entry.update(running=True, missing_local_files=seen["missing"], new_vm=seen["new_vm"])
        elif seen is not None:
            entry["running"] = True  # no manifest: nothing to copy
        return entry

    def peers(self, name):
        return [other for other in self.names if other != name]

    def run_batch(self, batch):
        started = now_ms()
        waiters = {}
        for name in batch:
            waiter, failure = self.start(name)
            if failure:
                return failure
            waiters[name] = waiter
        failure = self.wait(waiters, started)
        if failure:
            return failure
        for name in batch:
            failure = self.gate(name)
            if failure and not self.params["rollback"]:
                return self.fail(name, failure)
            # Rolled back but failing its gate: reported, and the rollback goes on.
            self.entry(name).update(action=self.action, message=failure or "")
        return None

    def before(self, name):
        """The node's facts before its restart, or None when it does not answer (it is down)."""
        try:
            # The cheap subset node_restart polls with: status, version, peers, incarnation.
            facts = probe(self.node(name))
        except ErlangNodeError as exc:
            if exc.kind in UNAVAILABLE_KINDS:
                return None
            raise
        return facts if facts.get("init_status") == "started" else None

    def start(self, name):
        """Check the node, then restart it (a node that is down is only waited for): (waiter, failure)."""
        entry = self.entry(name)
        try:
            facts = self.before(name)
            problem = self.refuse(name, facts)
        except ErlangNodeError as exc:
            return None, self.fail(name, "cannot read %s: %s; it was not restarted" % (name, exc.message))
        if problem:
            return None, self.fail(name, problem)
        # Failed until it is back and passes its gates.
        entry.update(before_version=facts.get("release_version") if facts else None, action="failed", touched=True)
        waiter = Waiter(self.node(name), facts.get("incarnation") if facts else None, self.peers(name),
                        self.params["expected_version"], self.params["poll_interval_ms"],
                        loaded_only=(facts or {}).get("applications_not_running") or [])
        waiter.before = facts or {}
        if facts is None:
            self.log("%s does not answer: waiting for systemd to start it on the current release" % name)
            waiter.last_ok_ms = now_ms()
            waiter.exit_is_final = False
            return waiter, None
        command = NEW_VM if self.new_vm(name) else RESTART
        try:
            self.node(name).call(command)
        except ErlangNodeError as exc:
            if exc.kind not in UNAVAILABLE_KINDS:
                return None, self.fail(name, "%s failed on %s: %s" % (command, name, exc.message))
        return waiter, None

    def new_vm(self, name):
        return bool(self.entries[self.names.index(name)].get("new_vm"))

    def refuse(self, name, facts):
        """Why the running node must not be restarted now (None: go)."""
        if facts is None:
            return None
        if not self.params["rollback"]:
            # A peer it does not see only counts while it runs (epmd knows it).
            unseen = [peer for peer in unseen_peers(facts, self.peers(name)) if self.answers(peer)]
            if unseen:
                return "the cluster is not healthy: %s does not see %s; it was not restarted" % (name, ", ".join(unseen))
        if self.params["check_local_files"]:
            problem = local_files_problem(self.node(name), self.params["timeout"], facts)
            if problem:
                return problem[0]
        return None

    def wait(self, waiters, started):
        """Poll every node of the batch until all are back as expected: the failure message or None."""
        deadline = started + self.params["restart_timeout"] * 1000
        pending = dict(waiters)
        while pending:
            tick = now_ms()
            for name, waiter in list(pending.items()):
                try:
                    done = waiter.step()
                except (ValueError, ErlangNodeError) as exc:
                    return self.fail(name, getattr(exc, "message", str(exc)), **self.timing(waiter, started))
                if done:
                    self.entry(name).update(after_version=(waiter.last or {}).get("release_version"), **self.timing(waiter, started))
                    del pending[name]
            if pending and now_ms() >= deadline:
                name, waiter = sorted(pending.items())[0]
                return self.fail(name, not_back(name, self.params["restart_timeout"], waiter, waiter.before),
                                 **self.timing(waiter, started))
            if pending:
                time.sleep(max(0, self.params["poll_interval_ms"] - (now_ms() - tick)) / 1000.0)
        return None

    @staticmethod
    def timing(waiter, started):
        down = waiter.downtime_ms()
        return dict(unavailable_ms=down if down is not None else now_ms() - waiter.last_ok_ms, elapsed_ms=now_ms() - started)

    def gate(self, name):
        """The user's health checks on a node that is back: None, or why it failed."""
        url = self.entries[self.names.index(name)].get("health_url")
        if url:
            failure = http_gate(url, self.params)
            if failure:
                return failure
        if self.params.get("health_mfa"):
            return mfa_gate(self.node(name), self.params)
        return None
