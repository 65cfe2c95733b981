defmodule HelloElixir.HTTP do
  @moduledoc """
  An inets httpd instance (OTP, no hex deps) answering `GET /status` with JSON;
  everything else is 404. This module is also the httpd callback module (`do/1`).
  """

  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  def child_spec(_opts) do
    port = Application.get_env(:hello_elixir, :http_port, 8080)
    ip = Application.get_env(:hello_elixir, :http_ip, :any)

    config = [
      port: port,
      bind_address: ip,
      server_name: 'hello_elixir',
      server_root: '/tmp',
      document_root: '/tmp',
      modules: [__MODULE__]
    ]

    %{
      id: :httpd,
      start: {:inets, :start, [:httpd, config, :stand_alone]},
      restart: :permanent,
      shutdown: 2000,
      type: :worker,
      modules: [:httpd]
    }
  end

  @doc "The port httpd actually listens on (differs from the configured one when that is 0)."
  def port do
    [pid] = for {:httpd, pid, _, _} <- Supervisor.which_children(HelloElixir.Supervisor), do: pid
    pid |> :httpd.info() |> Keyword.fetch!(:port)
  end

  # The inets httpd callback is do/1; `do` is reserved in Elixir, hence unquote(:do).
  def unquote(:do)(mod(method: 'GET', request_uri: '/status')),
    do: reply(200, HelloElixir.status_json())

  def unquote(:do)(_mod), do: reply(404, ~s({"error":"not found"}))

  defp reply(code, body) do
    head = [
      code: code,
      content_type: 'application/json',
      content_length: body |> byte_size() |> Integer.to_charlist()
    ]

    {:proceed, [response: {:response, head, [body]}]}
  end
end
