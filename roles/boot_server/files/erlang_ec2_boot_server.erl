%% Starts erl_boot_server with the allow-list persisted by the boot_server role.
%%
%% erl_boot_server keeps its allow-list in memory only: without this, a restart of the
%% boot server would lock every worker out until Ansible ran again.
%% Started by the unit as `-s erlang_ec2_boot_server start <file>`; the file holds one
%% IPv4 address a line ('#' starts a comment). A bad line is logged and skipped.
-module(erlang_ec2_boot_server).
-export([start/0, start/1, read_slaves/1]).

-define(DEFAULT_FILE, "/var/lib/erlang-ec2/boot_server_slaves").

start() ->
    start([?DEFAULT_FILE]).

start([File]) when is_atom(File) ->
    start([atom_to_list(File)]);
start([File]) ->
    Slaves = read_slaves(File),
    case erl_boot_server:start(Slaves) of
        {ok, _Pid} ->
            logger:notice("erl_boot_server started with ~b allowed worker(s) from ~s", [length(Slaves), File]),
            ok;
        {error, Reason} ->
            logger:critical("erl_boot_server failed to start: ~p", [Reason]),
            erlang:halt(1)
    end.

read_slaves(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            Lines = string:lexemes(binary_to_list(Bin), "\r\n"),
            lists:usort(lists:filtermap(fun parse_line/1, Lines));
        {error, enoent} ->
            [];
        {error, Reason} ->
            logger:critical("cannot read ~s: ~p", [File, Reason]),
            erlang:halt(1)
    end.

parse_line(Line0) ->
    Line = string:trim(hd(string:split(Line0, "#"))),
    case Line of
        "" ->
            false;
        _ ->
            case inet:parse_ipv4strict_address(Line) of
                {ok, Ip} ->
                    {true, Ip};
                {error, _} ->
                    logger:warning("ignoring allow-list line ~p: not an IPv4 address", [Line]),
                    false
            end
    end.
