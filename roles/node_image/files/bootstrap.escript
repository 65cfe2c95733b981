%% -*- erlang -*-   (an escript: run by `escript <this file>`; line 2 holds the emulator flags)
%%! -noinput -hidden
%% The bootstrap: self-join of a worker at boot (the pull path of skunkworks.erlang_ec2).
%%
%% Run once per boot by the node_image role's bootstrap unit, as root, with HOME set to the Erlang
%% service user's home so that the cookie is read from the layout's cookie file in $HOME (never from
%% the command line); the unit gives the layout's paths and unit name as options. Steps:
%%   1. IMDSv2 token, user data (the "# erlang-ec2 user-data v1" KEY=value contract) and local-ipv4;
%%   2. a short-lived controller node bootstrap-<random>@<own ip> calls add_slave(<own ip>) on every boot
%%      server node that answers (ERLANG_BOOT_NODES, or the single ERLANG_BOOT_NODE of older user data),
%%      retrying with backoff until the deadline while none answers; one that does not answer is skipped
%%      (it is levelled from its peers when it comes back);
%%   3. writes the worker's settings (EnvironmentFile: -hosts names every boot server; erl args file:
%%      sync_nodes_optional names every boot node, which keep themselves connected to every live worker,
%%      so the list never goes stale) and starts the worker unit;
%%   4. waits until the worker runs its release and is connected to the boot nodes that allowed it and the
%%      contact nodes.
%% Exit 0 when joined (or when the user data says this host is not a worker); 1 with a logged cause otherwise.
%% The controller node is hidden: it never becomes part of the cluster (global does not mesh it).
%% Log lines carry sd-daemon priority prefixes (<3> error, <4> warning, <6> info) for the journal.
-mode(compile).

%% The user-data format (first line and patterns) is not written here: the node_image role renders it
%% from plugins/module_utils/cluster.py (filter skunkworks.erlang_ec2.user_data_format) into the file
%% <this script>.format, read at start (--format-file to read another).
-define(IMDS, "http://169.254.169.254").
-define(TOKEN_TTL, "21600").

%% This script's name, as installed (the host layout's bootstrap script).
prog() ->
    filename:basename(escript:script_name()).

usage() ->
    "usage: " ++ prog() ++ " --cookie-file PATH --env-file PATH --args-file PATH --worker-unit NAME\n"
    "         --release-root PATH [--deadline SECONDS] [--join-timeout SECONDS] [--imds-url URL]\n"
    "         [--sync-nodes-timeout MS] [--format-file PATH]\n"
    "       " ++ prog() ++ " --parse-user-data FILE [--format-file PATH]\n"
    "         (prints KEY=value lines of FILE read as user data, or `not ours`; for tests)\n"
    "       " ++ prog() ++ " --check-user-data FILE [--format-file PATH]\n"
    "         (prints what the bootstrap takes from FILE, lists comma-separated, or fails as it would; for tests)\n"
    "The paths and the unit name are the host layout's (the node_image role's unit passes them).\n"
    "Every option also reads ERLANG_EC2_BOOTSTRAP_<OPTION> (e.g. ERLANG_EC2_BOOTSTRAP_DEADLINE);\n"
    "the user-data key ERLANG_BOOTSTRAP_DEADLINE may shorten --deadline for one instance.\n".

%% The host layout's paths and unit name have no default here: its caller (the unit) gives them.
defaults() ->
    #{deadline => 600, join_timeout => 120, imds_url => ?IMDS,
      cookie_file => undefined, env_file => undefined, args_file => undefined,
      worker_unit => undefined, release_root => undefined,
      sync_nodes_timeout => 5000, format_file => ""}.

require_layout(Opts) ->
    Missing = [K || K <- [cookie_file, env_file, args_file, worker_unit, release_root],
                    maps:get(K, Opts) =:= undefined],
    Missing =:= [] orelse
        throw({usage, "missing " ++ lists:join(", ", ["--" ++ [case C of $_ -> $-; _ -> C end
                                                                 || C <- atom_to_list(K)] || K <- Missing])}),
    Opts.

int_opts() -> [deadline, join_timeout, sync_nodes_timeout].

main(Args) ->
    try
        dispatch(Args)
    catch
        throw:{usage, Msg} ->
            io:put_chars(standard_error, ["<3>", prog(), ": ", Msg, "\n", usage()]),
            halt(2);
        throw:{fail, Fmt, FArgs} ->
            log(3, "FAILED: " ++ Fmt, FArgs),
            halt(1);
        Class:Reason:Stack ->
            log(3, "FAILED: internal error ~p:~p at ~p", [Class, Reason, hd(Stack ++ [none])]),
            halt(1)
    end.

dispatch(["--parse-user-data", File | Args]) ->
    %% The reader alone, on a file: tests/integration/self_join/test_bootstrap_user_data.py feeds it the
    %% cases that tests/unit/plugins/module_utils/test_user_data_cases.py feeds cluster.parse_user_data.
    load_format(parse_args(Args, from_env(defaults()))),
    case file:read_file(File) of
        {ok, Bin} ->
            case read_user_data(Bin) of
                not_ours -> io:put_chars("not ours\n");
                {ok, Map} -> [io:format("~s=~s~n", [K, V]) || {K, V} <- lists:sort(maps:to_list(Map))]
            end,
            halt(0);
        {error, Reason} ->
            fail("cannot read ~s: ~p", [File, Reason])
    end;
dispatch(["--check-user-data", File | Args]) ->
    %% What the bootstrap takes from FILE as a worker's user data (checked; the boot servers as lists): for tests.
    load_format(parse_args(Args, from_env(defaults()))),
    case file:read_file(File) of
        {ok, Bin} ->
            Show = fun(V) when is_list(V), V =/= [], is_list(hd(V)) -> lists:join(",", V); (V) -> V end,
            [io:format("~s=~s~n", [K, Show(V)]) || {K, V} <- lists:sort(maps:to_list(parse_user_data(Bin)))],
            halt(0);
        {error, Reason} ->
            fail("cannot read ~s: ~p", [File, Reason])
    end;
dispatch(Args) ->
    Opts = require_layout(parse_args(Args, from_env(defaults()))),
    load_format(Opts),
    run(Opts).

%% ---------------------------------------------------------------- options

from_env(Opts) ->
    maps:map(fun(Key, Default) ->
                     Var = "ERLANG_EC2_BOOTSTRAP_" ++ string:uppercase(atom_to_list(Key)),
                     case os:getenv(Var) of
                         false -> Default;
                         "" -> Default;
                         Value -> opt_value(Key, Value)
                     end
             end, Opts).

parse_args([], Opts) ->
    Opts;
parse_args(["--help" | _], _) ->
    io:put_chars(usage()),
    halt(0);
parse_args(["--" ++ Name, Value | Rest], Opts) ->
    Key = list_to_atom(lists:map(fun($-) -> $_; (C) -> C end, Name)),
    case maps:is_key(Key, Opts) of
        true -> parse_args(Rest, Opts#{Key => opt_value(Key, Value)});
        false -> throw({usage, "unknown option --" ++ Name})
    end;
parse_args([Other | _], _) ->
    throw({usage, "unexpected argument " ++ Other}).

opt_value(Key, Value) ->
    case lists:member(Key, int_opts()) of
        false -> Value;
        true ->
            try list_to_integer(Value) of
                N when N > 0 -> N;
                _ -> throw({usage, atom_to_list(Key) ++ " must be a positive integer"})
            catch error:badarg -> throw({usage, atom_to_list(Key) ++ " must be a positive integer, got " ++ Value})
            end
    end.

%% ---------------------------------------------------------------- main flow

run(Opts0) ->
    Start = now_ms(),
    {ok, _} = application:ensure_all_started(inets),
    Imds0 = #{url => maps:get(imds_url, Opts0), token => undefined},
    %% The network (and IMDS) may come up late: IMDS is retried within the deadline too.
    ImdsDeadline = Start + maps:get(deadline, Opts0) * 1000,
    {UserData, Imds1} = imds_get("/latest/user-data", Imds0, ImdsDeadline),
    Settings = parse_user_data(UserData),
    case maps:get("ERLANG_ROLE", Settings) of
        "worker" -> ok;
        Role ->
            log(6, "user data names role ~s: self-join is for workers; nothing to do", [Role]),
            halt(0)
    end,
    Opts = case maps:find("ERLANG_BOOTSTRAP_DEADLINE", Settings) of
               %% Per-instance user data may shorten the image's deadline, never lengthen it
               %% (the unit's start timeout is sized for the image's deadline).
               {ok, D} -> Opts0#{deadline => min(opt_value(deadline, D), maps:get(deadline, Opts0))};
               error -> Opts0
           end,
    Deadline = Start + maps:get(deadline, Opts) * 1000,
    {OwnIp, _} = imds_get("/latest/meta-data/local-ipv4", Imds1, Deadline),
    OwnIpStr = string:trim(binary_to_list(OwnIp)),
    OwnIpTuple = case inet:parse_ipv4strict_address(OwnIpStr) of
                     {ok, T} -> T;
                     _ -> fail("IMDS local-ipv4 is not an IPv4 address: ~p", [OwnIpStr])
                 end,
    Cluster = maps:get("ERLANG_CLUSTER", Settings),
    %% Every boot server, sorted by address (check_settings/1 made lists of one of older user data's single pair).
    BootIps = maps:get("ERLANG_BOOT_SERVER_IPS", Settings),
    BootNodes = [list_to_atom(N) || N <- maps:get("ERLANG_BOOT_NODES", Settings)],
    WorkerNode = list_to_atom(maps:get("ERLANG_NODE_NAME", Settings) ++ "@" ++ OwnIpStr),
    Contacts = [list_to_atom(N) || N <- maps:get("ERLANG_CONTACT_NODES", Settings, [])] -- [WorkerNode],
    log(6, "cluster ~s: worker ~s, boot servers ~p (~s), contact nodes ~p, deadline ~b s",
        [Cluster, WorkerNode, BootNodes, lists:join(",", BootIps), Contacts, maps:get(deadline, Opts)]),
    start_controller(OwnIpStr, Opts),
    Allowed = register_on_boot_servers(BootNodes, OwnIpTuple, Deadline),
    check_erts(Allowed),
    Release = release_name(Settings, Allowed, Opts),
    %% Every boot node and nothing that goes stale: the boot servers keep themselves connected to every live
    %% worker, and global's mesh connects the starting worker to them all.
    SyncNodes = BootNodes ++ (Contacts -- BootNodes),
    log(6, "the worker will connect at start to ~p", [SyncNodes]),
    write_settings(Opts, [{"ERLANG_CLUSTER", Cluster}, {"ERLANG_NODE", atom_to_list(WorkerNode)},
                          {"ERLANG_BOOT_SERVER_IP", hd(BootIps)}, {"ERLANG_BOOT_NODE", atom_to_list(hd(BootNodes))},
                          {"ERLANG_BOOT_SERVER_IPS", lists:join(",", BootIps)},
                          {"ERLANG_BOOT_NODES", lists:join(",", [atom_to_list(N) || N <- BootNodes])},
                          %% For the unit's -hosts: systemd splits an unbraced $ERLANG_LOADER_HOSTS at spaces.
                          {"ERLANG_LOADER_HOSTS", ["\"", lists:join(" ", BootIps), "\""]},
                          {"ERLANG_RELEASE_NAME", Release}], SyncNodes),
    start_worker(Opts),
    JoinDeadline = now_ms() + maps:get(join_timeout, Opts) * 1000,
    Expected = Allowed ++ (Contacts -- Allowed),
    wait_joined(WorkerNode, Expected, Opts, JoinDeadline),
    log(6, "joined: ~s runs ~s and is connected to ~p (~b nodes in all); ~b ms since the bootstrap started",
        [WorkerNode, Release, Expected, length(connected(WorkerNode)), now_ms() - Start]),
    net_kernel:stop(),
    halt(0).

%% ---------------------------------------------------------------- IMDS (IMDSv2)

imds_get(Path, Imds, Deadline) ->
    imds_get(Path, Imds, Deadline, 1, 0).

imds_get(Path, #{url := Url} = Imds0, Deadline, Attempt, Refreshes) ->
    Result = case imds_token(Imds0) of
                 {ok, Imds1} ->
                     Headers = [{"x-aws-ec2-metadata-token", maps:get(token, Imds1)}],
                     {Imds1, httpc:request(get, {Url ++ Path, Headers}, http_opts(), [{body_format, binary}])};
                 {error, _} = E ->
                     {Imds0, E}
             end,
    case Result of
        {Imds, {ok, {{_, 200, _}, _, Body}}} ->
            {Body, Imds};
        {Imds, {ok, {{_, 401, _}, _, _}}} when Refreshes < 2 ->
            %% The token expired or was revoked (e.g. a long wait for the boot server): get a new one.
            log(4, "IMDS answered 401 for ~s: refreshing the token", [Path]),
            imds_get(Path, Imds#{token => undefined}, Deadline, Attempt, Refreshes + 1);
        {_, {ok, {{_, 404, _}, _, _}}} when Path =:= "/latest/user-data" ->
            fail("this instance has no user data: launch it with the erlang-ec2 user data "
                 "(skunkworks.erlang_ec2.cluster_instances join: self, or cluster.render_user_data)", []);
        {_, {ok, {{_, Status, Reason}, _, _}}} when Status =/= 401 andalso Status < 500 ->
            fail("IMDS answered ~b ~s for ~s (is the metadata endpoint disabled for this instance?)",
                 [Status, Reason, Path]);
        {Imds, Other} ->
            Cause = imds_cause(Other),
            retry_or_fail(Deadline, Attempt, "IMDS ~s: ~s", [Path, Cause],
                          fun() -> imds_get(Path, Imds#{token => undefined}, Deadline, Attempt + 1, Refreshes) end)
    end.

imds_token(#{token := undefined, url := Url} = Imds) ->
    Req = {Url ++ "/latest/api/token", [{"x-aws-ec2-metadata-token-ttl-seconds", ?TOKEN_TTL}], "text/plain", ""},
    case httpc:request(put, Req, http_opts(), [{body_format, binary}]) of
        {ok, {{_, 200, _}, _, Token}} -> {ok, Imds#{token => binary_to_list(Token)}};
        Other -> {error, {token, Other}}
    end;
imds_token(Imds) ->
    {ok, Imds}.

imds_cause({error, {token, {ok, {{_, Status, Reason}, _, _}}}}) ->
    io_lib:format("token request answered ~b ~s", [Status, Reason]);
imds_cause({error, {token, {error, Reason}}}) ->
    io_lib:format("token request failed: ~p", [Reason]);
imds_cause({ok, {{_, Status, Reason}, _, _}}) ->
    io_lib:format("answered ~b ~s", [Status, Reason]);
imds_cause({error, Reason}) ->
    io_lib:format("~p", [Reason]).

http_opts() ->
    [{timeout, 3000}, {connect_timeout, 2000}].

%% ---------------------------------------------------------------- user data

%% The reader of plugins/module_utils/cluster.py's parse_user_data, step for step (the shared cases of
%% tests/unit/plugins/module_utils/user_data_cases.json are fed to both): decode UTF-8 (a bad byte becomes
%% U+FFFD), split lines as Python's str.splitlines, strip as str.strip, the marker on the first line or
%% not_ours, skip blank and # lines, KEY=value split at the first =, the last of a repeated key wins; then the
%% boot server keys checked and completed as check_boot_servers does (check_boot_servers/1).
read_user_data(Bin) ->
    case split_lines(decode(Bin)) of
        [First | Lines] ->
            case strip(First) =:= format(marker) of
                true -> {ok, check_boot_servers(maps:from_list(lists:filtermap(fun parse_line/1, Lines)))};
                false -> not_ours
            end;
        [] ->
            not_ours
    end.

%% cluster.py's check_boot_servers, step for step:
%% 1. none of the four keys: nothing to check or add;
%% 2. the lists both or neither; without them, the single pair (both needed) is a list of one;
%% 3. split at ",": the same length, every address a dotted quad, every node <node name>@<address at its
%%    position>, no address twice (order kept);
%% 4. the single pair, when present, is the first of each list; when absent it is set to it.
-define(UD_BOOT_KEYS, ["ERLANG_BOOT_SERVER_IP", "ERLANG_BOOT_NODE", "ERLANG_BOOT_SERVER_IPS", "ERLANG_BOOT_NODES"]).
check_boot_servers(S) ->
    case [K || K <- ?UD_BOOT_KEYS, maps:is_key(K, S)] of
        [] -> S;
        _ -> check_boot_server_lists(S)
    end.

check_boot_server_lists(S) ->
    Without = fun(Has, Lacks) -> fail("user data has ~s without ~s", [Has, Lacks]) end,
    {IpsText, NodesText} =
        case {maps:find("ERLANG_BOOT_SERVER_IPS", S), maps:find("ERLANG_BOOT_NODES", S)} of
            {{ok, I}, {ok, N}} -> {I, N};
            {{ok, _}, error} -> Without("ERLANG_BOOT_SERVER_IPS", "ERLANG_BOOT_NODES");
            {error, {ok, _}} -> Without("ERLANG_BOOT_NODES", "ERLANG_BOOT_SERVER_IPS");
            {error, error} ->
                case {maps:find("ERLANG_BOOT_SERVER_IP", S), maps:find("ERLANG_BOOT_NODE", S)} of
                    {{ok, I}, {ok, N}} -> {I, N};
                    {{ok, _}, error} -> Without("ERLANG_BOOT_SERVER_IP", "ERLANG_BOOT_NODE");
                    {error, {ok, _}} -> Without("ERLANG_BOOT_NODE", "ERLANG_BOOT_SERVER_IP")
                end
        end,
    Ips = string:split(IpsText, ",", all),
    Nodes = string:split(NodesText, ",", all),
    length(Ips) =:= length(Nodes) orelse
        fail("user data lists ~b boot server address(es) but ~b boot node(s)", [length(Ips), length(Nodes)]),
    [begin
         valid(ipv4, Ip) orelse fail("user data boot server address '~s' is not a dotted-quad IPv4 address", [Ip]),
         node_on(Node, Ip) orelse fail("user data boot node '~s' is not <node name>@~s", [Node, Ip])
     end || {Ip, Node} <- lists:zip(Ips, Nodes)],
    length(lists:usort(Ips)) =:= length(Ips) orelse fail("user data lists a boot server address twice: ~s", [IpsText]),
    S1 = lists:foldl(fun({K, First}, Acc) ->
                             case maps:get(K, Acc, First) of
                                 First -> Acc#{K => First};
                                 Other -> fail("user data ~s=~s is not the first of the list (~s)", [K, Other, First])
                             end
                     end, S, [{"ERLANG_BOOT_SERVER_IP", hd(Ips)}, {"ERLANG_BOOT_NODE", hd(Nodes)}]),
    S1#{"ERLANG_BOOT_SERVER_IPS" => IpsText, "ERLANG_BOOT_NODES" => NodesText}.

%% is_node_name(Node, host=Ip): <node name>@ exactly that address (split at the first @).
node_on(Node, Ip) ->
    case string:split(Node, "@") of
        [Name, Ip] -> valid(node_name, Name);
        _ -> false
    end.

%% What the bootstrap accepts: our user data, with what a worker needs (check_settings/1).
parse_user_data(Bin) ->
    case read_user_data(Bin) of
        {ok, Settings} -> check_settings(Settings);
        not_ours -> fail("user data is not erlang-ec2 user data (first line must be ~p): refusing to join",
                         [format(marker)])
    end.

parse_line(Line0) ->
    Line = strip(Line0),
    case Line of
        "" -> false;
        "#" ++ _ -> false;
        _ ->
            case string:split(Line, "=") of
                [Key, Value] ->
                    valid(key, Key) orelse fail("malformed user-data key ~p", [Key]),
                    valid(value, Value) orelse fail("malformed user-data value for ~s", [Key]),
                    {true, {Key, Value}};
                _ ->
                    fail("malformed user-data line ~p (expected KEY=value)", [Line])
            end
    end.

decode(Bin) ->
    case unicode:characters_to_list(Bin) of
        Chars when is_list(Chars) -> Chars;
        {error, Good, <<_, Rest/binary>>} -> Good ++ [16#FFFD | decode(Rest)];
        {incomplete, Good, _} -> Good ++ [16#FFFD]
    end.

split_lines(Chars) ->
    split_lines(Chars, [], []).

split_lines([], [], Lines) -> lists:reverse(Lines);
split_lines([], Line, Lines) -> lists:reverse([lists:reverse(Line) | Lines]);
split_lines([$\r, $\n | Rest], Line, Lines) -> split_lines(Rest, [], [lists:reverse(Line) | Lines]);
split_lines([C | Rest], Line, Lines) ->
    case lists:member(C, [$\n, $\r, 16#0B, 16#0C, 16#1C, 16#1D, 16#1E, 16#85, 16#2028, 16#2029]) of
        true -> split_lines(Rest, [], [lists:reverse(Line) | Lines]);
        false -> split_lines(Rest, [C | Line], Lines)
    end.

strip(Chars) ->
    lists:reverse(lists:dropwhile(fun is_space/1, lists:reverse(lists:dropwhile(fun is_space/1, Chars)))).

%% Python's str.isspace.
is_space(C) when C >= 16#2000, C =< 16#200A -> true;
is_space(C) -> lists:member(C, [$\t, $\n, 16#0B, 16#0C, $\r, 16#1C, 16#1D, 16#1E, 16#1F, $\s, 16#85, 16#A0,
                                16#1680, 16#2028, 16#2029, 16#202F, 16#205F, 16#3000]).

%% The format file: {Key, Value}. terms, Key one of format_keys().
format_keys() -> [marker, key_re, value_re, cluster_name_re, node_name_re, ipv4_re].

load_format(Opts) ->
    File = case maps:get(format_file, Opts) of
               "" -> escript:script_name() ++ ".format";
               Given -> Given
           end,
    Terms = case file:consult(File) of
                {ok, T} -> T;
                {error, Reason} -> fail("cannot read the user-data format ~s: ~p (the node_image role writes it)",
                                        [File, Reason])
            end,
    Format = maps:from_list([{K, V} || {K, V} <- Terms, is_atom(K), is_list(V)]),
    [maps:is_key(K, Format) orelse fail("the user-data format ~s has no ~s", [File, K]) || K <- format_keys()],
    persistent_term:put({erlang_ec2_bootstrap, user_data_format}, Format).

format(Key) ->
    maps:get(Key, persistent_term:get({erlang_ec2_bootstrap, user_data_format})).

matches(Key, Value) ->
    re:run(Value, format(Key), [unicode, ucp, {capture, none}]) =:= match.

valid(key, Key) -> matches(key_re, Key);
valid(value, V) -> matches(value_re, V);
valid(node_name, N) -> matches(node_name_re, N);
valid(cluster, C) -> matches(cluster_name_re, C);
valid(ipv4, Ip) -> matches(ipv4_re, Ip);
valid(node, Node) ->
    case string:split(Node, "@") of
        [Name, Host] -> valid(node_name, Name) andalso valid(ipv4, Host);
        _ -> false
    end.

check_settings(S) ->
    Require = fun(Key, Kind) ->
                      case maps:find(Key, S) of
                          {ok, V} -> valid(Kind, V) orelse fail("user data ~s=~s is not a valid ~s", [Key, V, Kind]);
                          error -> fail("user data has no ~s", [Key])
                      end
              end,
    Require("ERLANG_CLUSTER", cluster),
    Require("ERLANG_ROLE", value),
    case maps:get("ERLANG_ROLE", S) of
        "worker" ->
            Require("ERLANG_NODE_NAME", node_name),
            {BootIps, BootNodes} = boot_servers(S, Require),
            Contacts = [N || N <- string:lexemes(maps:get("ERLANG_CONTACT_NODES", S, ""), ","), N =/= ""],
            [valid(node, N) orelse fail("user data ERLANG_CONTACT_NODES has ~p, not a <name>@<ipv4> node", [N])
             || N <- Contacts],
            case maps:find("ERLANG_RELEASE", S) of
                {ok, R} -> re:run(R, "^[A-Za-z0-9_.-]+$", [{capture, none}]) =:= match orelse
                               fail("user data ERLANG_RELEASE=~s is not a release name", [R]);
                error -> ok
            end,
            S#{"ERLANG_CONTACT_NODES" => Contacts, "ERLANG_BOOT_SERVER_IPS" => BootIps, "ERLANG_BOOT_NODES" => BootNodes};
        _ ->
            S
    end.

%% Every boot server, as lists (read_user_data/1 checked and completed the four keys: a worker needs them).
boot_servers(S, Require) ->
    Require("ERLANG_BOOT_SERVER_IP", ipv4),
    {string:split(maps:get("ERLANG_BOOT_SERVER_IPS", S), ",", all),
     string:split(maps:get("ERLANG_BOOT_NODES", S), ",", all)}.

%% ---------------------------------------------------------------- controller node

start_controller(OwnIp, Opts) ->
    CookieFile = maps:get(cookie_file, Opts),
    case file:read_file_info(CookieFile) of
        {ok, Info} when element(8, Info) band 8#077 =/= 0 ->
            fail("cookie file ~s is readable by group or others (mode ~.8b): it must be 0400",
                 [CookieFile, element(8, Info) band 8#777]);
        {ok, _} -> ok;
        {error, Reason} -> fail("cannot read the cookie file ~s: ~p", [CookieFile, Reason])
    end,
    %% auth reads the cookie file in $HOME: the unit sets HOME to the service user's home.
    Home = os:getenv("HOME", ""),
    filename:dirname(CookieFile) =:= Home orelse
        fail("HOME (~s) must be the directory of the cookie file ~s (auth reads the cookie in $HOME)",
             [Home, CookieFile]),
    R = rand:uniform(1 bsl 48),
    Name = list_to_atom(lists:flatten(io_lib:format("bootstrap-~.36b@~s", [R, OwnIp]))),
    case net_kernel:start([Name, longnames]) of
        {ok, _} -> ok;
        {error, Reason2} ->
            fail("cannot start the controller node ~s: ~p (is epmd running? systemctl status epmd.socket)",
                 [Name, Reason2])
    end.

%% Every boot node that answers gets add_slave(Ip); at least one must, so while none does (all down,
%% unreachable, another cookie) the whole round is retried with backoff until the deadline. Returns the boot
%% nodes that allowed this host, in the user data's order; the others are named and skipped.
register_on_boot_servers(BootNodes, Ip, Deadline) ->
    register_on_boot_servers(BootNodes, Ip, Deadline, 1).

register_on_boot_servers(BootNodes, Ip, Deadline, Attempt) ->
    %% In parallel: a stopped host costs a connect timeout, not one per boot server in turn.
    Answering = alive(BootNodes, 10000),
    Results = [{N, case lists:member(N, Answering) of
                       true -> add_slave(N, Ip, Attempt);
                       false -> {skip, "does not answer (down, unreachable, or another cookie)"}
                   end} || N <- BootNodes],
    Allowed = [N || {N, ok} <- Results],
    Skipped = [io_lib:format("~s ~s", [N, Why]) || {N, {skip, Why}} <- Results],
    case Allowed of
        [] ->
            What = case Skipped of
                       [One] -> ["boot server node ", One];
                       _ -> ["no boot server node allowed this host: ", lists:join("; ", Skipped)]
                   end,
            retry_or_fail(Deadline, Attempt, "~s", [What],
                          fun() -> register_on_boot_servers(BootNodes, Ip, Deadline, Attempt + 1) end);
        _ ->
            Skipped =:= [] orelse
                log(4, "skipped boot servers: ~s; they are levelled from the others when they come back",
                    [lists:join("; ", Skipped)]),
            Allowed
    end.

add_slave(BootNode, Ip, Attempt) ->
    %% erlang_ec2_boot_server:add_slave/1 also persists the address (boot server role);
    %% plain erl_boot_server:add_slave/1 keeps it in memory only.
    {Mod, Persisted} = case rpc:call(BootNode, erlang_ec2_boot_server, module_info, [exports], 5000) of
                           Exports when is_list(Exports) ->
                               case lists:member({add_slave, 1}, Exports) of
                                   true -> {erlang_ec2_boot_server, true};
                                   false -> {erl_boot_server, false}
                               end;
                           _ -> {erl_boot_server, false}
                       end,
    case rpc:call(BootNode, Mod, add_slave, [Ip], 10000) of
        ok ->
            log(6, "~s:add_slave(~s) done on ~s (attempt ~b)~s",
                [Mod, inet:ntoa(Ip), BootNode, Attempt,
                 case Persisted of
                     true -> "";
                     false -> "; not persisted: the boot server exposes no erlang_ec2_boot_server:add_slave/1"
                 end]),
            case Persisted of
                true -> ok;
                false -> log(4, "the allow-list entry lasts until the boot server restarts or the reconcile playbook runs", [])
            end;
        {error, {not_persisted, File, Why}} ->
            %% Allowed all the same: join now (as before persistence existed) rather than not at all.
            log(4, "~s:add_slave(~s) done on ~s (attempt ~b) but not persisted in ~s (~p): the allow-list "
                "entry lasts until the boot server restarts or the reconcile playbook runs",
                [Mod, inet:ntoa(Ip), BootNode, Attempt, File, Why]);
        {badrpc, nodedown} ->
            {skip, "went down during add_slave"};
        {badrpc, {'EXIT', {noproc, _}}} ->
            {skip, "is not running erl_boot_server"};
        Other ->
            {skip, io_lib:format("returned ~p to add_slave", [Other])}
    end.

%% erl_boot_server serves only a loader of exactly its own ERTS version: say so now, not by a hang.
%% Asked of the first boot node that allowed this host and answers the call.
check_erts(BootNodes) ->
    Own = erlang:system_info(version),
    case first_answer(BootNodes, erlang, system_info, [version]) of
        {_, Own} -> ok;
        {Node, Theirs} when is_list(Theirs) ->
            fail("the boot server ~s runs ERTS ~s and this image ERTS ~s: a boot server serves only its own version; "
                 "bake the image with the boot server's Erlang (erlang_version)", [Node, Theirs, Own]);
        {_, Other} ->
            fail("cannot read the boot servers' ERTS version: ~p", [Other])
    end.

release_name(#{"ERLANG_RELEASE" := Release}, _BootNodes, _Opts) ->
    Release;
release_name(_, BootNodes, Opts) ->
    Current = filename:join(maps:get(release_root, Opts), "current"),
    case first_answer(BootNodes, file, list_dir, [Current]) of
        {_, {ok, Files}} ->
            case [filename:basename(F, ".rel") || F <- Files, filename:extension(F) =:= ".rel"] of
                [Name] -> Name;
                [] -> fail("the boot server has no release in ~s: deploy one first (site or deploy playbook)", [Current]);
                Names -> fail("the boot server's ~s holds several releases ~p: give ERLANG_RELEASE in the user data",
                              [Current, Names])
            end;
        {_, {error, enoent}} ->
            fail("the boot server has no current release (~s is missing): deploy one first", [Current]);
        {_, Other} ->
            fail("cannot list ~s on the boot servers: ~p", [Current, Other])
    end.

%% {Node, Result} of the first node that answers the call (not {badrpc, _}); else the last node's badrpc.
first_answer([Node | Rest], M, F, A) ->
    case rpc:call(Node, M, F, A, 10000) of
        {badrpc, _} = Bad when Rest =:= [] -> {Node, Bad};
        {badrpc, _} -> first_answer(Rest, M, F, A);
        Result -> {Node, Result}
    end.

alive(Nodes, Timeout) ->
    Parent = self(),
    Ref = make_ref(),
    [spawn(fun() -> Parent ! {Ref, N, net_adm:ping(N)} end) || N <- Nodes],
    Deadline = now_ms() + Timeout,
    lists:sort(collect_alive(Ref, length(Nodes), Deadline, [])).

collect_alive(_Ref, 0, _Deadline, Acc) ->
    Acc;
collect_alive(Ref, Left, Deadline, Acc) ->
    receive
        {Ref, N, pong} -> collect_alive(Ref, Left - 1, Deadline, [N | Acc]);
        {Ref, _, pang} -> collect_alive(Ref, Left - 1, Deadline, Acc)
    after max(0, Deadline - now_ms()) ->
            Acc
    end.

%% ---------------------------------------------------------------- worker settings and start

write_settings(Opts, Env, SyncNodes) ->
    EnvText = ["# Written at boot by ", prog(), " from the instance's user data; read by the worker unit.\n",
               [[K, "=", V, "\n"] || {K, V} <- Env]],
    Quoted = lists:join(",", [io_lib:format("'~s'", [N]) || N <- SyncNodes]),
    ArgsText = ["# Written at boot by ", prog(), "; read by erl (-args_file) at every start of the worker.\n",
                "-kernel sync_nodes_optional \"[", Quoted, "]\" sync_nodes_timeout ",
                integer_to_list(maps:get(sync_nodes_timeout, Opts)), "\n"],
    write_atomic(maps:get(env_file, Opts), EnvText),
    write_atomic(maps:get(args_file, Opts), ArgsText).

write_atomic(Path, Data) ->
    ok = filelib:ensure_dir(Path),
    Tmp = Path ++ ".tmp",
    case file:write_file(Tmp, Data) of
        ok ->
            ok = file:change_mode(Tmp, 8#644),
            case file:rename(Tmp, Path) of
                ok -> ok;
                {error, R} -> fail("cannot write ~s: ~p", [Path, R])
            end;
        {error, R} ->
            fail("cannot write ~s: ~p", [Tmp, R])
    end.

start_worker(Opts) ->
    Unit = maps:get(worker_unit, Opts),
    %% --no-block: the join deadline below is ours, not systemd's start timeout.
    _ = systemctl(["reset-failed", Unit]),
    case systemctl(["start", "--no-block", Unit]) of
        {0, _} -> log(6, "started ~s", [Unit]);
        {Code, Out} -> fail("systemctl start ~s exited ~b: ~s", [Unit, Code, string:trim(Out)])
    end.

systemctl(Args) ->
    Port = open_port({spawn_executable, "/bin/systemctl"},
                     [{args, Args}, exit_status, stderr_to_stdout, binary]),
    collect(Port, <<>>).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, <<Acc/binary, D/binary>>);
        {Port, {exit_status, S}} -> {S, binary_to_list(Acc)}
    after 30000 ->
            port_close(Port),
            {-1, "systemctl did not answer in 30 s"}
    end.

wait_joined(WorkerNode, Expected, Opts, Deadline) ->
    Unit = maps:get(worker_unit, Opts),
    State = case net_adm:ping(WorkerNode) of
                pang -> {waiting, "the worker node does not answer yet"};
                pong ->
                    case rpc:call(WorkerNode, init, get_status, [], 5000) of
                        {started, _} ->
                            case rpc:call(WorkerNode, erlang, nodes, [], 5000) of
                                Nodes when is_list(Nodes) ->
                                    case Expected -- Nodes of
                                        [] -> joined;
                                        Missing -> {waiting, io_lib:format("the worker is not connected to ~p", [Missing])}
                                    end;
                                Bad -> {waiting, io_lib:format("nodes() on the worker: ~p", [Bad])}
                            end;
                        Status -> {waiting, io_lib:format("the worker is booting (init status ~p)", [Status])}
                    end
            end,
    case State of
        joined -> ok;
        {waiting, Why} ->
            case now_ms() > Deadline of
                true ->
                    {_, Active} = systemctl(["is-active", Unit]),
                    fail("~s did not join within the join timeout (~b s): ~s; ~s is ~s (journalctl -u ~s)",
                         [WorkerNode, maps:get(join_timeout, Opts), Why, Unit, string:trim(Active), Unit]);
                false ->
                    timer:sleep(500),
                    wait_joined(WorkerNode, Expected, Opts, Deadline)
            end
    end.

%% ---------------------------------------------------------------- helpers

connected(Node) ->
    case rpc:call(Node, erlang, nodes, [], 5000) of
        Nodes when is_list(Nodes) -> Nodes;
        _ -> []
    end.

retry_or_fail(Deadline, Attempt, Fmt, Args, Retry) ->
    Left = Deadline - now_ms(),
    Backoff = min(10000, 500 * (1 bsl min(Attempt - 1, 5))),
    case Left =< 0 of
        true ->
            fail(Fmt ++ "; gave up after ~b attempts at the deadline", Args ++ [Attempt]);
        false ->
            Sleep = min(Backoff, Left),
            log(4, Fmt ++ "; attempt ~b, retrying in ~b ms (~b s left)", Args ++ [Attempt, Sleep, Left div 1000]),
            timer:sleep(Sleep),
            Retry()
    end.

fail(Fmt, Args) ->
    throw({fail, Fmt, Args}).

%% One journal entry per message: terms printed over several lines are folded into one.
log(Priority, Fmt, Args) ->
    Text = re:replace(io_lib:format(Fmt, Args), "\\s*\n\\s*", " ", [global, unicode, {return, list}]),
    io:put_chars(standard_error, ["<", integer_to_list(Priority), ">", prog(), ": ", Text, "\n"]).

now_ms() ->
    erlang:monotonic_time(millisecond).
