defmodule HelloElixir.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [HelloElixir.HTTP]
    Supervisor.start_link(children, strategy: :one_for_one, name: HelloElixir.Supervisor)
  end
end
