-module(hello_rebar3_app).
-behaviour(application).
-export([start/2, stop/1]).

start(_Type, _Args) ->
    hello_rebar3_sup:start_link().

stop(_State) ->
    ok.
