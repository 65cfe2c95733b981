%% Minimal JSON encoder (OTP 25 has no json module, and hex is out of reach):
%% maps with atom/binary keys, lists, binaries/strings as binaries, integers,
%% floats, true/false/null and other atoms as strings.
-module(hello_rebar3_json).
-export([encode/1]).

-spec encode(term()) -> binary().
encode(Term) ->
    iolist_to_binary(value(Term)).

value(true) -> <<"true">>;
value(false) -> <<"false">>;
value(null) -> <<"null">>;
value(A) when is_atom(A) -> string(atom_to_binary(A, utf8));
value(I) when is_integer(I) -> integer_to_binary(I);
value(F) when is_float(F) -> float_to_binary(F, [short]);
value(B) when is_binary(B) -> string(B);
value(L) when is_list(L) -> [$[, lists:join($,, [value(V) || V <- L]), $]];
value(M) when is_map(M) ->
    Pairs = [[key(K), $:, value(V)] || {K, V} <- lists:sort(maps:to_list(M))],
    [${, lists:join($,, Pairs), $}].

key(K) when is_atom(K) -> string(atom_to_binary(K, utf8));
key(K) when is_binary(K) -> string(K).

string(Bin) ->
    [$", [escape(C) || <<C/utf8>> <= Bin], $"].

escape($") -> <<"\\\"">>;
escape($\\) -> <<"\\\\">>;
escape($\n) -> <<"\\n">>;
escape(C) when C < 16#20 -> io_lib:format("\\u~4.16.0b", [C]);
escape(C) -> <<C/utf8>>.
