# kubectl-executor in-pod runner (POSIX sh). Fixed text: nothing from the user is ever spliced in.
# stdin: a header, then the code.
#   KX1 <nonce> <timeout> <kill_after> <runner> <budget> <nenv>
#   <work_dir>
#   <relative file path>
#   <nenv lines KEY=VALUE>
#   <code bytes until EOF>
# stdout: __KX_START_<nonce>__, the program's stdout, then \n__KX_EXIT_<nonce>__ <rc> <timed_out> <log_kept> <log_dir>
# stderr: the program's stderr.
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
  printf 'kubectl-executor: %s\n' "$1" >&2
  printf '__KX_START_%s__\n' "$nonce"
  finish 1 0 0
}
file="$work_dir/$rel"
dir=$(dirname -- "$file")
mkdir -p -- "$dir" 2>/dev/null || { cat >/dev/null; fail "cannot create directory $dir"; }
tmp="$dir/.kx-$nonce.part"
if ! cat >"$tmp"; then rm -f -- "$tmp"; fail "cannot write $file"; fi
mv -f -- "$tmp" "$file" || { rm -f -- "$tmp"; fail "cannot write $file"; }
case "$runner" in
  python)
    if command -v python3 >/dev/null 2>&1; then set -- python3 "$file"; else set -- python "$file"; fi ;;
  sh) set -- sh "$file" ;;
  bash) set -- bash "$file" ;;
  pwsh) set -- pwsh -NoLogo -NonInteractive -File "$file" ;;
  none) printf '__KX_START_%s__\n' "$nonce"; finish 0 0 0 ;;
  *) fail "unknown runner $runner" ;;
esac
# Logs and the exit status need a writable place: /tmp, else HOME, else the workspace.
for logs in /tmp/kx-logs "${HOME:-/nonexistent}/.kx-logs" "$work_dir/.kx-logs"; do
  mkdir -p "$logs" 2>/dev/null && [ -w "$logs" ] && break
done
out="$logs/$nonce.out"; err="$logs/$nonce.err"; rcf="$logs/$nonce.rc"; pidf="$logs/$nonce.pid"
# The watchdog starts first, so if it is gone when the program ends the deadline has passed.
sleep "$tmo" >/dev/null 2>&1 </dev/null &
watchdog=$!
printf '__KX_START_%s__\n' "$nonce"
{
  {
    timeout -k "$kafter" "$tmo" "$@" </dev/null &
    pid=$!
    echo "$pid" >"$pidf"
    wait "$pid"
    echo "$?" >"$rcf"
    # timeout leads its own process group: stop what the block left behind.
    kill -s KILL -- "-$pid" 2>/dev/null
  } 2>&1 1>&3 | tee "$err" >&2
} 3>&1 | tee "$out"
rc=$(cat "$rcf" 2>/dev/null || echo 255)
timed_out=0
if kill -0 "$watchdog" 2>/dev/null; then
  kill "$watchdog" 2>/dev/null
elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  timed_out=1
fi
kept=1
if [ "$(wc -c <"$out" 2>/dev/null || echo 0)" -le "$budget" ] &&
   [ "$(wc -c <"$err" 2>/dev/null || echo 0)" -le "$budget" ]; then
  rm -f -- "$out" "$err"; kept=0
fi
rm -f -- "$rcf" "$pidf"
finish "$rc" "$timed_out" "$kept"
