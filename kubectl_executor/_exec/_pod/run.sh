# kubectl-executor in-pod runner (POSIX sh). Fixed text: nothing from the user is ever spliced in.
# stdin: a header, then the code (or, for runner "call", a tool call's JSON payload).
#   KX1 <nonce> <timeout> <kill_after> <runner> <budget> <nenv>
#   <work_dir>
#   <relative file path: the code's file, or for "call" the tool runner already in the pod>
#   <nenv lines KEY=VALUE>
#   <code bytes / payload until EOF>
# stdout: __KX_START_<nonce>__, the program's stdout, [for "call", if the tool runner wrote a
#   structured result: \n__KX_FRAME_<nonce>__ <bytes>\n<frame JSON>], then
#   \n__KX_EXIT_<nonce>__ <rc> <timed_out> <log_kept> <log_dir>
# stderr: the program's stderr.
# A "call" starts `python3 <runner> /dev/stdin` (the seed's runner reads that path as its parameter
# file) with the payload on its stdin; our runner writes its result frame to $KX_TOOL_RESULT.
set -u
IFS=' ' read -r magic nonce tmo kafter runner budget nenv || exit 97
if [ "$magic" != KX1 ]; then echo "kubectl-executor: bad request header" >&2; exit 97; fi
IFS= read -r work_dir || exit 97
IFS= read -r rel || exit 97
i=0
while [ "$i" -lt "$nenv" ]; do
  IFS= read -r kv || exit 97
  export "$kv"
  i=$((i + 1))
done
export PYTHONUNBUFFERED=1
logs=/tmp/kx-logs
finish() {
  printf '\n__KX_EXIT_%s__ %s %s %s %s\n' "$nonce" "$1" "$2" "$3" "$logs"
  exit 0
}
fail() {
  cat >/dev/null
  printf 'kubectl-executor: %s\n' "$2" >&2
  printf '__KX_START_%s__\n' "$nonce"
  finish "$1" 0 0
}
file="$work_dir/$rel"
if [ "$runner" = call ]; then
  py=$(command -v python3 2>/dev/null || command -v python 2>/dev/null || true)
  [ -n "$py" ] || fail 127 "the image has no python"
  [ -f "$file" ] || fail 2 "no tool runner at $file: call install_pod_dispatcher() first"
  set -- "$py" "$file" /dev/stdin
else
  dir=$(dirname -- "$file")
  mkdir -p -- "$dir" 2>/dev/null || fail 1 "cannot create directory $dir"
  tmp="$dir/.kx-$nonce.part"
  if ! cat >"$tmp"; then rm -f -- "$tmp"; fail 1 "cannot write $file"; fi
  mv -f -- "$tmp" "$file" || { rm -f -- "$tmp"; fail 1 "cannot write $file"; }
  case "$runner" in
    python)
      if command -v python3 >/dev/null 2>&1; then set -- python3 "$file"; else set -- python "$file"; fi ;;
    sh) set -- sh "$file" ;;
    bash) set -- bash "$file" ;;
    pwsh) set -- pwsh -NoLogo -NonInteractive -File "$file" ;;
    none) printf '__KX_START_%s__\n' "$nonce"; finish 0 0 0 ;;
    *) fail 1 "unknown runner $runner" ;;
  esac
fi
# Logs and the exit status need a writable place: /tmp, else HOME, else the workspace.
for logs in /tmp/kx-logs "${HOME:-/nonexistent}/.kx-logs" "$work_dir/.kx-logs"; do
  mkdir -p "$logs" 2>/dev/null && [ -w "$logs" ] && break
done
out="$logs/$nonce.out"; err="$logs/$nonce.err"; rcf="$logs/$nonce.rc"; pidf="$logs/$nonce.pid"
res="$logs/$nonce.result"
export KX_TOOL_RESULT="$res" KX_TOOL_WORK_DIR="$work_dir" KX_TOOL_BUDGET="$budget"
# The watchdog tells a timeout from a program that exits 124 by itself: if it is gone when the
# program ends, the deadline has passed. It sleeps a little less than the deadline (the margin
# absorbs scheduling delays under load), so only a program exiting 124 on its own in the last
# moment before the deadline would be misreported as timed out.
wd=$(awk -v t="$tmo" 'BEGIN { m = (t >= 2) ? 0.5 : 0.25; printf "%.3f", t - m }' 2>/dev/null) || wd=$tmo
sleep "${wd:-$tmo}" >/dev/null 2>&1 </dev/null &
watchdog=$!
printf '__KX_START_%s__\n' "$nonce"
# The program's stdin: /dev/null for code; for a call, the payload through a pipe of our own (the
# exec's stdin may belong to root, and a non-root runner that reopens /dev/stdin would get EACCES).
exec 4<&0
{
  {
    if [ "$runner" = call ]; then
      cat <&4 4<&- | KX_RUN=$nonce timeout -k "$kafter" "$tmo" "$@" 4<&- &
    else
      KX_RUN=$nonce timeout -k "$kafter" "$tmo" "$@" </dev/null 4<&- &
    fi
    pid=$!
    echo "$pid" >"$pidf"
    wait "$pid"
    echo "$?" >"$rcf"
    # timeout leads its own process group: stop what the block left behind, and what escaped
    # the group (setsid) but still carries this run's marker in its environment.
    kill -s KILL -- "-$pid" 2>/dev/null
    for e in $(grep -l -s -a "KX_RUN=$nonce" /proc/[0-9]*/environ 2>/dev/null); do
      e=${e#/proc/}; kill -s KILL "${e%/environ}" 2>/dev/null
    done
  } 2>&1 1>&3 | tee "$err" >&2
} 3>&1 | tee "$out"
exec 4<&-
rc=$(cat "$rcf" 2>/dev/null || echo 255)
timed_out=0
if kill -0 "$watchdog" 2>/dev/null; then
  kill "$watchdog" 2>/dev/null
elif [ "$rc" = 124 ] || [ "$rc" = 137 ] || [ "$rc" = 143 ]; then
  # GNU timeout exits 124; busybox's passes on the TERMed program's 143 (the emulator's busybox
  # profile had GNU's, a real busybox image does not): both are the deadline's 124.
  timed_out=1
  [ "$rc" = 143 ] && rc=124
fi
if [ -s "$res" ]; then
  printf '\n__KX_FRAME_%s__ %s\n' "$nonce" "$(($(wc -c <"$res")))"
  cat -- "$res"
fi
kept=1
if [ "$(wc -c <"$out" 2>/dev/null || echo 0)" -le "$budget" ] &&
   [ "$(wc -c <"$err" 2>/dev/null || echo 0)" -le "$budget" ]; then
  rm -f -- "$out" "$err"; kept=0
fi
rm -f -- "$rcf" "$pidf" "$res"
finish "$rc" "$timed_out" "$kept"
