#!/usr/bin/env bash
# build-third-party-release.sh <mirror git dir> <tag> <VSN> <OUT>
#
# A release with a THIRD-PARTY NIF, for a manual check of the collection (not run in CI).
#
# Project: jiffy (https://github.com/davisp/jiffy, MIT/BSD), a JSON library whose encoder and decoder
# are a C/C++ NIF, priv/jiffy.so. Upstream builds it with the `pc` rebar3 plugin, which comes from
# hex.pm; here the source is taken from a local git mirror (`git archive <tag>`, e.g. the mirror of
# github:davisp/jiffy), put into `_checkouts/jiffy` of a tiny application of ours (hello_jiffy), and
# pc is replaced by a pre_hooks `make` (ERTS headers from code:root_dir()/erts-*/include, -fPIC -shared,
# the sources listed in jiffy's own port_specs). rebar3 runs inside `unshare -n` with an empty cache.
#
# What it proves:
#   - a real third-party library with a NIF builds into a relx release (rebar3 tar, include_erts false)
#     with no network and nothing from hex.pm: <OUT>/hello_jiffy-<VSN>.tar.gz;
#   - the release carries lib/jiffy-<jiffy vsn>/priv/jiffy.so (plus OTP's xmerl, which jiffy needs);
#     a diskless worker must find that .so on its own disk at the boot server's path;
#   - two releases built with two jiffy tags (e.g. 1.1.1 for v1, 1.1.2 for v2) have the NIF at
#     different paths, lib/jiffy-1.1.1/priv vs lib/jiffy-1.1.2/priv: an upgrade changes the .so path.
#
# The release, hello_jiffy, answers GET /status on HTTP_PORT (default 8080) with JSON encoded BY JIFFY:
#   {"node", "release", "version", "nodes", "jiffy_vsn", "nif_path", "roundtrip"}
# where roundtrip is true when jiffy:decode(jiffy:encode(Term)) gives Term back (the NIF works).
# Run it from disk: tar -C /tmp/r -xzf hello_jiffy-1.0.0.tar.gz && /tmp/r/bin/hello_jiffy foreground
# (vm.args: -sname hello_jiffy -setcookie hello_jiffy_cookie, rebar3's default style).
#
# Example:
#   scripts/build-third-party-release.sh /work/.mirror/davisp+jiffy/repo 1.1.1 1.0.0 /tmp/third-party-releases
#   scripts/build-third-party-release.sh /work/.mirror/davisp+jiffy/repo 1.1.2 2.0.0 /tmp/third-party-releases
# Needs: git, erl, rebar3, cc and c++ (g++), make, unshare (util-linux). KEEP_WORK=1 keeps the build directory.
set -euo pipefail

usage() { echo "usage: $0 <mirror git dir> <tag> <VSN> <OUT>" >&2; exit 2; }
[ $# -eq 4 ] || usage
MIRROR=$1 TAG=$2 VSN=$3 OUT=$4
HTTP_PORT=${HTTP_PORT:-8080}
NAME=hello_jiffy
DEP=jiffy

[[ "$VSN" =~ ^[0-9A-Za-z][0-9A-Za-z._+-]*$ ]] || { echo "$0: bad VSN '$VSN'" >&2; exit 2; }
[[ "$HTTP_PORT" =~ ^[0-9]+$ ]] || { echo "$0: bad HTTP_PORT '$HTTP_PORT'" >&2; exit 2; }
git --git-dir="$MIRROR" rev-parse --verify -q "$TAG^{commit}" >/dev/null \
    || { echo "$0: no tag/commit '$TAG' in git dir '$MIRROR'" >&2; exit 2; }
for tool in git erl rebar3 cc c++ make unshare; do
    command -v "$tool" >/dev/null || { echo "$0: '$tool' not found" >&2; exit 2; }
done
if [ "$(id -u)" = 0 ]; then OFFLINE=(unshare -n); else OFFLINE=(unshare -r -n); fi
"${OFFLINE[@]}" true || { echo "$0: cannot make a network namespace with '${OFFLINE[*]}'" >&2; exit 2; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
if [ -n "${KEEP_WORK:-}" ]; then echo "work dir (kept): $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi
APP=$WORK/$NAME
mkdir -p "$APP/src" "$APP/config" "$APP/_checkouts/$DEP"

# --- the library, from the mirror ------------------------------------------------------------
git --git-dir="$MIRROR" archive --format=tar "$TAG" | tar -C "$APP/_checkouts/$DEP" -xf -
DEP_DIR=$APP/_checkouts/$DEP
# Upstream's rebar.config.script adds the pc plugin (from hex): drop it, build with make instead.
rm -f "$DEP_DIR/rebar.config.script"
# The NIF's sources, as jiffy's own port_specs list them ("c_src/*.c", "c_src/*.cc", ...).
SOURCES=$(cd "$DEP_DIR" && erl -noshell -eval '
    {ok, Config} = file:consult("rebar.config"),
    Specs = proplists:get_value(port_specs, Config, []),
    Globs = lists:append([Srcs || {"priv/jiffy.so", Srcs} <- Specs]),
    Globs =/= [] orelse halt(3),
    io:format("~s", [lists:join(" ", lists:append([filelib:wildcard(G) || G <- Globs]))]),
    halt().') || { echo "$0: no port_specs for priv/jiffy.so in $TAG's rebar.config" >&2; exit 1; }
cat > "$DEP_DIR/c_src/Makefile.offline" <<MAKE
# Written by scripts/build-third-party-release.sh: priv/jiffy.so without the pc plugin.
# Run from the library's top directory (rebar3 pre_hooks): make -f c_src/Makefile.offline
ERTS_INCLUDE := \$(shell erl -noshell -eval 'io:format("~s/erts-~s/include", [code:root_dir(), erlang:system_info(version)]), halt().')
SRCS := $SOURCES
OBJS := \$(patsubst %,_offline_obj/%.o,\$(SRCS))
FLAGS := -fPIC -O3 -g -Wall -Ic_src/ -I\$(ERTS_INCLUDE)
priv/jiffy.so: \$(OBJS)
	@mkdir -p priv
	c++ -shared -o \$@ \$(OBJS) -lstdc++
_offline_obj/%.c.o: %.c
	@mkdir -p \$(dir \$@)
	cc \$(FLAGS) -c -o \$@ \$<
_offline_obj/%.cc.o: %.cc
	@mkdir -p \$(dir \$@)
	c++ \$(FLAGS) -c -o \$@ \$<
MAKE
cat >> "$DEP_DIR/rebar.config" <<'CONF'

%% Added by scripts/build-third-party-release.sh: the NIF by make, not by the pc plugin.
{pre_hooks, [{"(linux|freebsd|darwin)", compile, "make -f c_src/Makefile.offline"}]}.
CONF

# --- the tiny application around it ----------------------------------------------------------
cat > "$APP/rebar.config" <<CONF
{erl_opts, [debug_info]}.
%% jiffy comes from _checkouts/jiffy (source), never from hex.
{deps, [$DEP]}.
{relx, [
    {release, {$NAME, "$VSN"}, [$NAME, sasl]},
    {sys_config, "config/sys.config"},
    {vm_args, "config/vm.args"},
    {include_erts, false},
    {include_src, false},
    {dev_mode, false},
    {extended_start_script, true}
]}.
CONF
cat > "$APP/config/sys.config" <<CONF
[{$NAME, [{http_port, $HTTP_PORT}, {http_ip, any}]}].
CONF
cat > "$APP/config/vm.args" <<CONF
-sname $NAME
-setcookie ${NAME}_cookie
CONF
cat > "$APP/src/$NAME.app.src" <<CONF
{application, $NAME,
 [{description, "A tiny release around jiffy (a third-party NIF), built offline"},
  {vsn, "$VSN"},
  {registered, [${NAME}_sup]},
  {mod, {${NAME}_app, []}},
  {applications, [kernel, stdlib, inets, $DEP]},
  {env, [{http_port, 8080}, {http_ip, any}]},
  {modules, []}]}.
CONF
cat > "$APP/src/${NAME}_app.erl" <<'ERL'
-module(hello_jiffy_app).
-behaviour(application).
-behaviour(supervisor).
-export([start/2, stop/1, init/1, do/1, status/0]).
-include_lib("inets/include/httpd.hrl").

start(_Type, _Args) ->
    supervisor:start_link({local, hello_jiffy_sup}, ?MODULE, []).

stop(_State) ->
    ok.

init([]) ->
    Config = [{port, application:get_env(hello_jiffy, http_port, 8080)},
              {bind_address, application:get_env(hello_jiffy, http_ip, any)},
              {server_name, "hello_jiffy"}, {server_root, "/tmp"}, {document_root, "/tmp"},
              {modules, [?MODULE]}],
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10},
          [#{id => httpd, start => {inets, start, [httpd, Config, stand_alone]}, modules => [httpd]}]}}.

status() ->
    {Release, Version} = init:script_id(),
    {ok, JiffyVsn} = application:get_key(jiffy, vsn),
    Term = #{<<"list">> => [1, 2.5, <<"three">>, null, true], <<"nested">> => #{<<"k">> => <<"v">>}},
    #{node => node(), release => list_to_binary(Release), version => list_to_binary(Version),
      nodes => lists:sort(nodes()), jiffy_vsn => list_to_binary(JiffyVsn),
      nif_path => list_to_binary(filename:join(code:priv_dir(jiffy), "jiffy.so")),
      roundtrip => jiffy:decode(jiffy:encode(Term), [return_maps]) =:= Term}.

do(#mod{method = "GET", request_uri = "/status"}) ->
    Body = jiffy:encode(status()),
    {proceed, [{response, {response, [{code, 200}, {content_type, "application/json"},
                                      {content_length, integer_to_list(iolist_size(Body))}], [Body]}}]};
do(#mod{}) ->
    {proceed, [{response, {404, "not found"}}]}.
ERL

# --- build, offline --------------------------------------------------------------------------
mkdir -p "$WORK/home"
if ! (cd "$APP" && HOME=$WORK/home REBAR_CACHE_DIR=$WORK/home/rebar3-cache "${OFFLINE[@]}" rebar3 tar) \
        > "$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    echo "$0: rebar3 tar failed ($DEP $TAG, $NAME $VSN)" >&2
    exit 1
fi
TARBALL=$APP/_build/default/rel/$NAME/$NAME-$VSN.tar.gz
JIFFY_VSN=$(tar -xzOf "$TARBALL" "releases/$VSN/$NAME.rel" | sed -n 's/.*{jiffy, *"\([^"]*\)"}.*/\1/p')
MEMBERS=$(tar -tzf "$TARBALL")
grep -qx "lib/jiffy-$JIFFY_VSN/priv/jiffy.so" <<<"$MEMBERS" \
    || { echo "$0: no lib/jiffy-$JIFFY_VSN/priv/jiffy.so in the tarball" >&2; exit 1; }
cp "$TARBALL" "$OUT/$NAME-$VSN.tar.gz"
echo "$NAME $VSN with jiffy $JIFFY_VSN (tag $TAG, lib/jiffy-$JIFFY_VSN/priv/jiffy.so), built offline" >&2
echo "$OUT/$NAME-$VSN.tar.gz"
