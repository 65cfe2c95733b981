defmodule HelloElixir.Release do
  @moduledoc "The release this node booted, from `:init.script_id/0`."
  defstruct [:name, :version]

  @type t :: %__MODULE__{name: String.t(), version: String.t()}

  @spec current() :: t
  def current do
    {name, version} = :init.script_id()
    %__MODULE__{name: List.to_string(name), version: List.to_string(version)}
  end
end
