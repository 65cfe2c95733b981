#!/usr/bin/env escript
%% -*- erlang -*-
%% Writes releases/<Vsn>/hello_cluster.rel and sys.config under OutDir.
%% ERTS and OTP application versions are read from the OTP running this script,
%% so the release matches the OTP the cluster runs (the boot server requires the same ERTS).
%% Usage: release.escript Vsn OutDir HttpPort SyncNodes SyncTimeoutMs DistMin DistMax [tcp|tls]
%%   SyncNodes: comma-separated node names or ""; DistMin/DistMax: "" to leave unset.
%%   tls: the release also holds ssl and what it needs, because a diskless worker boots in embedded mode,
%%   where -proto_dist inet_tls finds inet_tls_dist only if ssl is in the boot script (docs/tls.md).
main([Vsn, OutDir, HttpPort, SyncNodes, SyncTimeout, DistMin, DistMax]) ->
    main([Vsn, OutDir, HttpPort, SyncNodes, SyncTimeout, DistMin, DistMax, "tcp"]);
main([Vsn, OutDir, HttpPort, SyncNodes, SyncTimeout, DistMin, DistMax, Dist]) when Dist =:= "tcp"; Dist =:= "tls" ->
    Apps = [kernel, stdlib, sasl, inets] ++ tls_apps(Dist),
    [ok = load(App) || App <- Apps],
    Loaded = application:loaded_applications(),
    AppVsns = [{App, element(3, lists:keyfind(App, 1, Loaded))} || App <- Apps],
    Rel = {release, {"hello_cluster", Vsn}, {erts, erlang:system_info(version)},
           AppVsns ++ [{hello_cluster, Vsn}]},
    Dir = filename:join([OutDir, "releases", Vsn]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    ok = write_term(filename:join(Dir, "hello_cluster.rel"), Rel),
    Kernel = sync_nodes(SyncNodes, SyncTimeout) ++ dist_ports(DistMin, DistMax),
    SysConfig = [{hello_cluster, [{http_port, list_to_integer(HttpPort)}]}, {kernel, Kernel}],
    ok = write_term(filename:join(Dir, "sys.config"), SysConfig);
main(_) ->
    io:format(standard_error, "usage: release.escript Vsn OutDir HttpPort SyncNodes SyncTimeoutMs DistMin DistMax [tcp|tls]~n", []),
    halt(2).

tls_apps("tls") -> [crypto, asn1, public_key, ssl];
tls_apps("tcp") -> [].

load(App) ->
    case application:load(App) of
        ok -> ok;
        {error, {already_loaded, App}} -> ok
    end.

sync_nodes("", _) -> [];
sync_nodes(Nodes, Timeout) ->
    [{sync_nodes_optional, [list_to_atom(N) || N <- string:lexemes(Nodes, ",")]},
     {sync_nodes_timeout, list_to_integer(Timeout)}].

dist_ports("", _) -> [];
dist_ports(Min, Max) ->
    [{inet_dist_listen_min, list_to_integer(Min)}, {inet_dist_listen_max, list_to_integer(Max)}].

write_term(File, Term) ->
    file:write_file(File, io_lib:format("~tp.~n", [Term])).
