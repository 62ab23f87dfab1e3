"""Audit the virtualenv's packages for known vulnerabilities with pip-audit; fail on any found.

A vulnerability found fails the run. A vulnerability service that cannot be asked (no network,
or a package index that does not serve the per-version data pip-audit reads) is not a finding:
the step then says loudly that nothing was audited and passes, so the suite never fails for
the network's sake, unless MAILD_REQUIRE_AUDIT=1 asks for an audit that really ran.
MAILD_AUDIT_IGNORE takes vulnerability ids (space-separated) accepted after review.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SERVICES = ("pypi", "osv")
#: Seconds for one whole pip-audit run, and for each of its requests: an index that hangs
#: costs the suite minutes at most.
TIMEOUT = 120
REQUEST_TIMEOUT = 5


def audit(service: str) -> list[dict[str, Any]] | None:
    """Run pip-audit against one service; give its dependency list, or None if it could not run."""
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [
        str(pip_audit),
        "--local",
        "--skip-editable",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--desc",
        "off",
        "--timeout",
        str(REQUEST_TIMEOUT),
        "--vulnerability-service",
        service,
        *[f"--ignore-vuln={vuln}" for vuln in os.environ.get("MAILD_AUDIT_IGNORE", "").split()],
    ]
    try:
        done = subprocess.run(  # noqa: S603  a fixed command: the venv's own pip-audit
            command, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"pip-audit ({service}): could not run: {exc}")
        return None
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"pip-audit ({service}): no report: {last[:300]}")
        return None
    dependencies: list[dict[str, Any]] = report.get("dependencies", [])
    return dependencies


def main() -> int:
    """Audit with the first service that answers for at least one package; report and decide."""
    for service in SERVICES:
        dependencies = audit(service)
        if dependencies is None:
            continue
        audited = [dep for dep in dependencies if "skip_reason" not in dep]
        if not audited:
            print(f"pip-audit ({service}): the service answered for none of the packages")
            continue
        vulnerable = [dep for dep in audited if dep.get("vulns")]
        for dep in vulnerable:
            for vuln in dep["vulns"]:
                fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
                print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
        skipped = len(dependencies) - len(audited)
        print(
            f"pip-audit ({service}): {len(audited)} packages audited, {skipped} not known to "
            f"the service, {len(vulnerable)} vulnerable"
        )
        return 1 if vulnerable else 0
    print("=" * 78)
    print("pip-audit: DEPENDENCIES NOT AUDITED: no vulnerability service could be asked.")
    print("Run scripts/audit_deps.py where the network reaches one before a release.")
    print("=" * 78)
    return 1 if os.environ.get("MAILD_REQUIRE_AUDIT") == "1" else 0


if __name__ == "__main__":
    sys.exit(main())
