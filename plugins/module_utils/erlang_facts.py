# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts about a running node: one expression shared by node_info and node_restart."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import to_text

# Loaded applications that are not running, included applications aside: in embedded mode
# the boot script loads every application of the release before starting it, so this names
# an application that failed to start (such a node answers for a moment before its VM exits).
# Not read from the boot file: that goes through the loader, which hangs while a boot server is down.
NOT_RUNNING = r"""
SkwNotRunning = fun() ->
    SkwRunning = [SkwR || {SkwR, _, _} <- application:which_applications(5000)],
    SkwIncluded = lists:append([SkwI || SkwR <- SkwRunning, {ok, SkwI} <- [application:get_key(SkwR, included_applications)]]),
    [SkwA || {SkwA, _, _} <- application:loaded_applications(), not lists:member(SkwA, SkwRunning ++ SkwIncluded)]
end,
"""

# The release a node runs: the one a hot code push loaded (the code_push module's kernel environment
# marker, which init:restart/0 drops), else the one its boot script names.
# The application controller's table is missing while a node restarts: then the boot script's.
PUSHED_RELEASE_KEY = "erlang_ec2_pushed_release"
RELEASE = r"""
{SkwRelName, SkwRelVsn} = case catch application:get_env(kernel, %s) of
    {ok, {SkwPushedName, SkwPushedVsn}} -> {SkwPushedName, SkwPushedVsn};
    _ -> init:script_id()
end,
""" % PUSHED_RELEASE_KEY

# Evaluated on the node; every string becomes a binary so that it decodes as text.
# `incarnation` (the application controller's pid) changes with every init:restart/0.
FACTS_EXPRESSION = NOT_RUNNING + RELEASE + r"""
SkwArg = fun(Key) ->
    case init:get_argument(Key) of
        {ok, Values} -> [unicode:characters_to_binary(V) || V <- lists:append(Values)];
        error -> []
    end
end,
{SkwStatus, _} = init:get_status(),
#{node => node(),
  otp_release => list_to_binary(erlang:system_info(otp_release)),
  erts_version => list_to_binary(erlang:system_info(version)),
  release_name => unicode:characters_to_binary(SkwRelName),
  release_version => unicode:characters_to_binary(SkwRelVsn),
  booted_release_version => unicode:characters_to_binary(element(2, init:script_id())),
  applications => [#{name => SkwA, description => unicode:characters_to_binary(SkwD), version => unicode:characters_to_binary(SkwV)}
                   || {SkwA, SkwD, SkwV} <- application:which_applications(5000)],
  connected_nodes => lists:sort(nodes()),
  loader => case SkwArg(loader) of [] -> <<"efile">>; [SkwL | _] -> SkwL end,
  boot_hosts => SkwArg(hosts),
  uptime_ms => element(1, erlang:statistics(wall_clock)),
  init_status => SkwStatus,
  applications_not_running => case SkwStatus of started -> SkwNotRunning(); _ -> [] end,
  incarnation => whereis(application_controller)}
"""

# The cheap subset polled (every ~75 ms) while a node restarts.
PROBE_EXPRESSION = NOT_RUNNING + RELEASE + r"""
{SkwStatus, _} = init:get_status(),
#{release_name => unicode:characters_to_binary(SkwRelName),
  release_version => unicode:characters_to_binary(SkwRelVsn),
  connected_nodes => lists:sort(nodes()),
  init_status => SkwStatus,
  applications_not_running => case SkwStatus of started -> SkwNotRunning(); _ -> [] end,
  incarnation => whereis(application_controller)}
"""


def gather(node, timeout=None, expression=FACTS_EXPRESSION):
    """Facts of an ErlangNode as a JSON-friendly dict (raises ErlangNodeError)."""
    return to_text(node.call(expression, timeout=timeout))


def probe(node, timeout=None):
    return gather(node, timeout=timeout, expression=PROBE_EXPRESSION)
