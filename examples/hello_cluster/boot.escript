#!/usr/bin/env escript
%% -*- erlang -*-
%% Builds hello_cluster.boot/.script next to the .rel of a release made by `make release`.
%% `local` writes absolute paths: the boot file is tied to this directory (see README.md).
main([OutDir, Vsn]) ->
    RelDir = filename:join([OutDir, "releases", Vsn]),
    Lib = filename:join(OutDir, "lib"),
    Path = filelib:wildcard(filename:join([Lib, "*", "ebin"])) ++
           filelib:wildcard(filename:join([code:lib_dir(), "*", "ebin"])),
    Opts = [local, {outdir, RelDir}, {path, Path}, silent, no_warn_sasl],
    case systools:make_script(filename:join(RelDir, "hello_cluster"), Opts) of
        ok -> ok;
        {ok, _Module, []} -> ok;
        {ok, Module, Warnings} -> io:format("~ts", [Module:format_warning(Warnings)]);
        {error, Module, Reason} ->
            io:format(standard_error, "~ts", [Module:format_error(Reason)]),
            halt(1)
    end.
