%% Top supervisor: owns the inets httpd instance that serves GET /status.
-module(hello_rebar3_sup).
-behaviour(supervisor).
-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Port = application:get_env(hello_rebar3, http_port, 8080),
    Ip = application:get_env(hello_rebar3, http_ip, any),
    %% stand_alone: the httpd instance is linked to (and restarted by) this supervisor.
    Config = [{port, Port},
              {bind_address, Ip},
              {server_name, "hello_rebar3"},
              {server_root, "/tmp"},
              {document_root, "/tmp"},
              {modules, [hello_rebar3_http]}],
    Httpd = #{id => httpd,
              start => {inets, start, [httpd, Config, stand_alone]},
              restart => permanent,
              shutdown => 2000,
              type => worker,
              modules => [httpd]},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Httpd]}}.
