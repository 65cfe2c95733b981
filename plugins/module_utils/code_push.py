# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hot code push: load a release's changed modules into every running node, verified, reverted on failure.

Every step is one erl_call into the boot server's node, which reads both releases from its own disk
(``releases/<vsn>``), computes the beams' MD5 there (``beam_lib:md5/1``) and drives each node with
``rpc`` (all nodes at once, one process per node). The steps, as ``push()`` runs them:

1. ``plan`` (read-only): what the new release changes against the running one (``.rel`` and ``.app``
   files of both), the structural changes a hot load cannot do, and per node the modules whose running
   MD5 (``erlang:get_module_info(M, md5)``) differs from the new beam's; then on every node, for those
   modules, old code still in use (``erlang:check_old_code/1`` + ``erlang:check_process_code/2``) and
   the binaries' validity (``code:prepare_loading/1``, which changes nothing).
2. ``load``: on every node at once, purge old code (``code:soft_purge/1``, or ``code:purge/1`` with
   ``purge=kill``) and load the new binaries (``code:atomic_load/1``; modules with ``-on_load`` through
   ``code:load_binary/3``, which atomic loading refuses).
3. ``verify``: every node reports the new MD5s; nodes running the release then report the pushed
   release (``application_controller:change_application_data/2`` with the new ``.app`` data, as
   release_handler does, a kernel environment marker that ``init:restart/0`` drops, and the applications'
   code paths moved to the new release).
4. On any failure in 2 or 3: ``revert`` on every node that was touched (the previous binaries, read from
   the files the node loaded them from, their MD5 checked in 1; the previous application data).

The caller (the ``code_push`` module) switches nothing: the playbook switches ``current`` after success.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import binascii
import time

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import Atom, to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_facts import PUSHED_RELEASE_KEY
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import ErlangNodeError
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import literal

# The kernel environment key a push sets on each node running the release: {ReleaseName, Version} as binaries.
# It lives in the application controller's table, which init:restart/0 rebuilds: a restarted node forgets it.
# node_info (erlang_facts) reads it.
MARKER_KEY = PUSHED_RELEASE_KEY

# Funs evaluated on the other nodes (erl_eval funs: only stdlib is needed there). Defined first, so that
# their closures hold no large binding.
REMOTE_FUNS = r"""
SkwFactsR = fun(Mods) ->
    {SkwSN, _} = init:script_id(),
    #{script => unicode:characters_to_binary(SkwSN), erts => list_to_binary(erlang:system_info(version)),
      marker => application:get_env(kernel, %(marker)s, undefined),
      md5 => [{SkwM, case code:is_loaded(SkwM) of false -> not_loaded; _ -> erlang:get_module_info(SkwM, md5) end} || SkwM <- Mods],
      which => [{SkwM, case code:is_loaded(SkwM) of {file, SkwF} when is_list(SkwF) -> list_to_binary(SkwF); _ -> none end} || SkwM <- Mods]}
end,
SkwCheckR = fun(Items) ->
    SkwBlocked = [{SkwM, [list_to_binary(io_lib:format("~p ~0p", [SkwP, erlang:process_info(SkwP, [registered_name, current_function])]))
                          || SkwP <- processes(), erlang:check_process_code(SkwP, SkwM)]}
                  || {SkwM, _, _} <- Items, erlang:check_old_code(SkwM)],
    SkwPrep = case code:prepare_loading(Items) of {ok, _} -> []; {error, SkwE} -> SkwE end,
    #{blocked => [SkwB || {_, SkwPs} = SkwB <- SkwBlocked, SkwPs =/= []],
      invalid => [SkwI || {_, SkwR} = SkwI <- SkwPrep, SkwR =/= on_load_not_allowed],
      on_load => [SkwM || {SkwM, on_load_not_allowed} <- SkwPrep]}
end,
SkwLoadR = fun(Items, OnLoad, Kill) ->
    SkwPurge = fun(SkwM) -> case Kill of true -> code:purge(SkwM), true; false -> code:soft_purge(SkwM) end end,
    case [SkwM || {SkwM, _, _} <- Items ++ OnLoad, not SkwPurge(SkwM)] of
        [] ->
            case code:atomic_load(Items) of
                ok -> case [{SkwM, SkwR} || {SkwM, SkwF, SkwB} <- OnLoad, {error, SkwR} <- [code:load_binary(SkwM, SkwF, SkwB)]] of
                          [] -> ok;
                          SkwBad -> {error, SkwBad}
                      end;
                {error, SkwBad} -> {error, SkwBad}
            end;
        SkwBusy -> {error, [{SkwM, old_code_in_use} || SkwM <- SkwBusy]}
    end
end,
SkwVerifyR = fun(Expect, Specs, Marker, Paths) ->
    SkwWrong = [SkwM || {SkwM, SkwMd5} <- Expect,
                        not (code:is_loaded(SkwM) =/= false andalso erlang:get_module_info(SkwM, md5) =:= SkwMd5)],
    case {SkwWrong, Specs} of
        {[], skip} -> {ok, none};
        {[], _} ->
            SkwApps = [SkwA || {application, SkwA, _} <- Specs],
            SkwUndo = #{specs => [{application, SkwA, SkwK} || SkwA <- SkwApps, {ok, SkwK} <- [application:get_all_key(SkwA)]],
                        marker => application:get_env(kernel, %(marker)s),
                        paths => [{SkwA, SkwD} || SkwA <- SkwApps, SkwD <- [code:lib_dir(SkwA, ebin)], is_list(SkwD)]},
            SkwEnvs = [{SkwA, application:get_all_env(SkwA)} || SkwA <- SkwApps],
            ok = application_controller:change_application_data(Specs, []),
            _ = [application:set_env(SkwA, SkwK, SkwV) || {SkwA, SkwE} <- SkwEnvs, {SkwK, SkwV} <- SkwE],
            ok = application:set_env(kernel, %(marker)s, Marker),
            _ = [code:replace_path(SkwA, SkwD) || {SkwA, SkwD} <- Paths],
            {ok, term_to_binary(SkwUndo)};
        _ -> {error, [{SkwM, md5_mismatch} || SkwM <- SkwWrong]}
    end
end,
SkwRevertR = fun(Items, Undo) ->
    SkwFree = fun(SkwM) ->
        case lists:any(fun(_) -> code:soft_purge(SkwM) orelse (timer:sleep(50) =:= false) end, lists:seq(1, 20)) of
            true -> soft;
            false -> code:purge(SkwM), killed
        end
    end,
    SkwMd5Now = fun(SkwM) -> case code:is_loaded(SkwM) of false -> not_loaded; _ -> erlang:get_module_info(SkwM, md5) end end,
    SkwDone = [case SkwI of
                   {SkwM, delete} -> case SkwMd5Now(SkwM) of not_loaded -> {SkwM, unchanged};
                                         _ -> SkwFree(SkwM), code:delete(SkwM), {SkwM, SkwFree(SkwM)} end;
                   {SkwM, SkwF, SkwB, SkwO5} -> case SkwMd5Now(SkwM) of SkwO5 -> {SkwM, unchanged};
                                                    _ -> SkwFree(SkwM), {SkwM, code:load_binary(SkwM, SkwF, SkwB)} end
               end || SkwI <- Items],
    case Undo of
        none -> ok;
        _ ->
            #{specs := SkwSpecs, marker := SkwMarker, paths := SkwPaths} = binary_to_term(Undo),
            SkwEnvs = [{SkwA, application:get_all_env(SkwA)} || {application, SkwA, _} <- SkwSpecs],
            application_controller:change_application_data(SkwSpecs, []),
            _ = [application:set_env(SkwA, SkwK, SkwV) || {SkwA, SkwE} <- SkwEnvs, {SkwK, SkwV} <- SkwE],
            case SkwMarker of {ok, SkwV} -> application:set_env(kernel, %(marker)s, SkwV); undefined -> application:unset_env(kernel, %(marker)s) end,
            _ = [code:replace_path(SkwA, SkwD) || {SkwA, SkwD} <- SkwPaths],
            ok
    end,
    SkwDone
end,
""" % {"marker": MARKER_KEY}

# On the boot server's node: both releases, from its disk. `SkwIn` is the input map.
RELEASES = r"""
SkwTimeout = maps:get(call_timeout, SkwIn),
SkwOnNodes = fun(Nodes, FunOfNode) ->
    SkwRefs = [{SkwN, spawn_monitor(fun() -> exit({skw_done, FunOfNode(SkwN)}) end)} || SkwN <- Nodes],
    [{SkwN, receive {'DOWN', SkwRef, process, SkwPid, {skw_done, SkwR}} -> SkwR;
                    {'DOWN', SkwRef, process, SkwPid, SkwOther} -> {badrpc, SkwOther} end} || {SkwN, {SkwPid, SkwRef}} <- SkwRefs]
end,
SkwRpc = fun(SkwN, SkwF, SkwA) -> rpc:call(SkwN, erlang, apply, [SkwF, SkwA], SkwTimeout * 1000) end,
SkwFmt = fun(SkwS, SkwA) -> unicode:characters_to_binary(io_lib:format(SkwS, SkwA)) end,
SkwReadRel = fun(Dir) ->
    case filelib:wildcard(filename:join(Dir, "*.rel")) of
        [SkwF] -> {ok, [{release, {SkwN, SkwV}, {erts, SkwE}, SkwAs}]} = file:consult(SkwF),
                  #{name => SkwN, vsn => SkwV, erts => SkwE, dir => Dir, apps => [{element(1, SkwA), element(2, SkwA)} || SkwA <- SkwAs]};
        SkwOther -> error({no_single_rel_file, Dir, SkwOther})
    end
end,
SkwAppDir = fun(Rel, SkwA) ->
    SkwV = proplists:get_value(SkwA, maps:get(apps, Rel)),
    SkwOwn = filename:join([maps:get(dir, Rel), "lib", atom_to_list(SkwA) ++ "-" ++ SkwV]),
    case filelib:is_dir(SkwOwn) of true -> SkwOwn; false -> filename:join([code:root_dir(), "lib", atom_to_list(SkwA) ++ "-" ++ SkwV]) end
end,
SkwAppProps = fun(Rel, SkwA) ->
    {ok, [{application, SkwA, SkwP}]} = file:consult(filename:join([SkwAppDir(Rel, SkwA), "ebin", atom_to_list(SkwA) ++ ".app"])),
    SkwP
end,
SkwMd5 = fun(SkwF) -> case beam_lib:md5(SkwF) of {ok, {_, SkwX}} -> SkwX; SkwE -> error({cannot_read_beam, SkwF, SkwE}) end end,
SkwBeam = fun(Rel, SkwA, SkwM) -> filename:join([SkwAppDir(Rel, SkwA), "ebin", atom_to_list(SkwM) ++ ".beam"]) end,
SkwOld = SkwReadRel(binary_to_list(maps:get(old_dir, SkwIn))),
SkwNew = SkwReadRel(binary_to_list(maps:get(new_dir, SkwIn))),
SkwOldApps = [SkwA || {SkwA, _} <- maps:get(apps, SkwOld)],
SkwNewApps = [SkwA || {SkwA, _} <- maps:get(apps, SkwNew)],
%% Applications whose directory differs between the releases (the others are the same files).
SkwMoved = [SkwA || SkwA <- SkwNewApps, lists:member(SkwA, SkwOldApps), SkwAppDir(SkwOld, SkwA) =/= SkwAppDir(SkwNew, SkwA)],
SkwMods = fun(Rel, SkwA) -> proplists:get_value(modules, SkwAppProps(Rel, SkwA), []) end,
%% #{Module => {App, NewFile, NewMd5, OldMd5 | none}} for every module of a moved application.
SkwBeams = maps:from_list([{SkwM, {SkwA, SkwBeam(SkwNew, SkwA, SkwM), SkwMd5(SkwBeam(SkwNew, SkwA, SkwM)),
                                   case lists:member(SkwM, SkwMods(SkwOld, SkwA)) of true -> SkwMd5(SkwBeam(SkwOld, SkwA, SkwM)); false -> none end}}
                           || SkwA <- SkwMoved, SkwM <- SkwMods(SkwNew, SkwA)]),
SkwChangedInRel = [SkwM || {SkwM, {_, _, SkwN5, SkwO5}} <- maps:to_list(SkwBeams), SkwN5 =/= SkwO5],
SkwFile = fun(Rel, SkwName) -> case file:read_file(filename:join(maps:get(dir, Rel), SkwName)) of {ok, SkwB} -> SkwB; _ -> none end end,
SkwIsSup = fun(SkwM) ->
    {_, SkwF, _, _} = maps:get(SkwM, SkwBeams),
    case beam_lib:chunks(SkwF, [attributes]) of
        {ok, {_, [{attributes, SkwAt}]}} -> lists:member(supervisor, proplists:get_value(behaviour, SkwAt, []) ++ proplists:get_value(behavior, SkwAt, []));
        _ -> false
    end
end,
%% The files workers copy to their own disk before they boot (priv trees; boot_script's manifest), by path
%% relative to the release (application directories without their version).
SkwNorm = fun(SkwDir, SkwP) ->
    case string:prefix(SkwP, SkwDir ++ "/") of
        nomatch -> SkwP;
        SkwRest -> "release/" ++ re:replace(SkwRest, "^lib/([^/]+)-[^/]+/", "lib/\\1/", [{return, list}])
    end
end,
SkwLocal = fun(Rel) ->
    case filelib:wildcard(filename:join(maps:get(dir, Rel), "*.local_files")) of
        [SkwMF] -> {ok, [_ | SkwEs]} = file:consult(SkwMF),
                   [{SkwNorm(maps:get(dir, Rel), SkwP), SkwSz, SkwMd} || {file, SkwP, SkwSz, _, SkwMd} <- SkwEs];
        _ -> []
    end
end,
SkwLocalChanged = lists:usort([SkwP || {SkwP, _, _} <- (SkwLocal(SkwOld) -- SkwLocal(SkwNew)) ++ (SkwLocal(SkwNew) -- SkwLocal(SkwOld)),
                                       SkwP =/= "release/vm.args"]),
SkwStructural =
    [SkwFmt("the release is ~s, the running one ~s", [maps:get(name, SkwNew), maps:get(name, SkwOld)]) || maps:get(name, SkwNew) =/= maps:get(name, SkwOld)]
    ++ [SkwFmt("new application ~s", [SkwA]) || SkwA <- SkwNewApps -- SkwOldApps]
    ++ [SkwFmt("application ~s removed", [SkwA]) || SkwA <- SkwOldApps -- SkwNewApps]
    ++ [SkwFmt("application ~s: ~s changes from ~0p to ~0p", [SkwA, SkwK, SkwOV, SkwNV])
        || SkwA <- SkwMoved, SkwK <- [mod, applications, included_applications, start_phases],
           SkwOV <- [proplists:get_value(SkwK, SkwAppProps(SkwOld, SkwA))], SkwNV <- [proplists:get_value(SkwK, SkwAppProps(SkwNew, SkwA))], SkwOV =/= SkwNV]
    ++ [SkwFmt("module ~s of ~s removed", [SkwM, SkwA]) || SkwA <- SkwMoved, SkwM <- SkwMods(SkwOld, SkwA) -- SkwMods(SkwNew, SkwA)]
    ++ [SkwFmt("supervisor ~s changes (its supervision tree applies at restart)", [SkwM]) || SkwM <- lists:sort(SkwChangedInRel), SkwIsSup(SkwM)]
    ++ [SkwFmt("~s differs (read at boot only)", [SkwName]) || SkwName <- ["sys.config", "vm.args"], SkwFile(SkwOld, SkwName) =/= SkwFile(SkwNew, SkwName)]
    ++ [SkwFmt("local file ~s differs (workers copy priv files to their disk before they boot)", [SkwP]) || SkwP <- SkwLocalChanged],
SkwNodes = maps:get(nodes, SkwIn),
SkwMarker = {unicode:characters_to_binary(maps:get(name, SkwNew)), unicode:characters_to_binary(maps:get(vsn, SkwNew))},
SkwSpecs = [{application, SkwA, SkwAppProps(SkwNew, SkwA)} || SkwA <- SkwMoved],
SkwPaths = [{SkwA, filename:join(SkwAppDir(SkwNew, SkwA), "ebin")} || SkwA <- SkwMoved],
SkwNewBin = fun(SkwM) -> {_, SkwF, _, _} = maps:get(SkwM, SkwBeams), {ok, SkwB} = file:read_file(SkwF), {SkwM, SkwF, SkwB} end,
"""

# Per node: what changes there. A node running the release (its boot script or a previous push names it)
# takes every module whose running MD5 differs from the new beam's and is the old release's (or a module
# new in the release); any other node (the boot server) only the modules it runs from the old release.
PLAN = r"""
SkwAllMods = lists:sort(maps:keys(SkwBeams)),
SkwFacts = SkwOnNodes(SkwNodes, fun(SkwN) -> SkwRpc(SkwN, SkwFactsR, [SkwAllMods]) end),
SkwPlanOf = fun(SkwN, #{script := SkwScript, erts := SkwErts, md5 := SkwRun, which := SkwWhich, marker := SkwMk}) ->
        SkwRelName = unicode:characters_to_binary(maps:get(name, SkwNew)),
        SkwRuns = SkwScript =:= SkwRelName orelse (case SkwMk of {SkwMN, _} -> SkwMN =:= SkwRelName; _ -> false end),
        SkwEach = [{SkwM, SkwR, maps:get(SkwM, SkwBeams)} || {SkwM, SkwR} <- SkwRun],
        SkwTake = [{SkwM, SkwR} || {SkwM, SkwR, {_, _, SkwN5, SkwO5}} <- SkwEach, SkwR =/= SkwN5,
                                   (SkwR =:= SkwO5) orelse (SkwRuns andalso SkwR =:= not_loaded andalso SkwO5 =:= none)],
        SkwUnknown = [SkwM || {SkwM, SkwR, {_, _, SkwN5, SkwO5}} <- SkwEach, SkwRuns, SkwR =/= not_loaded, SkwR =/= SkwN5, SkwR =/= SkwO5],
        #{node => SkwN, runs_release => SkwRuns, erts => SkwErts, unknown => SkwUnknown,
          modules => [#{module => SkwM, old_md5 => SkwR, new_md5 => element(3, maps:get(SkwM, SkwBeams)),
                        old_file => case SkwR of not_loaded -> none; _ -> proplists:get_value(SkwM, SkwWhich) end} || {SkwM, SkwR} <- SkwTake]};
    (SkwN, SkwBad) -> #{node => SkwN, unreachable => SkwFmt("~0p", [SkwBad])}
end,
SkwPlans = [SkwPlanOf(SkwN, SkwF) || {SkwN, SkwF} <- SkwFacts],
SkwChecks = SkwOnNodes([SkwN || #{node := SkwN, modules := [_ | _]} <- SkwPlans],
    fun(SkwN) -> [SkwP] = [SkwP || #{node := SkwX} = SkwP <- SkwPlans, SkwX =:= SkwN],
                 SkwRpc(SkwN, SkwCheckR, [[SkwNewBin(SkwM) || #{module := SkwM} <- maps:get(modules, SkwP)]]) end),
#{release => SkwMarker, running => {unicode:characters_to_binary(maps:get(name, SkwOld)), unicode:characters_to_binary(maps:get(vsn, SkwOld))},
  release_erts => unicode:characters_to_binary(maps:get(erts, SkwNew)),
  structural => SkwStructural, nodes => SkwPlans, checks => SkwChecks}
"""

# `SkwIn` also holds `plan`: [{Node, [Module], [OnLoadModule]}].
LOAD = r"""
SkwOnNodes([SkwN || {SkwN, _, _} <- maps:get(plan, SkwIn)], fun(SkwN) ->
    [{SkwMs, SkwOL}] = [{SkwMs, SkwOL} || {SkwX, SkwMs, SkwOL} <- maps:get(plan, SkwIn), SkwX =:= SkwN],
    SkwRpc(SkwN, SkwLoadR, [[SkwNewBin(SkwM) || SkwM <- SkwMs -- SkwOL], [SkwNewBin(SkwM) || SkwM <- SkwOL], maps:get(kill, SkwIn)])
end)
"""

# `plan`: [{Node, [Module], RunsRelease}]: MD5 check, then the release's application data.
VERIFY = r"""
SkwOnNodes([SkwN || {SkwN, _, _} <- maps:get(plan, SkwIn)], fun(SkwN) ->
    [{SkwMs, SkwRuns}] = [{SkwMs, SkwRuns} || {SkwX, SkwMs, SkwRuns} <- maps:get(plan, SkwIn), SkwX =:= SkwN],
    SkwRpc(SkwN, SkwVerifyR, [[{SkwM, element(3, maps:get(SkwM, SkwBeams))} || SkwM <- SkwMs],
                              case SkwRuns of true -> SkwSpecs; false -> skip end, SkwMarker, SkwPaths])
end)
"""

# `plan`: [{Node, [{Module, OldFile | none, OldMd5}], Undo}]: the previous binaries back (read here, MD5 checked
# by plan), on the modules not already at their old MD5.
REVERT = r"""
SkwOnNodes([SkwN || {SkwN, _, _} <- maps:get(plan, SkwIn)], fun(SkwN) ->
    [{SkwMs, SkwUndo}] = [{SkwMs, SkwUndo} || {SkwX, SkwMs, SkwUndo} <- maps:get(plan, SkwIn), SkwX =:= SkwN],
    SkwItems = [case SkwF of
                    none -> {SkwM, delete};
                    _ -> {ok, SkwB} = file:read_file(SkwF), {SkwM, binary_to_list(SkwF), SkwB, SkwO5}
                end || {SkwM, SkwF, SkwO5} <- SkwMs],
    SkwRpc(SkwN, SkwRevertR, [SkwItems, SkwUndo])
end)
"""


class PushError(Exception):
    """A push refused or failed; ``result`` holds what the module reports."""

    def __init__(self, message, result):
        super(PushError, self).__init__(message)
        self.message = message
        self.result = result


def program(params, step, extra=None):
    """The Erlang expression sequence for one step ('plan', 'load', 'verify', 'revert')."""
    data = {Atom("old_dir"): params["old_dir"], Atom("new_dir"): params["new_dir"],
            Atom("nodes"): [Atom(node) for node in params["nodes"]], Atom("call_timeout"): params["call_timeout"],
            Atom("kill"): params["purge"] == "kill"}
    data.update(extra or {})
    body = {"plan": PLAN, "load": LOAD, "verify": VERIFY, "revert": REVERT}[step]
    return REMOTE_FUNS + "SkwIn = %s,\n" % literal(data) + RELEASES + body


def hex_md5(value):
    if isinstance(value, bytes):
        return binascii.hexlify(value).decode("ascii")
    return str(value)


def node_plans(plan):
    """{node: {"modules": [...], ...}} with readable MD5s, from the raw plan's nodes."""
    nodes = {}
    for raw in plan["nodes"]:
        entry = dict((str(key), value) for key, value in raw.items())
        node = str(entry["node"])
        modules = [dict((str(k), v) for k, v in item.items()) for item in entry.get("modules", [])]
        nodes[node] = {
            "unreachable": to_text(entry.get("unreachable")),
            "runs_release": bool(entry.get("runs_release")),
            "erts": to_text(entry.get("erts")),
            "unknown": [str(m) for m in entry.get("unknown", [])],
            "modules": [{"module": str(m["module"]), "old_md5": hex_md5(m["old_md5"]), "new_md5": hex_md5(m["new_md5"]),
                         "old_file": m["old_file"] if isinstance(m["old_file"], bytes) else None} for m in modules],
        }
    return nodes


def check_results(plan):
    """{node: {"blocked": {module: [process]}, "invalid": {module: reason}, "on_load": [module]}} or the rpc failure."""
    checks = {}
    for node, answer in plan["checks"]:
        if not isinstance(answer, dict):
            checks[str(node)] = {"error": str(to_text(answer))}
            continue
        checks[str(node)] = {
            "blocked": dict((str(m), to_text(ps)) for m, ps in answer[Atom("blocked")]),
            "invalid": dict((str(m), str(to_text(r))) for m, r in answer[Atom("invalid")]),
            "on_load": [str(m) for m in answer[Atom("on_load")]],
        }
    return checks


def run_step(node, params, step, extra=None):
    """One step on the boot server's node (raises ErlangNodeError)."""
    return node.call(program(params, step, extra), timeout=params["call_timeout"] * 3 + 10)


def refusals(plan, nodes, checks, purge):
    """Why the push cannot go ahead, one line each naming the node and module (structural changes aside)."""
    erts = to_text(plan["release_erts"])
    lines = []
    for name, entry in sorted(nodes.items()):
        if entry["unreachable"]:
            lines.append("%s: did not answer (%s)" % (name, entry["unreachable"]))
            continue
        if entry["erts"] != erts:
            lines.append("%s: runs ERTS %s, the release names ERTS %s" % (name, entry["erts"], erts))
        for module in entry["unknown"]:
            lines.append("%s: runs a version of %s from neither release (cannot revert it)" % (name, module))
    for name, check in sorted(checks.items()):
        if "error" in check:
            lines.append("%s: the check failed: %s" % (name, check["error"]))
            continue
        for module, reason in sorted(check["invalid"].items()):
            lines.append("%s: refuses the new %s (%s)" % (name, module, reason))
        if purge != "kill":
            for module, processes in sorted(check["blocked"].items()):
                lines.append("%s: processes still run old code of %s (purge: kill would kill them): %s"
                             % (name, module, ", ".join(processes)))
    return lines


def diff_of(nodes):
    """Ansible diff: per node, the modules and MD5s before and after."""
    before, after = [], []
    for name, entry in sorted(nodes.items()):
        for item in entry["modules"]:
            before.append("%s %s %s\n" % (name, item["module"], item["old_md5"]))
            after.append("%s %s %s\n" % (name, item["module"], item["new_md5"]))
    return {"before": "".join(before), "after": "".join(after), "before_header": "running modules", "after_header": "pushed modules"}


def step_failures(answers):
    """{node: message} for the nodes whose step did not answer ok / {ok, _}."""
    failed = {}
    for node, answer in answers:
        if answer == "ok" or (isinstance(answer, tuple) and answer and answer[0] == "ok"):
            continue
        if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == "error" and isinstance(answer[1], list):
            failed[str(node)] = ", ".join("%s: %s" % (to_text(item[0]), to_text(item[1])) if isinstance(item, tuple) else str(to_text(item))
                                          for item in answer[1])
        else:
            failed[str(node)] = str(to_text(answer))
    return failed


def load_and_verify(node, params, nodes, checks):
    """Load, then verify; returns (failures {node: message}, undo {node: term})."""
    changing = [name for name, entry in sorted(nodes.items()) if entry["modules"]]
    load_plan = [(Atom(name), [Atom(m["module"]) for m in nodes[name]["modules"]],
                  [Atom(m) for m in checks.get(name, {}).get("on_load", [])]) for name in changing]
    failures = step_failures(run_step(node, params, "load", {Atom("plan"): load_plan}))
    if failures:
        return failures, {}
    verify_plan = [(Atom(name), [Atom(m["module"]) for m in entry["modules"]], entry["runs_release"])
                   for name, entry in sorted(nodes.items()) if entry["modules"] or entry["runs_release"]]
    answers = run_step(node, params, "verify", {Atom("plan"): verify_plan})
    undo = dict((str(name), answer[1]) for name, answer in answers
                if isinstance(answer, tuple) and answer and answer[0] == "ok")
    return step_failures(answers), undo


def revert(node, params, nodes, undo):
    """Put the previous binaries (and application data) back wherever the push changed something."""
    revert_plan = []
    for name, entry in sorted(nodes.items()):
        if not entry["modules"] and name not in undo:
            continue
        items = [(Atom(m["module"]), m["old_file"] if m["old_file"] else Atom("none"),
                  binascii.unhexlify(m["old_md5"]) if m["old_md5"] != "not_loaded" else Atom("not_loaded"))
                 for m in entry["modules"]]
        revert_plan.append((Atom(name), items, undo.get(name, Atom("none"))))
    answers = run_step(node, params, "revert", {Atom("plan"): revert_plan})
    problems = {}
    for name, answer in answers:
        if not isinstance(answer, list):
            problems[str(name)] = str(to_text(answer))
            continue
        bad = [str(to_text(item)) for item in answer if not (isinstance(item, tuple) and (
            item[1] in ("unchanged", "soft", "killed") or (isinstance(item[1], tuple) and item[1][0] == "module")))]
        if bad:
            problems[str(name)] = "; ".join(bad)
    return problems


def node_report(nodes, action_of, messages=None):
    """The per-node list the module returns and the rollout log records."""
    report = []
    for name, entry in sorted(nodes.items()):
        action = action_of(name, entry)
        report.append({"node": name, "action": action, "unavailable_ms": 0,
                       "modules": [m["module"] for m in entry["modules"]],
                       "message": (messages or {}).get(name, "")})
    return report


def plan_push(node, params):
    """The read-only step: (result dict, nodes, checks). Raises PushError for a refused push."""
    plan = dict((str(k), v) for k, v in run_step(node, params, "plan").items())
    nodes, checks = node_plans(plan), check_results(plan)
    release, running = [to_text(part) for part in plan["release"]], [to_text(part) for part in plan["running"]]
    structural = [to_text(line) for line in plan["structural"]]
    result = {"release_name": release[0], "release_version": release[1], "running_version": running[1],
              "structural": structural, "diff": diff_of(nodes),
              "nodes": node_report(nodes, lambda name, entry: "push" if entry["modules"] else "skip")}
    problems = refusals(plan, nodes, checks, params["purge"])
    if problems:
        result["refusals"] = problems
        raise PushError("Refusing to push %s %s; nothing was changed on any node. %s"
                        % (release[0], release[1], " ".join(problems)), result)
    if structural and not params["allow_structural"]:
        raise PushError("Refusing to push %s %s, a hot load cannot do it; nothing was changed. %s. "
                        "Deploy it with a rolling restart (allow_structural: true falls back to one)."
                        % (release[0], release[1], "; ".join(structural)), result)
    return result, nodes, checks


def push(node, params, check_mode):
    """Plan, then (not in check mode) load, verify, and revert on failure. Returns the module's result."""
    result, nodes, checks = plan_push(node, params)
    changing = any(entry["modules"] for entry in nodes.values()) or result["release_version"] != result["running_version"]
    result["changed"] = bool(changing and not result["structural"])
    result["fallback"] = "rolling_restart" if result["structural"] else "none"
    if check_mode or not result["changed"]:
        return result
    started = time.monotonic()
    try:
        failures, undo = load_and_verify(node, params, nodes, checks)
        result["load_ms"] = int((time.monotonic() - started) * 1000)
    except ErlangNodeError as exc:
        # The boot server's node did not answer a step: put back what may have changed.
        failures, undo = {str(params["node"]): exc.message}, {}
    if not failures:
        result["nodes"] = node_report(nodes, lambda name, entry: "pushed" if entry["modules"] else "skipped")
        return result
    problems = revert(node, params, nodes, undo)
    touched = set(name for name, entry in nodes.items() if entry["modules"]) | set(undo)
    result["nodes"] = node_report(
        nodes, lambda name, entry: "failed" if name in failures or name in problems else ("reverted" if name in touched else "skipped"),
        dict((name, failures.get(name, "") + (" revert: " + problems[name] if name in problems else "")) for name in touched))
    result["changed"] = False
    message = "Push of %s %s failed on %s; %s" % (
        result["release_name"], result["release_version"],
        "; ".join("%s: %s" % item for item in sorted(failures.items())),
        "every node is back on its previous code." if not problems else
        "the revert FAILED on %s: check these nodes." % ", ".join(sorted(problems)))
    raise PushError(message, result)
