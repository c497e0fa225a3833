# kubectl-executor tool call (POSIX sh). Fixed text: nothing from the user is ever spliced in.
# The sibling of run.sh for execute_tool_function: the runner script already sits in the pod and
# the call's JSON payload is handed to it on ITS stdin, so no parameter file is ever written.
# stdin:  KXC1 <nonce> <timeout> <kill_after> <budget> <nenv>
#         <work_dir>
#         <runner script, relative to work_dir>
#         <nenv lines KEY=VALUE>
#         <payload: {"function", "arguments", "module"?} as JSON, until EOF>
# stdout: __KX_START_<nonce>__, the runner's stdout, then -- if the runner wrote a structured result --
#         "\n__KX_FRAME_<nonce>__ <bytes>\n<frame JSON>", then
#         "\n__KX_EXIT_<nonce>__ <rc> <timed_out> <kept> <log_dir>\n" (as run.sh)
# stderr: the runner's stderr.
# The runner is started as `python3 <runner> /dev/stdin` (the seed's runner reads that path as its
# parameter file); ours reads stdin directly and writes its frame to $KX_TOOL_RESULT.
set -u
IFS=' ' read -r magic nonce tmo kafter budget nenv || exit 97
if [ "$magic" != KXC1 ]; then echo "kubectl-executor: bad call header" >&2; exit 97; fi
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
  printf 'kubectl-executor: %s\n' "$1" >&2
  printf '__KX_START_%s__\n' "$nonce"
  finish "$2" 0 0
}
file="$work_dir/$rel"
py=$(command -v python3 2>/dev/null || command -v python 2>/dev/null || true)
[ -n "$py" ] || fail "the image has no python" 127
[ -f "$file" ] || fail "no tool runner at $file: call install_pod_dispatcher() first" 2
# Logs, the exit status and the result need a writable place: /tmp, else HOME, else the workspace.
for logs in /tmp/kx-logs "${HOME:-/nonexistent}/.kx-logs" "$work_dir/.kx-logs"; do
  mkdir -p "$logs" 2>/dev/null && [ -w "$logs" ] && break
done
out="$logs/$nonce.out"; err="$logs/$nonce.err"; rcf="$logs/$nonce.rc"; pidf="$logs/$nonce.pid"
res="$logs/$nonce.result"
export KX_TOOL_RESULT="$res" KX_TOOL_WORK_DIR="$work_dir" KX_TOOL_BUDGET="$budget"
# The watchdog starts first, so if it is gone when the program ends the deadline has passed.
sleep "$tmo" >/dev/null 2>&1 </dev/null &
watchdog=$!
printf '__KX_START_%s__\n' "$nonce"
# A background job's stdin is /dev/null unless redirected: hand it the payload explicitly, through
# a pipe of our own: the exec's stdin may belong to root, and a non-root runner that reopens
# /dev/stdin by name (the seed's does) would get EACCES on it.
exec 4<&0
{
  {
    cat <&4 4<&- | timeout -k "$kafter" "$tmo" "$py" "$file" /dev/stdin 4<&- &
    pid=$!
    echo "$pid" >"$pidf"
    wait "$pid"
    echo "$?" >"$rcf"
    kill -s KILL -- "-$pid" 2>/dev/null
  } 2>&1 1>&3 | tee "$err" >&2
} 3>&1 | tee "$out"
exec 4<&-
rc=$(cat "$rcf" 2>/dev/null || echo 255)
timed_out=0
if kill -0 "$watchdog" 2>/dev/null; then
  kill "$watchdog" 2>/dev/null
elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  timed_out=1
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
