%% Status of this node: what GET /status returns, also callable over distribution.
-module(hello_rebar3).
-export([status/0, status_json/0, http_port/0, greeting/0]).

%% release/version come from the boot script the node booted (or init:restart/0ed) with.
-spec status() -> map().
status() ->
    {Release, Version} = init:script_id(),
    Greeting = greeting(),
    #{node => atom_to_binary(node(), utf8),
      release => unicode:characters_to_binary(Release),
      version => unicode:characters_to_binary(Version),
      app_version => app_version(),
      nodes => [atom_to_binary(N, utf8) || N <- lists:sort(nodes())],
      nif => #{version => hello_rebar3_nif:nif_version(),
               add => hello_rebar3_nif:add(40, 2),
               path => unicode:characters_to_binary(code:priv_dir(hello_rebar3))},
      priv => Greeting,
      crypto => #{sha256 => hex(crypto:hash(sha256, Greeting)),
                  crypto_lib => crypto_lib()},
      ssl => ssl_started(),
      tls_versions => tls_versions(),
      schedulers => erlang:system_info(schedulers),
      schedulers_online => erlang:system_info(schedulers_online),
      async_threads => erlang:system_info(thread_pool_size),
      vm_args_kernel => #{net_setuptime => kernel_env(net_setuptime)},
      otp_release => list_to_binary(erlang:system_info(otp_release))}.

-spec status_json() -> binary().
status_json() ->
    hello_rebar3_json:encode(status()).

%% The port httpd actually listens on (differs from the configured one when that is 0).
-spec http_port() -> inet:port_number().
http_port() ->
    [Pid] = [P || {httpd, P, _, _} <- supervisor:which_children(hello_rebar3_sup)],
    proplists:get_value(port, httpd:info(Pid)).

%% priv/greeting.txt, written by the relx overlay with the release version.
-spec greeting() -> binary().
greeting() ->
    File = filename:join(code:priv_dir(hello_rebar3), "greeting.txt"),
    case file:read_file(File) of
        {ok, Bin} -> string:trim(Bin);
        {error, Reason} -> iolist_to_binary(io_lib:format("error: ~p ~ts", [Reason, File]))
    end.

app_version() ->
    {ok, Vsn} = application:get_key(hello_rebar3, vsn),
    list_to_binary(Vsn).

ssl_started() ->
    lists:keymember(ssl, 1, application:which_applications()).

tls_versions() ->
    case ssl_started() of
        true -> [atom_to_binary(V, utf8) || V <- proplists:get_value(supported, ssl:versions(), [])];
        false -> []
    end.

crypto_lib() ->
    case crypto:info_lib() of
        [{Name, _, Text} | _] -> unicode:characters_to_binary([Name, " ", Text]);
        _ -> <<>>
    end.

kernel_env(Key) ->
    case application:get_env(kernel, Key) of
        {ok, V} -> V;
        undefined -> null
    end.

hex(Bin) ->
    << <<(hexdigit(N))>> || <<N:4>> <= Bin >>.

hexdigit(N) when N < 10 -> $0 + N;
hexdigit(N) -> $a + N - 10.
