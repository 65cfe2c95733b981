%% Top supervisor: owns the inets httpd instance that serves GET /status.
-module(hello_cluster_sup).
-behaviour(supervisor).
-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Port = application:get_env(hello_cluster, http_port, 8080),
    %% stand_alone: the httpd instance is linked to (and restarted by) this supervisor.
    Config = [{port, Port},
              {bind_address, any},
              {server_name, "hello_cluster"},
              {server_root, "/tmp"},
              {document_root, "/tmp"},
              {modules, [hello_cluster_http]}],
    Httpd = #{id => httpd,
              start => {inets, start, [httpd, Config, stand_alone]},
              restart => permanent,
              shutdown => 2000,
              type => worker,
              modules => [httpd]},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Httpd]}}.
