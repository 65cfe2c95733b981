# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cluster at a glance: every node's state, and the rollouts the boot server recorded.

Used by the cluster_status module (read-only). API::

    nodes = gather_cluster(via, via_node, others, node_timeout, direct, current_link)  # {node: facts or {"down": ..}}
    records, bad_lines = read_rollout_log(path)                     # oldest first
    line = append_rollout(path, record, group)                       # the one writer of the log's lines
    rows = status_rows(via, via_role, workers, nodes, records, boot_servers)  # last restart: newest record naming it
    lines = render(cluster, rows, records[-count:])

One erl_call, to the boot server: it reads its own facts first (so that the query does not hide
a missing connection), then every worker's with ``erpc:multicall/3`` (one round trip for the cluster,
at most ``node_timeout`` each). If the boot server itself does not answer, each worker is called on
its own (``direct(node)``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import json
import os
import time

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom, to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import NOT_RUNNING, RELEASE
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    UNAVAILABLE_KINDS,
    ErlangNodeError,
    diagnose_connect_failure,
)
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import literal

ROLE_LABELS = {"boot_server": "boot server", "worker": "worker"}
# Actions after which a node was down for unavailable_ms (a restart, the way onto or back off a release).
RESTART_ACTIONS = ("restarted", "rolled_back", "failed")

# The release as erlang_facts reads it (the pushed one, else the booted one): its one owner.
FACTS_FUN = NOT_RUNNING + r"""
SkwFacts = fun() ->
""" + RELEASE + r"""
    {SkwStatus, _} = init:get_status(),
    #{node => node(),
      release_name => unicode:characters_to_binary(SkwRelName),
      release_version => unicode:characters_to_binary(SkwRelVsn),
      connected_nodes => lists:sort(nodes()),
      uptime_ms => element(1, erlang:statistics(wall_clock)),
      init_status => SkwStatus,
      applications_not_running => case SkwStatus of started -> SkwNotRunning(); _ -> [] end,
      served => SkwServed()}
end,
"""

# On a boot server, the release its `current` link (SkwCurrentLink, the same path on every boot server) points at;
# undefined elsewhere (a worker has no such link) or without one.
SERVED_FUN = r"""
SkwServed = fun() when SkwCurrentLink =:= "" -> undefined;
               () ->
    case file:read_link_all(SkwCurrentLink) of
        {ok, SkwTarget0} ->
            SkwTarget = filename:absname(SkwTarget0, filename:dirname(SkwCurrentLink)),
            #{version => unicode:characters_to_binary(filename:basename(SkwTarget)),
              names => [unicode:characters_to_binary(filename:rootname(SkwF))
                        || SkwF <- lists:sort(filelib:wildcard("*.rel", SkwTarget))]};
        _ -> undefined
    end
end,
"""

# SkwOthers and SkwTimeout are bound before this; errors become text on the node.
MULTICALL = r"""
SkwSelf = SkwFacts(),
SkwResults = erpc:multicall(SkwOthers, SkwFacts, SkwTimeout),
#{self => SkwSelf,
  others => lists:zipwith(
      fun(SkwN, {ok, SkwF}) -> #{node => SkwN, facts => SkwF};
         (SkwN, {SkwClass, SkwReason}) ->
             #{node => SkwN, class => SkwClass,
               reason => unicode:characters_to_binary(io_lib:format("~0tp", [SkwReason]))}
      end, SkwOthers, SkwResults)}
"""


def link_binding(current_link):
    return "SkwCurrentLink = unicode:characters_to_list(%s),\n" % literal(current_link or "")


def cluster_expression(others, node_timeout, current_link=None):
    """The Erlang expression that returns #{self => Facts, others => [...]} (others: node names)."""
    bindings = "SkwOthers = %s,\nSkwTimeout = %d,\n" % (literal([Atom(node) for node in others]), int(node_timeout * 1000))
    return bindings + link_binding(current_link) + SERVED_FUN + FACTS_FUN + MULTICALL


def node_expression(current_link=None):
    """The Erlang expression that returns one node's own facts."""
    return link_binding(current_link) + SERVED_FUN + FACTS_FUN + "SkwFacts()"


def down_reason(node, kind, reason):
    """A worker's erpc failure as a sentence (noconnection: ask its epmd why)."""
    if kind == "error" and reason in ("{erpc,noconnection}", "noconnection"):
        return diagnose_connect_failure(node).message
    if kind == "error" and reason == "{erpc,timeout}":
        return "node %s did not answer in time" % node
    return "node %s answered with %s: %s" % (node, kind, reason)


def gather_cluster(via, via_node, workers, node_timeout, direct, current_link=None):
    """{node: facts} for via (an ErlangNode) and the other nodes' names (`workers`: the other boot servers and the
    workers); a node that does not answer: {"down": reason}. With current_link, a boot server's facts hold `served`.

    direct(node_name) -> ErlangNode for a worker, used only when via itself does not answer.
    Raises ErlangNodeError for failures that are not about availability (cookie, erl_call).
    """
    try:
        answer = to_text(via.call(cluster_expression(workers, node_timeout, current_link), timeout=node_timeout + 5))
    except ErlangNodeError as exc:
        if exc.kind not in UNAVAILABLE_KINDS:
            raise
        nodes = {via_node: {"down": exc.message}}
        for worker in workers:
            nodes[worker] = call_directly(direct(worker), worker, current_link)
        return nodes
    nodes = {via_node: answer["self"]}
    for other in answer["others"]:
        if "facts" in other:
            nodes[other["node"]] = other["facts"]
        else:
            nodes[other["node"]] = {"down": down_reason(other["node"], other["class"], other["reason"])}
    return nodes


def call_directly(node, name, current_link=None):
    try:
        return to_text(node.call(node_expression(current_link)))
    except ErlangNodeError as exc:
        if exc.kind not in UNAVAILABLE_KINDS:
            raise
        return {"down": exc.message}
    finally:
        node.close()


def read_rollout_log(path):
    """Every rollout record (oldest first) and the number of lines that are not JSON objects.

    A missing log is no rollout yet: ([], 0).
    """
    records, bad = [], 0
    try:
        with open(path, "r") as log:
            lines = log.read().splitlines()
    except IOError as exc:
        if getattr(exc, "errno", None) == 2:
            return [], 0
        raise
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def rollout_line(record, recorded_at):
    """The rollout log's line for `record`: the record plus recorded_at (UTC), sorted JSON."""
    return json.dumps(dict(record, recorded_at=recorded_at), sort_keys=True)


def append_rollout(path, record, group=None):
    """Append `record` as one line of the rollout log; the line.

    The log is created root-owned (it is written as root), of `group` (the service user's), mode 0640.
    """
    line = rollout_line(record, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        # A last line without its newline (written by hand) is ended first, not joined.
        glue = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        os.write(fd, glue + line.encode("utf-8") + b"\n")
        os.fchmod(fd, 0o640)
        if group:
            os.fchown(fd, 0, grp.getgrnam(group).gr_gid)
    finally:
        os.close(fd)
    return line


def served_release(facts):
    """(release name, version) that a boot server's facts say its `current` link points at (`served`, read by the
    node itself: its release directory releases/<vsn> and the name of its <rel>.rel file), or None without one."""
    served = facts.get("served")
    if not isinstance(served, dict):
        return None
    names = served.get("names") or []
    return (names[0] if names else None), served.get("version")


def with_served_release(facts, served):
    """The boot server's facts with the release it serves (its own VM runs plain OTP, not the release)."""
    if served is None or "down" in facts:
        return facts
    facts = dict(facts, release_name=served[0], release_version=served[1])
    return facts


def last_restart(node, records):
    """(unavailable_ms, recorded_at, kind) of the newest record that restarted node, or None."""
    for record in reversed(records):
        for entry in record.get("nodes") or ():
            if entry.get("node") == node and entry.get("action") in RESTART_ACTIONS and entry.get("unavailable_ms") is not None:
                return entry["unavailable_ms"], record.get("recorded_at"), record.get("kind")
    return None


def node_row(node, role, facts, peers, records):
    """One row of the table, as data."""
    row = {"node": node, "role": role, "reachable": "down" not in facts}
    restart = last_restart(node, records)
    row["last_restart_unavailable_ms"] = restart[0] if restart else None
    row["last_restart_at"] = restart[1] if restart else None
    if not row["reachable"]:
        row.update(state="down", reason=facts["down"], release_name=None, release_version=None,
                   connected_nodes=[], missing_nodes=[], uptime_ms=None, applications_not_running=[])
        return row
    connected = facts.get("connected_nodes") or []
    failed_apps = facts.get("applications_not_running") or []
    state = "up" if facts.get("init_status") == "started" and not failed_apps else str(facts.get("init_status"))
    if failed_apps:
        state = "failing"
    row.update(state=state, reason=None, release_name=facts.get("release_name"), release_version=facts.get("release_version"),
               connected_nodes=connected, missing_nodes=[peer for peer in peers if peer not in connected],
               uptime_ms=facts.get("uptime_ms"), applications_not_running=failed_apps)
    return row


def status_rows(via_node, via_role, workers, nodes, records, boot_servers=()):
    """Rows for the boot server (via), the other boot servers, then each worker, in the order given."""
    members = ([(via_node, via_role)] + [(node, "boot_server") for node in boot_servers if node != via_node]
               + [(worker, "worker") for worker in workers])
    everyone = [name for name, _role in members]
    rows = []
    for name, role in members:
        peers = [peer for peer in everyone if peer != name]
        rows.append(node_row(name, role, nodes.get(name) or {"down": "not asked"}, peers, records))
    return rows


def duration(ms):
    """Milliseconds as 1.23 s, 4m05s, 3h02m or 2d04h."""
    if ms is None:
        return "-"
    seconds = ms / 1000.0
    if seconds < 60:
        return "%.2f s" % seconds
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return "%dd%02dh" % (days, hours)
    if hours:
        return "%dh%02dm" % (hours, minutes)
    return "%dm%02ds" % (minutes, seconds)


def columns(header, rows):
    """Left-aligned text columns, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header] + rows]


def peers_cell(row):
    if not row["reachable"]:
        return "-"
    if row["missing_nodes"]:
        return "MISSING " + ", ".join(row["missing_nodes"])
    return "all %d" % len(row["connected_nodes"])


def node_lines(rows):
    header = ("NODE", "ROLE", "STATE", "RELEASE", "PEERS", "UPTIME", "LAST RESTART DOWNTIME")
    cells = []
    for row in rows:
        release = "%s %s" % (row["release_name"], row["release_version"]) if row["reachable"] else "-"
        state = row["state"].upper() if row["state"] != "up" else "up"
        restart = duration(row["last_restart_unavailable_ms"])
        if row["last_restart_at"]:
            restart += " (%s)" % row["last_restart_at"]
        cells.append((row["node"], ROLE_LABELS.get(row["role"], row["role"]), state, release, peers_cell(row), duration(row["uptime_ms"]), restart))
    lines = columns(header, cells)
    for row in rows:
        if row["reason"]:
            lines.append("  %s: %s" % (row["node"], row["reason"]))
        elif row["applications_not_running"]:
            lines.append("  %s: applications not running: %s" % (row["node"], ", ".join(row["applications_not_running"])))
    return lines


def rollout_lines(record):
    """A rollout's summary: one heading, then one line per node."""
    heading = "Rollout %s: %s %s %s -> %s" % (
        record.get("recorded_at", "?"), record.get("kind", "?"), record.get("release_name", "?"),
        record.get("release_version", "?"), str(record.get("result", "?")).upper() if record.get("result") != "ok" else "ok")
    lines = [heading + (" (%s)" % record["message"] if record.get("message") else "")]
    cells = []
    for entry in record.get("nodes") or ():
        modules = entry.get("modules") or []
        cells.append(("  " + str(entry.get("node", "?")), str(entry.get("action", "?")), duration(entry.get("unavailable_ms")),
                      ", ".join(str(m) for m in modules) if modules else "-", entry.get("message") or ""))
    if cells:
        lines.extend(columns(("  NODE", "ACTION", "UNAVAILABLE", "MODULES", "MESSAGE"), cells))
    else:
        lines.append("  (no node)")
    return lines


def render(cluster, rows, records):
    """The whole status as lines of text: the node table, then each rollout, oldest first."""
    up = sum(1 for row in rows if row["state"] == "up")
    lines = ["Cluster %s: %d node(s), %d up, %d not up" % (cluster, len(rows), up, len(rows) - up)]
    lines.extend(node_lines(rows))
    if not records:
        lines.append("No rollout recorded on the boot server yet.")
    for record in records:
        lines.append("")
        lines.extend(rollout_lines(record))
    return lines
