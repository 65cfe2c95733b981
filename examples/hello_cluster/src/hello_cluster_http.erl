%% inets httpd callback module: GET /status answers JSON, everything else 404.
-module(hello_cluster_http).
-export([do/1]).

-include_lib("inets/include/httpd.hrl").

do(#mod{method = "GET", request_uri = "/status"}) ->
    Body = hello_cluster:status_json(),
    Head = [{code, 200},
            {content_type, "application/json"},
            {content_length, integer_to_list(iolist_size(Body))}],
    {proceed, [{response, {response, Head, Body}}]};
do(#mod{}) ->
    Body = "{\"error\": \"not found\"}",
    Head = [{code, 404},
            {content_type, "application/json"},
            {content_length, integer_to_list(length(Body))}],
    {proceed, [{response, {response, Head, Body}}]}.
