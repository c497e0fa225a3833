# kubectl-executor session agent, POSIX sh, for images without Python (busybox, alpine...).
# Same frames and semantics as agent.py, minus stateful Python. Fixed text: nothing from the
# user is ever spliced in. Evaluated by the session bootstrap, which has set $sid (hex).
# Frames: 1 type byte, 4-byte big-endian length, payload. In: R run request (KX1 header as in
# run.sh, then the code), Q quit. Out: H hello, S started, O stdout, E stderr, X exit (JSON).
# Output is streamed by polling the block's log files: one writer, so frames never interleave.
set -u
kx_dir() { # the first of the given directories that exists or can be made, and is writable
  for d in "$@"; do
    mkdir -p "$d" 2>/dev/null && [ -w "$d" ] && { printf '%s' "$d"; return 0; }
  done
  return 1
}
home=${HOME:-/nonexistent}
own=$(kx_dir /tmp/kx-logs "$home/.kx-logs") || { echo "kubectl-executor: no writable /tmp or HOME" >&2; exit 96; }
scratch="$own/agent-$sid-$$"
mkdir -p "$scratch" || exit 96
sessionf="$own/session-$sid.pids"
ss=
command -v setsid >/dev/null 2>&1 && ss=setsid
fine=0.01
sleep 0.01 2>/dev/null || fine=1

kx_start() { # start time of a pid (field 22 of /proc/pid/stat), empty if gone
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

kx_killgroup() { # pgid: KILL the group and give it up to a second to be gone
  kill -s KILL -- "-$1" 2>/dev/null || return 0
  [ "$fine" = 1 ] && return 0
  i=0
  while [ "$i" -lt 100 ] && kill -0 -- "-$1" 2>/dev/null; do sleep 0.01; i=$((i + 1)); done
}

kx_reap() { # kill what an earlier agent of this session left behind
  [ -f "$sessionf" ] || return 0
  # Every process a block started carries KX_SESSION in its environment (see kx_run).
  for f in /proc/[0-9]*/environ; do
    p=${f#/proc/}; p=${p%/environ}
    [ "$p" = "$$" ] && continue
    tr '\000' '\n' <"$f" 2>/dev/null | grep -qx "KX_SESSION=$sid" && kill -s KILL "$p" 2>/dev/null
  done
  while read -r kind pid st; do
    [ "$pid" = "$$" ] && continue
    [ -n "$st" ] && [ "$(kx_start "$pid")" = "$st" ] || continue
    if [ "$kind" = group ]; then kx_killgroup "$pid"; else kill -s KILL "$pid" 2>/dev/null; fi
  done <"$sessionf"
}

kx_record() { # this agent, and the running block's process group if any
  {
    echo "agent $$ $(kx_start $$)"
    [ -n "${1:-}" ] && echo "group $1 $(kx_start "$1")"
  } >"$sessionf.$$" && mv -f "$sessionf.$$" "$sessionf"
}

kx_header() { # type-letter length: the 5-byte frame header
  printf "$(printf '%s\\%03o\\%03o\\%03o\\%03o' "$1" $(($2 >> 24 & 255)) $(($2 >> 16 & 255)) \
    $(($2 >> 8 & 255)) $(($2 & 255)))"
}

kx_text() { # type-letter text (ASCII)
  kx_header "$1" "${#2}"
  printf '%s' "$2"
}

kx_file() { # type-letter file
  n=$(wc -c <"$2")
  kx_header "$1" $((n + 0))
  cat "$2"
}

kx_readn() { # count file: exactly count bytes of stdin (dd reads at most what it is asked for)
  : >"$2"
  have=0
  while [ "$have" -lt "$1" ]; do
    want=$(($1 - have))
    [ "$want" -gt 65536 ] && want=65536
    dd bs="$want" count=1 2>/dev/null >>"$2"
    now=$(wc -c <"$2")
    now=$((now + 0))
    [ "$now" -gt "$have" ] || return 1
    have=$now
  done
}

kx_pump() { # new bytes of the block's log files, as O and E frames
  n=$(wc -c <"$out"); n=$((n + 0))
  if [ "$n" -gt "$oo" ]; then
    tail -c +$((oo + 1)) "$out" >"$scratch/chunk"
    kx_file O "$scratch/chunk"
    n=$(wc -c <"$scratch/chunk"); oo=$((oo + n))
  fi
  n=$(wc -c <"$err"); n=$((n + 0))
  if [ "$n" -gt "$eo" ]; then
    tail -c +$((eo + 1)) "$err" >"$scratch/chunk"
    kx_file E "$scratch/chunk"
    n=$(wc -c <"$scratch/chunk"); eo=$((eo + n))
  fi
}

kx_exit() { # nonce code timed_out(0|1) log_kept(0|1) truncated(0|1) [log dir]
  t=false; [ "$3" = 1 ] && t=true
  k=false; [ "$4" = 1 ] && k=true
  c=false; [ "$5" = 1 ] && c=true
  printf '{"nonce":"%s","exit_code":%d,"timed_out":%s,"log_kept":%s,"truncated":%s,"out_bytes":%d,"err_bytes":%d,"state_lost":false,"log_dir":' \
    "$1" "$2" "$t" "$k" "$c" "$oo" "$eo" >"$scratch/x"
  # The log dir is a path (maybe the user's work_dir): escaped for JSON, as text on its own line.
  printf '%s' "${6:-/tmp/kx-logs}" | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"}/' >>"$scratch/x"
  kx_file X "$scratch/x"
}

kx_fail() { # nonce message
  kx_text S "$1"
  printf 'kubectl-executor: %s\n' "$2" >"$scratch/msg"
  kx_file E "$scratch/msg"
  oo=0; eo=0
  kx_exit "$1" 1 0 0 0
}

kx_run() {
  req="$scratch/req"
  {
    IFS=' ' read -r magic nonce tmo kafter runner budget nenv
    IFS= read -r work_dir
    IFS= read -r rel
    : >"$scratch/env"
    i=0
    while [ "$i" -lt "${nenv:-0}" ]; do
      IFS= read -r kv
      printf '%s\n' "$kv" >>"$scratch/env"
      i=$((i + 1))
    done
    cat >"$scratch/code"
  } <"$req"
  case "$magic:$nonce" in
    KX1:*[!0-9a-f]* | KX1:) kx_fail "" "bad request header"; return ;;
    KX1:*) ;;
    *) kx_fail "" "bad request header"; return ;;
  esac
  case "$rel" in
    /* | .. | ../* | */.. | */../*) kx_fail "$nonce" "path escapes the workspace"; return ;;
  esac
  file="$work_dir/$rel"
  dir=$(dirname -- "$file")
  mkdir -p -- "$dir" 2>/dev/null || { kx_fail "$nonce" "cannot create directory $dir"; return; }
  tmp="$dir/.kx-$nonce.part"
  if ! cp "$scratch/code" "$tmp" 2>/dev/null || ! mv -f -- "$tmp" "$file"; then
    rm -f -- "$tmp"
    kx_fail "$nonce" "cannot write $file"
    return
  fi
  case "$runner" in
    python | kernel)
      if command -v python3 >/dev/null 2>&1; then set -- python3 "$file"; else set -- python "$file"; fi ;;
    sh) set -- sh "$file" ;;
    bash) set -- bash "$file" ;;
    pwsh) set -- pwsh -NoLogo -NonInteractive -File "$file" ;;
    none) kx_text S "$nonce"; oo=0; eo=0; kx_exit "$nonce" 0 0 0 0; return ;;
    *) kx_fail "$nonce" "unknown runner $runner"; return ;;
  esac
  logs=$(kx_dir /tmp/kx-logs "$home/.kx-logs" "$work_dir/.kx-logs") || logs=$scratch
  out="$logs/$nonce.out"; err="$logs/$nonce.err"
  : >"$out"; : >"$err"
  oo=0; eo=0
  kx_text S "$nonce"
  # The program leads its own session (setsid, when there is one): its group is killable.
  (
    while IFS= read -r kv; do export "$kv"; done <"$scratch/env"
    export PYTHONUNBUFFERED=1 KX_SESSION="$sid"
    exec $ss "$@"
  ) </dev/null >"$out" 2>"$err" &
  pid=$!
  kx_record "$pid"
  echo "$pid" >"$logs/$nonce.pid" # what a cancel kills (protocol.kill_args), as with run.sh
  sleep "$tmo" </dev/null >/dev/null 2>&1 &
  watchdog=$!
  killer=
  killed=0
  timed_out=0
  delay=0.001
  while kill -0 "$pid" 2>/dev/null; do
    kx_pump
    if [ "$timed_out" = 0 ] && ! kill -0 "$watchdog" 2>/dev/null; then
      # As `timeout -k`: TERM the group, KILL it kill_after later.
      timed_out=1
      kill -s TERM -- "-$pid" 2>/dev/null || kill -s TERM "$pid" 2>/dev/null
      sleep "$kafter" </dev/null >/dev/null 2>&1 &
      killer=$!
    elif [ -n "$killer" ] && ! kill -0 "$killer" 2>/dev/null; then
      kill -s KILL -- "-$pid" 2>/dev/null || kill -s KILL "$pid" 2>/dev/null
      killer=
      killed=1
    fi
    case "$fine:$delay" in
      1:*) delay=1 ;;
      *:0.001) delay=0.002 ;;
      *:0.002) delay=0.005 ;;
      *:0.005) delay=0.01 ;;
      *:0.01) delay=0.02 ;;
      *:0.02) delay=0.05 ;;
      *) delay=0.1 ;;
    esac
    sleep "$delay"
  done
  wait "$pid"
  rc=$?
  kx_killgroup "$pid" # what the block left running in the background
  kill "$watchdog" 2>/dev/null
  [ -n "$killer" ] && kill "$killer" 2>/dev/null
  if [ "$timed_out" = 1 ]; then
    if [ "$killed" = 1 ]; then rc=137; else rc=124; fi
  fi
  kx_pump
  rm -f -- "$logs/$nonce.pid"
  kept=0
  { [ "$oo" -gt "$budget" ] || [ "$eo" -gt "$budget" ]; } && kept=1
  [ "$kept" = 0 ] && rm -f -- "$out" "$err"
  kx_exit "$nonce" "$rc" "$timed_out" "$kept" "$kept" "$logs"
}

kx_reap
kx_record
kx_text H "{\"agent\":\"sh\",\"protocol\":1,\"pid\":$$}"
while kx_readn 5 "$scratch/head"; do
  set -- $(od -An -v -tu1 "$scratch/head")
  kind=$1
  size=$((($2 << 24) | ($3 << 16) | ($4 << 8) | $5))
  if [ "$size" -gt 0 ]; then kx_readn "$size" "$scratch/req" || break; else : >"$scratch/req"; fi
  case "$kind" in
    82) kx_run ;;  # R
    81) break ;;   # Q
  esac
done
rm -rf -- "$scratch"
rm -f -- "$sessionf"
exit 0
