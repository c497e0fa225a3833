# kubectl-executor transfer helper: stdlib only, runs in the pod (Python >= 3.6).
# Passed by upload.sh / download.sh as `python3 -c "$helper" <command> ...` when the image lacks tar
# or sha256sum. Fixed text: paths come from the scripts' own variables, never spliced in.
#   extract DIR   read a tar stream (made by the client) on stdin, extract it into DIR
#   verify DIR    check DIR/data/<path> against DIR/kx.sha256; print "__KX_SUM__ <sha256> <path>"
#   create NAME   write a tar of NAME (relative to the current directory) to stdout
#   sha256        print the sha256 of stdin
import hashlib
import sys
import tarfile

CHUNK = 1 << 20


def _sha256(stream):
    digest = hashlib.sha256()
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def extract(directory):
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(directory, filter="data")
        else:
            tar.extractall(directory)


def verify(directory):
    with open(directory + "/kx.sha256", encoding="utf-8", errors="surrogateescape") as sums:
        lines = sums.read().splitlines()
    for line in lines:
        want, rel = line.split(" ", 1)
        with open(directory + "/data/" + rel, "rb") as fh:
            got = _sha256(fh)
        if got != want:
            sys.stderr.write("kubectl-executor: checksum mismatch for %s\n" % rel)
            return 1
        out = "__KX_SUM__ %s %s\n" % (got, rel)
        sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
    return 0


def create(name):
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(name, recursive=True)


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "extract":
        extract(argv[2])
        return 0
    if command == "verify":
        return verify(argv[2])
    if command == "create":
        create(argv[2])
        return 0
    if command == "sha256":
        sys.stdout.write(_sha256(sys.stdin.buffer) + "  -\n")
        return 0
    sys.stderr.write("kubectl-executor: kxtar: unknown command %r\n" % command)
    return 97


if __name__ == "__main__":
    sys.exit(main(sys.argv))
