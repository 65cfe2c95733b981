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
%%
%% Several boot servers (docs/boot_servers.md): the other boot servers' node names are in the peers
%% file (`-erlang_ec2_peers File`, one a line, written by the role; re-read at every use, so a change
%% needs no restart). start/1 levels this server from them BEFORE the loader opens its ports: releases,
%% `current` and `previous` from the one whose `current` link changed last (missing release directories
%% are copied over distribution), the allow-list from the one whose allow-list file changed last. A peer
%% that does not answer within `-erlang_ec2_level_timeout` seconds is skipped; none answering, the
%% server serves its own state. level/0 does the same on a running server (Ansible's boot_server_level),
%% and the running server calls it by itself whenever a peer connects (nodeup): boot servers that start
%% together, none answering the other's start, are level as soon as they see each other.
%% The membership keeper (every `-erlang_ec2_membership_interval` seconds) connects this node to every
%% node EPMD names on each allow-listed address and to every peer: global's full mesh does the rest.
-module(erlang_ec2_boot_server).
-behaviour(gen_server).

-export([start/1, read_slaves/1, add_slave/1, delete_slave/1, set_slaves/1, joined_file/1]).
-export([state/0, level/0, level/1, peers/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/file.hrl").

-define(HOST_MASK, {255, 255, 255, 255}).
-define(CALL_TIMEOUT, 30000).
-define(IS_OCTET(X), (is_integer(X) andalso X >= 0 andalso X =< 255)).
-define(HEADER, "# The boot server's allow-list (one IPv4 address a line), read at its every start.\n"
                "# Written by erlang_ec2_boot_server only: change it with skunkworks.erlang_ec2.boot_server_allow_list.\n").

start([File]) when is_atom(File) ->
    start([atom_to_list(File)]);
start([File]) ->
    persistent_term:put({?MODULE, allow_list_file}, File),
    Legacy = joined_file(File),
    {Joined, Fold} = read_joined(Legacy),
    Own = lists:usort(read_slaves(File) ++ Joined),
    %% Level before serving: the loader's ports open only after this.
    Slaves = case catch level_at_start(File, Own) of
                 {ok, Adopted} -> Adopted;
                 Other -> logger:error("levelling from the peers failed (~0p); serving this server's own state", [Other]),
                          Own
             end,
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
    case registered_writer() of
        undefined ->
            %% Not started by start/1: the running list only, as erl_boot_server would.
            apply_change(Request),
            logger:error("~p done but not persisted: the boot server was not started by ~s:start/1", [Request, ?MODULE]),
            {error, {not_persisted, undefined, not_started}};
        Pid ->
            gen_server:call(Pid, Request, ?CALL_TIMEOUT)
    end.

%% The writer's pid. While start/1 runs (levelling, then the loader, then the writer) a caller waits
%% for it, up to CALL_TIMEOUT: a worker that calls add_slave right after the loader answers is persisted.
registered_writer() ->
    Starting = persistent_term:get({?MODULE, allow_list_file}, undefined) =/= undefined,
    registered_writer(Starting, erlang:monotonic_time(millisecond) + ?CALL_TIMEOUT).

registered_writer(Starting, Deadline) ->
    case whereis(?MODULE) of
        undefined when Starting ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(50), registered_writer(Starting, Deadline);
                false -> undefined
            end;
        Pid ->
            Pid
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
    S = persist(#{file => File, slaves => Slaves, dirty => true, keeper => undefined}),
    case {Legacy, S} of
        {false, _} -> ok;
        {_, #{dirty := true}} -> logger:error("~s kept: its addresses could not be written to ~s", [Legacy, File]);
        {_, _} -> fold_legacy(Legacy, File)
    end,
    %% A peer coming up (its host back, its service restarted, both started together): level from it.
    ok = net_kernel:monitor_nodes(true),
    self() ! keep,
    {ok, S}.

fold_legacy(Legacy, File) ->
    case file:delete(Legacy) of
        ok -> logger:notice("folded ~s into ~s and removed it", [Legacy, File]);
        {error, Reason} -> logger:error("cannot remove ~s (~p): its addresses are read again at the next start", [Legacy, Reason])
    end.

handle_call(slaves, _From, #{slaves := Slaves} = S) ->
    {reply, Slaves, S};
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

%% The membership keeper: one tick at a time, in its own process (add_slave calls are never held up).
handle_info(keep, #{keeper := undefined, slaves := Slaves} = S) ->
    {Pid, _} = spawn_monitor(fun() -> keep_members(Slaves, interval_ms()) end),
    erlang:send_after(interval_ms(), self(), keep),
    {noreply, S#{keeper => Pid}};
handle_info(keep, S) ->
    erlang:send_after(interval_ms(), self(), keep),
    {noreply, S};
handle_info({'DOWN', _, process, Pid, Reason}, #{keeper := Pid} = S) ->
    Reason =:= normal orelse logger:warning("membership keeper tick ended: ~0p", [Reason]),
    {noreply, S#{keeper => undefined}};
handle_info({nodeup, Node}, S) ->
    lists:member(Node, peers()) andalso spawn(fun() -> level_on_nodeup(Node) end),
    {noreply, S};
handle_info(_Msg, S) ->
    {noreply, S}.

level_on_nodeup(Node) ->
    case catch level() of
        #{changed := true} = Result -> logger:notice("peer ~p connected: levelled from the peers: ~0p", [Node, maps:get(current, Result, undefined)]);
        #{} -> ok;
        Other -> logger:warning("peer ~p connected: levelling failed: ~0p", [Node, Other])
    end.

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
    %% An unchanged file is not rewritten: its mtime says when the list last changed (levelling reads it).
    Same = file:read_file(File) =:= {ok, iolist_to_binary(Lines)},
    case Same orelse write_atomically(File, Lines) of
        true ->
            maps:remove(error, S#{dirty => false});
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

%% ------------------------------------------------------------------ several boot servers: levelling

config(Flag, Default) ->
    case arguments(Flag) of
        [[Value] | _] -> Value;
        _ -> Default
    end.

int_config(Flag, Default) ->
    try list_to_integer(config(Flag, integer_to_list(Default))) of
        N when N > 0 -> N;
        _ -> Default
    catch
        _:_ -> Default
    end.

interval_ms() -> int_config(erlang_ec2_membership_interval, 5) * 1000.
level_timeout_ms() -> int_config(erlang_ec2_level_timeout, 10) * 1000.
keep_releases() -> max(2, int_config(erlang_ec2_keep_releases, 3)).
release_root() -> config(erlang_ec2_release_root, undefined).
allow_list_file() -> persistent_term:get({?MODULE, allow_list_file}, undefined).

%% The other boot servers' node names, from the peers file (re-read at every use: no restart needed).
peers() ->
    case config(erlang_ec2_peers, undefined) of
        undefined ->
            [];
        File ->
            case file:read_file(File) of
                {ok, Bin} ->
                    Names = [string:trim(L) || L <- string:lexemes(binary_to_list(Bin), "\r\n")],
                    lists:usort([list_to_atom(N) || N <- Names, N =/= "", hd(N) =/= $#, lists:member($@, N)]) -- [node()];
                {error, enoent} ->
                    [];
                {error, Reason} ->
                    logger:error("cannot read the peers file ~s: ~p", [File, Reason]),
                    []
            end
    end.

%% This boot server's state, as levelling compares it (every text a binary; times in POSIX seconds).
state() ->
    Root = release_root(),
    {Current, CurrentMtime} = link_state(Root, "current"),
    {Previous, PreviousMtime} = link_state(Root, "previous"),
    File = allow_list_file(),
    Allowed = case {whereis(?MODULE), File} of
                  {undefined, undefined} -> [];
                  {undefined, _} -> element(2, read_addresses(File));
                  {Pid, _} -> gen_server:call(Pid, slaves, ?CALL_TIMEOUT)
              end,
    #{node => node(), release_root => bin(Root), current => bin(Current), current_mtime => CurrentMtime,
      previous => bin(Previous), previous_mtime => PreviousMtime, releases => [bin(R) || R <- releases(Root)],
      allow_list => [bin(inet:ntoa(Ip)) || Ip <- lists:usort(Allowed)], allow_list_mtime => mtime(File)}.

bin(undefined) -> undefined;
bin(Str) -> unicode:characters_to_binary(Str).

str(undefined) -> undefined;
str(Bin) -> unicode:characters_to_list(Bin).

mtime(undefined) -> undefined;
mtime(File) ->
    case file:read_link_info(File, [{time, posix}]) of
        {ok, Info} -> Info#file_info.mtime;
        {error, _} -> undefined
    end.

%% {Version, the link's own mtime} of release_root/Name, or {undefined, undefined}.
link_state(undefined, _) ->
    {undefined, undefined};
link_state(Root, Name) ->
    Link = filename:join(Root, Name),
    case file:read_link(Link) of
        {ok, Target} -> {filename:basename(Target), mtime(Link)};
        {error, _} -> {undefined, undefined}
    end.

releases(undefined) -> [];
releases(Root) ->
    Dir = filename:join(Root, "releases"),
    case file:list_dir(Dir) of
        {ok, Names} -> lists:sort([N || N <- Names, hd(N) =/= $., filelib:is_dir(filename:join(Dir, N))]);
        {error, _} -> []
    end.

%% Level now from the peers (Ansible's boot_server_level calls it); level(true) only reports.
level() -> level(false).

level(Check) when is_boolean(Check) ->
    global:trans({?MODULE, level}, fun() -> level_locked(Check) end, [node()]).

level_locked(Check) ->
    {Answers, Peers} = ask_peers(),
    Own = state(),
    {Releases, Copied, Unpruned} = level_releases(Own, Answers, Check),
    {AllowFrom, Before, After} = newest_allow_list(Own, Answers),
    AllowChanged = After =/= Before,
    AllowResult = case AllowChanged andalso not Check of
                      true -> set_slaves([str(A) || A <- After]);
                      false -> ok
                  end,
    AllowResult =:= ok orelse logger:error("levelling: the allow-list from ~p was not set: ~0p", [AllowFrom, AllowResult]),
    Changed = maps:get(changed, Releases) orelse AllowChanged,
    Changed andalso not Check andalso
        logger:notice("levelled from the peers: ~0p", [Releases#{allow_list_from => AllowFrom}]),
    Releases#{changed => Changed, check => Check, peers => Peers, copied => Copied, unpruned => Unpruned,
              allow_list_from => AllowFrom, allow_list_before => Before, allow_list_after => After,
              allow_list_result => AllowResult}.

%% At start, before the loader serves: releases levelled on disk; the allow-list to serve returned
%% (init/1 then persists it through the one writer's own path).
level_at_start(File, Own) ->
    {Answers, Peers} = ask_peers(),
    case Peers of
        [] -> ok;
        _ when Answers =:= [] ->
            logger:warning("no peer boot server answered within ~b ms (~0p): serving this server's own state",
                           [level_timeout_ms(), Peers]);
        _ -> ok
    end,
    Me = (state())#{allow_list => [bin(inet:ntoa(Ip)) || Ip <- Own], allow_list_mtime => mtime(File)},
    {Releases, _Copied, _Unpruned} = level_releases(Me, Answers, false),
    maps:get(changed, Releases) andalso logger:notice("levelled the releases at start: ~0p", [Releases]),
    case newest_allow_list(Me, Answers) of
        {From, Before, After} when After =/= Before ->
            logger:notice("adopting the allow-list of ~p (~b address(es), was ~b)", [From, length(After), length(Before)]),
            {ok, lists:usort([Ip || A <- After, {ok, Ip} <- [to_ipv4(A)]])};
        _ ->
            {ok, Own}
    end.

%% {[{Peer, State}] that answered, [{Peer, ok | Why}]}: all asked at once, one deadline.
ask_peers() ->
    case peers() of
        [] ->
            {[], []};
        Peers ->
            Results = erpc:multicall(Peers, ?MODULE, state, [], level_timeout_ms()),
            Pairs = lists:zip(Peers, Results),
            [logger:warning("peer ~p did not answer: ~0P", [P, R, 8]) || {P, {Class, R}} <- Pairs, Class =/= ok],
            {[{P, St} || {P, {ok, #{} = St}} <- Pairs],
             [{P, case R of {ok, _} -> ok; {_, Why} -> Why end} || {P, R} <- Pairs]}
    end.

%% The newest state for a key: the greatest {Mtime, Node} (undefined times never win).
newest(MtimeKey, ValueKey, Own, Answers) ->
    Candidates = [{maps:get(MtimeKey, St), maps:get(node, St), St} || St <- [Own | [A || {_, A} <- Answers]],
                  is_integer(maps:get(MtimeKey, St)), maps:get(ValueKey, St) =/= undefined],
    case lists:reverse(lists:sort(fun({M1, N1, _}, {M2, N2, _}) -> {M1, N1} =< {M2, N2} end, Candidates)) of
        [{_, _, St} | _] -> St;
        [] -> Own
    end.

newest_allow_list(Own, Answers) ->
    #{node := From, allow_list := List} = newest(allow_list_mtime, allow_list, Own, Answers),
    {From, maps:get(allow_list, Own), List}.

%% {Report, copied versions, release directories not removable by this user}.
level_releases(#{release_root := undefined}, _Answers, _Check) ->
    {#{changed => false, releases_from => none}, [], []};
level_releases(Own, Answers, Check) ->
    Src = newest(current_mtime, current, Own, Answers),
    From = maps:get(node, Src),
    case From =:= node() of
        true ->
            {#{changed => false, releases_from => From}, [], []};
        false ->
            Missing = maps:get(releases, Src) -- maps:get(releases, Own),
            Relink = [{Name, maps:get(Name, Own), maps:get(Name, Src)} || Name <- [previous, current],
                      maps:get(Name, Src) =/= maps:get(Name, Own)],
            Report = #{changed => Missing =/= [] orelse Relink =/= [], releases_from => From,
                       links => [{Name, Old, New} || {Name, Old, New} <- Relink]},
            case Check of
                true ->
                    {Report, Missing, []};
                false ->
                    Root = str(maps:get(release_root, Own)),
                    Copied = [V || V <- Missing, copy_release(From, str(maps:get(release_root, Src)), Root, str(V)) =:= ok],
                    Copied =:= Missing orelse error({copy_failed, Missing -- Copied}),
                    [ok = switch_link(Root, atom_to_list(Name), str(New)) || {Name, _, New} <- Relink],
                    {Report, Copied, prune(Root)}
            end
    end.

%% releases/Vsn copied from Peer into a temporary directory, then renamed into place (atomic).
copy_release(Peer, PeerRoot, Root, Vsn) ->
    Dir = filename:join([Root, "releases", Vsn]),
    Tmp = filename:join([Root, "releases", ".level-" ++ Vsn ++ "-" ++ integer_to_list(erlang:unique_integer([positive]))]),
    From = filename:join([PeerRoot, "releases", Vsn]),
    try
        ok = copy_tree(Peer, From, Tmp),
        case file:rename(Tmp, Dir) of
            ok -> logger:notice("copied release ~s from ~p", [Vsn, Peer]), ok;
            {error, Reason} -> error({rename, Dir, Reason})
        end
    catch
        Class:Why ->
            _ = file:del_dir_r(Tmp),
            logger:error("cannot copy release ~s from ~p: ~0p:~0p", [Vsn, Peer, Class, Why]),
            {error, Why}
    end.

%% One directory level at a time over distribution; modes and mtimes kept, symlinks kept as symlinks.
copy_tree(Peer, From, To) ->
    T = level_timeout_ms() * 6,
    {ok, Info} = erpc:call(Peer, file, read_link_info, [From, [{time, posix}]], T),
    case Info#file_info.type of
        directory ->
            ok = file:make_dir(To),
            ok = file:change_mode(To, 8#700),
            {ok, Names} = erpc:call(Peer, file, list_dir, [From], T),
            [ok = copy_tree(Peer, filename:join(From, N), filename:join(To, N)) || N <- lists:sort(Names)],
            set_info(To, Info);
        regular ->
            {ok, Bin} = erpc:call(Peer, file, read_file, [From], T),
            ok = file:write_file(To, Bin, [raw]),
            set_info(To, Info);
        symlink ->
            {ok, Target} = erpc:call(Peer, file, read_link, [From], T),
            file:make_symlink(Target, To);
        Other ->
            logger:warning("levelling: ~s on ~p is a ~p: not copied", [From, Peer, Other]),
            ok
    end.

set_info(Path, Info) ->
    %% setuid/setgid bits are not copied (this user's files).
    Mode = Info#file_info.mode band 8#1777,
    file:write_file_info(Path, #file_info{mode = Mode, atime = Info#file_info.atime, mtime = Info#file_info.mtime},
                         [{time, posix}]).

%% Point Root/Name at releases/Vsn (or remove it) by renaming a new symlink over it, as the role does.
switch_link(Root, Name, undefined) ->
    case file:delete(filename:join(Root, Name)) of
        {error, enoent} -> ok;
        Result -> Result
    end;
switch_link(Root, Name, Vsn) ->
    Link = filename:join(Root, Name),
    Tmp = filename:join(Root, "." ++ Name ++ ".level"),
    _ = file:delete(Tmp),
    ok = file:make_symlink(filename:join([Root, "releases", Vsn]), Tmp),
    ok = file:rename(Tmp, Link),
    logger:notice("levelling: ~s now points at release ~s", [Link, Vsn]),
    ok.

%% The role's pruning: the newest keep_releases release directories stay (by mtime), current and
%% previous always among them. Returns the ones this user could not remove (Ansible's, owned by root):
%% the boot_server_level module removes those.
prune(Root) ->
    Dir = filename:join(Root, "releases"),
    Kept = [V || {V, _} <- [link_state(Root, "current"), link_state(Root, "previous")], V =/= undefined],
    Others = lists:reverse(lists:keysort(1, [{mtime(filename:join(Dir, V)), V} || V <- releases(Root),
                                                                                  not lists:member(V, Kept)])),
    Surplus = lists:nthtail(min(length(Others), max(0, keep_releases() - length(lists:usort(Kept)))), Others),
    lists:filtermap(fun({_, V}) ->
                            case file:del_dir_r(filename:join(Dir, V)) of
                                ok -> logger:notice("levelling: removed release ~s (beyond the kept ones)", [V]), false;
                                {error, _} -> {true, bin(V)}
                            end
                    end, Surplus).

%% ------------------------------------------------------------------ membership keeper

%% Connect to every node EPMD names on each allow-listed address, and to every peer. Each lookup
%% and connect runs in its own process; whatever has not finished within Budget ms is dropped.
keep_members(Slaves, Budget) ->
    Deadline = erlang:monotonic_time(millisecond) + Budget,
    Connected = nodes(connected),
    Names = bounded([fun() -> names_on(Ip) end || Ip <- Slaves], Deadline),
    Wanted = lists:usort(lists:append([N || {ok, N} <- Names]) ++ peers()) -- [node() | Connected],
    _ = bounded([fun() -> net_kernel:connect_node(N) end || N <- Wanted], Deadline),
    ok.

names_on(Ip) ->
    case net_adm:names(Ip) of
        {ok, Names} -> [list_to_atom(Name ++ "@" ++ inet:ntoa(Ip)) || {Name, _Port} <- Names];
        {error, _} -> []
    end.

%% Runs the funs in parallel; {ok, Result} for those done by Deadline (the rest are killed).
bounded(Funs, Deadline) ->
    Parent = self(),
    Pids = [spawn(fun() -> Parent ! {self(), catch F()} end) || F <- Funs],
    [receive
         {Pid, Result} -> {ok, Result}
     after max(0, Deadline - erlang:monotonic_time(millisecond)) ->
         exit(Pid, kill),
         timeout
     end || Pid <- Pids].
