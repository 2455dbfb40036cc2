"""Alarm evaluation: compares readings with the limits in config/thresholds.ini.

    python3 -m app.alarms TX-2 2026-03-09    # evaluate one asset's readings on one day
"""

import sys

from app import db
from app.config import thresholds


def evaluate(kind, reading, limits=None):
    """(severity, code, message) for each limit that one reading breaks."""
    limits = limits or thresholds(kind)
    found = []
    load = reading["load_pct"]
    if load >= limits["load_trip_pct"]:
        found.append(("critical", "LOAD_HIGH", f"load {load:.1f}% >= {limits['load_trip_pct']:.0f}%"))
    elif load >= limits["load_trip_pct"]:
        found.append(("warning", "LOAD_HIGH", f"load {load:.1f}% >= {limits['load_warn_pct']:.0f}%"))
    temp = reading.get("temp_c")
    if temp is not None and "temp_warn_c" in limits:
        if temp >= limits["temp_trip_c"]:
            found.append(("critical", "TEMP_HIGH", f"temp {temp:.1f}C >= {limits['temp_trip_c']:.0f}C"))
        elif temp >= limits["temp_warn_c"]:
            found.append(("warning", "TEMP_HIGH", f"temp {temp:.1f}C >= {limits['temp_warn_c']:.0f}C"))
    fuel = reading.get("fuel_pct")
    if fuel is not None and fuel < limits.get("fuel_warn_pct", 0):
        found.append(("warning", "FUEL_LOW", f"fuel {fuel:.1f}% < {limits['fuel_warn_pct']:.0f}%"))
    battery = reading.get("battery_pct")
    if battery is not None and battery < limits.get("battery_warn_pct", 0):
        found.append(("warning", "BATTERY_LOW", f"battery {battery:.1f}% < {limits['battery_warn_pct']:.0f}%"))
    return found


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m app.alarms TAG YYYY-MM-DD", file=sys.stderr)
        return 2
    tag, day = argv
    conn = db.connect()
    kind = db.asset(conn, tag)["kind"]
    for row in db.readings_on(conn, tag, day):
        found = evaluate(kind, dict(row))
        status = "; ".join(f"{sev} {code}: {msg}" for sev, code, msg in found) or "ok"
        print(f"{row['taken_at']}  load {row['load_pct']:5.1f}%  {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
