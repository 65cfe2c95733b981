defmodule HelloElixir do
  @moduledoc "Status of this node: what `GET /status` returns."

  alias HelloElixir.{Describe, Release}

  @spec status() :: map
  def status do
    release = Release.current()

    %{
      node: Atom.to_string(node()),
      release: release.name,
      version: release.version,
      app_version: app_version(),
      nodes: Node.list() |> Enum.sort() |> Enum.map(&Atom.to_string/1),
      crypto: %{sha256: :crypto.hash(:sha256, release.version) |> Base.encode16(case: :lower)},
      protocol: [Describe.describe(release), Describe.describe(42)],
      consolidated: Protocol.consolidated?(Describe),
      elixir: System.version(),
      otp_release: System.otp_release()
    }
  end

  @spec status_json() :: binary
  def status_json, do: status() |> HelloElixir.JSON.encode()

  defp app_version do
    {:ok, vsn} = :application.get_key(:hello_elixir, :vsn)
    List.to_string(vsn)
  end
end
