defmodule HelloElixir.JSON do
  @moduledoc "Minimal JSON encoder (no Jason: no hex dependencies)."

  @spec encode(term) :: binary
  def encode(term), do: term |> value() |> IO.iodata_to_binary()

  defp value(true), do: "true"
  defp value(false), do: "false"
  defp value(nil), do: "null"
  defp value(a) when is_atom(a), do: a |> Atom.to_string() |> string()
  defp value(i) when is_integer(i), do: Integer.to_string(i)
  defp value(f) when is_float(f), do: Float.to_string(f)
  defp value(b) when is_binary(b), do: string(b)
  defp value(l) when is_list(l), do: ["[", l |> Enum.map(&value/1) |> Enum.intersperse(","), "]"]

  defp value(m) when is_map(m) do
    pairs =
      m
      |> Enum.map(fn {k, v} -> {to_string(k), v} end)
      |> Enum.sort()
      |> Enum.map(fn {k, v} -> [string(k), ":", value(v)] end)

    ["{", Enum.intersperse(pairs, ","), "}"]
  end

  defp string(s), do: [?", for(<<c::utf8 <- s>>, do: escape(c)), ?"]

  defp escape(?"), do: "\\\""
  defp escape(?\\), do: "\\\\"
  defp escape(?\n), do: "\\n"
  defp escape(c) when c < 0x20, do: :io_lib.format("\\u~4.16.0b", [c])
  defp escape(c), do: <<c::utf8>>
end
