/* hello_rebar3_nif: a small NIF shipped in priv/ (what a diskless worker must find on its own disk). */
#include <string.h>
#include "erl_nif.h"

#ifndef HELLO_REBAR3_VSN
#error "compile with -DHELLO_REBAR3_VSN='\"<version>\"'"
#endif

/* nif_version() -> <<"1.0.0">>: the version this library was compiled for. */
static ERL_NIF_TERM nif_version(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifBinary bin;
    size_t len = strlen(HELLO_REBAR3_VSN);
    (void)argc;
    (void)argv;
    if (!enif_alloc_binary(len, &bin))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    memcpy(bin.data, HELLO_REBAR3_VSN, len);
    return enif_make_binary(env, &bin);
}

/* add(A, B) -> A + B for 64-bit integers. */
static ERL_NIF_TERM add(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    ErlNifSInt64 a, b;
    (void)argc;
    if (!enif_get_int64(env, argv[0], &a) || !enif_get_int64(env, argv[1], &b))
        return enif_make_badarg(env);
    return enif_make_int64(env, a + b);
}

static ErlNifFunc nif_funcs[] = {
    {"nif_version", 0, nif_version, 0},
    {"add", 2, add, 0},
};

ERL_NIF_INIT(hello_rebar3_nif, nif_funcs, NULL, NULL, NULL, NULL)
