# kubectl-executor download (POSIX sh). Fixed text: the path arrives on stdin.
# stdin:  KXD1 <nonce> <file|dir>
#         <base directory (work_dir)>
#         <path relative to it>
# $1:     the python helper (kxtar.py), for images without tar or sha256sum.
# stdout: a tar stream: "./<name>" for a file; the directory's content as "./..." for a dir.
# stderr: tar's own messages, then "__KX_SENT_<nonce>__ <tar exit code> <sha256 of the whole stream>".
# Exit codes: 3 not found, 4 not a regular file / directory (or a symlink), 5 missing tools.
# Nothing here is trusted by the client: it re-checks every member and the checksum.
set -u
helper=$1
IFS=' ' read -r magic nonce kind || exit 97
if [ "$magic" != KXD1 ]; then echo "kubectl-executor: bad download header" >&2; exit 97; fi
IFS= read -r base || exit 97
IFS= read -r rel || exit 97
fail() {
  printf 'kubectl-executor: %s\n' "$1" >&2
  exit "$2"
}
py=$(command -v python3 2>/dev/null || command -v python 2>/dev/null || true)
path="$base/$rel"
[ -L "$path" ] && fail "$rel is a symbolic link" 4
[ -e "$path" ] || fail "$rel does not exist" 3
case "$kind" in
  file)
    [ -f "$path" ] || fail "$rel is not a regular file" 4
    cd -- "$(dirname -- "$path")" || fail "cannot enter the directory of $rel" 4
    name="./$(basename -- "$path")" ;;
  dir)
    [ -d "$path" ] || fail "$rel is not a directory" 4
    cd -- "$path" || fail "cannot enter $rel" 4
    name=. ;;
  *) fail "bad download kind" 97 ;;
esac
if command -v tar >/dev/null 2>&1; then
  maker=tar
elif [ -n "$py" ]; then
  maker=py
else
  fail "the image has neither tar nor python" 5
fi
if command -v sha256sum >/dev/null 2>&1; then
  hasher=sha256sum
elif [ -n "$py" ]; then
  hasher=py
else
  fail "the image has neither sha256sum nor python" 5
fi
# A scratch place for the fifo, never inside what is being sent: /tmp, else HOME.
made=
for work in "/tmp/kx-dl-$nonce" "${HOME:-/nonexistent}/.kx-dl-$nonce"; do
  if mkdir -p -- "$work" 2>/dev/null && [ -w "$work" ]; then made=1; break; fi
done
[ -n "$made" ] || fail "no writable scratch directory (/tmp or HOME)" 5
trap 'rm -rf -- "$work"' EXIT
trap 'exit 1' HUP INT TERM PIPE
mkfifo "$work/fifo" || fail "cannot create a fifo in /tmp" 5
# The hasher reads a copy of exactly the bytes sent on stdout (tee), so the sum covers the stream.
if [ "$hasher" = py ]; then
  "$py" -c "$helper" sha256 <"$work/fifo" >"$work/sum" &
else
  sha256sum <"$work/fifo" >"$work/sum" &
fi
hashing=$!
{
  if [ "$maker" = py ]; then "$py" -c "$helper" create "$name"; else tar -c -f - "$name"; fi
  echo "$?" >"$work/rc"
} | tee -- "$work/fifo"
wait "$hashing"
rc=$(cat "$work/rc" 2>/dev/null || echo 255)
sum=$(cat "$work/sum" 2>/dev/null)
printf '__KX_SENT_%s__ %s %s\n' "$nonce" "$rc" "${sum%% *}" >&2
