%% The files a diskless worker reads from its own disk, copied from its boot server.
%%
%% The inet loader fetches code from the boot server, but erlang:load_nif/2, every read of
%% code:priv_dir/1 and erl's -args_file go to the worker's own disk, at the absolute paths the
%% boot script names. The boot_script module lists those files, with their MD5, in
%% <boot file>.local_files (the manifest). This module runs on the worker in a short-lived VM
%% booted from the boot server (`erl -loader inet -hosts <boot server>`, no distribution, no
%% cookie), so it reaches the boot server through the loader channel the worker already uses:
%%
%%   erl -loader inet -hosts IP -boot start_clean -noshell -pa <this ebin on the boot server> \
%%       -run erlang_ec2_local_files main BOOT ROOT ACTION
%%
%% BOOT is the worker's -boot path without .boot (a path on the boot server), ROOT the release root
%% (the host layout's release root, given by the caller) and ACTION one of:
%%   start  copy what differs, point ROOT/current at the release, prune releases the boot server no
%%          longer has (run by the worker unit before every start);
%%   sync   copy what differs and prune, leave ROOT/current (before an init:restart/0 into a release);
%%   check  copy nothing, say what differs (exit 3 when something does).
%% It is served by the boot server from its own ebin directory, so workers need nothing but erl.
%% One result line on stdout: `local_files release=<name>-<vsn> files=N copied=M pruned=P vm_args=same|changed`.
-module(erlang_ec2_local_files).
-export([main/1]).

main([Boot, Root, Action]) when Action =:= "start"; Action =:= "sync"; Action =:= "check" ->
    Code = try run(Boot, Root, list_to_atom(Action)) of
               {ok, Line} -> io:put_chars([Line, $\n]), 0;
               {differs, Line} -> io:put_chars([Line, $\n]), 3
           catch
               throw:{fail, Fmt, Args} ->
                   io:format(standard_error, "erlang-ec2-local-files: " ++ Fmt ++ "~n", Args),
                   1
           end,
    erlang:halt(Code);
main(Args) ->
    io:format(standard_error, "usage: erlang_ec2_local_files main BOOT ROOT start|sync|check (got ~p)~n", [Args]),
    erlang:halt(2).

run(Boot, Root, Action) ->
    case manifest(Boot) of
        none ->
            {ok, "local_files release=unknown files=0 copied=0 pruned=0 (the boot server has no "
                 ++ Boot ++ ".local_files: nothing to copy)"};
        {Name, Vsn, Files} ->
            Allowed = [filename:join(Root, "releases") ++ "/", code:lib_dir() ++ "/"],
            [check_path(Path, Allowed) || {Path, _, _, _} <- Files],
            Differ = [F || F <- Files, not in_place(F)],
            Summary = fun(Copied, Pruned) ->
                              io_lib:format("local_files release=~s-~s files=~b copied=~b pruned=~b",
                                            [Name, Vsn, length(Files), Copied, Pruned])
                      end,
            case Action of
                check when Differ =:= [] ->
                    {ok, Summary(0, 0)};
                check ->
                    {differs, [Summary(0, 0), " differs=", lists:join(",", [P || {P, _, _, _} <- Differ])]};
                _ ->
                    [copy(F) || F <- Differ],
                    Release = filename:join([Root, "releases", Vsn]),
                    ok = filelib:ensure_dir(filename:join(Release, "x")),
                    Action =:= start andalso switch(filename:join(Root, "current"), Release),
                    {ok, [Summary(length(Differ), prune(Root, Vsn)), " vm_args=", vm_args(Root, Release)]}
            end
    end.

%% `changed` when the release's vm.args differs from the one the running VM was started with
%% (ROOT/current/vm.args): its flags then take effect only by starting a new VM, not by init:restart/0.
vm_args(Root, Release) ->
    case {file:read_file(filename:join(Release, "vm.args")), file:read_file(filename:join([Root, "current", "vm.args"]))} of
        {{ok, Same}, {ok, Same}} -> "same";
        _ -> "changed"
    end.

manifest(Boot) ->
    case erl_prim_loader:get_file(Boot ++ ".local_files") of
        {ok, Bin, _} -> parse(Bin);
        error ->
            case erl_prim_loader:get_file(Boot ++ ".boot") of
                {ok, _, _} -> none;
                error -> throw({fail, "cannot read ~s.boot from the boot server", [Boot]})
            end
    end.

parse(Bin) ->
    case forms(binary_to_list(Bin), []) of
        [{local_files, 1, Name, Vsn} | Entries] ->
            {Name, Vsn, [entry(E) || E <- Entries]};
        _ ->
            throw({fail, "the manifest is not a local_files manifest (version 1)", []})
    end.

forms(Text, Acc) ->
    case erl_scan:tokens([], Text, 1) of
        {done, {ok, Tokens, _}, Rest} ->
            case erl_parse:parse_term(Tokens) of
                {ok, Term} -> forms(Rest, [Term | Acc]);
                {error, _} -> throw({fail, "unreadable manifest term", []})
            end;
        {more, _} ->
            lists:reverse(Acc);
        _ ->
            throw({fail, "unreadable manifest", []})
    end.

entry({file, Path, Size, Mode, Md5}) when is_list(Path), is_integer(Size), is_integer(Mode), is_list(Md5) ->
    {Path, Size, Mode band 8#755, Md5};
entry(Other) ->
    throw({fail, "bad manifest entry ~0p", [Other]}).

%% Only under the release tree or the OTP library directory, and never through `..`.
check_path(Path, Allowed) ->
    Parts = filename:split(Path),
    Safe = filename:pathtype(Path) =:= absolute andalso not lists:member("..", Parts)
        andalso lists:any(fun(Prefix) -> lists:prefix(Prefix, Path) end, Allowed),
    Safe orelse throw({fail, "refusing manifest path ~s: not under ~s", [Path, lists:join(" or ", Allowed)]}).

in_place({Path, Size, Mode, Md5}) ->
    case file:read_file_info(Path) of
        {ok, Info} when element(2, Info) =:= Size, element(8, Info) band 8#755 =:= Mode ->
            {ok, Bin} = file:read_file(Path),
            hex(erlang:md5(Bin)) =:= Md5;
        _ ->
            false
    end.

copy({Path, Size, Mode, Md5}) ->
    Bin = case erl_prim_loader:get_file(Path) of
              {ok, B, _} -> B;
              error -> throw({fail, "cannot read ~s from the boot server", [Path]})
          end,
    byte_size(Bin) =:= Size andalso hex(erlang:md5(Bin)) =:= Md5
        orelse throw({fail, "~s from the boot server does not match the manifest (changed meanwhile?)", [Path]}),
    ok = filelib:ensure_dir(Path),
    Tmp = Path ++ ".erlang-ec2-tmp",
    ok = file:write_file(Tmp, Bin),
    ok = file:change_mode(Tmp, Mode),
    ok = file:rename(Tmp, Path).

%% Rename a new symlink over the old one: erl reading ROOT/current/vm.args sees one release.
switch(Link, Target) ->
    Tmp = Link ++ ".erlang-ec2-tmp",
    _ = file:delete(Tmp),
    ok = file:make_symlink(Target, Tmp),
    ok = file:rename(Tmp, Link).

%% Local releases the boot server no longer has, except the one `current` points at.
prune(Root, Vsn) ->
    Releases = filename:join(Root, "releases"),
    Served = case erl_prim_loader:list_dir(Releases) of
                 {ok, Names} -> Names;
                 error -> all
             end,
    Keep = [Vsn | case file:read_link(filename:join(Root, "current")) of
                      {ok, Target} -> [filename:basename(Target)];
                      _ -> []
                  end],
    Local = case file:list_dir(Releases) of
                {ok, L} -> L;
                _ -> []
            end,
    Gone = [V || Served =/= all, V <- Local, not lists:member(V, Served), not lists:member(V, Keep)],
    [ok = file:del_dir_r(filename:join(Releases, V)) || V <- Gone],
    length(Gone).

hex(Bin) ->
    lists:flatten([io_lib:format("~2.16.0b", [X]) || <<X>> <= Bin]).
