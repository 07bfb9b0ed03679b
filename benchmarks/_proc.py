"""Linux process memory counters for the benchmarks (``/proc/self``)."""

from __future__ import annotations


def status_bytes(field):
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``, ...) in bytes, or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_high_water_mark():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False
