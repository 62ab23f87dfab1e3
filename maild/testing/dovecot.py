"""A throwaway Dovecot on loopback, so tests and the demo talk to a real IMAP server.

One :class:`DovecotServer` is one Dovecot instance with its own config, ports, users, TLS
certificates (a throwaway CA made with ``trustme``) and mail store. Nothing is read from
``/etc/dovecot``. Seeding helpers use the standard library's ``imaplib``: synchronous, fast and
independent of the client under test.

Run as root (the usual CI container), Dovecot's unprivileged processes (``dovecot`` for auth,
``mail`` for mail, ``dovenull`` for logins) must reach the mail store and the sockets, so those
live in a private runtime directory under the system temp dir that they may traverse, while the
config, certificates, ``ca.pem`` and the log stay in ``workdir``. Run as another user,
everything runs as that user.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from maild.ingest.imap import encode_mailbox_name, quote_string

__all__ = ["DovecotServer", "find_dovecot"]

_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
_USER_RE = re.compile(r"[A-Za-z0-9._@+-]+")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ ([0-9:,]+)\]")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_APPEND_BATCH = 1000
_MAILDIR_FOLDER = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
_SPECIAL_FOLDERS = (
    ("Sent", "\\Sent"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)


def find_dovecot() -> str | None:
    """Find the dovecot binary, so a caller can skip or fail clearly when it is not installed."""
    found = shutil.which("dovecot")
    if found:
        return found
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port(host: str) -> int:
    """Ask the kernel for a free port, so parallel instances never collide on a fixed one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _expand_uid_set(text: bytes) -> list[int]:
    """Expand an IMAP UID set such as ``3:5,9`` into a list."""
    uids: list[int] = []
    for part in text.split(b","):
        first, _, last = part.partition(b":")
        start = int(first)
        uids.extend(range(start, int(last) + 1) if last else [start])
    return uids


def _remove_tree(path: str) -> None:
    """Remove a runtime directory, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)


def _signal_group(pgid: int, signum: int) -> None:
    """Signal one instance's process group, ignoring a group that is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class DovecotServer:
    """One throwaway Dovecot instance: start, seed, fault (``kill``) and stop it from Python."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        users: Mapping[str, str],
        max_connections_per_user: int = 100,
        *,
        binary: str | None = None,
    ) -> None:
        for user, password in users.items():
            if not _USER_RE.fullmatch(user):
                raise ValueError(f"unsupported user name {user!r}")
            if any(char in password for char in ":\r\n\0"):
                raise ValueError(f"password of {user!r} may not contain ':', CR, LF or NUL")
        self.workdir = Path(workdir)
        self.users = dict(users)
        self.max_connections_per_user = max_connections_per_user
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[int, int], DovecotServer] | None = None
        self._runtime: Path | None = None
        self._runtime_remover: weakref.finalize[[str], DovecotServer] | None = None
        self._port: int | None = None
        self._tls_port: int | None = None
        self._tag = 0
        self.config_file = self.workdir / "dovecot.conf"
        self.log_file = self.workdir / "dovecot.log"
        self.ca_file = self.workdir / "ca.pem"

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """Give the plaintext IMAP port (loopback only)."""
        if self._port is None:
            raise RuntimeError("Dovecot has not been started")
        return self._port

    @property
    def tls_port(self) -> int:
        """Give the implicit-TLS IMAP port, whose certificate chains to :attr:`ca_file`."""
        if self._tls_port is None:
            raise RuntimeError("Dovecot has not been started")
        return self._tls_port

    @property
    def running(self) -> bool:
        """Tell whether the master process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def mail_root(self) -> Path:
        """Give the directory holding each user's home (``<user>/Maildir``), for on-disk faults."""
        if self._runtime is None:
            raise RuntimeError("Dovecot has not been started")
        return self._runtime / "home"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, timeout: float = 15.0) -> None:
        """Start Dovecot on free ports (a restart keeps its ports) and return once it greets."""
        if self.running:
            return
        binary = self._binary or find_dovecot()
        if binary is None:
            raise RuntimeError("dovecot is not installed (apt-get install dovecot-imapd)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare_runtime()
        self._make_certificates()
        last_error = ""
        for attempt in range(3):  # a free port can be taken between choosing and binding
            if attempt > 0 or self._port is None or self._tls_port is None:
                self._port = _free_port(self.host)  # a restart first tries the old ports
                self._tls_port = _free_port(self.host)
            self._write_config()
            self._launch(binary)
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self.kill()
                if "in use" not in last_error:
                    break
        raise RuntimeError(last_error)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Dovecot gracefully (SIGTERM to the master) and wait for it to exit."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL every process of this instance at once, dropping all connections (fault tests)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL)
        process.wait()
        self._forget_process()

    def close(self) -> None:
        """Stop Dovecot and remove its runtime directory, which ``stop()`` keeps for a restart."""
        # without close() the directory goes when this object is collected or Python exits
        self.stop()
        if self._runtime_remover is not None:
            self._runtime_remover()
        self._runtime_remover = None
        self._runtime = None

    def log_tail(self, lines: int = 40) -> str:
        """Give the end of Dovecot's log and console output, for error messages."""
        chunks = []
        for path in (self.log_file, self.workdir / "dovecot.out"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks) or "(no log)"

    def _forget_process(self) -> None:
        """Drop the handle of a master that has exited, so nothing signals a reused pid."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = None
        self._process = None

    def _launch(self, binary: str) -> None:
        """Start the master in the foreground as our child, so it can be waited for and killed."""
        self.log_file.unlink(missing_ok=True)
        with open(self.workdir / "dovecot.out", "wb") as out:
            self._process = subprocess.Popen(
                [binary, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches every child
            )
        # if the test process dies without stopping the server, do not leave it running
        self._finalizer = weakref.finalize(self, _signal_group, self._process.pid, signal.SIGKILL)

    def _wait_ready(self, timeout: float) -> None:
        """Poll until the server greets, failing early with the log if the master exits."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Dovecot exited with status {self._process.returncode} while starting:\n"
                    + self.log_tail()
                )
            if self._greets():
                return
            time.sleep(0.02)
        raise RuntimeError(f"Dovecot did not greet within {timeout:g} s:\n{self.log_tail()}")

    def _greets(self) -> bool:
        """Tell whether both listeners accept and the plaintext one sends its greeting."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                greeting = sock.recv(512)
            with socket.create_connection((self.host, self.tls_port), timeout=2):
                pass
        except OSError:
            return False
        return greeting.startswith(b"* OK")

    # -- files -------------------------------------------------------------------------------

    def _identities(self) -> tuple[int, int, str, str]:
        """Give mail uid/gid and the login/internal users: Debian's accounts as root, else ours."""
        if os.geteuid() == 0:
            mail = pwd.getpwnam("mail")
            return mail.pw_uid, mail.pw_gid, "dovenull", "dovecot"
        me = pwd.getpwuid(os.geteuid())
        return me.pw_uid, me.pw_gid, me.pw_name, me.pw_name

    def _prepare_runtime(self) -> None:
        """Create the traversable runtime tree and the users file that Dovecot's users can read."""
        uid, gid, _login, internal = self._identities()
        if self._runtime is None:
            self._runtime = Path(tempfile.mkdtemp(prefix="maild-dovecot-"))
            self._runtime.chmod(0o755)
            self._runtime_remover = weakref.finalize(self, _remove_tree, str(self._runtime))
            for sub in ("run", "state", "home"):
                (self._runtime / sub).mkdir()
        home = self._runtime / "home"
        lines = []
        for user, password in self.users.items():
            user_home = home / user
            if not user_home.exists():
                user_home.mkdir(mode=0o700)
                os.chown(user_home, uid, gid)
            lines.append(f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{user_home}::\n")
        users_file = self._runtime / "users"
        users_file.write_text("".join(lines))
        if os.geteuid() == 0:  # readable by the auth process only
            os.chown(users_file, 0, grp.getgrnam(internal).gr_gid if _has_group(internal) else 0)
        users_file.chmod(0o640 if os.geteuid() == 0 else 0o600)

    def _make_certificates(self) -> None:
        """Make a throwaway CA and a localhost leaf once, so TLS tests verify for real."""
        cert, key = self.workdir / "server.pem", self.workdir / "server.key"
        if cert.exists() and key.exists() and self.ca_file.exists():
            return
        import trustme  # a test dependency: imported only when certificates are made

        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1", "::1")
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        ca.cert_pem.write_to_path(str(self.ca_file))

    def _write_config(self) -> None:
        """Write a complete dovecot.conf, so nothing is read from /etc/dovecot."""
        assert self._runtime is not None
        uid, gid, login_user, internal_user = self._identities()
        runtime = self._runtime
        limit = self.max_connections_per_user
        processes = max(256, limit * max(len(self.users), 1) + 50)
        mailboxes = "".join(
            f"  mailbox {name} {{\n    special_use = {use}\n    auto = subscribe\n  }}\n"
            for name, use in _SPECIAL_FOLDERS
        )
        unprivileged = "" if os.geteuid() == 0 else _NON_ROOT_SERVICES
        self.config_file.write_text(
            _CONFIG.format(
                instance=f"maild-test-{runtime.name}",
                base_dir=runtime / "run",
                state_dir=runtime / "state",
                log=self.log_file,
                cert=self.workdir / "server.pem",
                key=self.workdir / "server.key",
                uid=uid,
                gid=gid,
                login_user=login_user,
                internal_user=internal_user,
                internal_group=_group_of(internal_user),
                users=runtime / "users",
                mailboxes=mailboxes,
                host=self.host,
                port=self.port,
                tls_port=self.tls_port,
                processes=processes,
                client_limit=processes * 2 + 100,
                per_user=limit,
                unprivileged=unprivileged,
                login_chroot="" if os.geteuid() == 0 else "chroot =",
                anvil_chroot="" if os.geteuid() == 0 else "chroot =",
            )
        )

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm`` against this instance, e.g. to list folder names as Dovecot decodes them."""
        binary = self._binary or find_dovecot() or "dovecot"
        doveadm = shutil.which("doveadm") or str(Path(binary).with_name("doveadm"))
        result = subprocess.run(
            [doveadm, "-c", str(self.config_file), *args],
            capture_output=True,
            check=False,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} failed: {result.stderr.decode(errors='replace')}"
            )
        return result.stdout.decode("utf-8", errors="replace")

    # -- seeding (stdlib imaplib) --------------------------------------------------------------

    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[imaplib.IMAP4]:
        """Open a logged-in stdlib IMAP connection for ``user`` and log out afterwards."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=60)
        try:
            conn.login(user, self.users[user])
            yield conn
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                conn.shutdown()

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        internaldate: datetime | None = None,
        flags: Sequence[str] = (),
    ) -> int:
        """APPEND one letter byte for byte and give its UID."""
        with self.imap(user) as conn:
            return self._append(conn, folder, [raw], flags, internaldate)[0]

    def append_many(
        self,
        user: str,
        folder: str,
        raws: Iterable[bytes],
        *,
        flags: Sequence[str] = (),
        internaldate: datetime | None = None,
    ) -> list[int]:
        """APPEND many letters over one connection (MULTIAPPEND + LITERAL+) and give their UIDs."""
        uids: list[int] = []
        batch: list[bytes] = []
        with self.imap(user) as conn:
            for raw in raws:
                batch.append(raw)
                if len(batch) >= _APPEND_BATCH:
                    uids.extend(self._append(conn, folder, batch, flags, internaldate))
                    batch = []
            if batch:
                uids.extend(self._append(conn, folder, batch, flags, internaldate))
        return uids

    def deliver(self, user: str, folder: str, raw: bytes) -> int:
        """Write one letter straight into a folder's Maildir and give its UID.

        For bytes IMAP cannot carry: Dovecot refuses an empty letter over APPEND, and gives
        NUL bytes back as 0x80 from FETCH. Written here, the letter is on disk exactly as given.
        """
        if not _MAILDIR_FOLDER.fullmatch(folder):
            raise ValueError(f"deliver supports plain ASCII folder names only, not {folder!r}")
        home = self.mail_root / user / "Maildir"
        box = home if folder.upper() == "INBOX" else home / ("." + folder.replace("/", "."))
        before = set(self.uids(user, folder))
        self._tag += 1
        name = f"{time.time_ns()}.M{self._tag}P{os.getpid()}.maild-test"
        staged = box / "tmp" / name
        staged.write_bytes(raw)
        owner = box.stat()
        os.chown(staged, owner.st_uid, owner.st_gid)
        staged.rename(box / "new" / name)
        (uid,) = set(self.uids(user, folder)) - before
        return uid

    def _append(
        self,
        conn: imaplib.IMAP4,
        folder: str,
        raws: Sequence[bytes],
        flags: Sequence[str],
        internaldate: datetime | None,
    ) -> list[int]:
        """Send one MULTIAPPEND with non-synchronising literals: no round trip per letter."""
        self._tag += 1
        tag = b"seed%d" % self._tag
        options = b""
        if flags:
            options += b" (" + " ".join(flags).encode("ascii") + b")"
        if internaldate is not None:
            options += b" " + imaplib.Time2Internaldate(internaldate).encode("ascii")
        parts = [tag, b" APPEND ", _mailbox(folder)]
        for raw in raws:
            parts += [options, b" {%d+}\r\n" % len(raw), raw]
        parts.append(b"\r\n")
        conn.send(b"".join(parts))
        while True:
            line = conn.readline()
            if not line:
                raise RuntimeError("Dovecot closed the connection during APPEND")
            if line.startswith(tag + b" "):
                break
        if not line.startswith(tag + b" OK"):
            raise RuntimeError(f"APPEND to {folder!r} failed: {line.decode(errors='replace')}")
        match = _APPENDUID.search(line)
        if match is None:
            raise RuntimeError("APPEND answered without APPENDUID")
        return _expand_uid_set(match.group(1))

    def create_folder(self, user: str, folder: str) -> None:
        """Create and subscribe a folder (non-ASCII names are encoded as modified UTF-7)."""
        with self.imap(user) as conn:
            _check(conn.create(_mailbox_str(folder)), f"CREATE {folder!r}")
            _check(conn.subscribe(_mailbox_str(folder)), f"SUBSCRIBE {folder!r}")

    def delete_folder(self, user: str, folder: str) -> None:
        """Delete a folder with its letters."""
        with self.imap(user) as conn:
            _check(conn.delete(_mailbox_str(folder)), f"DELETE {folder!r}")

    def recreate_folder(self, user: str, folder: str) -> int:
        """Delete and create a folder again, which gives it a new UIDVALIDITY; return that value."""
        before = self.uidvalidity(user, folder)
        self.delete_folder(user, folder)
        self.create_folder(user, folder)
        after = self.uidvalidity(user, folder)
        if after == before:
            raise RuntimeError(f"UIDVALIDITY of {folder!r} did not change ({after})")
        return after

    def uidvalidity(self, user: str, folder: str) -> int:
        """Give a folder's UIDVALIDITY as STATUS reports it."""
        with self.imap(user) as conn:
            typ, data = conn.status(_mailbox_str(folder), "(UIDVALIDITY)")
            _check((typ, data), f"STATUS {folder!r}")
            match = _UIDVALIDITY.search(b" ".join(d for d in data if isinstance(d, bytes)))
            if match is None:
                raise RuntimeError(f"STATUS {folder!r} gave no UIDVALIDITY")
            return int(match.group(1))

    def uids(self, user: str, folder: str) -> list[int]:
        """List the UIDs in a folder, read-only (EXAMINE)."""
        with self.imap(user) as conn:
            _check(conn.select(_mailbox_str(folder), readonly=True), f"EXAMINE {folder!r}")
            typ, data = conn.uid("SEARCH", "ALL")
            _check((typ, data), "UID SEARCH")
            return sorted(int(word) for word in (data[0] or b"").split())

    def flags(self, user: str, folder: str, uid: int) -> tuple[str, ...]:
        """Give one letter's flags, read-only, so tests can prove a fetch left ``\\Seen`` alone."""
        with self.imap(user) as conn:
            _check(conn.select(_mailbox_str(folder), readonly=True), f"EXAMINE {folder!r}")
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
            _check((typ, data), "UID FETCH")
            for item in data:
                if isinstance(item, bytes) and (match := _FLAGS.search(item)):
                    return tuple(match.group(1).decode("ascii").split())
            raise LookupError(f"no letter with UID {uid} in {folder!r}")


def _mailbox_str(folder: str) -> str:
    """Give the wire form of a folder name for imaplib, which sends names verbatim."""
    return quote_string(encode_mailbox_name(folder))


def _mailbox(folder: str) -> bytes:
    """Give the wire form of a folder name as bytes, for raw commands."""
    return _mailbox_str(folder).encode("ascii")


def _check(result: tuple[str, list[Any]], what: str) -> None:
    """Raise with the server's answer unless an imaplib command answered OK."""
    typ, data = result
    if typ != "OK":
        raise RuntimeError(f"{what} failed: {typ} {data!r}")


def _group_of(user: str) -> str:
    """Give the name of a user's primary group, which Dovecot's internal sockets belong to."""
    gid = pwd.getpwnam(user).pw_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _has_group(name: str) -> bool:
    """Tell whether a group exists, since containers may lack Debian's dovecot group."""
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


_NON_ROOT_SERVICES = """
service auth-worker {
  user = $default_internal_user
}
"""

_CONFIG = """\
# Written by maild.testing.dovecot for a throwaway test server; nothing is read from /etc.
instance_name = {instance}
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log}
info_log_path = {log}
protocols = imap
listen = {host}
shutdown_clients = yes

ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {users}
}}

mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
first_valid_gid = 1
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
mail_location = maildir:~/Maildir
mail_fsync = never
mailbox_idle_check_interval = 1 secs
default_client_limit = {client_limit}

namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}

protocol imap {{
  mail_max_userip_connections = {per_user}
}}

service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {tls_port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = 1
  {login_chroot}
}}

service imap {{
  process_limit = {processes}
}}

# no per-IP penalty after a failed login: wrong-password tests must not slow the next test
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
  {anvil_chroot}
}}
{unprivileged}"""
