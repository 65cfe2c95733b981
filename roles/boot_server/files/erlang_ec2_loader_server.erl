%% A boot server that serves only code: OTP's loader protocol (what `erl -loader inet -hosts ...`
%% speaks, erl_prim_loader's inet client), answering only for files under a few roots.
%%
%% OTP's erl_boot_server answers {get, File} for any path its OS user can read (the cluster cookie
%% included) and listens on an ephemeral TCP port. This server is a drop-in for it:
%%   - registered as `boot_server` and answering erl_boot_server's calls ({add, {Mask, Ip}},
%%     {delete, {Mask, Ip}}, which), so erl_boot_server:add_slave/1, delete_slave/1 and
%%     which_slaves/0 keep working against it;
%%   - UDP 4368 discovery as OTP's: "EBOOTQ" ++ ERTS version from an allowed address with the same
%%     ERTS version gets "EBOOTR", priority 0, the TCP port (16 bits), the version;
%%   - file transfer on a fixed TCP port, {packet, 4} frames of term_to_binary requests:
%%     {get, F}, {list_dir, D}, {read_file_info, F}, {read_link_info, F}, get_cwd, {get_cwd, Drive};
%%     answered {Command, Result} as erl_boot_server does;
%%   - every path is resolved (`..`, `.`, every symlink) and must then lie under one of the roots;
%%     anything else gets {Command, {error, enoent}} (as if it did not exist: nothing is told about
%%     the boot server's files) and a log line. A worker's loader asks for a few paths relative to
%%     its own working directory at boot: those are refused the same way and it moves on;
%%   - requests are bounded (max_request bytes, decoded with binary_to_term(_, [safe])), and so are
%%     connections (max_connections in all, max_per_address from one address, idle_timeout):
%%     a bad client is logged and dropped, the others are served.
-module(erlang_ec2_loader_server).
-behaviour(gen_server).

-export([start/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).
-export([acceptor/2, connection/3]).

-define(UDP_PORT, 4368).
-define(REQUEST, "EBOOTQ").
-define(REPLY, "EBOOTR").
-define(HOST_MASK, {255, 255, 255, 255}).
-define(MAX_LINKS, 40).

defaults() ->
    #{slaves => [], roots => [code:root_dir()], tcp_port => 4368, max_connections => 512,
      max_per_address => 32, idle_timeout => 300000, max_request => 4096}.

%% Options: slaves (IPv4 tuples), roots (directories served), tcp_port, max_connections,
%% max_per_address, idle_timeout (ms), max_request (bytes).
start(Options) ->
    gen_server:start({local, boot_server}, ?MODULE, maps:merge(defaults(), Options), []).

%% ------------------------------------------------------------------ gen_server

init(#{slaves := Slaves, roots := Roots0, tcp_port := Port, max_request := MaxRequest} = Opts) ->
    Roots = [R || Root <- Roots0, {ok, R} <- [resolve(Root)]],
    {ok, Udp} = gen_udp:open(?UDP_PORT, [list, {active, true}]),
    {ok, Listen} = gen_tcp:listen(Port, [binary, {packet, 4}, {packet_size, MaxRequest}, {active, false},
                                         {reuseaddr, true}, {backlog, 128}]),
    process_flag(trap_exit, true),
    Acceptor = spawn_link(?MODULE, acceptor, [self(), Listen]),
    logger:notice("erlang_ec2_loader_server: UDP ~b and TCP ~b, serving only ~p", [?UDP_PORT, Port, Roots]),
    {ok, Opts#{roots => Roots, udp => Udp, listen => Listen, acceptor => Acceptor,
               slaves => ordsets:from_list([{?HOST_MASK, Ip} || Ip <- Slaves]),
               version => erlang:system_info(version), connections => #{}, logged => #{}}}.

handle_call({add, {_, _} = Entry}, _From, #{slaves := Slaves} = S) ->
    {reply, ok, S#{slaves => ordsets:add_element(Entry, Slaves)}};
handle_call({delete, {_, _} = Entry}, _From, #{slaves := Slaves} = S) ->
    {reply, ok, S#{slaves => ordsets:del_element(Entry, Slaves)}};
handle_call(which, _From, #{slaves := Slaves} = S) ->
    {reply, ordsets:to_list(Slaves), S};
%% A new connection from Ip: served if the address is allowed and the limits leave room.
handle_call({connection, Pid, Ip}, _From, #{slaves := Slaves, connections := Conns} = S) ->
    FromIp = maps:fold(fun(_, I, N) when I =:= Ip -> N + 1; (_, _, N) -> N end, 0, Conns),
    Verdict = case {member(Ip, Slaves), map_size(Conns) < maps:get(max_connections, S),
                    FromIp < maps:get(max_per_address, S)} of
                  {false, _, _} -> {refused, not_allowed};
                  {true, false, _} -> {refused, too_many_connections};
                  {true, true, false} -> {refused, too_many_connections_from_address};
                  {true, true, true} -> ok
              end,
    case Verdict of
        ok ->
            erlang:monitor(process, Pid),
            {reply, {ok, maps:get(roots, S), maps:get(idle_timeout, S)}, S#{connections => Conns#{Pid => Ip}}};
        {refused, Why} ->
            {reply, {refused, Why}, log_once({Ip, connection}, "connection from ~s refused: ~p", [inet:ntoa(Ip), Why], S)}
    end;
handle_call(_Other, _From, S) ->
    {reply, {error, unknown_call}, S}.

handle_cast({denied, Ip, Command, Path}, S) ->
    {noreply, log_once({Ip, denied}, "~s asked ~p of ~0p: outside the served roots, refused (and its other "
                       "refused requests of the next 10 s)", [inet:ntoa(Ip), Command, Path], S)};
handle_cast({bad_request, Ip, Why}, S) ->
    {noreply, log_once({Ip, bad}, "bad request from ~s: ~0p", [inet:ntoa(Ip), Why], S)};
handle_cast(_Other, S) ->
    {noreply, S}.

handle_info({udp, Udp, Ip, Port, Data}, #{udp := Udp, version := Vsn, slaves := Slaves} = S) ->
    case {member(Ip, Slaves), Data =:= ?REQUEST ++ Vsn} of
        {true, true} ->
            Tcp = maps:get(tcp_port, S),
            _ = gen_udp:send(Udp, Ip, Port, [?REPLY, 0, (Tcp bsr 8) band 16#ff, Tcp band 16#ff, Vsn]),
            {noreply, S};
        {false, _} ->
            {noreply, log_once({Ip, discovery}, "discovery from ~s refused: not on the allow-list", [inet:ntoa(Ip)], S)};
        {true, false} ->
            Asked = lists:sublist(Data, 64),
            {noreply, log_once({Ip, discovery}, "discovery from ~s refused: it asked ~0p, this server runs ERTS ~s",
                               [inet:ntoa(Ip), Asked, Vsn], S)}
    end;
handle_info({'DOWN', _, process, Pid, _}, #{connections := Conns} = S) ->
    {noreply, S#{connections => maps:remove(Pid, Conns)}};
handle_info({'EXIT', Acceptor, Reason}, #{acceptor := Acceptor} = S) ->
    {stop, {acceptor, Reason}, S};
handle_info(_Other, S) ->
    {noreply, S}.

terminate(_Reason, _S) ->
    ok.

%% One log line per key (an address and what it did) every 10 s: a flood does not fill the journal.
log_once(Key, Fmt, Args, #{logged := Logged} = S) ->
    Now = erlang:monotonic_time(millisecond),
    case maps:get(Key, Logged, undefined) of
        Last when is_integer(Last), Now - Last < 10000 ->
            S;
        _ ->
            logger:warning("erlang_ec2_loader_server: " ++ Fmt, Args),
            Fresh = maps:filter(fun(_, T) -> Now - T < 10000 end, Logged),
            S#{logged => Fresh#{Key => Now}}
    end.

member(Ip, Slaves) ->
    lists:any(fun({Mask, Net}) -> masked(Ip, Mask) =:= masked(Net, Mask) end, Slaves).

masked({A, B, C, D}, {MA, MB, MC, MD}) ->
    {A band MA, B band MB, C band MC, D band MD};
masked(_, _) ->
    undefined.

%% ------------------------------------------------------------------ connections

acceptor(Server, Listen) ->
    case gen_tcp:accept(Listen) of
        {ok, Socket} ->
            Pid = spawn(?MODULE, connection, [Server, Socket, self()]),
            case gen_tcp:controlling_process(Socket, Pid) of
                ok -> Pid ! {self(), go};
                {error, _} -> exit(Pid, kill), gen_tcp:close(Socket)
            end,
            acceptor(Server, Listen);
        {error, closed} ->
            exit(closed);
        {error, _} ->
            %% emfile and the like: the others keep being served once it passes.
            timer:sleep(100),
            acceptor(Server, Listen)
    end.

connection(Server, Socket, Acceptor) ->
    receive {Acceptor, go} -> ok after 5000 -> exit(normal) end,
    case inet:peername(Socket) of
        {ok, {Ip, _}} ->
            case catch gen_server:call(Server, {connection, self(), Ip}, 5000) of
                {ok, Roots, Idle} -> serve(Socket, Server, Ip, Roots, Idle, erl_prim_loader:prim_init());
                _ -> gen_tcp:close(Socket)
            end;
        _ ->
            gen_tcp:close(Socket)
    end.

serve(Socket, Server, Ip, Roots, Idle, PS) ->
    ok = inet:setopts(Socket, [{active, once}]),
    receive
        {tcp, Socket, Data} ->
            {Reply, PS2} = answer(Data, Server, Ip, Roots, PS),
            case gen_tcp:send(Socket, term_to_binary(Reply)) of
                ok -> serve(Socket, Server, Ip, Roots, Idle, PS2);
                {error, _} -> gen_tcp:close(Socket)
            end;
        {tcp_closed, Socket} ->
            ok;
        {tcp_error, Socket, Why} ->
            %% An oversized frame (packet_size) ends here.
            gen_server:cast(Server, {bad_request, Ip, Why}),
            gen_tcp:close(Socket)
    after Idle ->
        gen_tcp:close(Socket)
    end.

answer(Data, Server, Ip, Roots, PS) ->
    try binary_to_term(Data, [safe]) of
        Request -> command(Request, Server, Ip, Roots, PS)
    catch
        _:_ ->
            gen_server:cast(Server, {bad_request, Ip, {undecodable, byte_size(Data)}}),
            {{error, bad_request}, PS}
    end.

command({get, File}, S, Ip, Roots, PS) ->
    checked(get, File, S, Ip, Roots, PS, fun(P) -> erl_prim_loader:prim_get_file(PS, P) end);
command({list_dir, Dir}, S, Ip, Roots, PS) ->
    checked(list_dir, Dir, S, Ip, Roots, PS, fun(P) -> erl_prim_loader:prim_list_dir(PS, P) end);
command({read_file_info, File}, S, Ip, Roots, PS) ->
    checked(read_file_info, File, S, Ip, Roots, PS, fun(P) -> erl_prim_loader:prim_read_file_info(PS, P, true) end);
command({read_link_info, File}, S, Ip, Roots, PS) ->
    %% The link itself is asked about: its directory must be served and the link lie in it.
    checked(read_link_info, File, S, Ip, Roots, PS, fun(P) -> erl_prim_loader:prim_read_file_info(PS, P, false) end,
            fun resolve_parent/1);
command(get_cwd, _S, _Ip, [Root | _], PS) ->
    %% Its own working directory is the service user's home: not told. The first root instead.
    {{get_cwd, {ok, Root}}, PS};
command({get_cwd, _Drive}, S, Ip, Roots, PS) ->
    command(get_cwd, S, Ip, Roots, PS);
command(Other, S, Ip, _Roots, PS) ->
    gen_server:cast(S, {bad_request, Ip, {unknown_command, shape(Other)}}),
    {{error, unknown_command}, PS}.

checked(Command, Path, S, Ip, Roots, PS, Serve) ->
    checked(Command, Path, S, Ip, Roots, PS, Serve, fun resolve/1).

checked(Command, Path, S, Ip, Roots, PS, Serve, Resolve) ->
    case is_list(Path) andalso length(Path) < 4096 andalso io_lib:char_list(Path) andalso Resolve(Path) of
        {ok, Real} ->
            case allowed(Real, Roots) of
                true ->
                    {Result, PS2} = Serve(Real),
                    {{Command, Result}, PS2};
                false ->
                    gen_server:cast(S, {denied, Ip, Command, Path}),
                    {{Command, {error, enoent}}, PS}
            end;
        _ ->
            gen_server:cast(S, {denied, Ip, Command, shape(Path)}),
            {{Command, {error, enoent}}, PS}
    end.

shape(Term) ->
    iolist_to_binary(io_lib:format("~0P", [Term, 6])).

%% ------------------------------------------------------------------ paths

%% The path under one of the (resolved) roots, or the root itself.
allowed(Real, Roots) ->
    lists:any(fun(Root) -> Real =:= Root orelse lists:prefix(Root ++ "/", Real) end, Roots).

%% {ok, Path} with every `.`, `..` and symlink of an absolute path resolved, as the kernel would
%% walk it; a part that does not exist (a file inside an .ez archive, a missing file) is kept as
%% written. error for a relative path, a loop, or `..` after a part that does not exist.
resolve(Path) ->
    case filename:pathtype(Path) of
        absolute -> walk(tl(filename:split(Path)), "/", 0);
        _ -> error
    end.

resolve_parent(Path) ->
    case filename:pathtype(Path) of
        absolute ->
            case resolve(filename:dirname(Path)) of
                {ok, Dir} -> {ok, filename:join(Dir, filename:basename(Path))};
                error -> error
            end;
        _ -> error
    end.

walk(_, _, Links) when Links > ?MAX_LINKS ->
    error;
walk([], Acc, _) ->
    {ok, Acc};
walk(["." | Rest], Acc, Links) ->
    walk(Rest, Acc, Links);
walk([".." | Rest], Acc, Links) ->
    walk(Rest, filename:dirname(Acc), Links);
walk([Part | Rest], Acc, Links) ->
    Next = filename:join(Acc, Part),
    case file:read_link_all(Next) of
        {ok, Target} ->
            Base = case filename:pathtype(Target) of
                       absolute -> "/";
                       _ -> Acc
                   end,
            walk(tl(filename:split(filename:join(Base, Target))) ++ Rest, "/", Links + 1);
        {error, einval} ->
            walk(Rest, Next, Links);
        {error, _} ->
            case lists:member("..", Rest) of
                true -> error;
                false -> {ok, filename:join([Next | Rest])}
            end
    end.
