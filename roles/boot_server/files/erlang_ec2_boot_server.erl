%% Starts the boot server (erlang_ec2_loader_server: OTP's loader protocol, serving only code)
%% and owns its persisted allow-list: the one writer of that file.
%%
%% erl_boot_server keeps the allow-list in memory only: without the file, a restart of the boot
%% server would lock every worker out until Ansible ran again.
%% Started by the unit as `-s erlang_ec2_boot_server start <file>` (the role passes
%% erlang_layout.allow_list_file); the file holds one IPv4 address a line ('#' starts a comment).
%% A bad line is logged and skipped.
%% What is served and on which port comes from the command line: `-erlang_ec2_root Dir` (once per
%% served directory; default the OTP root) and `-erlang_ec2_file_port Port` (TCP, default 4368).
%%
%% add_slave/1, delete_slave/1 and set_slaves/1 (make the list exactly these) change the running
%% list and then rewrite the file atomically (temp file, fsync, rename; mode 0640, owned by the
%% boot server's user). They run in one registered process (this module's gen_server), so callers
%% never race each other. Ansible calls them through the boot_server_allow_list module, a
%% self-joining worker's bootstrap calls add_slave/1 over distribution; nothing else writes the file.
%%
%% Upgrades: earlier versions kept self-joined workers apart in `<file>.joined`. start/1 reads it
%% once, folds it into the file and removes it.
-module(erlang_ec2_boot_server).
-behaviour(gen_server).

-export([start/1, read_slaves/1, add_slave/1, delete_slave/1, set_slaves/1, joined_file/1]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(HOST_MASK, {255, 255, 255, 255}).
-define(CALL_TIMEOUT, 30000).
-define(IS_OCTET(X), (is_integer(X) andalso X >= 0 andalso X =< 255)).
-define(HEADER, "# The boot server's allow-list (one IPv4 address a line), read at its every start.\n"
                "# Written by erlang_ec2_boot_server only: change it with skunkworks.erlang_ec2.boot_server_allow_list.\n").

start([File]) when is_atom(File) ->
    start([atom_to_list(File)]);
start([File]) ->
    Legacy = joined_file(File),
    {Joined, Fold} = read_joined(Legacy),
    Slaves = lists:usort(read_slaves(File) ++ Joined),
    Options = #{slaves => Slaves, roots => [code:root_dir() | [D || [D] <- arguments(erlang_ec2_root)]],
                tcp_port => case arguments(erlang_ec2_file_port) of
                                [[Port]] -> list_to_integer(Port);
                                [] -> 4368
                            end},
    case erlang_ec2_loader_server:start(Options) of
        {ok, _Pid} ->
            {ok, _} = gen_server:start({local, ?MODULE}, ?MODULE, {File, Slaves, Fold andalso Legacy}, []),
            logger:notice("boot server started with ~b allowed worker(s) from ~s", [length(Slaves), File]),
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

%% The file of self-joined workers of earlier versions (read once at start, then removed).
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

%% {Addresses, whether to fold the file}. Unlike the main file, an unreadable legacy file does not
%% stop the boot server (refusing every worker would be worse); it is then left in place.
read_joined(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            {parse_file(Bin, warn), true};
        {error, enoent} ->
            {[], false};
        {error, Reason} ->
            logger:error("cannot read ~s: ~p; self-joined workers are not restored", [File, Reason]),
            {[], false}
    end.

%% {ok, Addresses} (a missing file holds none) or {error, Reason}.
read_addresses(File) ->
    case file:read_file(File) of
        {ok, Bin} -> {ok, parse_file(Bin, warn)};
        {error, enoent} -> {ok, []};
        {error, _} = Error -> Error
    end.

parse_file(Bin, Warn) ->
    Lines = string:lexemes(binary_to_list(Bin), "\r\n"),
    lists:usort(lists:filtermap(fun(Line) -> parse_line(Line, Warn) end, Lines)).

%% ------------------------------------------------------------------ the interface

%% Allow Arg (an IPv4 tuple, string or binary), then persist. Returns ok,
%% {error, {bad_address, Arg}} (nothing changed) or {error, {not_persisted, File, Reason}}
%% (allowed now, forgotten at the next restart unless a later change persists it).
add_slave(Arg) ->
    with_addresses([Arg], fun([Ip]) -> call({add, Ip}) end).

%% Disallow Arg, then persist; same results as add_slave/1.
delete_slave(Arg) ->
    with_addresses([Arg], fun([Ip]) -> call({delete, Ip}) end).

%% Make the allow-list exactly Args (every other entry, subnets included, is removed), then
%% persist exactly Args. Nothing is changed if one of them is not an IPv4 address.
set_slaves(Args) when is_list(Args) ->
    with_addresses(Args, fun(Ips) -> call({set, lists:usort(Ips)}) end);
set_slaves(Args) ->
    {error, {bad_address, Args}}.

with_addresses(Args, Fun) ->
    case [A || A <- Args, to_ipv4(A) =:= error] of
        [] -> Fun([Ip || A <- Args, {ok, Ip} <- [to_ipv4(A)]]);
        [Bad | _] -> {error, {bad_address, Bad}}
    end.

call(Request) ->
    case whereis(?MODULE) of
        undefined ->
            %% Not started by start/1: the running list only, as erl_boot_server would.
            apply_change(Request),
            logger:error("~p done but not persisted: the boot server was not started by ~s:start/1", [Request, ?MODULE]),
            {error, {not_persisted, undefined, not_started}};
        Pid ->
            gen_server:call(Pid, Request, ?CALL_TIMEOUT)
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

%% ------------------------------------------------------------------ the one writer

%% Legacy: the old joined file to remove once its addresses are in File, or false.
init({File, Slaves, Legacy}) ->
    S = persist(#{file => File, slaves => Slaves, dirty => true}),
    case {Legacy, S} of
        {false, _} -> ok;
        {_, #{dirty := true}} -> logger:error("~s kept: its addresses could not be written to ~s", [Legacy, File]);
        {_, _} -> fold_legacy(Legacy, File)
    end,
    {ok, S}.

fold_legacy(Legacy, File) ->
    case file:delete(Legacy) of
        ok -> logger:notice("folded ~s into ~s and removed it", [Legacy, File]);
        {error, Reason} -> logger:error("cannot remove ~s (~p): its addresses are read again at the next start", [Legacy, Reason])
    end.

handle_call(Request, _From, #{slaves := Before} = S0) ->
    apply_change(Request),
    After = case Request of
                {add, Ip} -> ordsets:add_element(Ip, Before);
                {delete, Ip} -> ordsets:del_element(Ip, Before);
                {set, Ips} -> Ips
            end,
    S = case After =:= Before andalso not maps:get(dirty, S0) of
            true -> S0;
            false -> persist(S0#{slaves => After})
        end,
    case S of
        #{dirty := true, error := Reason} -> {reply, {error, {not_persisted, maps:get(file, S), Reason}}, S};
        _ -> {reply, ok, S}
    end.

handle_cast(_Msg, S) ->
    {noreply, S}.

%% The running list (erlang_ec2_loader_server, registered as boot_server).
apply_change({add, Ip}) ->
    ok = erl_boot_server:add_slave(Ip);
apply_change({delete, Ip}) ->
    ok = erl_boot_server:delete_slave(Ip);
apply_change({set, Ips}) ->
    Wanted = [{?HOST_MASK, Ip} || Ip <- Ips],
    [ok = erl_boot_server:delete_subnet(Mask, Addr) || {Mask, Addr} <- erl_boot_server:which_slaves(),
                                                        not lists:member({Mask, Addr}, Wanted)],
    [ok = erl_boot_server:add_slave(Ip) || Ip <- Ips],
    ok.

%% The state with dirty => false once File holds exactly its addresses, or dirty => true and the error.
persist(#{file := File, slaves := Ips} = S) ->
    Lines = [?HEADER | [[inet:ntoa(Ip), $\n] || Ip <- Ips]],
    case write_atomically(File, Lines) of
        ok ->
            logger:notice("allow-list persisted in ~s: ~b address(es)", [File, length(Ips)]),
            maps:remove(error, S#{dirty => false});
        {error, Reason} ->
            logger:error("cannot persist the allow-list in ~s: ~p; the running list is right, the file is not",
                         [File, Reason]),
            S#{dirty => true, error => Reason}
    end.

%% Temp file in the same directory, written and synced, mode 0640, renamed over File: a reader
%% (or a crash) sees the old file or the new one, never a part.
write_atomically(File, Lines) ->
    Tmp = File ++ ".tmp",
    Result = steps([fun() -> write_synced(Tmp, Lines) end,
                    fun() -> file:change_mode(Tmp, 8#640) end,
                    fun() -> file:rename(Tmp, File) end]),
    Result =:= ok orelse file:delete(Tmp),
    Result.

write_synced(Tmp, Lines) ->
    case file:open(Tmp, [write, raw, binary]) of
        {ok, Fd} ->
            Result = steps([fun() -> file:write(Fd, Lines) end, fun() -> file:sync(Fd) end]),
            _ = file:close(Fd),
            Result;
        {error, _} = Error ->
            Error
    end.

steps([]) -> ok;
steps([Step | Rest]) ->
    case Step() of
        ok -> steps(Rest);
        {error, _} = Error -> Error
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
