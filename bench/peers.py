"""The other programs maild is compared with, each run on the same Dovecot folder as maild.

- **fetchmail** retrieves the folder over IMAP (plaintext, like maild here) and delivers every
  letter into a BSMTP file: its own fetch and delivery, with no MTA behind it.
- **getmail6** retrieves it into a Maildir (one file per letter), as an unprivileged user
  when started as root (getmail refuses to deliver as root).
- **imapfilter** runs one From-regex rule client-side: it fetches the From header of every
  letter, matches it, and moves the matches with UID MOVE.

They are Debian packages (``apt-get install fetchmail getmail6 imapfilter``), not maild
dependencies: a missing one is reported as "not installed". Each runs as a phase in its own
process (``peers.py --phase NAME SPEC RESULT``), so its time is only its own.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Launcher, phase_entry, run_phases

SCRIPT = str(Path(__file__).resolve())
TOOLS = {"fetchmail": "fetchmail", "getmail": "getmail", "imapfilter": "imapfilter"}
NAMES = {"fetchmail": "fetchmail", "getmail": "getmail6", "imapfilter": "imapfilter"}
GETMAIL_ATTEMPTS = 3


def installed(tool: str) -> bool:
    """Tell whether a peer's program is on PATH."""
    return shutil.which(TOOLS[tool]) is not None


def _children_cpu() -> float:
    """Give the CPU seconds of this process's waited-for children."""
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a program to its end; give its wall seconds, its CPU seconds and its output."""
    cpu = _children_cpu()
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    seconds = time.perf_counter() - began
    output = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode not in (0, 1):  # fetchmail says 1 for "no new mail"
        raise RuntimeError(f"{argv[0]} exited with {done.returncode}:\n{output[-2000:]}")
    return seconds, _children_cpu() - cpu, output


def phase_fetchmail(spec: dict[str, Any]) -> dict[str, Any]:
    """Retrieve every letter of the folder with fetchmail into a BSMTP file, keeping them."""
    home = Path(tempfile.mkdtemp(prefix="bench-fetchmail-"))
    try:
        rc = home / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            f"poll {spec['host']} with proto IMAP port {spec['port']}\n"
            f'  user "{spec["user"]}" there with password "{spec["password"]}" is "root" here\n'
            f'  folder "{spec["folder"]}"\n'
            "  sslproto ''\n  keep\n  fetchall\n"
            f"  bsmtp {home / 'out.bsmtp'}\n"
        )
        rc.chmod(0o600)
        env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
        seconds, cpu, output = _timed(["fetchmail", "-f", str(rc), "--nosyslog"], env)
        letters = len(re.findall(r"^reading message ", output, re.MULTILINE))
        size = (home / "out.bsmtp").stat().st_size if (home / "out.bsmtp").exists() else 0
        return {"letters": letters, "bytes": size, "seconds": seconds, "cpu": cpu}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _unprivileged(home: Path) -> tuple[list[str], int]:
    """Give the command prefix that drops root (to nobody) and that user's uid; none otherwise."""
    if os.geteuid() != 0:
        return [], os.geteuid()
    nobody = pwd.getpwnam("nobody")
    for root, dirs, files in os.walk(home):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, nobody.pw_uid, nobody.pw_gid)
    prefix = [
        "setpriv",
        f"--reuid={nobody.pw_uid}",
        f"--regid={nobody.pw_gid}",
        "--clear-groups",
    ]
    return prefix, nobody.pw_uid


def phase_getmail(spec: dict[str, Any]) -> dict[str, Any]:
    """Retrieve the folder's first ``limit`` letters with getmail6 into a Maildir, keeping them."""
    home = Path(tempfile.mkdtemp(prefix="bench-getmail-"))
    try:
        home.chmod(0o755)
        maildir = home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True)
        (home / "getmailrc").write_text(
            "[retriever]\ntype = SimpleIMAPRetriever\n"
            f"server = {spec['host']}\nport = {spec['port']}\n"
            f"username = {spec['user']}\npassword = {spec['password']}\ntimeout = 20\n"
            f'mailboxes = ("{spec["folder"]}",)\n'
            f"[destination]\ntype = Maildir\npath = {maildir}/\n"
            "[options]\nread_all = true\ndelete = false\nverbose = 0\n"
            f"max_messages_per_session = {spec['limit']}\n"
        )
        prefix, _ = _unprivileged(home)
        env = dict(os.environ, HOME=str(home))
        argv = [*prefix, "getmail", "--getmaildir", str(home), "--rcfile", "getmailrc"]
        for attempt in range(1, GETMAIL_ATTEMPTS + 1):
            for old in (maildir / "new").iterdir():
                old.unlink()
            try:
                seconds, cpu, _output = _timed(argv, env)
                break
            except RuntimeError as exc:
                # getmail forks a child per letter and can miss its SIGCHLD (it then waits
                # for its timeout and gives up): try again, and say so if it keeps failing
                if attempt == GETMAIL_ATTEMPTS:
                    return {"error": str(exc).splitlines()[-1][:200]}
        files = list((maildir / "new").iterdir())
        size = sum(f.stat().st_size for f in files)
        return {"letters": len(files), "bytes": size, "seconds": seconds, "cpu": cpu}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def phase_imapfilter(spec: dict[str, Any]) -> dict[str, Any]:
    """Move the folder's letters whose From matches a regex with imapfilter (client-side)."""
    home = Path(tempfile.mkdtemp(prefix="bench-imapfilter-"))
    try:
        config = home / "config.lua"
        config.write_text(
            "options.timeout = 300\noptions.starttls = false\noptions.info = false\n"
            f"local account = IMAP {{ server = '{spec['host']}', port = {spec['port']}, "
            f"username = '{spec['user']}', password = '{spec['password']}' }}\n"
            f"local found = account['{spec['folder']}']:match_from('{spec['regex']}')\n"
            f"found:move_messages(account['{spec['target']}'])\n"
        )
        config.chmod(0o600)
        env = dict(os.environ, HOME=str(home))
        seconds, cpu, _output = _timed(["imapfilter", "-c", str(config)], env)
        return {"seconds": seconds, "cpu": cpu}
    finally:
        shutil.rmtree(home, ignore_errors=True)


PHASES = {"fetchmail": phase_fetchmail, "getmail": phase_getmail, "imapfilter": phase_imapfilter}


def run_peer(
    launcher: Launcher, tool: str, spec: dict[str, Any], workdir: Path
) -> dict[str, Any] | None:
    """Run one peer in its own process; None when it is not installed."""
    if not installed(tool):
        return None
    return run_phases(launcher, SCRIPT, tool, [spec], workdir)[0]


if __name__ == "__main__" and not phase_entry(PHASES):
    sys.exit("peers.py runs only as a phase of another benchmark")
