#!/usr/bin/env python3
"""A table-driven POSIX semantics probe (issue 17).

Runs one fixed sequence of file-system calls inside DIR and prints one JSON
object: for each step its name, each call's result (a return value or an
errno name) and selected stat fields after it. The output holds nothing that
two correct file systems may legitimately disagree on -- no absolute times,
inode numbers, device ids, block counts, directory sizes or paths -- only
values the probe set itself (utimensat nanoseconds, modes, rdev) and
relations ("ctime increased", "mtime changed"). So the output on a Cairn
mount and on a local directory can be compared byte for byte, and any
difference is a semantic difference.

Usage: posix_probe.py DIR [--as-user]

  DIR        an empty directory; the probe works in one subdirectory per
             step and leaves what it made there (nothing outside DIR is
             touched, DIR itself is not changed).
  --as-user  the caller is unprivileged, e.g. `setpriv --reuid=65534
             --regid=65534 --clear-groups` in a 0777 DIR; refuses to run as
             root so a wrong invocation cannot pass for the other mode.

Sections follow the issue's items: special (1), time (2), mode (3),
nlink (4), err (5). Python 3 standard library only.
"""

import ctypes
import ctypes.util
import errno
import json
import os
import socket
import stat
import sys
import time

# Times set before an operation (ns since the epoch); an operation that
# changes a time moves it away from these.
OLD_A = 1_000_000_000_123_456_789
OLD_M = 1_000_000_100_987_654_321
# Explicit times whose exact read-back is recorded.
EXACT = [
    ("plain", 1_234_567_890_111_111_111, 1_234_567_891_999_999_999),
    ("pre_epoch", -123_456_789_012, -1),
    ("year_2242", (1 << 33) * 10**9 + 5, (1 << 33) * 10**9 + 999_999_999),
]
# A uid and gid that are neither root's nor nobody's (65534).
OTHER_ID = 65533
# Sleep before an operation whose ctime is compared with the one before it:
# kernel clocks for file times may tick only every few milliseconds.
TICK = 0.02

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

KINDS = {
    stat.S_IFREG: "reg",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "lnk",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "sock",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
}


# ---------------------------------------------------------------- libc calls

class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _ts(v):
    if v == "now":
        return _Timespec(0, UTIME_NOW)
    if v == "omit":
        return _Timespec(0, UTIME_OMIT)
    return _Timespec(v // 10**9, v % 10**9)


def utimensat(path, atime, mtime, nofollow=False):
    """atime, mtime: ns since the epoch, "now" (UTIME_NOW) or "omit" (UTIME_OMIT)."""
    times = (_Timespec * 2)(_ts(atime), _ts(mtime))
    flags = AT_SYMLINK_NOFOLLOW if nofollow else 0
    _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags))


def renameat2(old, new, flags):
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags))


# ------------------------------------------------------------ recording steps

class SetupFailed(Exception):
    """A step's preparation failed; the step records which call and why."""


FAILED = object()


def errname(e):
    return errno.errorcode.get(e.errno, "errno_%d" % e.errno)


def value(v):
    """A call's return value as recorded: never a path, fd number or time."""
    if v is None:
        return "ok"
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, list):
        return sorted(value(x) for x in v)
    return type(v).__name__


def who(n, own):
    return "own" if n == own else str(n)


def fields(s):
    """The stat fields every correct file system agrees on."""
    kind = KINDS.get(stat.S_IFMT(s.st_mode), "unknown")
    d = {
        "type": kind,
        "mode": "0o%o" % s.st_mode,
        "nlink": s.st_nlink,
        "uid": who(s.st_uid, os.geteuid()),
        "gid": who(s.st_gid, os.getegid()),
    }
    if kind != "dir":
        d["size"] = s.st_size
    if kind in ("chr", "blk"):
        d["rdev"] = "%d,%d" % (os.major(s.st_rdev), os.minor(s.st_rdev))
    return d


def times(path, follow=False):
    s = os.stat(path, follow_symlinks=follow)
    return s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns


class Watch:
    """One path's times before an operation, atime/mtime first set to OLD_*
    (which also moves ctime to now), so relations can be recorded after it."""

    def __init__(self, step, path, follow=False, set_old=True):
        self.path, self.follow = path, follow
        if set_old:
            step.setup(os.utime, path, ns=(OLD_A, OLD_M), follow_symlinks=follow)
        self.a, self.m, self.c = step.setup(times, path, follow)

    def after(self):
        try:
            a, m, c = times(self.path, self.follow)
        except OSError as e:
            return errname(e)
        return {
            "atime_kept": a == self.a,
            "mtime_changed": m != self.m,
            "mtime_recent": m >= self.c,
            "ctime_increased": c > self.c,
            "mtime_eq_ctime": m == c,
        }


class Step:
    def __init__(self, name, d):
        self.rec = {"name": name}
        self.dir = d
        self.fds = []
        self.socks = []

    def p(self, *parts):
        return os.path.join(self.dir, *parts)

    def setup(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except OSError as e:
            raise SetupFailed("%s: %s" % (getattr(fn, "__name__", "call"), errname(e)))

    def call(self, key, fn, *a, **kw):
        """Run fn, record its result (or errno name) under key."""
        try:
            v = fn(*a, **kw)
        except OSError as e:
            self.rec[key] = errname(e)
            return FAILED
        self.rec[key] = value(v)
        return v

    def open(self, key, path, flags, mode=0o644):
        """os.open, recording "ok" or the errno; returns the fd or None."""
        try:
            fd = os.open(path, flags, mode)
        except OSError as e:
            self.rec[key] = errname(e)
            return None
        self.fds.append(fd)
        self.rec[key] = "ok"
        return fd

    def stat(self, key, path, follow=False):
        try:
            s = os.stat(path, follow_symlinks=follow)
        except OSError as e:
            self.rec[key] = errname(e)
            return None
        self.rec[key] = fields(s)
        return s

    def fstat(self, key, fd):
        try:
            self.rec[key] = fields(os.fstat(fd))
        except OSError as e:
            self.rec[key] = errname(e)

    def file(self, name, data=b"hello", mode=0o644):
        """A regular file with data, made as setup."""
        path = self.p(name)
        fd = self.setup(os.open, path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
        try:
            if data:
                self.setup(os.write, fd, data)
        finally:
            os.close(fd)
        return path

    def mkdir(self, name, mode=0o755):
        path = self.p(name)
        self.setup(os.mkdir, path, mode)
        return path

    def close(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        for s in self.socks:
            s.close()


class Probe:
    def __init__(self):
        self.steps = []

    def run(self, name, fn, *args):
        d = "s%03d" % (len(self.steps) + 1)
        st = Step(name, d)
        try:
            os.mkdir(d, 0o777)
            fn(st, *args)
        except SetupFailed as e:
            st.rec["setup_failed"] = str(e)
        except OSError as e:
            st.rec["unexpected_error"] = errname(e)
        except Exception as e:  # a probe bug must not hide the other steps
            st.rec["exception"] = type(e).__name__
        finally:
            st.close()
            os.umask(0)
        self.steps.append(st.rec)


def _write(path, data, flags=os.O_WRONLY):
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def _read(path, n=4096):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, n)
    finally:
        os.close(fd)


def _create(path, mode=0o644):
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode))


# --------------------------------------------------- 1. special files

def make_fifo(st, path):
    os.mkfifo(path, 0o644)


def make_sock(st, path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    st.socks.append(s)
    s.bind(path)


def make_chr(st, path):
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))


def make_blk(st, path):
    os.mknod(path, stat.S_IFBLK | 0o644, os.makedev(7, 0))


def make_mknod_fifo(st, path):
    os.mknod(path, stat.S_IFIFO | 0o644)


def make_mknod_reg(st, path):
    os.mknod(path, stat.S_IFREG | 0o644)


SPECIAL = [
    ("fifo", make_fifo),
    ("sock", make_sock),
    ("chr", make_chr),
    ("blk", make_blk),
    ("mknod_fifo", make_mknod_fifo),
    ("mknod_reg", make_mknod_reg),
]


def sp_create(st, make):
    st.call("result", make, st, st.p("x"))
    st.stat("stat", st.p("x"))
    st.call("listdir", os.listdir, st.dir)


def sp_chmod(st, make):
    st.setup(make, st, st.p("x"))
    w = Watch(st, st.p("x"))
    time.sleep(TICK)
    st.call("result", os.chmod, st.p("x"), 0o600)
    st.stat("stat", st.p("x"))
    st.rec["times"] = w.after()


def sp_chown_own(st, make):
    st.setup(make, st, st.p("x"))
    w = Watch(st, st.p("x"))
    time.sleep(TICK)
    st.call("result", os.chown, st.p("x"), os.geteuid(), os.getegid())
    st.stat("stat", st.p("x"))
    st.rec["times"] = w.after()


def sp_rename(st, make):
    st.setup(make, st, st.p("x"))
    st.mkdir("t")
    w = Watch(st, st.p("x"))
    time.sleep(TICK)
    st.call("result", os.rename, st.p("x"), st.p("t", "y"))
    st.stat("stat_old", st.p("x"))
    st.stat("stat_new", st.p("t", "y"))
    w.path = st.p("t", "y")
    st.rec["times"] = w.after()


def sp_link(st, make):
    st.setup(make, st, st.p("x"))
    w = Watch(st, st.p("x"))
    time.sleep(TICK)
    st.call("result", os.link, st.p("x"), st.p("y"))
    st.stat("stat_x", st.p("x"))
    st.stat("stat_y", st.p("y"))
    st.rec["times"] = w.after()


def sp_unlink_one_link(st, make):
    st.setup(make, st, st.p("x"))
    st.setup(os.link, st.p("x"), st.p("y"))
    w = Watch(st, st.p("y"))
    time.sleep(TICK)
    st.call("result", os.unlink, st.p("x"))
    st.stat("stat_y", st.p("y"))
    st.rec["times"] = w.after()


def sp_unlink(st, make):
    st.setup(make, st, st.p("x"))
    st.call("result", os.unlink, st.p("x"))
    st.stat("stat", st.p("x"))
    st.call("listdir", os.listdir, st.dir)


def sp_utime(st, make):
    st.setup(make, st, st.p("x"))
    w = Watch(st, st.p("x"))
    time.sleep(TICK)
    _, a, m = EXACT[0]
    st.call("result", os.utime, st.p("x"), ns=(a, m))
    try:
        s = os.stat(st.p("x"), follow_symlinks=False)
        st.rec["atime_ns"] = s.st_atime_ns
        st.rec["mtime_ns"] = s.st_mtime_ns
        st.rec["ctime_increased"] = s.st_ctime_ns > w.c
    except OSError as e:
        st.rec["stat"] = errname(e)


def sp_setxattr(st, make):
    st.setup(make, st, st.p("x"))
    st.call("result", os.setxattr, st.p("x"), "user.probe", b"v")


def sp_open(st, make):
    x = st.p("x")
    st.setup(make, st, x)
    if make is make_fifo or make is make_mknod_fifo:
        r = st.open("open_rd_nonblock", x, os.O_RDONLY | os.O_NONBLOCK)
        w = st.open("open_wr_nonblock", x, os.O_WRONLY | os.O_NONBLOCK)
        if r is not None and w is not None:
            st.call("write", os.write, w, b"hi")
            st.call("read", os.read, r, 16)
    elif make is make_sock:
        st.open("open_rd", x, os.O_RDONLY)
    elif make is make_chr:
        fd = st.open("open_wr", x, os.O_WRONLY)
        if fd is not None:
            st.call("write", os.write, fd, b"abc")
    elif make is make_mknod_reg:
        fd = st.open("open_rd", x, os.O_RDONLY)
        if fd is not None:
            st.call("read", os.read, fd, 16)


def sp_connect(st):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    st.socks.append(server)
    st.call("bind", server.bind, st.p("x"))
    st.call("listen", server.listen, 1)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    st.socks.append(client)
    client.settimeout(5)
    st.call("connect", client.connect, st.p("x"))
    st.call("bind_again", socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind, st.p("x"))


def sp_symlink(st):
    st.call("result", os.symlink, "target/of/link", st.p("l"))
    st.stat("lstat", st.p("l"))
    st.call("readlink", os.readlink, st.p("l"))
    st.call("lchown_own", os.chown, st.p("l"), os.geteuid(), os.getegid(), follow_symlinks=False)
    _, a, m = EXACT[0]
    st.call("utime_nofollow", os.utime, st.p("l"), ns=(a, m), follow_symlinks=False)
    try:
        s = os.lstat(st.p("l"))
        st.rec["atime_ns"], st.rec["mtime_ns"] = s.st_atime_ns, s.st_mtime_ns
    except OSError as e:
        st.rec["times"] = errname(e)
    st.call("link", os.link, st.p("l"), st.p("l2"), follow_symlinks=False)
    st.stat("lstat_after_link", st.p("l"))
    st.call("rename", os.rename, st.p("l2"), st.p("l3"))
    st.call("readlink_renamed", os.readlink, st.p("l3"))
    st.call("setxattr_user", os.setxattr, st.p("l"), "user.probe", b"v", follow_symlinks=False)


def section_special(probe):
    for kind, make in SPECIAL:
        for op, fn in [
            ("create", sp_create),
            ("chmod", sp_chmod),
            ("chown_own", sp_chown_own),
            ("rename", sp_rename),
            ("link", sp_link),
            ("unlink_one_link", sp_unlink_one_link),
            ("unlink", sp_unlink),
            ("utime", sp_utime),
            ("setxattr", sp_setxattr),
            ("open", sp_open),
        ]:
            if op == "open" and kind == "blk":
                continue  # would open a real block device
            probe.run("special.%s.%s" % (kind, op), fn, make)
    probe.run("special.sock.connect", sp_connect)
    probe.run("special.symlink", sp_symlink)


# --------------------------------------------------- 2. timestamps

def _setup_none(st):
    pass


# Directory operations: (name, setup, op, parents whose times are watched,
# the entry whose own times are watched or None). Paths are relative to the
# step's directory; P, S, T are directories made for every row.
DIR_OPS = [
    ("mkdir", _setup_none, lambda st: os.mkdir(st.p("P", "x")), ["P"], None),
    ("rmdir", lambda st: st.mkdir("P/x"), lambda st: os.rmdir(st.p("P", "x")), ["P"], None),
    ("create", _setup_none, lambda st: _create(st.p("P", "f")), ["P"], None),
    ("mkfifo", _setup_none, lambda st: os.mkfifo(st.p("P", "f")), ["P"], None),
    ("mknod_chr", _setup_none,
     lambda st: os.mknod(st.p("P", "c"), stat.S_IFCHR | 0o600, os.makedev(1, 3)), ["P"], None),
    ("bind_socket", _setup_none, lambda st: make_sock(st, st.p("P", "s")), ["P"], None),
    ("symlink", _setup_none, lambda st: os.symlink("t", st.p("P", "l")), ["P"], None),
    ("link", lambda st: st.file("F"), lambda st: os.link(st.p("F"), st.p("P", "l")), ["P"], "F"),
    ("unlink", lambda st: st.file("P/f"), lambda st: os.unlink(st.p("P", "f")), ["P"], None),
    ("unlink_fifo", lambda st: st.setup(os.mkfifo, st.p("P", "f")),
     lambda st: os.unlink(st.p("P", "f")), ["P"], None),
    ("rename_within", lambda st: st.file("P/a"),
     lambda st: os.rename(st.p("P", "a"), st.p("P", "b")), ["P"], "P/b"),
    ("rename_within_replace", lambda st: (st.file("P/a"), st.file("P/b")),
     lambda st: os.rename(st.p("P", "a"), st.p("P", "b")), ["P"], "P/b"),
    ("rename_to_itself", lambda st: st.file("P/a"),
     lambda st: os.rename(st.p("P", "a"), st.p("P", "a")), ["P"], "P/a"),
    ("rename_file_across", lambda st: st.file("S/a"),
     lambda st: os.rename(st.p("S", "a"), st.p("T", "a")), ["S", "T"], "T/a"),
    ("rename_file_across_replace", lambda st: (st.file("S/a"), st.file("T/a")),
     lambda st: os.rename(st.p("S", "a"), st.p("T", "a")), ["S", "T"], "T/a"),
    ("rename_dir_across", lambda st: st.mkdir("S/d"),
     lambda st: os.rename(st.p("S", "d"), st.p("T", "d")), ["S", "T"], "T/d"),
    ("rename_dir_across_replace_empty", lambda st: (st.mkdir("S/d"), st.mkdir("T/d")),
     lambda st: os.rename(st.p("S", "d"), st.p("T", "d")), ["S", "T"], "T/d"),
    ("exchange_across", lambda st: (st.file("S/a"), st.mkdir("T/b")),
     lambda st: renameat2(st.p("S", "a"), st.p("T", "b"), RENAME_EXCHANGE), ["S", "T"], "T/b"),
    # Calls that must not touch the parent.
    ("mkdir_existing", lambda st: st.mkdir("P/x"), lambda st: os.mkdir(st.p("P", "x")), ["P"], None),
    ("chmod_child", lambda st: st.file("P/f"), lambda st: os.chmod(st.p("P", "f"), 0o600), ["P"], None),
    ("write_child", lambda st: st.file("P/f"), lambda st: _write(st.p("P", "f"), b"more"), ["P"], None),
    ("stat_child", lambda st: st.file("P/f"), lambda st: os.stat(st.p("P", "f")) and None, ["P"], None),
]


def time_dir_op(st, setup, op, parents, entry):
    for d in ("P", "S", "T"):
        st.mkdir(d)
    setup(st)
    watches = {d: Watch(st, st.p(d)) for d in parents}
    if entry is not None:
        # The watched entry exists after the op; watch its source before.
        src = {"P/b": "P/a", "T/a": "S/a", "T/d": "S/d", "T/b": "S/a"}.get(entry, entry)
        ew = Watch(st, st.p(src))
    time.sleep(TICK)
    st.call("result", op, st)
    for d, w in watches.items():
        st.rec["dir_" + d] = w.after()
    if entry is not None:
        ew.path = st.p(entry)
        st.rec["entry"] = ew.after()


# Operations on one inode, file F made with b"hello" (name, setup, op).
INODE_OPS = [
    ("chmod", _setup_none, lambda st: os.chmod(st.p("F"), 0o600)),
    ("chmod_same_mode", _setup_none, lambda st: os.chmod(st.p("F"), 0o644)),
    ("chown_own", _setup_none, lambda st: os.chown(st.p("F"), os.geteuid(), os.getegid())),
    ("chown_none", _setup_none, lambda st: os.chown(st.p("F"), -1, -1)),
    ("link", _setup_none, lambda st: os.link(st.p("F"), st.p("G"))),
    ("unlink_other_link", lambda st: st.setup(os.link, st.p("F"), st.p("G")),
     lambda st: os.unlink(st.p("G"))),
    ("setxattr", _setup_none, lambda st: os.setxattr(st.p("F"), "user.probe", b"v")),
    ("removexattr", lambda st: st.setup(os.setxattr, st.p("F"), "user.probe", b"v"),
     lambda st: os.removexattr(st.p("F"), "user.probe")),
    ("truncate_shorter", _setup_none, lambda st: os.truncate(st.p("F"), 2)),
    ("truncate_longer", _setup_none, lambda st: os.truncate(st.p("F"), 100)),
    ("truncate_same_size", _setup_none, lambda st: os.truncate(st.p("F"), 5)),
    ("ftruncate_same_size", _setup_none, lambda st: _ftruncate(st.p("F"), 5)),
    ("open_trunc", _setup_none,
     lambda st: os.close(os.open(st.p("F"), os.O_WRONLY | os.O_TRUNC))),
    ("write", _setup_none, lambda st: _write(st.p("F"), b"HE")),
    ("write_append", _setup_none, lambda st: _write(st.p("F"), b"!", os.O_WRONLY | os.O_APPEND)),
    ("write_zero_bytes", _setup_none, lambda st: _write(st.p("F"), b"")),
    ("rename", _setup_none, lambda st: os.rename(st.p("F"), st.p("F2"))),
    ("utime_explicit", _setup_none, lambda st: os.utime(st.p("F"), ns=(OLD_M, OLD_A))),
    ("read", _setup_none, lambda st: _read(st.p("F")) and None),
    ("open_close_rdonly", _setup_none, lambda st: os.close(os.open(st.p("F"), os.O_RDONLY))),
    ("fsync", _setup_none, lambda st: _fsync(st.p("F"))),
]


def _ftruncate(path, size):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _fsync(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def time_inode_op(st, setup, op):
    st.file("F")
    setup(st)
    w = Watch(st, st.p("F"))
    time.sleep(TICK)
    st.call("result", op, st)
    if not os.path.lexists(st.p("F")):
        w.path = st.p("F2")
    st.rec["times"] = w.after()
    st.stat("stat", w.path)


def time_utime_exact(st, a, m):
    f = st.file("F")
    st.call("result", os.utime, f, ns=(a, m))
    s = st.setup(os.stat, f)
    st.rec["atime_ns"], st.rec["mtime_ns"] = s.st_atime_ns, s.st_mtime_ns


def time_utime_seconds(st):
    f = st.file("F")
    st.call("result", os.utime, f, (1.5, 2.25))
    s = st.setup(os.stat, f)
    st.rec["atime_ns"], st.rec["mtime_ns"] = s.st_atime_ns, s.st_mtime_ns


def time_utime_dir(st):
    d = st.mkdir("D")
    _, a, m = EXACT[0]
    st.call("result", os.utime, d, ns=(a, m))
    s = st.setup(os.stat, d)
    st.rec["atime_ns"], st.rec["mtime_ns"] = s.st_atime_ns, s.st_mtime_ns


def time_utime_symlink_nofollow(st):
    f = st.file("F")
    st.setup(os.utime, f, ns=(OLD_A, OLD_M))
    st.setup(os.symlink, "F", st.p("L"))
    _, a, m = EXACT[0]
    st.call("result", utimensat, st.p("L"), a, m, nofollow=True)
    s = st.setup(os.lstat, st.p("L"))
    st.rec["link_atime_ns"], st.rec["link_mtime_ns"] = s.st_atime_ns, s.st_mtime_ns
    s = st.setup(os.stat, f)
    st.rec["target_atime_ns"], st.rec["target_mtime_ns"] = s.st_atime_ns, s.st_mtime_ns


def time_utime_now(st):
    """os.utime(path): both times now (the kernel's UTIME_NOW for both)."""
    f = st.file("F")
    w = Watch(st, f)
    time.sleep(TICK)
    st.call("result", os.utime, f)
    a, m, c = st.setup(times, f)
    st.rec["atime_changed"] = a != OLD_A
    st.rec["mtime_changed"] = m != OLD_M
    st.rec["atime_eq_mtime"] = a == m
    st.rec["mtime_eq_ctime"] = m == c
    st.rec["mtime_recent"] = m >= w.c
    st.rec["ctime_increased"] = c > w.c


# utimensat with UTIME_NOW / UTIME_OMIT: (name, atime, mtime).
UTIMENSAT = [
    ("omit_atime", "omit", EXACT[0][2]),
    ("omit_mtime", EXACT[0][1], "omit"),
    ("now_atime_omit_mtime", "now", "omit"),
    ("omit_atime_now_mtime", "omit", "now"),
    ("omit_both", "omit", "omit"),
    ("now_both", "now", "now"),
]


def time_utimensat(st, a, m):
    f = st.file("F")
    w = Watch(st, f)
    time.sleep(TICK)
    st.call("result", utimensat, f, a, m)
    na, nm, nc = st.setup(times, f)
    for key, val, old, new in (("atime", a, OLD_A, na), ("mtime", m, OLD_M, nm)):
        if val == "omit":
            st.rec[key] = "kept" if new == old else "changed"
        elif val == "now":
            st.rec[key] = "now" if new >= w.c else ("kept" if new == old else "other")
        else:
            st.rec[key + "_ns"] = new
    st.rec["ctime_increased"] = nc > w.c


def time_atime_relatime(st):
    """atime older than mtime: a read updates it; a second read right after
    does not (relatime). Mounts with noatime record false for the first."""
    f = st.file("F", b"some bytes to read")
    st.setup(os.utime, f, ns=(OLD_A, OLD_M))
    c0 = st.setup(times, f)[2]
    st.call("read1", _read, f)
    a1, m1, c1 = st.setup(times, f)
    st.rec["atime_changed_read1"] = a1 != OLD_A
    st.rec["atime_recent_read1"] = a1 >= c0
    st.rec["mtime_kept"] = m1 == OLD_M
    st.rec["ctime_kept"] = c1 == c0
    time.sleep(TICK)
    st.call("read2", _read, f)
    a2 = st.setup(times, f)[0]
    st.rec["atime_changed_read2"] = a2 != a1


def time_atime_newer_than_mtime(st):
    """atime after mtime and under a day old: a read leaves it (relatime)."""
    f = st.file("F", b"some bytes to read")
    now = time.time_ns()
    st.setup(os.utime, f, ns=(now - 10 * 10**9, OLD_M))
    a0 = st.setup(times, f)[0]
    st.call("read", _read, f)
    st.rec["atime_changed"] = st.setup(times, f)[0] != a0


def time_atime_day_old(st):
    """atime after mtime but over a day old: a read updates it (relatime)."""
    f = st.file("F", b"some bytes to read")
    now = time.time_ns()
    st.setup(os.utime, f, ns=(now - 2 * 86400 * 10**9, now - 3 * 86400 * 10**9))
    a0 = st.setup(times, f)[0]
    st.call("read", _read, f)
    st.rec["atime_changed"] = st.setup(times, f)[0] != a0


def time_atime_readdir(st):
    d = st.mkdir("D")
    st.file("D/f")
    st.setup(os.utime, d, ns=(OLD_A, OLD_M))
    st.call("listdir", os.listdir, d)
    st.rec["atime_changed"] = st.setup(times, d)[0] != OLD_A


def section_time(probe):
    for name, setup, op, parents, entry in DIR_OPS:
        probe.run("time.dir." + name, time_dir_op, setup, op, parents, entry)
    for name, setup, op in INODE_OPS:
        probe.run("time.inode." + name, time_inode_op, setup, op)
    for name, a, m in EXACT:
        probe.run("time.utime_exact." + name, time_utime_exact, a, m)
    probe.run("time.utime_seconds_float", time_utime_seconds)
    probe.run("time.utime_dir", time_utime_dir)
    probe.run("time.utime_symlink_nofollow", time_utime_symlink_nofollow)
    probe.run("time.utime_now", time_utime_now)
    for name, a, m in UTIMENSAT:
        probe.run("time.utimensat." + name, time_utimensat, a, m)
    probe.run("time.atime.relatime_read", time_atime_relatime)
    probe.run("time.atime.newer_than_mtime", time_atime_newer_than_mtime)
    probe.run("time.atime.day_old", time_atime_day_old)
    probe.run("time.atime.readdir", time_atime_readdir)


# --------------------------------------------------- 3. modes and owners

def mode_create(st, umask, mode):
    os.umask(umask)
    fd = st.open("result", st.p("f"), os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode)
    os.umask(0)
    if fd is not None:
        st.call("write_on_fd", os.write, fd, b"x")
    st.stat("stat", st.p("f"))


def mode_mkdir(st, umask, mode):
    os.umask(umask)
    st.call("result", os.mkdir, st.p("d"), mode)
    os.umask(0)
    st.stat("stat", st.p("d"))


def mode_mkfifo(st, umask, mode):
    os.umask(umask)
    st.call("result", os.mkfifo, st.p("p"), mode)
    os.umask(0)
    st.stat("stat", st.p("p"))


def mode_symlink_umask(st):
    os.umask(0o077)
    st.call("result", os.symlink, "t", st.p("l"))
    os.umask(0)
    st.stat("stat", st.p("l"))


def mode_chmod(st, is_dir, mode):
    path = st.mkdir("d") if is_dir else st.file("f")
    st.call("result", os.chmod, path, mode)
    st.stat("stat", path)


def mode_access_mode0(st):
    f = st.file("f", mode=0o000)
    st.setup(os.chmod, f, 0o000)
    st.open("open_rdonly", f, os.O_RDONLY)
    st.open("open_wronly", f, os.O_WRONLY)
    st.call("access_r", os.access, f, os.R_OK)
    st.call("access_x", os.access, f, os.X_OK)


def mode_readonly_file(st):
    f = st.file("f", mode=0o444)
    st.setup(os.chmod, f, 0o444)
    st.open("open_wronly", f, os.O_WRONLY)
    st.call("truncate", os.truncate, f, 0)
    st.call("access_w", os.access, f, os.W_OK)
    st.stat("stat", f)


def mode_readonly_dir(st):
    d = st.mkdir("d")
    st.file("d/old")
    st.setup(os.chmod, d, 0o555)
    st.open("create_in", st.p("d", "new"), os.O_CREAT | os.O_WRONLY)
    st.call("mkdir_in", os.mkdir, st.p("d", "sub"))
    st.call("unlink_in", os.unlink, st.p("d", "old"))
    st.call("rename_in", os.rename, st.p("d", "old"), st.p("d", "old2"))
    st.call("listdir", os.listdir, d)
    st.setup(os.chmod, d, 0o755)  # so the tree can be removed later


def mode_noexec_dir(st):
    d = st.mkdir("d")
    st.file("d/f")
    st.setup(os.chmod, d, 0o666)
    st.stat("stat_in", st.p("d", "f"))
    st.call("listdir", os.listdir, d)
    st.setup(os.chmod, d, 0o333)
    st.call("listdir_no_read", os.listdir, d)
    st.stat("stat_in_no_read", st.p("d", "f"))
    st.setup(os.chmod, d, 0o755)


def mode_chown(st, uid, gid):
    f = st.file("f")
    own_u, own_g = os.geteuid(), os.getegid()
    u = {"own": own_u, "other": OTHER_ID, "none": -1}[uid]
    g = {"own": own_g, "other": OTHER_ID, "none": -1}[gid]
    st.call("result", os.chown, f, u, g)
    st.stat("stat", f)


def mode_setgid_dir(st, dir_gid):
    """A setgid directory (group `dir_gid` of the dir: own or other): what
    the entries made in it get."""
    d = st.mkdir("d", 0o775)
    if dir_gid == "other":
        st.call("chgrp_dir", os.chown, d, -1, OTHER_ID)
    st.call("chmod_g+s", os.chmod, d, 0o2775)
    st.stat("stat_dir", d)
    dgid = st.setup(os.stat, d).st_gid

    def same(path):
        try:
            return os.lstat(path).st_gid == dgid
        except OSError as e:
            return errname(e)

    st.call("create", _create, st.p("d", "f"), 0o644)
    st.stat("stat_file", st.p("d", "f"))
    st.rec["file_gid_eq_dir"] = same(st.p("d", "f"))
    st.call("create_setgid_mode", _create, st.p("d", "g"), 0o2755)
    st.stat("stat_file_setgid_mode", st.p("d", "g"))
    st.call("mkdir", os.mkdir, st.p("d", "s"), 0o755)
    st.stat("stat_subdir", st.p("d", "s"))
    st.rec["subdir_gid_eq_dir"] = same(st.p("d", "s"))
    st.call("mkfifo", os.mkfifo, st.p("d", "p"), 0o644)
    st.rec["fifo_gid_eq_dir"] = same(st.p("d", "p"))
    st.call("symlink", os.symlink, "t", st.p("d", "l"))
    st.rec["symlink_gid_eq_dir"] = same(st.p("d", "l"))


def mode_plain_dir_other_gid(st):
    d = st.mkdir("d", 0o777)
    st.call("chgrp_dir", os.chown, d, -1, OTHER_ID)
    st.call("create", _create, st.p("d", "f"), 0o644)
    st.stat("stat_file", st.p("d", "f"))


def _kill_op(st, f, how):
    if how == "write":
        return st.call("result", _write, f, b"x")
    if how == "truncate":
        return st.call("result", os.truncate, f, 0)
    if how == "ftruncate":
        return st.call("result", _ftruncate, f, 0)
    if how == "open_trunc":
        return st.call("result", lambda: os.close(os.open(f, os.O_WRONLY | os.O_TRUNC)))
    if how == "chown_own":
        return st.call("result", os.chown, f, os.geteuid(), os.getegid())
    if how == "chown_none":
        return st.call("result", os.chown, f, -1, -1)
    raise ValueError(how)


def mode_kill_priv(st, mode, how):
    """Whether setuid/setgid bits survive a write, truncate or chown."""
    f = st.file("f", b"data", mode=0o755)
    st.call("chmod", os.chmod, f, mode)
    st.stat("stat_before", f)
    _kill_op(st, f, how)
    st.stat("stat", f)


def mode_sticky_dir(st):
    d = st.mkdir("d", 0o777)
    st.call("chmod", os.chmod, d, 0o1777)
    st.stat("stat_dir", d)
    st.call("create", _create, st.p("d", "f"), 0o644)
    st.call("rename", os.rename, st.p("d", "f"), st.p("d", "g"))
    st.call("unlink", os.unlink, st.p("d", "g"))
    st.call("mkdir", os.mkdir, st.p("d", "s"))
    st.call("rmdir", os.rmdir, st.p("d", "s"))


def section_mode(probe):
    for umask, mode in [(0, 0o000), (0o022, 0o666), (0, 0o777), (0o077, 0o777), (0, 0o7777)]:
        probe.run("mode.create.umask%03o_mode%04o" % (umask, mode), mode_create, umask, mode)
    for umask, mode in [(0, 0o000), (0, 0o2775), (0o022, 0o777), (0, 0o1777), (0, 0o7777)]:
        probe.run("mode.mkdir.umask%03o_mode%04o" % (umask, mode), mode_mkdir, umask, mode)
    probe.run("mode.mkfifo.umask022_mode0666", mode_mkfifo, 0o022, 0o666)
    probe.run("mode.symlink.umask077", mode_symlink_umask)
    for mode in (0o000, 0o7777, 0o4755, 0o2755, 0o1644):
        probe.run("mode.chmod.file_%04o" % mode, mode_chmod, False, mode)
    for mode in (0o000, 0o7777, 0o2755, 0o1777):
        probe.run("mode.chmod.dir_%04o" % mode, mode_chmod, True, mode)
    probe.run("mode.perm.mode0_file", mode_access_mode0)
    probe.run("mode.perm.readonly_file", mode_readonly_file)
    probe.run("mode.perm.readonly_dir", mode_readonly_dir)
    probe.run("mode.perm.noexec_dir", mode_noexec_dir)
    for uid, gid in [("own", "own"), ("none", "none"), ("other", "none"),
                     ("none", "other"), ("own", "other")]:
        probe.run("mode.chown.uid_%s_gid_%s" % (uid, gid), mode_chown, uid, gid)
    probe.run("mode.setgid_dir.own_gid", mode_setgid_dir, "own")
    probe.run("mode.setgid_dir.other_gid", mode_setgid_dir, "other")
    probe.run("mode.plain_dir_other_gid", mode_plain_dir_other_gid)
    for mode in (0o4755, 0o2755, 0o6755, 0o2745):
        for how in ("write", "truncate", "ftruncate", "open_trunc", "chown_own", "chown_none"):
            probe.run("mode.kill_priv.%04o_%s" % (mode, how), mode_kill_priv, mode, how)
    probe.run("mode.sticky_dir", mode_sticky_dir)


# --------------------------------------------------- 4. link counts

def nlink_of(path):
    try:
        return os.lstat(path).st_nlink
    except OSError as e:
        return errname(e)


def nlink_dir_sequence(st):
    """One directory through mkdir, create, rmdir; st_nlink after each."""
    P = st.mkdir("P")
    seq = []
    for label, fn, a in [
        ("start", None, None),
        ("mkdir_a", os.mkdir, (st.p("P", "a"),)),
        ("mkdir_b", os.mkdir, (st.p("P", "b"),)),
        ("create_file", _create, (st.p("P", "f"),)),
        ("symlink", os.symlink, ("t", st.p("P", "l"))),
        ("mkfifo", os.mkfifo, (st.p("P", "p"),)),
        ("mkdir_a_sub", os.mkdir, (st.p("P", "a", "sub"),)),
        ("rmdir_a_sub", os.rmdir, (st.p("P", "a", "sub"),)),
        ("rmdir_a", os.rmdir, (st.p("P", "a"),)),
        ("unlink_file", os.unlink, (st.p("P", "f"),)),
    ]:
        r = "ok"
        if fn is not None:
            try:
                fn(*a)
            except OSError as e:
                r = errname(e)
        seq.append([label, r, nlink_of(P)])
    st.rec["sequence"] = seq
    st.rec["nlink_b"] = nlink_of(st.p("P", "b"))


def nlink_rename_dir(st, replace, across):
    S, T = st.mkdir("S"), st.mkdir("T")
    st.mkdir("S/d")
    st.mkdir("S/d/inner")
    dst = st.p("T" if across else "S", "e")
    if replace:
        st.mkdir(os.path.relpath(dst, st.dir))
    st.rec["before"] = {"S": nlink_of(S), "T": nlink_of(T)}
    st.call("result", os.rename, st.p("S", "d"), dst)
    st.rec["after"] = {"S": nlink_of(S), "T": nlink_of(T), "moved": nlink_of(dst)}
    st.call("dotdot_is_new_parent", lambda: os.path.samestat(
        os.stat(os.path.join(dst, "..")), os.stat(os.path.dirname(dst))))


def nlink_exchange_dirs(st):
    S, T = st.mkdir("S"), st.mkdir("T")
    st.mkdir("S/d")
    st.file("T/f")
    st.call("result", renameat2, st.p("S", "d"), st.p("T", "f"), RENAME_EXCHANGE)
    st.rec["after"] = {"S": nlink_of(S), "T": nlink_of(T)}
    st.stat("stat_S_d", st.p("S", "d"))
    st.stat("stat_T_f", st.p("T", "f"))


def nlink_file(st):
    f = st.file("f")
    seq = [["start", "ok", nlink_of(f)]]
    for label, fn, a in [
        ("link_g", os.link, (f, st.p("g"))),
        ("link_h", os.link, (f, st.p("h"))),
        ("unlink_g", os.unlink, (st.p("g"),)),
        ("rename_h_over_f", os.rename, (st.p("h"), f)),
    ]:
        r = "ok"
        try:
            fn(*a)
        except OSError as e:
            r = errname(e)
        seq.append([label, r, nlink_of(f)])
    st.rec["sequence"] = seq
    st.rec["h_after_rename_onto_own_link"] = nlink_of(st.p("h"))


def nlink_fstat_unlinked(st):
    f = st.file("f")
    fd = st.open("open", f, os.O_RDWR)
    st.call("unlink", os.unlink, f)
    if fd is not None:
        st.fstat("fstat", fd)
        st.call("write", os.write, fd, b"abc")
        st.call("pread", os.pread, fd, 16, 0)
        st.fstat("fstat_after_write", fd)


def nlink_fstat_replaced(st):
    f = st.file("f")
    st.file("g", b"new")
    fd = st.open("open", f, os.O_RDONLY)
    st.call("rename_over", os.rename, st.p("g"), f)
    if fd is not None:
        st.fstat("fstat", fd)
        st.call("pread", os.pread, fd, 16, 0)


def nlink_fstat_rmdir(st):
    d = st.mkdir("d")
    fd = st.open("open", d, os.O_RDONLY | os.O_DIRECTORY)
    st.call("rmdir", os.rmdir, d)
    if fd is not None:
        st.fstat("fstat", fd)


def nlink_unlink_one_of_two_open(st):
    f = st.file("f")
    st.setup(os.link, f, st.p("g"))
    fd = st.open("open", f, os.O_RDONLY)
    st.call("unlink", os.unlink, f)
    if fd is not None:
        st.fstat("fstat", fd)


def section_nlink(probe):
    probe.run("nlink.dir_sequence", nlink_dir_sequence)
    for replace in (False, True):
        for across in (False, True):
            probe.run("nlink.rename_dir.%s%s" % ("across" if across else "within",
                                                 "_replace_empty" if replace else ""),
                      nlink_rename_dir, replace, across)
    probe.run("nlink.exchange_dir_and_file", nlink_exchange_dirs)
    probe.run("nlink.file_sequence", nlink_file)
    probe.run("nlink.fstat_after_last_unlink", nlink_fstat_unlinked)
    probe.run("nlink.fstat_after_rename_over", nlink_fstat_replaced)
    probe.run("nlink.fstat_after_rmdir", nlink_fstat_rmdir)
    probe.run("nlink.fstat_after_unlink_one_of_two", nlink_unlink_one_of_two_open)


# --------------------------------------------------- 5. errors

N255 = "n" * 255
N256 = "n" * 256


def err_fixture(st):
    """f: file "x"; g: file "y"; d: empty dir; n: dir holding n/x;
    la <-> lb: a symlink loop; self -> self; lf -> f; dang -> missing."""
    st.file("f", b"x")
    st.file("g", b"y")
    st.mkdir("d")
    st.mkdir("n")
    st.file("n/x")
    for name, target in (("la", "lb"), ("lb", "la"), ("self", "self"),
                         ("lf", "f"), ("dang", "missing")):
        st.setup(os.symlink, target, st.p(name))


def _open_close(path, flags, mode=0o644):
    os.close(os.open(path, flags, mode))


def _stat_none(path, follow=True):
    os.stat(path, follow_symlinks=follow)


W, C, X = os.O_WRONLY, os.O_CREAT, os.O_EXCL

# (name, call(p) where p(name) is a path in the step's fixture directory)
ERRORS = [
    # sizes
    ("truncate_2p63m1", lambda p: os.truncate(p("f"), 2**63 - 1)),
    ("ftruncate_2p63m1", lambda p: _ftruncate(p("f"), 2**63 - 1)),
    ("truncate_negative", lambda p: os.truncate(p("f"), -1)),
    ("pwrite_at_2p63m2", lambda p: _pwrite(p("f"), b"z", 2**63 - 2)),
    ("truncate_64MiB_plus_1", lambda p: (os.truncate(p("f"), 64 * 2**20 + 1),
                                         os.stat(p("f")).st_size)[1]),
    ("pwrite_past_end_sparse", lambda p: (_pwrite(p("f"), b"z", 10 * 2**20),
                                          os.stat(p("f")).st_size)[1]),
    ("ftruncate_rdonly_fd", lambda p: _on_fd(p("f"), os.O_RDONLY, lambda fd: os.ftruncate(fd, 0))),
    # name and path length
    ("create_name255", lambda p: (_open_close(p(N255), W | C), len(os.listdir(p(""))))[1]),
    ("create_name256", lambda p: _open_close(p(N256), W | C)),
    ("mkdir_name256", lambda p: os.mkdir(p(N256))),
    ("symlink_name256", lambda p: os.symlink("f", p(N256))),
    ("mkfifo_name256", lambda p: os.mkfifo(p(N256))),
    ("link_name256", lambda p: os.link(p("f"), p(N256))),
    ("rename_to_name256", lambda p: os.rename(p("f"), p(N256))),
    ("stat_name256", lambda p: _stat_none(p(N256))),
    ("unlink_name256", lambda p: os.unlink(p(N256))),
    ("path_4096", lambda p: _stat_none(p("d/" + "/".join(["."] * 2100)))),
    ("symlink_target_4000", lambda p: (os.symlink("t" * 4000, p("long")),
                                       len(os.readlink(p("long"))))[1]),
    ("symlink_target_4096", lambda p: os.symlink("t" * 4096, p("long"))),
    # loops
    ("open_symlink_loop", lambda p: _open_close(p("la"), os.O_RDONLY)),
    ("stat_symlink_loop", lambda p: _stat_none(p("la"))),
    ("open_self_loop", lambda p: _open_close(p("self"), os.O_RDONLY)),
    ("open_through_loop_dir", lambda p: _open_close(p("la/x"), os.O_RDONLY)),
    ("open_nofollow_symlink", lambda p: _open_close(p("lf"), os.O_RDONLY | os.O_NOFOLLOW)),
    ("open_creat_nofollow_symlink", lambda p: _open_close(p("lf"), W | C | os.O_NOFOLLOW)),
    ("open_dangling", lambda p: _open_close(p("dang"), os.O_RDONLY)),
    ("open_creat_dangling", lambda p: (_open_close(p("dang"), W | C),
                                       fields(os.lstat(p("missing")))["type"])[1]),
    ("open_creat_excl_dangling", lambda p: _open_close(p("dang"), W | C | X)),
    # ENOTEMPTY
    ("rmdir_nonempty", lambda p: os.rmdir(p("n"))),
    ("rename_dir_over_nonempty", lambda p: os.rename(p("d"), p("n"))),
    ("rmdir_dot", lambda p: os.rmdir(p("d/."))),
    ("rmdir_dotdot", lambda p: os.rmdir(p("n/.."))),
    # EISDIR
    ("open_dir_wronly", lambda p: _open_close(p("d"), W)),
    ("open_dir_rdwr", lambda p: _open_close(p("d"), os.O_RDWR)),
    ("open_dir_creat", lambda p: _open_close(p("d"), W | C)),
    ("truncate_dir", lambda p: os.truncate(p("d"), 0)),
    ("unlink_dir", lambda p: os.unlink(p("d"))),
    ("rename_file_over_dir", lambda p: os.rename(p("f"), p("d"))),
    ("read_dir_fd", lambda p: _on_fd(p("d"), os.O_RDONLY, lambda fd: os.read(fd, 10))),
    # ENOTDIR
    ("open_file_slash_x", lambda p: _open_close(p("f/x"), os.O_RDONLY)),
    ("create_file_slash_x", lambda p: _open_close(p("f/x"), W | C)),
    ("stat_file_slash", lambda p: _stat_none(p("f/"))),
    ("mkdir_file_slash_x", lambda p: os.mkdir(p("f/x"))),
    ("unlink_file_slash_x", lambda p: os.unlink(p("f/x"))),
    ("rmdir_file", lambda p: os.rmdir(p("f"))),
    ("rename_dir_over_file", lambda p: os.rename(p("d"), p("f"))),
    ("rename_into_file", lambda p: os.rename(p("g"), p("f/x"))),
    ("open_file_o_directory", lambda p: _open_close(p("f"), os.O_RDONLY | os.O_DIRECTORY)),
    ("listdir_file", lambda p: os.listdir(p("f"))),
    ("symlink_in_file", lambda p: os.symlink("t", p("f/x"))),
    # EPERM / EINVAL
    ("link_dir", lambda p: os.link(p("d"), p("d2"))),
    ("rename_dir_into_itself", lambda p: os.rename(p("n"), p("n/x2"))),
    ("readlink_file", lambda p: os.readlink(p("f"))),
    # EEXIST
    ("mkdir_existing_dir", lambda p: os.mkdir(p("d"))),
    ("mkdir_existing_file", lambda p: os.mkdir(p("f"))),
    ("mkdir_existing_symlink", lambda p: os.mkdir(p("dang"))),
    ("create_excl_existing", lambda p: _open_close(p("f"), W | C | X)),
    ("symlink_existing", lambda p: os.symlink("t", p("f"))),
    ("link_existing", lambda p: os.link(p("g"), p("f"))),
    ("mkfifo_existing", lambda p: os.mkfifo(p("f"))),
    ("rename_noreplace_existing", lambda p: renameat2(p("g"), p("f"), RENAME_NOREPLACE)),
    ("rename_noreplace_new", lambda p: (renameat2(p("g"), p("g2"), RENAME_NOREPLACE),
                                        _read(p("g2")))[1]),
    ("rename_exchange_files", lambda p: (renameat2(p("f"), p("g"), RENAME_EXCHANGE),
                                         _read(p("f")) + _read(p("g")))[1]),
    ("rename_exchange_missing", lambda p: renameat2(p("f"), p("nope"), RENAME_EXCHANGE)),
    # ENOENT
    ("stat_missing", lambda p: _stat_none(p("nope"))),
    ("unlink_missing", lambda p: os.unlink(p("nope"))),
    ("rmdir_missing", lambda p: os.rmdir(p("nope"))),
    ("rename_missing", lambda p: os.rename(p("nope"), p("nope2"))),
    ("link_missing", lambda p: os.link(p("nope"), p("nope2"))),
    ("open_missing", lambda p: _open_close(p("nope"), os.O_RDONLY)),
    ("create_in_missing_dir", lambda p: _open_close(p("nope/x"), W | C)),
    ("readlink_missing", lambda p: os.readlink(p("nope"))),
    ("chmod_missing", lambda p: os.chmod(p("nope"), 0o644)),
    # extended attributes
    ("getxattr_missing", lambda p: os.getxattr(p("f"), "user.nope")),
    ("removexattr_missing", lambda p: os.removexattr(p("f"), "user.nope")),
    ("setxattr_get_list", lambda p: (os.setxattr(p("f"), "user.b", b"2"),
                                     os.setxattr(p("f"), "user.a", b""),
                                     os.getxattr(p("f"), "user.b"),
                                     sorted(os.listxattr(p("f"))))[2:]),
    ("setxattr_create_existing", lambda p: (os.setxattr(p("f"), "user.a", b"1"),
                                            os.setxattr(p("f"), "user.a", b"2",
                                                        os.XATTR_CREATE))),
    ("setxattr_replace_missing", lambda p: os.setxattr(p("f"), "user.a", b"1", os.XATTR_REPLACE)),
    ("setxattr_name_256", lambda p: os.setxattr(p("f"), "user." + "a" * 251, b"1")),
    ("setxattr_dir", lambda p: (os.setxattr(p("d"), "user.a", b"1"), os.getxattr(p("d"), "user.a"))[1]),
    ("setxattr_unknown_namespace", lambda p: os.setxattr(p("f"), "bogus.a", b"1")),
]


def _pwrite(path, data, off):
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)


def _on_fd(path, flags, fn):
    fd = os.open(path, flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def err_step(st, call):
    err_fixture(st)
    st.call("result", call, lambda name: st.p(name))


def section_err(probe):
    for name, call in ERRORS:
        probe.run("err." + name, err_step, call)


# ------------------------------------------------------------------- main

def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = [a for a in argv[1:] if a.startswith("--")]
    if len(args) != 1 or any(f != "--as-user" for f in flags):
        sys.stderr.write("usage: posix_probe.py DIR [--as-user]\n")
        return 2
    as_user = "--as-user" in flags
    if as_user and os.geteuid() == 0:
        sys.stderr.write("posix_probe.py: --as-user given but running as root; "
                         "run it under setpriv --reuid=65534 --regid=65534 --clear-groups\n")
        return 2
    root = args[0]
    if os.listdir(root):
        sys.stderr.write("posix_probe.py: %s is not empty\n" % root)
        return 2
    os.chdir(root)  # relative paths: short socket paths, no paths in errors
    os.umask(0)
    probe = Probe()
    for section in (section_special, section_time, section_mode, section_nlink, section_err):
        section(probe)
    out = {
        "probe": "posix_probe/1",
        "as_user": as_user,
        "root": os.geteuid() == 0,
        "steps": probe.steps,
    }
    json.dump(out, sys.stdout, sort_keys=True, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
