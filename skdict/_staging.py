"""Write files and folders so that an interruption never leaves half of them behind.

:func:`atomic_write` writes one file: to a temporary file in the target folder,
renamed over the target on success. :func:`staged_folder` writes a set of
entries (the explorer's ``index.html``, ``assets/``, ``data/``...) into a
folder the user owns: they are built in a hidden folder inside it and renamed
into place together at the end, and a manifest remembers which entries the
writer created. An earlier build's entries are replaced; a file or folder of
the same name that the writer did not create is never touched: the build is
refused before it starts (:func:`check_free`). A failure at any point, a
signal included, leaves the folder as it was.
"""

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

_MANIFEST_FORMAT = "skdict-staged-folder"
# A manifest lists a handful of names: a larger file is not one of ours.
_MAX_MANIFEST_BYTES = 1 << 16


@contextlib.contextmanager
def atomic_write(path, suffix=""):
    """Yield a temporary path next to `path`; move it onto `path` only on success.

    The temporary file lives in the target folder so that ``os.replace`` is an
    atomic rename: an interrupted write leaves the previous file untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _default_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def owned_entries(folder, manifest):
    """Names an earlier staged build wrote into `folder`, from its manifest."""
    path = folder / manifest
    if not os.path.lexists(path):
        return set()
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ValueError
        content = json.loads(path.read_text(encoding="utf-8"))
        if content.get("format") != _MANIFEST_FORMAT:
            raise ValueError
        entries = content["entries"]
        if not isinstance(entries, list) or not all(_plain_name(name) for name in entries):
            raise ValueError
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        raise FileExistsError(_taken_message(folder, manifest)) from None
    return set(entries) | {manifest}


def _plain_name(name):
    """A name inside the folder: an edited manifest must not reach outside it."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and os.sep not in name and "\0" not in name)


def _taken_message(folder, name):
    return (
        f"{str(folder)!r} already holds {name!r}, which was not written by an earlier "
        "build there; nothing was changed. Move it away or choose another folder."
    )


def check_free(folder, names, manifest):
    """Refuse `folder` if one of `names` in it is a file or folder the writer did not create.

    Parameters
    ----------
    folder : path-like
        The destination folder (it need not exist).
    names : iterable of str
        Entries the build will write into `folder`.
    manifest : str
        Name of the manifest an earlier build left in `folder`.

    Raises
    ------
    FileExistsError
        Naming the first entry that is taken by something else.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    owned = owned_entries(folder, manifest)
    for name in names:
        if os.path.lexists(folder / name) and name not in owned:
            raise FileExistsError(_taken_message(folder, name))


@contextlib.contextmanager
def staged_folder(folder, manifest):
    """Yield an empty hidden folder inside `folder`; move what it holds into `folder` at the end.

    On success every entry of the stage replaces the entry of the same name
    that an earlier build wrote (listed in `manifest`), entries of the
    earlier build that this one did not write are removed, and `manifest` is
    rewritten. Entries of `folder` that no build wrote are never touched: if
    the stage holds one of their names, the commit is refused. On failure,
    including a signal or an error half-way through the renames, `folder` is
    left as it was (and removed again if this call created it).
    """
    folder = Path(folder)
    created = _make_folders(folder)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    done = False
    try:
        yield stage
        _write_manifest(stage, manifest)
        _commit(stage, folder, manifest)
        done = True
    finally:
        # The stage holds the new build on failure and the previous one on success.
        with _signals_deferred():
            shutil.rmtree(stage, ignore_errors=True)
            for made in [] if done else created:
                with contextlib.suppress(OSError):
                    made.rmdir()  # only if still empty


def _make_folders(folder):
    """Create `folder` and its missing parents; return those created, deepest first."""
    missing = []
    path = folder
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _write_manifest(stage, manifest):
    entries = sorted(entry.name for entry in stage.iterdir())
    content = {"format": _MANIFEST_FORMAT, "entries": entries}
    (stage / manifest).write_text(json.dumps(content, indent=1), encoding="utf-8")


def _commit(stage, folder, manifest):
    """Rename the stage's entries into `folder`, all or none."""
    owned = owned_entries(folder, manifest)
    new = sorted(entry.name for entry in stage.iterdir())
    for name in new:
        if os.path.lexists(folder / name) and name not in owned:
            raise FileExistsError(_taken_message(folder, name))
    trash = stage / ".previous"
    trash.mkdir()
    done = []  # (now at, came from): the renames to undo, in order
    stale = sorted(name for name in owned - set(new) if os.path.lexists(folder / name))
    with _signals_deferred():
        try:
            for name in new + stale:
                target = folder / name
                if os.path.lexists(target):
                    os.rename(target, trash / name)
                    done.append((trash / name, target))
                if name in new:
                    os.rename(stage / name, target)
                    done.append((target, stage / name))
        except BaseException:
            for now, before in reversed(done):
                os.rename(now, before)
            raise


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends, then deliver them.

    The renames of a commit take microseconds; an interruption between two of
    them would leave half a build in place, so the handlers run after it.
    Python only runs signal handlers in the main thread, where this applies.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed outside Python, left alone
            previous[sig] = signal.signal(sig, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)
