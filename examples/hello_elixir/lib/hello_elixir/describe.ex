defprotocol HelloElixir.Describe do
  @moduledoc """
  A protocol of this application. In a release, protocols are consolidated
  (`releases/<vsn>/consolidated/`): dispatch no longer searches for implementations.
  """

  @doc "A one-line description of the term."
  @spec describe(t) :: String.t()
  def describe(term)
end

defimpl HelloElixir.Describe, for: HelloElixir.Release do
  def describe(%HelloElixir.Release{name: name, version: version}),
    do: "release #{name} #{version}"
end

defimpl HelloElixir.Describe, for: Integer do
  def describe(n) when n < 0, do: "negative integer #{n}"
  def describe(n), do: "integer #{n}"
end
