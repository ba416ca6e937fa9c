"""What the hostile-client and alarm tests measure about a sluiced process."""

import os


def rss_bytes(pid):
    """Resident set size of process `pid`, bytes (VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def sanitized_build():
    """True when SLUICED is an ASan/UBSan build (build/asan): slower and
    hungrier, so tests shrink their sizes and widen memory bounds."""
    exe = os.environ.get("SLUICED", "")
    return "/asan/" in exe or os.environ.get("SLUICE_TEST_SANITIZED") == "1"
