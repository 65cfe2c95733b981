%% Status of this node: what GET /status returns, also callable over distribution.
-module(hello_cluster).
-export([status/0, status_json/0, http_port/0]).

-ifndef(BUILD).
-define(BUILD, "").
-endif.

%% #{node, release, version, nodes, build}: release name and version come from the boot
%% script the node was started (or restarted) with, so they change with init:restart/0.
status() ->
    {Release, Version} = init:script_id(),
    #{node => atom_to_binary(node(), utf8),
      release => unicode:characters_to_binary(Release),
      version => unicode:characters_to_binary(Version),
      nodes => [atom_to_binary(N, utf8) || N <- lists:sort(nodes())],
      build => <<?BUILD>>}.

%% OTP 25 has no json module: the few value types used here are encoded by hand.
status_json() ->
    #{node := Node, release := Release, version := Version, nodes := Nodes, build := Build} = status(),
    iolist_to_binary(
      ["{\"node\": ", string(Node),
       ", \"release\": ", string(Release),
       ", \"version\": ", string(Version),
       ", \"nodes\": [", lists:join(", ", [string(N) || N <- Nodes]), "]",
       ", \"build\": ", string(Build), "}"]).

%% The port httpd actually listens on (differs from the configured one when that is 0).
http_port() ->
    [Pid] = [P || {httpd, P, _, _} <- supervisor:which_children(hello_cluster_sup)],
    proplists:get_value(port, httpd:info(Pid)).

string(Bin) ->
    [$", escape(Bin), $"].

escape(Bin) ->
    [escape_char(C) || <<C/utf8>> <= Bin].

escape_char($") -> "\\\"";
escape_char($\\) -> "\\\\";
escape_char(C) when C < 16#20 -> io_lib:format("\\u~4.16.0b", [C]);
escape_char(C) -> <<C/utf8>>.
