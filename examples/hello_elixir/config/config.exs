import Config

# Evaluated at build time (there is no config/runtime.exs): the value lands in the
# release's sys.config. The Makefile passes HTTP_PORT.
config :hello_elixir,
  http_port: String.to_integer(System.get_env("HTTP_PORT", "8080")),
  # :any, or an address tuple such as {127, 0, 0, 1}
  http_ip: :any

config :logger, level: :notice
