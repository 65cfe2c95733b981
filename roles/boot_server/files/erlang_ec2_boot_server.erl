%% Starts the boot server (erlang_ec2_loader_server: OTP's loader protocol, serving only code)
%% with the allow-list persisted by the boot_server role.
%%
%% The allow-list is kept in memory only: without this, a restart of the boot server would lock
%% every worker out until Ansible ran again.
%% Started by the unit as `-s erlang_ec2_boot_server start <file>`; the file holds one
%% IPv4 address a line ('#' starts a comment). A bad line is logged and skipped.
%% What is served and on which port comes from the command line: `-erlang_ec2_root Dir` (once per
%% served directory; default the OTP root) and `-erlang_ec2_file_port Port` (TCP, default 4368).
%%
%% Workers that join by themselves (node image bootstrap) call add_slave/1, which also appends
%% the address to `<file>.joined`: the main file is Ansible's (root-owned), the joined file the
%% boot server's own. start/1 reads both; the role's slaves.yml folds and resets the joined file.
-module(erlang_ec2_boot_server).
-export([start/0, start/1, read_slaves/1, add_slave/1, joined_file/1]).

-define(JOINED_KEY, {?MODULE, joined_file}).
-define(IS_OCTET(X), (is_integer(X) andalso X >= 0 andalso X =< 255)).

%% The file is the host layout's allow-list file: its caller (the unit) always gives it.
start() ->
    logger:critical("no allow-list file given: start it as `-s erlang_ec2_boot_server start <file>`"),
    erlang:halt(2).

start([File]) when is_atom(File) ->
    start([atom_to_list(File)]);
start([File]) ->
    Joined = joined_file(File),
    persistent_term:put(?JOINED_KEY, Joined),
    Slaves = lists:usort(read_slaves(File) ++ read_joined(Joined)),
    Options = #{slaves => Slaves, roots => [code:root_dir() | [D || [D] <- arguments(erlang_ec2_root)]],
                tcp_port => case arguments(erlang_ec2_file_port) of
                                [[Port]] -> list_to_integer(Port);
                                [] -> 4368
                            end},
    case erlang_ec2_loader_server:start(Options) of
        {ok, _Pid} ->
            logger:notice("boot server started with ~b allowed worker(s) from ~s and ~s",
                          [length(Slaves), File, Joined]),
            ok;
        {error, Reason} ->
            logger:critical("the boot server failed to start: ~p", [Reason]),
            erlang:halt(1)
    end.

arguments(Flag) ->
    case init:get_argument(Flag) of
        {ok, Values} -> Values;
        error -> []
    end.

joined_file(File) ->
    File ++ ".joined".

read_slaves(File) ->
    case read_addresses(File) of
        {ok, Ips} ->
            Ips;
        {error, Reason} ->
            logger:critical("cannot read ~s: ~p", [File, Reason]),
            erlang:halt(1)
    end.

%% Unlike the main file, an unreadable joined file does not stop the boot server: refusing
%% every worker would be worse than forgetting the self-joined ones until reconcile runs.
read_joined(File) ->
    case read_addresses(File) of
        {ok, Ips} ->
            Ips;
        {error, Reason} ->
            logger:error("cannot read ~s: ~p; self-joined workers are not restored", [File, Reason]),
            []
    end.

%% {ok, Addresses} (a missing file holds none) or {error, Reason}.
read_addresses(File) ->
    case file:read_file(File) of
        {ok, Bin} -> {ok, parse_file(Bin, warn)};
        {error, enoent} -> {ok, []};
        {error, _} = Error -> Error
    end.

%% Warn: log each line that is not an address (at start), or stay quiet (at every add_slave).
parse_file(Bin, Warn) ->
    Lines = string:lexemes(binary_to_list(Bin), "\r\n"),
    lists:usort(lists:filtermap(fun(Line) -> parse_line(Line, Warn) end, Lines)).

%% erl_boot_server:add_slave/1, then the address appended to the joined file (if not there yet).
%% Returns ok, {error, {bad_address, Arg}} (nothing changed) or
%% {error, {not_persisted, File, Reason}} (allowed now, forgotten at the next restart).
add_slave(Arg) ->
    case to_ipv4(Arg) of
        {ok, Ip} ->
            ok = erl_boot_server:add_slave(Ip),
            persist(Ip);
        error ->
            {error, {bad_address, Arg}}
    end.

to_ipv4({A, B, C, D} = Ip) when ?IS_OCTET(A), ?IS_OCTET(B), ?IS_OCTET(C), ?IS_OCTET(D) ->
    {ok, Ip};
to_ipv4(Bin) when is_binary(Bin) ->
    to_ipv4(binary_to_list(Bin));
to_ipv4(Str) when is_list(Str) ->
    try inet:parse_ipv4strict_address(Str) of
        {ok, Ip} -> {ok, Ip};
        {error, _} -> error
    catch
        _:_ -> error
    end;
to_ipv4(_) ->
    error.

%% Appends are O_APPEND writes of one short line, so concurrent add_slave calls do not lose
%% each other's lines; two racing adds of one address may both append (reading does usort).
persist(Ip) ->
    Line = inet:ntoa(Ip),
    case persistent_term:get(?JOINED_KEY, undefined) of
        undefined ->
            logger:error("allowed ~s but not persisted: the boot server was not started by ~s:start/1",
                         [Line, ?MODULE]),
            {error, {not_persisted, undefined, not_started}};
        File ->
            %% Unreadable: try the append anyway; its error is the one to report.
            {Present, Prefix} = case file:read_file(File) of
                                    {ok, Bin} -> {lists:member(Ip, parse_file(Bin, quiet)), newline_prefix(Bin)};
                                    {error, _} -> {false, ""}
                                end,
            case Present orelse file:write_file(File, [Prefix, Line, $\n], [append]) of
                true ->
                    ok;
                ok ->
                    logger:notice("allowed ~s and persisted it in ~s", [Line, File]),
                    ok;
                {error, Reason} ->
                    logger:error("allowed ~s but cannot persist it in ~s: ~p", [Line, File, Reason]),
                    {error, {not_persisted, File, Reason}}
            end
    end.

%% A file edited by hand may lack its last newline: never glue two addresses together.
newline_prefix(<<>>) -> "";
newline_prefix(Bin) ->
    case binary:last(Bin) of
        $\n -> "";
        _ -> "\n"
    end.

parse_line(Line0, Warn) ->
    Line = string:trim(hd(string:split(Line0, "#"))),
    case Line of
        "" ->
            false;
        _ ->
            case inet:parse_ipv4strict_address(Line) of
                {ok, Ip} ->
                    {true, Ip};
                {error, _} when Warn =:= warn ->
                    logger:warning("ignoring allow-list line ~p: not an IPv4 address", [Line]),
                    false;
                {error, _} ->
                    false
            end
    end.
