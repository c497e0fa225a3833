"""kubectl-executor rich results, in the pod: Python 3.6+ standard library only.

Not run on its own: the client puts this text in front of run.py and after agent.py (one shipped
script each), so both runners share it. What it does:

- ``FileScan``: before a block, note every file under work_dir (size, mtime, inode); after it,
  list (path, size, sha256) the files it created or changed. Bounded: at most RICH_SCAN_FILES
  entries are walked, at most the request's hash budget is read; a cut scan says so.
- ``rich_bundle``: an object's representations, IPython style (``_repr_png_``..., or IPython's own
  formatters when IPython is installed), as a list of outputs.
- ``capture_figures``: matplotlib figures left open become image/png (then closed), as Jupyter's
  inline backend does; matplotlib is never imported by us.
- ``rich_report``: the outputs a block produced (a file the block's interpreter wrote) and its
  changed files, within the per-output and per-result budgets: what is over is written to a file
  in the log directory and named by its path instead.

Outputs travel as JSON objects: mime_type, data (base64 when ``b64``), metadata, kept_path.
Fixed text: nothing from the user is ever spliced into it.
"""

import os
import sys

RICH_ENV = "KX_RICH"  # the request's budgets: "<per output> <per result> <files listed> <bytes hashed>"
RICH_FILE_ENV = "KX_RICH_FILE"  # where a block's interpreter writes its outputs (JSON lines)
RICH_SCAN_FILES = 20000  # entries walked under work_dir, at most
RICH_BINARY = ("image/png", "image/jpeg")
RICH_METHODS = (
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("image/svg+xml", "_repr_svg_"),
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("application/json", "_repr_json_"),
    ("text/latex", "_repr_latex_"),
)
RICH_EXT = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/svg+xml": "svg",
    "text/html": "html",
    "text/markdown": "md",
    "application/json": "json",
    "text/latex": "tex",
    "text/plain": "txt",
}


def rich_limits(env):
    """The request's budgets from KX_RICH, or None: no rich results asked for."""
    try:
        values = [int(v) for v in env.get(RICH_ENV, "").split()]
    except ValueError:
        return None
    if len(values) != 4:
        return None
    return {"output": values[0], "result": values[1], "files": values[2], "hash": values[3]}


# -- changed files ---------------------------------------------------------------------------


def rich_skipped(name):
    """Ours (.kx-logs, .kx-run.*, .kx-*.part) and Python's byte-code caches."""
    return name.startswith(".kx-") or name == "__pycache__"


class FileScan(object):
    """Files under root before the block: relative path -> (size, mtime_ns, inode)."""

    def __init__(self, root, exclude=()):
        self.root = root
        self.exclude = set(exclude)
        self.cut = False
        self.before = self.walk()

    def walk(self):
        found = {}
        stack = [("", self.root)]
        seen = 0
        while stack:
            prefix, directory = stack.pop()
            try:
                entries = os.scandir(directory)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    seen += 1
                    if seen > RICH_SCAN_FILES:
                        self.cut = True
                        return found
                    if rich_skipped(entry.name):
                        continue
                    rel = prefix + entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((rel + "/", entry.path))
                        elif entry.is_file(follow_symlinks=False) and rel not in self.exclude:
                            st = entry.stat(follow_symlinks=False)
                            found[rel] = (st.st_size, st.st_mtime_ns, st.st_ino)
                    except OSError:
                        continue
        return found

    def changes(self, max_files, max_hash):
        """(files, cut): what is new or changed since, sorted by path, within the bounds."""
        import hashlib

        after = self.walk()
        changed = sorted(rel for rel, sig in after.items() if self.before.get(rel) != sig)
        cut = self.cut
        if len(changed) > max_files:
            changed, cut = changed[:max_files], True
        files = []
        budget = max_hash
        for rel in changed:
            size = after[rel][0]
            if size > budget:
                cut = True
                continue
            digest = hashlib.sha256()
            try:
                with open(os.path.join(self.root, rel), "rb") as fh:
                    while True:
                        chunk = fh.read(1 << 20)
                        if not chunk:
                            break
                        digest.update(chunk)
                        budget -= len(chunk)
            except OSError:
                continue
            files.append({"path": rel, "size": size, "sha256": digest.hexdigest()})
        return files, cut


# -- outputs (in the block's interpreter) ----------------------------------------------------


def png_size(data):
    """(width, height) from a PNG's IHDR, or None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def rich_item(mime, value, metadata=None):
    """One output as it travels: binary data base64 (a str for a binary type is taken as base64)."""
    import base64
    import json

    metadata = dict(metadata or {})
    if mime in RICH_BINARY:
        if isinstance(value, str):
            try:
                value = base64.b64decode(value)
            except ValueError:
                return None
        if not isinstance(value, (bytes, bytearray)):
            return None
        value = bytes(value)
        if mime == "image/png" and "width" not in metadata:
            size = png_size(value)
            if size:
                metadata["width"], metadata["height"] = size
        return {
            "mime_type": mime,
            "data": base64.b64encode(value).decode(),
            "b64": True,
            "metadata": metadata,
        }
    if mime == "application/json" and not isinstance(value, str):
        try:
            value = json.dumps(value)
        except (TypeError, ValueError):
            return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return {"mime_type": mime, "data": value, "b64": False, "metadata": metadata}


def is_figure(obj):
    cls = type(obj)
    return cls.__module__.startswith("matplotlib.figure") and hasattr(obj, "savefig")


def figure_item(fig):
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # as Jupyter's inline backend
    return rich_item("image/png", buf.getvalue())


_ipython = []  # [formatter or None], looked up on first use


def ipython_formatter():
    """IPython's DisplayFormatter when IPython is installed (its formatters, its registrations)."""
    if not _ipython:
        formatter = None
        try:
            import importlib.util

            if importlib.util.find_spec("IPython") is not None:
                from IPython.core.formatter import DisplayFormatter

                formatter = DisplayFormatter()
        except Exception:
            formatter = None
        _ipython.append(formatter)
    return _ipython[0]


def rich_bundle(obj):
    """The representations of obj: [item, ...], richest first and text/plain last."""
    if is_figure(obj):
        item = figure_item(obj)
        return [item] if item else []
    data, meta = {}, {}
    formatter = ipython_formatter()
    if formatter is not None:
        try:
            data, meta = formatter.format(obj)
        except Exception:
            data, meta = {}, {}
    else:
        method = getattr(obj, "_repr_mimebundle_", None)
        if callable(method) and not isinstance(obj, type):
            try:
                got = method(include=None, exclude=None)
                if isinstance(got, tuple) and len(got) == 2:
                    data, meta = got
                else:
                    data = got
            except Exception:
                data = {}
            if not isinstance(data, dict):
                data = {}
            if not isinstance(meta, dict):
                meta = {}
        for mime, name in RICH_METHODS:
            method = getattr(obj, name, None)
            if mime in data or not callable(method) or isinstance(obj, type):
                continue
            try:
                value = method()
            except Exception:
                continue
            if isinstance(value, tuple) and len(value) == 2:
                value, meta[mime] = value
            if value is not None:
                data[mime] = value
        if "text/plain" not in data:
            try:
                data["text/plain"] = repr(obj)
            except Exception:
                data["text/plain"] = "<%s object>" % type(obj).__name__
    items = []
    order = [m for m, _ in RICH_METHODS] + ["text/plain"]
    for mime in order + sorted(m for m in data if m not in order):
        if mime in data:
            item = rich_item(mime, data[mime], meta.get(mime) if isinstance(meta.get(mime), dict) else None)
            if item is not None:
                items.append(item)
    return items


class RichSink(object):
    """A block's outputs, in its interpreter: display() appends, the end flushes to the file."""

    def __init__(self, path):
        self.path = path
        self.items = []
        self.shown = set()  # figures displayed explicitly: not again at the end

    def display(self, *objs):
        for obj in objs:
            bundle = len(self.items)
            for item in rich_bundle(obj):
                item["metadata"].setdefault("bundle", bundle)
                self.items.append(item)
            if is_figure(obj):
                self.shown.add(id(obj))

    def figures(self):
        """Open figures -> image/png, then closed (only when the block imported pyplot)."""
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        try:
            for num in plt.get_fignums():
                fig = plt.figure(num)
                if id(fig) in self.shown:
                    continue
                item = figure_item(fig)
                if item is not None:
                    item["metadata"]["bundle"] = len(self.items)
                    self.items.append(item)
            plt.close("all")
        except Exception as exc:
            try:
                sys.stderr.write("kubectl-executor: could not capture the figures: %s\n" % exc)
            except Exception:
                pass

    def flush(self):
        """Write what was collected (nothing: no file) for the runner, which sends it."""
        import json

        if not self.path:  # no rich results asked for: leave the figures alone
            self.items = []
            return
        self.figures()
        if not self.items:
            return
        try:
            with open(self.path, "a") as fh:
                for item in self.items:
                    fh.write(json.dumps(item) + "\n")
        except (OSError, ValueError):
            pass
        self.items = []
        self.shown = set()


class PyplotHook(object):
    """On import of matplotlib.pyplot by the block: show() hands the open figures over (as
    Jupyter's inline backend does) instead of warning that the Agg backend cannot show them."""

    def __init__(self, sink):
        self.sink = sink

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module
        sink = self.sink

        def exec_module(module):
            original(module)

            def show(*args, **kwargs):
                sink.figures()

            module.show = show

        loader.exec_module = exec_module
        return spec


# -- the report (in the runner) ---------------------------------------------------------------


def read_items(path):
    import json

    items = []
    try:
        with open(path) as fh:
            for line in fh:
                try:
                    items.append(json.loads(line))
                except ValueError:
                    continue
        os.unlink(path)
    except OSError:
        pass
    return items


def keep_item(item, log_dir, nonce, index):
    """An output over budget: its data into a file in the log directory; the item names it."""
    import base64

    ext = RICH_EXT.get(item.get("mime_type"), "bin")
    path = os.path.join(log_dir or "/tmp/kx-logs", "%s.output-%d.%s" % (nonce, index, ext))
    data = item.get("data") or ""
    try:
        raw = base64.b64decode(data) if item.get("b64") else data.encode("utf-8", "surrogateescape")
        with open(path, "wb") as fh:
            fh.write(raw)
        kept = path
    except (OSError, ValueError):
        kept = None
        item.setdefault("metadata", {})["omitted"] = "over budget, and could not be kept"
    item["size"] = len(data)
    item["data"] = ""
    item["kept_path"] = kept
    return item


def rich_report(limits, nonce, log_dir, items_path=None, scan=None):
    """The JSON text of the block's rich results, or None when there is nothing to say."""
    import json

    items = read_items(items_path) if items_path else []
    used = 0
    for index, item in enumerate(items):
        size = len(item.get("data") or "")
        if size > limits["output"] or used + size > limits["result"]:
            keep_item(item, log_dir, nonce, index)
        else:
            used += size
    report = {}
    if items:
        report["outputs"] = items
    if scan is not None:
        files, cut = scan.changes(limits["files"], limits["hash"])
        if files:
            report["files"] = files
        if cut:
            report["files_truncated"] = True
    if not report:
        return None
    return json.dumps(report, separators=(",", ":"))
