defmodule HelloElixir.MixProject do
  use Mix.Project

  # VSN (environment) is the application and the release version, so one checkout
  # builds v1 and v2: `VSN=2.0.0 MIX_ENV=prod mix release`.
  @version System.get_env("VSN", "0.1.0")

  def project do
    [
      app: :hello_elixir,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # No dependencies: the build must work offline (no hex.pm).
      deps: [],
      releases: releases()
    ]
  end

  def application do
    [
      extra_applications: [:logger, :crypto, :inets],
      mod: {HelloElixir.Application, []}
    ]
  end

  defp releases do
    [
      hello_elixir: [
        version: @version,
        # The cluster's nodes run the distribution's OTP: no ERTS in the tarball.
        include_erts: false,
        steps: [:assemble, :tar]
      ]
    ]
  end
end
