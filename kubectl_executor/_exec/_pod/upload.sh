# kubectl-executor upload (POSIX sh). Fixed text: the user's paths and bytes arrive on stdin.
# stdin:  KXU1 <nonce>
#         <work_dir>
#         a tar stream: data/<path> for every file, then kx.sha256 with one "<sha256> <path>" line per
#         file (the client hashed each file while it streamed it). <path> is relative to work_dir.
# $1:     the python helper (kxtar.py), for images without tar or sha256sum.
# stdout: "__KX_SUM__ <sha256> <path>" per file as hashed in the pod, then "__KX_UPLOADED_<nonce>__ <n>".
# Files land in a fresh directory inside work_dir, are verified, and only then renamed into place,
# so a failed or interrupted upload leaves no half-written file at any target path.
set -u
helper=$1
IFS=' ' read -r magic nonce || exit 97
if [ "$magic" != KXU1 ]; then echo "kubectl-executor: bad upload header" >&2; exit 97; fi
IFS= read -r work_dir || exit 97
fail() {
  printf 'kubectl-executor: %s\n' "$1" >&2
  exit 1
}
py=$(command -v python3 2>/dev/null || command -v python 2>/dev/null || true)
mkdir -p -- "$work_dir" 2>/dev/null || fail "cannot create $work_dir"
tmp="$work_dir/.kx-upload-$nonce"
mkdir -- "$tmp" || fail "cannot create $tmp"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
if command -v tar >/dev/null 2>&1; then
  tar -x -f - -C "$tmp" || fail "tar could not extract the upload (stream cut short?)"
elif [ -n "$py" ]; then
  "$py" -c "$helper" extract "$tmp" || fail "could not extract the upload (stream cut short?)"
else
  cat >/dev/null
  fail "the image has neither tar nor python"
fi
sums="$tmp/kx.sha256"
[ -f "$sums" ] || fail "the upload ended early: no checksum list"
if command -v sha256sum >/dev/null 2>&1; then
  while IFS= read -r line; do
    want=${line%% *}
    rel=${line#* }
    got=$(sha256sum <"$tmp/data/$rel") || fail "cannot read $rel"
    got=${got%% *}
    [ "$got" = "$want" ] || fail "checksum mismatch for $rel"
    printf '__KX_SUM__ %s %s\n' "$got" "$rel"
  done <"$sums"
elif [ -n "$py" ]; then
  "$py" -c "$helper" verify "$tmp" || fail "checksum verification failed"
else
  fail "the image has neither sha256sum nor python"
fi
# Refuse before moving anything: a directory where a file should go.
while IFS= read -r line; do
  rel=${line#* }
  if [ -d "$work_dir/$rel" ] && [ ! -L "$work_dir/$rel" ]; then fail "$rel is a directory in the pod"; fi
done <"$sums"
n=0
while IFS= read -r line; do
  rel=${line#* }
  dest="$work_dir/$rel"
  mkdir -p -- "$(dirname -- "$dest")" || fail "cannot create the directory of $rel"
  # mv onto a symlink to a directory would move INTO it: replace the link itself.
  if [ -L "$dest" ]; then rm -f -- "$dest" || fail "cannot replace $rel"; fi
  mv -f -- "$tmp/data/$rel" "$dest" || fail "cannot move $rel into place"
  n=$((n + 1))
done <"$sums"
printf '__KX_UPLOADED_%s__ %s\n' "$nonce" "$n"
