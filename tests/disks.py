"""Small real file systems for the tests of a full or read-only data directory.

`tmpfs(path)` mounts a tmpfs of a few MB that a test fills up and frees again. `ext4(path)`
mounts an ext4 image (a loop device, `errors=remount-ro`) that a test turns read-only the way
the kernel does after a disk error: a file system with files open for writing cannot be
remounted read-only (`mount: ... busy`), so `turn_read_only` raises an ext4 error instead
(`/sys/fs/ext4/<dev>/trigger_fs_error`), after which every write answers EROFS. The kernel lets
no such file system be written again before it is unmounted and checked.

Mounting needs root (or CAP_SYS_ADMIN); without it a test skips with the reason, except under
CI=true, where that is a failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from tests.polling import wait_until

IN_CI: Final = os.environ.get("CI") == "true"
_FILLER: Final = ".filler"


def _unavailable(problem: str) -> None:
    if IN_CI:
        pytest.fail(f"{problem} (CI=true: the disk tests must run)")
    pytest.skip(problem)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class SmallDisk:
    """A mounted file system at `path`."""

    path: Path

    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self) -> None:
        """Take every free byte with a file of its own (`free` gives them back)."""
        fd = os.open(self.path / _FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for piece in (1 << 20, 1 << 16, 1 << 12, 1):
                data = bytes(piece)
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, data)
        finally:
            os.close(fd)
        assert self.free_bytes() == 0, f"{self.path} still has {self.free_bytes()} bytes free"

    def free(self) -> None:
        (self.path / _FILLER).unlink(missing_ok=True)

    def remount_read_only(self) -> None:
        """Only while no file here is open for writing (else the kernel says busy)."""
        done = _run("mount", "-o", "remount,ro", str(self.path))
        assert done.returncode == 0, done.stderr

    def is_read_only(self) -> bool:
        """Whether a file can be made here (an ext4 that an error made read-only keeps its
        mount flags as they were: only a write tells)."""
        try:
            fd = os.open(self.path / ".check", os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return True
            raise
        os.close(fd)
        (self.path / ".check").unlink()
        return False


@dataclass
class Ext4Disk(SmallDisk):
    device: str
    image: Path

    def repair(self) -> None:
        """What an operator does once nothing has the files open: unmount, check, mount again."""
        done = _run("umount", str(self.path))
        assert done.returncode == 0, done.stderr
        checked = _run("e2fsck", "-f", "-y", str(self.image))
        assert checked.returncode in (0, 1), checked.stdout + checked.stderr  # 1: fixed
        _mount("-t", "ext4", "-o", "loop,errors=remount-ro", str(self.image), str(self.path))
        self.device = _source_of(self.path)

    def turn_read_only(self, timeout: float = 10.0) -> None:
        """Make the kernel take the file system read-only as after a disk error."""
        trigger = Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error"
        if not trigger.exists():
            _unavailable(f"{trigger} is missing: this kernel cannot raise an ext4 error on request")
        trigger.write_text("stellwerk test: the disk turns read-only")
        wait_until(self.is_read_only, what=f"{self.path} turns read-only", within=timeout)


def _mount(*args: str) -> None:
    done = _run("mount", *args)
    if done.returncode != 0:
        _unavailable(f"cannot mount a test file system ({' '.join(args)}): {done.stderr.strip()}")


def _unmount(path: Path) -> None:
    # Lazily if a process still has files open there: the mount (and its loop device) goes
    # once they are closed, and the test's directory is free at once.
    if _run("umount", str(path)).returncode != 0:
        _run("umount", "-l", str(path))


@contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """A tmpfs of `size` at `path` (made if missing), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield SmallDisk(path)
    finally:
        _unmount(path)


@contextmanager
def ext4(path: Path, size_mb: int = 32) -> Iterator[Ext4Disk]:
    """An ext4 image of `size_mb` on a loop device at `path`, unmounted afterwards."""
    if shutil.which("mkfs.ext4") is None or shutil.which("e2fsck") is None:
        _unavailable("mkfs.ext4 is not installed (e2fsprogs)")
    image = path.with_name(path.name + ".ext4")
    with open(image, "wb") as file:
        file.truncate(size_mb << 20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    assert made.returncode == 0, made.stderr
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "ext4", "-o", "loop,errors=remount-ro", str(image), str(path))
    try:
        yield Ext4Disk(path, _source_of(path), image)
    finally:
        _unmount(path)
        image.unlink(missing_ok=True)


def _source_of(path: Path) -> str:
    """The device mounted at `path`, from the mount table."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, *_ = line.split()
        if target == str(path):
            return source
    raise AssertionError(f"nothing is mounted at {path}")
