"""Replace a directory atomically, and only when it is ours to replace.

An export builds the whole artifact in a staging directory beside OUTPUT_DIR (same filesystem),
then commits it in one step:

- OUTPUT_DIR absent: ``renameat2(staging, OUTPUT_DIR, RENAME_NOREPLACE)``;
- OUTPUT_DIR present: ``renameat2(staging, OUTPUT_DIR, RENAME_EXCHANGE)`` swaps the two names in one
  system call, then the staging name (now holding the earlier artifact) is removed.

So at every instant OUTPUT_DIR is either the complete earlier artifact or the complete new one,
whatever kills the process. Filesystems or kernels without ``RENAME_EXCHANGE`` (not Linux, Linux
< 3.15, some network/FUSE filesystems: the call fails with EINVAL/ENOSYS) fall back to two
renames, OUTPUT_DIR -> ``.NAME.old-PID-X`` then staging -> OUTPUT_DIR: for the microseconds
between them OUTPUT_DIR is absent. A process killed in that gap leaves the earlier artifact in
``.NAME.old-PID-X``; the next export to the same OUTPUT_DIR renames it back before anything else.

Staging (``.NAME.tmp-PID-X``) and backup (``.NAME.old-PID-X``) names carry the owner's PID: the next
export removes those whose process is gone (kill -9, power loss). PIDs are only meaningful on one
machine and in one PID namespace: exporting to a shared (NFS) directory from several hosts at
once may leave another host's live staging dir alone, never delete it while its PID is alive here.

Signals: SIGINT and SIGTERM raised during the swap are held back until it is done (the swap then
either happened or not, and the exception says which: ``hts_committed``); :func:`interruptible`
turns SIGTERM into :class:`Terminated` (a KeyboardInterrupt) for the duration of an export so that
the staging directory is removed like on Ctrl-C, and restores the previous handler afterwards.

No torch import here: the runtime, the CLI and the tests' fault-injection subprocesses use it cheaply.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import ArtifactError, OptionError, option

PRODUCER = "hf-torchscript"
MANIFEST_FILE = "manifest.json"

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# renameat2's syscall number, for a libc older than glibc 2.28 that lacks the wrapper.
_SYS_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276, "riscv64": 276, "i386": 353,
                  "i686": 353, "armv7l": 382, "ppc64le": 357, "ppc64": 357, "s390x": 347}
# Errors meaning "this kernel or filesystem cannot do that flag": fall back, do not fail.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}

# Tests set this to inject faults between the steps of commit(); called with the step's name.
_HOOK: Callable[[str], None] | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during an export: cleaned up like Ctrl-C; the CLI exits with 143."""

    exit_code = 128 + signal.SIGTERM


def _step(name: str) -> None:
    if _HOOK is not None:
        _HOOK(name)


# ------------------------------------------------------------------------------ renameat2

_renameat2_fn = None


def _load_renameat2():
    global _renameat2_fn
    if _renameat2_fn is None:
        _renameat2_fn = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
            except OSError:  # pragma: no cover - static or exotic interpreters
                return None
            fn = getattr(libc, "renameat2", None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2_fn = fn
            else:
                number = _SYS_RENAMEAT2.get(platform.machine().lower())
                if number is not None and hasattr(libc, "syscall"):
                    sc = libc.syscall
                    sc.restype = ctypes.c_long

                    def fn(olddir, old, newdir, new, flags, _sc=sc, _n=number):
                        return _sc(ctypes.c_long(_n), ctypes.c_int(olddir), ctypes.c_char_p(old),
                                   ctypes.c_int(newdir), ctypes.c_char_p(new), ctypes.c_uint(flags))

                    _renameat2_fn = fn
    return _renameat2_fn or None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags); False when the kernel or filesystem lacks the flag, OSError otherwise."""
    fn = _load_renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False if unsupported here (nothing changed then)."""
    return _renameat2(a, b, _RENAME_EXCHANGE)


def rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` only if ``dst`` does not exist (FileExistsError if it does).

    Without renameat2: ``os.rename``, which also fails on a non-empty ``dst`` and, harmlessly,
    replaces an empty directory.
    """
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return True
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        raise
    return True


# ------------------------------------------------------------------------------ what may be replaced

def is_artifact(directory: Path) -> bool:
    """True if ``directory`` is an hf-torchscript artifact as its manifest describes it, and nothing else.

    A manifest.json saying ``"producer": "hf-torchscript"`` is not enough (anyone can write one): every
    file the manifest lists must be there with its recorded sha256, and the directory must hold no file
    or folder the manifest does not list. So ``--force`` never deletes a user's file that sits beside
    (or was dropped into) an artifact, nor a folder that only claims to be one.
    """
    return artifact_mismatch(directory) is None


def artifact_mismatch(directory: Path) -> str | None:
    """None if ``directory`` is exactly an artifact (see :func:`is_artifact`), else why not, in a few words.

    Everything is read through one open descriptor of the directory: a concurrent export that swaps
    another artifact into the same name (RENAME_EXCHANGE) cannot mix two artifacts' files in one check.
    """
    import hashlib
    import stat

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        return f"cannot open it ({e.strerror})"

    def opener(path, flags):
        return os.open(path, flags | os.O_NOFOLLOW, dir_fd=fd)

    try:
        try:
            with open(MANIFEST_FILE, "rb", opener=opener) as f:
                manifest = json.loads(f.read())
        except FileNotFoundError:
            return f"no {MANIFEST_FILE}"
        except (OSError, ValueError, RecursionError):
            return f"{MANIFEST_FILE} is not readable JSON"
        if not isinstance(manifest, dict) or manifest.get("producer") != PRODUCER:
            return f"no {MANIFEST_FILE} written by hf-torchscript"
        version = manifest.get("format_version", 1)
        files = manifest.get("files") if isinstance(version, int) and version >= 2 else {"model.pt": manifest.get("sha256")}
        if not isinstance(files, dict) or not files:
            return f"{MANIFEST_FILE} lists no files with their sha256"
        try:
            present = set(os.listdir(fd)) - {MANIFEST_FILE}
        except OSError as e:
            return f"cannot list it ({e.strerror})"
        extra = sorted(present - set(files))
        if extra:
            return f"it holds {extra[0]!r}, which its {MANIFEST_FILE} does not list"
        for name, want in files.items():
            try:
                ok = isinstance(name, str) and name in present and stat.S_ISREG(
                    os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            except OSError:
                ok = False
            if not ok:
                return f"{name!r}, listed in its {MANIFEST_FILE}, is missing or not a regular file"
            h = hashlib.sha256()
            try:
                with open(name, "rb", opener=opener) as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except OSError as e:
                return f"cannot read {name!r} ({e.strerror})"
            if h.hexdigest() != want:
                return f"{name!r} does not match the sha256 its {MANIFEST_FILE} records (it was changed)"
        return None
    finally:
        os.close(fd)


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_destination(output_dir, force: bool, *, model: Path | None = None) -> None:
    """Refuse, before anything is loaded or written, an OUTPUT_DIR that export must not replace.

    Allowed: a new path in a writable directory, an empty directory, and with ``force`` an earlier
    hf-torchscript artifact. Refused: a symlink, a file, the current directory or one of its
    parents, a directory equal to / inside / containing ``model``, a non-empty directory without
    ``force``, a non-empty directory that is not an artifact even with ``force``, an unwritable place.
    """
    out = Path(output_dir)
    if out.is_symlink():
        raise ArtifactError(
            f"OUTPUT_DIR {str(out)!r} is a symlink to {os.readlink(out)!r}; export replaces OUTPUT_DIR itself, "
            "not what a link points to: pass the real directory path, or a new one"
        )
    resolved = out.resolve()
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the current directory was deleted: nothing to protect there
        cwd = None
    if cwd is not None and (resolved == cwd or resolved in cwd.parents):
        what = "the current directory" if resolved == cwd else "a parent of the current directory"
        raise ArtifactError(
            f"OUTPUT_DIR {str(out)!r} is {what}; export replaces OUTPUT_DIR as a whole: pass a new "
            "subdirectory such as ./out"
        )
    if model is not None:
        m = Path(model).resolve()
        if resolved == m:
            raise ArtifactError(
                f"OUTPUT_DIR {str(out)!r} is the MODEL directory; writing there would delete the model: "
                "pass another OUTPUT_DIR"
            )
        if m in resolved.parents:
            raise ArtifactError(
                f"OUTPUT_DIR {str(out)!r} is inside MODEL {str(m)!r}; write the artifact outside the model "
                f"folder, e.g. {str(m.parent / (m.name + '-torchscript'))!r}"
            )
        if resolved in m.parents:
            raise ArtifactError(
                f"OUTPUT_DIR {str(out)!r} contains MODEL {str(m)!r}; replacing it would delete the model: "
                "pass another OUTPUT_DIR"
            )
    if os.path.lexists(out):
        if not out.is_dir():
            raise ArtifactError(f"OUTPUT_DIR {str(out)!r} is a file; pass a directory path")
        try:
            non_empty = any(out.iterdir())
        except OSError as e:
            raise ArtifactError(f"cannot list OUTPUT_DIR {str(out)!r}: {e.strerror}; choose another directory") from None
        if non_empty:
            if not force:
                raise ArtifactError(
                    f"OUTPUT_DIR {str(out)!r} exists and is not empty; pass {option('force', True)} to replace it, "
                    "or choose another directory"
                )
            why = artifact_mismatch(out)
            if why is not None:
                raise ArtifactError(
                    f"OUTPUT_DIR {str(out)!r} is not empty and is not an hf-torchscript artifact ({why}); "
                    f"{option('force', True)} replaces only an empty directory or an unchanged earlier artifact: "
                    "empty it yourself or choose another directory"
                )
    parent = _existing_ancestor(resolved.parent)
    if not parent.is_dir():
        raise ArtifactError(f"cannot create OUTPUT_DIR {str(out)!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(
            f"cannot write in {str(parent)!r} (read-only filesystem or no permission); choose a writable OUTPUT_DIR"
        )


def as_path(value, what: str) -> Path:
    """``value`` as a Path, or one OptionError line when it is not a str / os.PathLike (a number, None, a list)."""
    if isinstance(value, Path):
        return value
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise OptionError(f"{what} must be a path (str or os.PathLike), got {type(value).__name__}: {repr(value)[:60]}")
    return Path(value)


def check_output_file(path, what: str, *, inputs=(), force: bool = True) -> Path:
    """Refuse an output FILE we must not replace; returns it. Call before any work is done.

    Allowed: a new name in an existing directory, or (with ``force``) an existing regular file that is
    none of ``inputs``. Refused: a symlink, a directory, a device, a named pipe or a socket (a rename
    would replace the node itself: ``/dev/full`` would become a regular file), and the input itself,
    compared by inode so that another spelling, a symlink or a hard link of it is caught too.
    """
    import stat

    out = Path(path)
    shown = os.fspath(path)  # as the user spelt it
    if out.is_symlink():
        raise OptionError(f"{what} {shown!r} is a symlink to {os.readlink(out)!r}; the result is written to a new file "
                          "renamed into place, which would replace the link: pass the real file path")
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OptionError(f"cannot use {what} {shown!r}: {e.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OptionError(f"{what} {shown!r} is a directory; pass the path of a file (a new name, or a file to replace)")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a named pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
            raise OptionError(f"{what} {shown!r} is {kind}, not a regular file; write to stdout and redirect "
                              "it there, or pass a file path")
        for src in inputs:
            try:
                same = os.path.samefile(src, out)
            except OSError:
                same = False
            if same:
                raise OptionError(f"{what} {shown!r} is the input {str(src)!r} (the same file); writing it would "
                                  "destroy the input: pass another path")
        if not force:
            raise OptionError(f"{what} {shown!r} exists; pass {option('force', True)} to replace it")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OptionError(f"the folder of {what} {shown!r} does not exist; create it first")
    return out


def temp_name(path) -> Path:
    """A hidden ``.NAME.tmp-PID-X`` beside ``path`` (same filesystem, so renaming it into place is atomic)."""
    p = Path(path)
    return _owned_name(p.resolve().parent / p.name, "tmp")


def write_file(path, data: str | bytes) -> None:
    """Write ``path`` whole: a temp file beside it, renamed over it (a regular file, or nothing) at the end."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f}" if n < 10 * 2**20 else f"{n / 2**20:.0f}"


def check_space(output_dir, need_bytes: int) -> None:
    """Refuse up front when the filesystem of OUTPUT_DIR has less than ``need_bytes`` free."""
    where = _existing_ancestor(Path(output_dir).resolve().parent)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return  # no statvfs here (exotic filesystems): the writes themselves will tell
    if free < need_bytes:
        raise ArtifactError(
            f"not enough space in {str(where)!r}: need about {_mb(need_bytes)} MB, {_mb(free)} MB free; free some "
            "space or choose an OUTPUT_DIR on another filesystem"
        )


# ------------------------------------------------------------------------------ staging

_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: leave it
    return True


def _owned_name(output_dir: Path, kind: str) -> Path:
    return output_dir.parent / f".{output_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def clean_stale(output_dir) -> list[Path]:
    """Remove staging/backup dirs of OUTPUT_DIR left by dead processes; returns what was removed.

    A backup left in the fallback's two-rename gap is renamed back to OUTPUT_DIR when that is
    absent, so the earlier artifact is never lost.
    """
    out = Path(output_dir).resolve()
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    for entry in sorted(entries, key=lambda p: p.name):
        m = _OWNED.match(entry.name)
        if not m or m["name"] != out.name or _pid_alive(int(m["pid"])) or entry.is_symlink() or not entry.is_dir():
            continue
        if m["kind"] == "old" and not os.path.lexists(out) and is_artifact(entry):
            try:
                rename_noreplace(entry, out)
                continue
            except OSError:
                pass
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def staging_dir(output_dir) -> Path:
    """A fresh ``.NAME.tmp-PID-X`` dir beside OUTPUT_DIR (same filesystem), after removing stale ones."""
    out = Path(output_dir)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    staging = _owned_name(parent / out.name, "tmp")
    staging.mkdir()
    return staging


# ------------------------------------------------------------------------------ signals

@contextmanager
def held_signals():
    """Hold SIGINT/SIGTERM back while the block runs, then deliver them (main thread only).

    Python runs signal handlers in the main thread, so swapping the handlers there is enough (a
    thread's signal mask would not be: the kernel hands the signal to any thread that accepts it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        if old in (signal.SIG_IGN, None):
            continue
        previous[sig] = old
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for sig in dict.fromkeys(pending):
            old = previous[sig]
            if callable(old):
                old(sig, None)  # e.g. default_int_handler: raises KeyboardInterrupt here, after the swap
            else:
                signal.raise_signal(sig)  # SIG_DFL: the default action, now that the swap is complete


@contextmanager
def interruptible():
    """While the block runs, SIGTERM raises :class:`Terminated` (like SIGINT's KeyboardInterrupt).

    Only in the main thread, and only over the default handler: a handler the application
    installed is left alone. The previous handler is restored when the block exits.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ------------------------------------------------------------------------------ commit

def commit(staging: Path, output_dir, force: bool) -> None:
    """Move a complete staging dir to OUTPUT_DIR in one step (see the module docstring).

    An interruption that escapes carries ``hts_committed``: whether OUTPUT_DIR is the new artifact.
    """
    out = Path(output_dir)
    staging = Path(staging)
    committed = False
    try:
        with held_signals():
            _step("before-swap")
            for _ in range(5):
                # Again: another export (or person) may have changed OUTPUT_DIR since the first check.
                before = _inode(out)
                try:
                    check_destination(out, force)
                except ArtifactError:
                    # Another export swapped OUTPUT_DIR while we read it and is deleting the artifact we were
                    # reading (its files vanish mid-check): look again at what OUTPUT_DIR is now.
                    if _inode(out) != before:
                        continue
                    raise
                if not os.path.lexists(out):
                    try:
                        rename_noreplace(staging, out)
                    except FileExistsError:
                        continue  # created meanwhile: check what it is now, then swap
                    committed = True
                    _step("after-swap")
                    break
                if exchange(staging, out):
                    committed = True
                    _step("after-swap")
                    shutil.rmtree(staging, ignore_errors=True)  # the earlier artifact, swapped out
                    break
                _two_renames(staging, out)
                committed = True
                break
            else:
                raise ArtifactError(f"OUTPUT_DIR {str(out)!r} kept changing while this export committed; "
                                    "is another export writing it? Retry when it has finished")
            _step("after-cleanup")
    except KeyboardInterrupt as e:
        e.hts_committed = committed
        raise


def _inode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _two_renames(staging: Path, out: Path) -> None:
    """The fallback without RENAME_EXCHANGE; OUTPUT_DIR is absent between the two renames."""
    old = _owned_name(out.resolve(), "old")
    os.rename(out, old)
    _step("old-moved")
    try:
        rename_noreplace(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    _step("after-swap")
    shutil.rmtree(old, ignore_errors=True)


def leftover_backup(output_dir) -> Path | None:
    """A backup of OUTPUT_DIR left by an export killed mid-commit on the fallback path, if any."""
    out = Path(output_dir).resolve()
    try:
        for entry in out.parent.iterdir():
            m = _OWNED.match(entry.name)
            if m and m["name"] == out.name and m["kind"] == "old" and is_artifact(entry):
                return entry
    except OSError:
        pass
    return None


def write_error(e: OSError, output_dir) -> ArtifactError:
    """One line for a failed write while exporting to OUTPUT_DIR (which is unchanged then)."""
    where = str(Path(output_dir).resolve().parent)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ArtifactError(
            f"not enough space in {where!r} to write the artifact ({e.strerror}); nothing was changed: free some "
            "space or choose an OUTPUT_DIR on another filesystem"
        )
    return ArtifactError(f"writing the artifact for {str(output_dir)!r} failed: {e}; nothing was changed")
