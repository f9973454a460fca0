#!/usr/bin/env bash
# Local registries with kraal's test images, for the end-to-end tests and the benchmarks.
#
#   hack/registry.sh start DIR   start three Debian docker-registry instances on 127.0.0.1 (free
#                                ports; anonymous, basic auth, token auth) and the token server
#                                (hack/tokenserver.py) of the third, data and logs in DIR, fill
#                                them with hack/testimages.py and write DIR/registry.env; prints
#                                that file on stdout.
#                                On a DIR whose registries are still running it only reprints it.
#   hack/registry.sh stop DIR    stop exactly the processes `start` recorded in DIR.
#
# DIR/registry.env (KEY=VALUE lines, sourceable by sh):
#   KRAAL_TEST_REGISTRY=127.0.0.1:PORT          anonymous registry, every test image
#   KRAAL_TEST_AUTH_REGISTRY=127.0.0.1:PORT     basic-auth (htpasswd) registry,
#                                               only kraal-test/busybox:latest
#   KRAAL_TEST_AUTH_USER=kraal
#   KRAAL_TEST_AUTH_PASSWORD=kraal-test-secret
#   KRAAL_TEST_REGISTRY_LOG=DIR/registry.log    the anonymous registry's log (access log on)
#   KRAAL_TEST_AUTH_REGISTRY_LOG=DIR/auth-registry.log
#   KRAAL_TEST_IMAGES=DIR/images.json           what was pushed (see hack/testimages.py)
#   KRAAL_TEST_AUTH_IMAGES=DIR/auth-images.json
#   KRAAL_TEST_REGISTRY_PIDS=DIR/registry.pids  the registry and token server pids, one a line
#   KRAAL_TEST_TOKEN_REGISTRY=127.0.0.1:PORT    token-auth (Docker bearer token) registry,
#                                               only kraal-test/busybox:latest; no anonymous
#                                               access: tokens need the basic-auth user above
#   KRAAL_TEST_TOKEN_REALM=http://127.0.0.1:PORT/token   its token server (hack/tokenserver.py):
#                                               GET with Basic credentials and
#                                               ?service=...&scope=repository:NAME:pull[,push],
#                                               or POST grant_type=password (OAuth2 form)
#   KRAAL_TEST_TOKEN_SERVICE=kraal-test-registry
#   KRAAL_TEST_TOKEN_REGISTRY_LOG=DIR/token-registry.log
#   KRAAL_TEST_TOKEN_SERVER_LOG=DIR/token-server.log    one line per token request
#   KRAAL_TEST_TOKEN_IMAGES=DIR/token-images.json
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
auth_user=kraal
auth_password=kraal-test-secret
token_service=kraal-test-registry
token_issuer=kraal-test-issuer

die() {
  echo "registry.sh: $*" >&2
  exit 1
}
say() { echo "registry.sh: $*" >&2; }

usage() {
  echo "usage: $0 start DIR | stop DIR" >&2
  exit 2
}

ensure_tools() {
  local need=()
  command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
  [ -x /bin/busybox ] || need+=(busybox-static)
  command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
  command -v python3 >/dev/null 2>&1 || [ -x /usr/bin/python3 ] || need+=(python3)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v flock >/dev/null 2>&1 || need+=(util-linux)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${need[*]}; install them (apt-get install -y ${need[*]}) or run as root"
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
  fi
  if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=python3; fi
}

# pid_is_ours PID: PID is a live docker-registry serving a config file inside $dir, or the
# token server signing with $dir's key.
pid_is_ours() {
  local pid=$1 cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ "$cmdline" == *docker-registry*" serve $dir/"* ]] ||
    [[ "$cmdline" == *"/tokenserver.py --key $dir/token-key.pem "* ]]
}

# http_code URL [curl args...]
http_code() {
  local url=$1
  shift
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true
}

# stop_pids: TERM then (after 5 s) KILL each recorded pid that is still ours.
stop_pids() {
  local pidfile=$dir/registry.pids pid left i
  [ -f "$pidfile" ] || return 0
  local pids=()
  while read -r pid _; do
    [ -n "$pid" ] || continue
    if pid_is_ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done <"$pidfile"
  for i in $(seq 1 100); do
    left=0
    for pid in "${pids[@]}"; do
      if pid_is_ours "$pid"; then left=1; fi
    done
    [ "$left" -eq 0 ] && break
    [ "$i" -eq 100 ] || { sleep 0.05; continue; }
    for pid in "${pids[@]}"; do
      if pid_is_ours "$pid"; then
        say "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    if pid_is_ours "$pid"; then die "registry pid $pid did not stop"; fi
  done
  rm -f "$pidfile" "$dir/registry.env" "$dir/token-server.port"
  [ ${#pids[@]} -eq 0 ] || say "stopped ${pids[*]}"
}

# already_running: registry.env and every recorded pid alive, all registries and the token
# server answering.
already_running() {
  local pidfile=$dir/registry.pids env=$dir/registry.env pid n=0
  [ -f "$pidfile" ] && [ -f "$env" ] || return 1
  while read -r pid _; do
    [ -n "$pid" ] || continue
    pid_is_ours "$pid" || return 1
    n=$((n + 1))
  done <"$pidfile"
  [ "$n" -eq 4 ] || return 1
  local reg auth token realm
  reg=$(sed -n 's/^KRAAL_TEST_REGISTRY=//p' "$env")
  auth=$(sed -n 's/^KRAAL_TEST_AUTH_REGISTRY=//p' "$env")
  token=$(sed -n 's/^KRAAL_TEST_TOKEN_REGISTRY=//p' "$env")
  realm=$(sed -n 's/^KRAAL_TEST_TOKEN_REALM=//p' "$env")
  [ -n "$token" ] && [ -n "$realm" ] || return 1
  [ "$(http_code "http://$reg/v2/")" = 200 ] && [ "$(http_code "http://$auth/v2/")" = 401 ] &&
    [ "$(http_code "http://$token/v2/")" = 401 ] &&
    [ "$(http_code "$realm" -u "$auth_user:$auth_password")" = 200 ]
}

write_config() { # write_config NAME PORT STORAGE [auth | token TOKENPORT]
  local name=$1 port=$2 storage=$3 auth=${4:-} token_port=${5:-}
  {
    cat <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
  fields:
    service: $name
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: kraal-test-$name-secret
  headers:
    X-Content-Type-Options: [nosniff]
YAML
    if [ "$auth" = auth ]; then
      cat <<YAML
auth:
  htpasswd:
    realm: kraal-test
    path: $dir/htpasswd
YAML
    elif [ "$auth" = token ]; then
      cat <<YAML
auth:
  token:
    realm: http://127.0.0.1:$token_port/token
    service: $token_service
    issuer: $token_issuer
    rootcertbundle: $dir/token-cert.pem
YAML
    fi
  } >"$dir/$name.yml"
}

free_ports() { # prints three distinct free TCP ports on 127.0.0.1
  "$python" - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

started_pids=()
cleanup_failed_start() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    local pid
    for pid in "${started_pids[@]}"; do
      if pid_is_ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
      wait "$pid" 2>/dev/null || true
    done
    rm -f "$dir/registry.pids" "$dir/registry.env" "$dir/token-server.port"
    echo "registry.sh: start failed; logs in $dir/registry.log, $dir/auth-registry.log," \
      "$dir/token-registry.log and $dir/token-server.log" >&2
  fi
  exit "$rc"
}

# launch NAME LOG: starts docker-registry in its own session; sets $launched_pid.
launch() {
  local name=$1 log=$2
  # fd 9 (the lock) is closed so a running registry does not hold the lock.
  setsid docker-registry serve "$dir/$name.yml" >>"$log" 2>&1 </dev/null 9>&- &
  launched_pid=$!
  started_pids+=("$launched_pid")
  echo "$launched_pid" >>"$dir/registry.pids"
}

# launch_tokenserver: starts hack/tokenserver.py in its own session (it binds a port of its
# own choosing: no clash possible); sets $launched_pid.
launch_tokenserver() {
  rm -f "$dir/token-server.port"
  setsid "$python" "$here/tokenserver.py" --key "$dir/token-key.pem" \
    --cert "$dir/token-cert.pem" --port-file "$dir/token-server.port" \
    --user "$auth_user" --password "$auth_password" \
    --issuer "$token_issuer" --service "$token_service" \
    --log "$dir/token-server.log" >>"$dir/token-server.log" 2>&1 </dev/null 9>&- &
  launched_pid=$!
  started_pids+=("$launched_pid")
  echo "$launched_pid" >>"$dir/registry.pids"
}

# wait_tokenserver PID: until it has written its port file; sets $token_port (or returns 1
# if the process died).
wait_tokenserver() {
  local pid=$1 i log=$dir/token-server.log
  for i in $(seq 1 200); do
    if [ -s "$dir/token-server.port" ]; then
      token_port=$(cat "$dir/token-server.port")
      [[ "$token_port" =~ ^[0-9]+$ ]] || die "bad port in $dir/token-server.port: $token_port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "hack/tokenserver.py exited; end of $log:"
      tail -n 5 "$log" >&2 || true
      return 1
    fi
    sleep 0.02
  done
  die "hack/tokenserver.py did not start within 4 s (log: $log)"
}

# make_token_cert: a fresh self-signed RSA key + certificate the token server signs with and
# the token registry trusts (rootcertbundle); the JWTs carry it in their x5c header.
make_token_cert() {
  rm -f "$dir/token-key.pem.tmp" "$dir/token-cert.pem.tmp"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=$token_issuer" -keyout "$dir/token-key.pem.tmp" \
    -out "$dir/token-cert.pem.tmp" >/dev/null 2>&1 || die "openssl req (token certificate) failed"
  mv "$dir/token-key.pem.tmp" "$dir/token-key.pem"
  mv "$dir/token-cert.pem.tmp" "$dir/token-cert.pem"
}

# wait_up PID PORT CODE LOG [URL_PATH [curl args...]]: until GET URL_PATH (default /v2/)
# answers CODE; returns 1 if the process died.
wait_up() {
  local pid=$1 port=$2 want=$3 log=$4 path=${5:-/v2/} i code
  shift 4
  [ $# -eq 0 ] || shift
  for i in $(seq 1 200); do
    code=$(http_code "http://127.0.0.1:$port$path" "$@")
    [ "$code" = "$want" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      say "pid $pid (port $port) exited; end of $log:"
      tail -n 5 "$log" >&2 || true
      return 1
    fi
    if [ -n "$code" ] && [ "$code" != 000 ]; then
      die "127.0.0.1:$port$path answered $code, expected $want (is another server on that port?)"
    fi
    sleep 0.05
  done
  die "pid $pid on 127.0.0.1:$port did not answer within 10 s (log: $log)"
}

start() {
  local begin=$SECONDS
  if already_running; then
    say "registries in $dir are already running"
    cat "$dir/registry.env"
    return 0
  fi
  stop_pids # whatever is left of an earlier run in this DIR
  trap cleanup_failed_start EXIT

  htpasswd -Bbn "$auth_user" "$auth_password" >"$dir/htpasswd.tmp" ||
    die "htpasswd failed"
  mv "$dir/htpasswd.tmp" "$dir/htpasswd"
  make_token_cert
  mkdir -p "$dir/storage" "$dir/auth-storage" "$dir/token-storage"
  : >"$dir/registry.log"
  : >"$dir/auth-registry.log"
  : >"$dir/token-registry.log"
  : >"$dir/token-server.log"
  rm -f "$dir/registry.pids"

  local attempt port auth_port token_reg_port reg_pid auth_pid token_pid token_reg_pid ports
  local ok=0 realm
  token_port=
  for attempt in 1 2 3; do
    launch_tokenserver
    token_pid=$launched_pid
    ports=$(free_ports) || die "could not pick free ports"
    read -r port auth_port token_reg_port <<<"$ports"
    write_config registry "$port" "$dir/storage"
    write_config auth-registry "$auth_port" "$dir/auth-storage" auth
    launch registry "$dir/registry.log"
    reg_pid=$launched_pid
    launch auth-registry "$dir/auth-registry.log"
    auth_pid=$launched_pid
    if wait_tokenserver "$token_pid"; then
      write_config token-registry "$token_reg_port" "$dir/token-storage" token "$token_port"
      launch token-registry "$dir/token-registry.log"
      token_reg_pid=$launched_pid
      if wait_up "$reg_pid" "$port" 200 "$dir/registry.log" &&
        wait_up "$auth_pid" "$auth_port" 401 "$dir/auth-registry.log" &&
        wait_up "$token_pid" "$token_port" 200 "$dir/token-server.log" /token \
          -u "$auth_user:$auth_password" &&
        wait_up "$token_reg_pid" "$token_reg_port" 401 "$dir/token-registry.log"; then
        ok=1
        break
      fi
    fi
    say "attempt $attempt failed (a port taken in between?); retrying on other ports"
    stop_pids
    started_pids=()
  done
  [ "$ok" -eq 1 ] || die "could not start the registries"
  pid_is_ours "$reg_pid" && pid_is_ours "$auth_pid" && pid_is_ours "$token_reg_pid" ||
    die "registry pids are not docker-registry"
  pid_is_ours "$token_pid" || die "token server pid $token_pid is not hack/tokenserver.py"
  realm=http://127.0.0.1:$token_port/token
  # The token registry must challenge for tokens from our realm (not fall back to anything).
  local challenge
  challenge=$(curl -s -o /dev/null -D - --max-time 2 "http://127.0.0.1:$token_reg_port/v2/" \
    2>/dev/null | tr -d '\r' | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: *//p') || true
  [[ "$challenge" == "Bearer realm=\"$realm\""* ]] ||
    die "127.0.0.1:$token_reg_port/v2/ challenges with '$challenge', not a Bearer realm $realm"

  # Fill both at once.
  "$python" "$here/testimages.py" --registry "127.0.0.1:$port" --out "$dir/images.json" 9>&- &
  local fill=$!
  "$python" "$here/testimages.py" --registry "127.0.0.1:$auth_port" \
    --user "$auth_user" --password "$auth_password" --only busybox \
    --out "$dir/auth-images.json" 9>&- &
  local fill_auth=$!
  "$python" "$here/testimages.py" --registry "127.0.0.1:$token_reg_port" \
    --user "$auth_user" --password "$auth_password" --only busybox \
    --out "$dir/token-images.json" 9>&- &
  local fill_token=$!
  local rc=0 rc_auth=0 rc_token=0
  wait "$fill" || rc=$?
  wait "$fill_auth" || rc_auth=$?
  wait "$fill_token" || rc_token=$?
  [ "$rc" -eq 0 ] || die "hack/testimages.py failed for 127.0.0.1:$port (exit $rc)"
  [ "$rc_auth" -eq 0 ] || die "hack/testimages.py failed for 127.0.0.1:$auth_port (exit $rc_auth)"
  [ "$rc_token" -eq 0 ] ||
    die "hack/testimages.py failed for 127.0.0.1:$token_reg_port (exit $rc_token)"

  cat >"$dir/registry.env.tmp" <<ENV
KRAAL_TEST_REGISTRY=127.0.0.1:$port
KRAAL_TEST_AUTH_REGISTRY=127.0.0.1:$auth_port
KRAAL_TEST_AUTH_USER=$auth_user
KRAAL_TEST_AUTH_PASSWORD=$auth_password
KRAAL_TEST_REGISTRY_LOG=$dir/registry.log
KRAAL_TEST_AUTH_REGISTRY_LOG=$dir/auth-registry.log
KRAAL_TEST_IMAGES=$dir/images.json
KRAAL_TEST_AUTH_IMAGES=$dir/auth-images.json
KRAAL_TEST_REGISTRY_PIDS=$dir/registry.pids
KRAAL_TEST_TOKEN_REGISTRY=127.0.0.1:$token_reg_port
KRAAL_TEST_TOKEN_REALM=$realm
KRAAL_TEST_TOKEN_SERVICE=$token_service
KRAAL_TEST_TOKEN_REGISTRY_LOG=$dir/token-registry.log
KRAAL_TEST_TOKEN_SERVER_LOG=$dir/token-server.log
KRAAL_TEST_TOKEN_IMAGES=$dir/token-images.json
ENV
  mv "$dir/registry.env.tmp" "$dir/registry.env"
  trap - EXIT
  say "registries up in $((SECONDS - begin)) s: 127.0.0.1:$port (pid $reg_pid)," \
    "127.0.0.1:$auth_port with basic auth (pid $auth_pid)," \
    "127.0.0.1:$token_reg_port with token auth (pid $token_reg_pid; token server $realm, pid $token_pid)"
  cat "$dir/registry.env"
}

[ $# -eq 2 ] || usage
cmd=$1
[ -n "$2" ] || usage
case "$cmd" in
  start)
    mkdir -p "$2" || die "cannot create $2"
    ;;
  stop)
    [ -d "$2" ] || { say "$2 does not exist; nothing to stop"; exit 0; }
    ;;
  *) usage ;;
esac
dir=$(cd "$2" && pwd -P)
# Paths go into YAML, shell env lines and a cmdline match unquoted: keep them plain.
[[ "$dir" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "DIR must be a plain path (letters, digits, ._/+-): $dir"

ensure_tools
exec 9>"$dir/.registry.lock"
flock -w 60 9 || die "another hack/registry.sh holds $dir/.registry.lock"

case "$cmd" in
  start) start ;;
  stop) stop_pids ;;
esac
