%% inets httpd callback module: GET /status answers JSON, everything else 404.
-module(hello_rebar3_http).
-export([do/1]).

-include_lib("inets/include/httpd.hrl").

do(#mod{method = "GET", request_uri = "/status"}) ->
    reply(200, hello_rebar3:status_json());
do(#mod{}) ->
    reply(404, <<"{\"error\":\"not found\"}">>).

reply(Code, Body) ->
    Head = [{code, Code},
            {content_type, "application/json"},
            {content_length, integer_to_list(iolist_size(Body))}],
    {proceed, [{response, {response, Head, [Body]}}]}.
