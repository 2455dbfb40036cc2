"""Self-checks for the load calculations and alarm rules; exit status 1 when one fails.

    python3 -m app.selfcheck
"""

import sys

from app.alarms import evaluate
from app.loading import headroom_kva, transformer_load_pct

TX_LIMITS = {"load_warn_pct": 85.0, "load_trip_pct": 98.0, "temp_warn_c": 75.0, "temp_trip_c": 90.0}


def check_transformer_load_pct():
    assert round(transformer_load_pct(1800, 2500), 1) == 80.0


def check_headroom_kva():
    assert headroom_kva(1500, 80) == 300


def check_load_trip_is_critical():
    found = [(sev, code) for sev, code, _ in evaluate("transformer", {"load_pct": 99.0}, TX_LIMITS)]
    assert found == [("critical", "LOAD_HIGH")], found


def check_load_warning():
    found = [(sev, code) for sev, code, _ in evaluate("transformer", {"load_pct": 90.0}, TX_LIMITS)]
    assert found == [("warning", "LOAD_HIGH")], found


def check_temp_warning():
    reading = {"load_pct": 60.0, "temp_c": 80.0}
    found = [(sev, code) for sev, code, _ in evaluate("transformer", reading, TX_LIMITS)]
    assert found == [("warning", "TEMP_HIGH")], found


def check_normal_reading_is_quiet():
    assert evaluate("transformer", {"load_pct": 60.0, "temp_c": 55.0}, TX_LIMITS) == []


CHECKS = [
    check_transformer_load_pct,
    check_headroom_kva,
    check_load_trip_is_critical,
    check_load_warning,
    check_temp_warning,
    check_normal_reading_is_quiet,
]


def main():
    failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok    {check.__name__}")
        except AssertionError as exc:
            failed += 1
            print(f"FAIL  {check.__name__}: {exc}")
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
