%% Added by the push suite to hello_cluster builds: a module a long-lived process runs in (old code after a
%% reload), with an -on_load check that a node refuses when /var/tmp/erlang-ec2-refuse-push exists on its disk.
-module(push_loop).
-on_load(check/0).
-export([check/0, start/0, loop/0, version/0]).

check() ->
    case filelib:is_file("/var/tmp/erlang-ec2-refuse-push") of
        true -> refused_by_the_test;
        false -> ok
    end.

%% A process that stays in this version's code: loop/0 calls itself locally.
start() -> spawn(fun loop/0).

loop() ->
    receive stop -> ok after 60000 -> loop() end.

version() -> ?VERSION.
