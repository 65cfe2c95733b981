%% Application callback. A build with CRASH=1 (erlc -DCRASH) fails at start on purpose:
%% it stands for a broken release in the rolling-restart tests.
-module(hello_cluster_app).
-behaviour(application).
-export([start/2, stop/1]).

-ifdef(CRASH).
start(_Type, _Args) ->
    {error, {crash_build, "hello_cluster was built with CRASH=1"}}.
-else.
start(_Type, _Args) ->
    hello_cluster_sup:start_link().
-endif.

stop(_State) ->
    ok.
