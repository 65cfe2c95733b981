%% The C side is c_src/hello_rebar3_nif.c, built into priv/hello_rebar3_nif.so.
%% Loaded when this module is loaded (in embedded mode: at boot, before any
%% application starts), from this application's own priv directory.
-module(hello_rebar3_nif).
-export([nif_version/0, add/2]).
-on_load(init/0).

-define(LIB, "hello_rebar3_nif").

init() ->
    Dir = case code:priv_dir(hello_rebar3) of
              {error, bad_name} ->
                  %% Not in a release or a rebar3 build (e.g. plain erlc): next to ebin/.
                  filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
              PrivDir ->
                  PrivDir
          end,
    erlang:load_nif(filename:join(Dir, ?LIB), 0).

%% Version the shared library was compiled for (-DHELLO_REBAR3_VSN).
-spec nif_version() -> binary().
nif_version() ->
    erlang:nif_error({not_loaded, ?LIB}).

-spec add(integer(), integer()) -> integer().
add(_A, _B) ->
    erlang:nif_error({not_loaded, ?LIB}).
