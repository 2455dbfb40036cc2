"""Build the bundled workspace's SQLite database from ``db/schema.sql`` and seeded data.

    python -m claude_rl.samples.build_workspace [--workspace DIR] [--seed N]

The data is fictional: eight assets of an electrical facility, their nameplate specs, a reading
every 4 hours from 2026-03-01 to 2026-03-14 (UTC), alarms and a maintenance log. Every timestamp
is a literal, so the episodes recorded against the database replay identically forever. The
readings come from a seeded generator (only ``random.random()``, whose sequence Python keeps
stable across versions) plus a few scripted events: a utility outage on 03-08, a failed generator
start on 03-05, an overload on 03-09. ``dump()`` gives the database as SQL text; a rebuild
must give the same dump (tests/test_samples.py).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

WORKSPACE = Path(__file__).resolve().parents[2] / "data" / "workspace"
SCHEMA = Path("db") / "schema.sql"
DATABASE = Path("db") / "command_center.db"
SEED = 20260301

FIRST_DAY = date(2026, 3, 1)
DAYS = 14
HOURS = (0, 4, 8, 12, 16, 20)
# Share of the daily peak drawn at each hour of the day.
SHAPE = {0: 0.66, 4: 0.60, 8: 0.86, 12: 1.0, 16: 0.97, 20: 0.80}
WEEKEND = 0.82
OUTAGE = ("2026-03-08 04:00", "2026-03-08 08:00")  # readings taken while the utility supply was out

ASSETS = [
    # id, tag, kind, name, location, commissioned
    (1, "TX-1", "transformer", "Main Service Xfmr 1", "Substation A", "2014-06-02"),
    (2, "TX-2", "transformer", "Main Service Xfmr 2", "Substation B", "2021-03-15"),
    (3, "TX-3", "transformer", "Chiller Plant Xfmr", "Substation B", "2024-11-04"),
    (4, "GEN-1", "generator", "Standby Diesel 1", "Generator Hall", "2016-08-22"),
    (5, "GEN-2", "generator", "Standby Diesel 2", "Generator Hall", "2019-05-10"),
    (6, "UPS-1", "ups", "Control Room UPS", "Control Room", "2020-02-17"),
    (7, "UPS-2", "ups", "SCADA Servers UPS", "Server Room", "2022-07-01"),
    (8, "UPS-3", "ups", "Protection Relays UPS", "Relay Room", "2015-10-05"),
]
TRANSFORMER_SPECS = [
    # asset_id, rating_kva, primary_kv, secondary_v, cooling, impedance_pct
    (1, 2500.0, 13.8, 480.0, "ONAN", 5.75),
    (2, 1500.0, 13.8, 480.0, "ONAF", 5.5),
    (3, 1000.0, 13.8, 480.0, "ONAN", 5.0),
]
GENERATOR_SPECS = [
    # asset_id, rating_kw, fuel, tank_l, burn_l_per_h
    (4, 1250.0, "diesel", 4000.0, 330.0),
    (5, 1000.0, "diesel", 4000.0, 270.0),
]
UPS_SPECS = [
    # asset_id, rating_kva, battery, runtime_min
    (6, 80.0, "VRLA", 15.0),
    (7, 120.0, "Li-ion", 12.0),
    (8, 40.0, "VRLA", 30.0),
]
MAINTENANCE = [
    # asset_id, done_on, kind, notes
    (1, "2025-09-15", "oil_sample", "DGA normal, moisture 12 ppm"),
    (2, "2025-09-15", "oil_sample", "DGA: slight rise in ethylene, resample in 6 months"),
    (3, "2025-11-20", "inspection", "First-year inspection, no findings"),
    (4, "2026-01-13", "load_test", "2 h load bank at 75 %, passed"),
    (5, "2026-01-13", "load_test", "2 h load bank at 75 %, passed"),
    (6, "2026-02-02", "battery", "Impedance test: all 32 jars within limit"),
    (7, "2026-02-02", "battery", "Impedance test: all modules within limit"),
    (8, "2026-02-02", "battery", "Impedance test: 3 of 32 jars above limit, replacement quoted"),
    (2, "2026-02-18", "inspection", "Cooling fans 2 and 3 cycling correctly, radiator fins cleaned"),
    (5, "2026-03-06", "repair", "Starter battery replaced (10.9 V at crank), test start OK"),
    (4, "2026-03-09", "refuel", "Refuelled to 95 % after the 03-08 outage run"),
    (5, "2026-03-09", "refuel", "Refuelled to 95 % after the 03-08 outage run"),
    (1, "2026-03-12", "inspection", "Thermal scan of LV bushings, no hot spots"),
]
# Alarms raised by the field controller and the UPS units (LOAD_HIGH and TEMP_HIGH of the
# transformers are derived from the readings, see _derived_alarms).
EVENT_ALARMS = [
    # asset_id, raised_at, severity, code, message, cleared_at
    (5, "2026-03-05 10:02", "critical", "FAIL_TO_START", "No start on weekly test after 3 crank attempts",
     "2026-03-06 15:40"),
    (1, "2026-03-08 03:52", "critical", "SUPPLY_LOST", "Incoming 13.8 kV supply lost", "2026-03-08 09:10"),
    (2, "2026-03-08 03:52", "critical", "SUPPLY_LOST", "Incoming 13.8 kV supply lost", "2026-03-08 09:10"),
    (3, "2026-03-08 03:52", "critical", "SUPPLY_LOST", "Incoming 13.8 kV supply lost", "2026-03-08 09:10"),
    (6, "2026-03-08 03:52", "info", "ON_BATTERY", "On battery, mains failed", "2026-03-08 03:53"),
    (7, "2026-03-08 03:52", "info", "ON_BATTERY", "On battery, mains failed", "2026-03-08 03:53"),
    (8, "2026-03-08 03:52", "info", "ON_BATTERY", "On battery, mains failed", "2026-03-08 03:53"),
    (4, "2026-03-08 03:52", "info", "RUNNING", "Started on mains failure", "2026-03-08 09:25"),
    (5, "2026-03-08 03:52", "info", "RUNNING", "Started on mains failure", "2026-03-08 09:25"),
    (8, "2026-03-08 03:53", "warning", "BATTERY_LOW", "Battery 74 % after 10 s on battery", None),
    (4, "2026-03-08 08:57", "warning", "FUEL_LOW", "Fuel 39.8 % below 40 %", "2026-03-09 10:40"),
    (2, "2026-03-13 09:20", "warning", "FAN_FAIL", "Cooling fan 3 not running", None),
]  # fmt: skip


def _noise(rng: random.Random) -> float:
    return rng.random() * 2 - 1


def _stamp(day: date, hour: int) -> str:
    return f"{day.isoformat()} {hour:02d}:00"


def _readings(rng: random.Random) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    fuel = {4: 66.0, 5: 93.0}
    battery_after_outage = {
        6: [96.0, 99.0, 100.0],
        7: [97.0, 100.0, 100.0],
        8: [74.0, 81.0, 86.0, 90.0, 93.0],
    }
    for d in range(DAYS):
        day = FIRST_DAY + timedelta(days=d)
        weekend = day.weekday() >= 5
        for hour in HOURS:
            at = _stamp(day, hour)
            factor = SHAPE[hour] * (WEEKEND if weekend else 1.0)
            outage = at in OUTAGE
            # Transformers: de-energised during the outage.
            for asset_id, peak, k, ambient in (
                (1, 77.0, 0.55, 18.0),
                (2, 88.0, 0.62, 19.0),
                (3, 52.0, 0.5, 17.0),
            ):
                load = round(peak * factor * (1 + 0.04 * _noise(rng)), 1)
                temp = round(ambient + k * load + 1.2 * _noise(rng), 1)
                if outage:
                    load, temp = 0.0, round(ambient + 9.0 + 1.0 * _noise(rng), 1)
                if asset_id == 2 and at == "2026-03-09 16:00":
                    load, temp = 98.6, 79.4
                if asset_id == 2 and at == "2026-03-11 12:00":
                    temp = 76.8
                rows.append((asset_id, at, load, temp, None, None))
            # Generators: idle (block heater keeps coolant warm) except tests and the outage.
            for asset_id in (4, 5):
                load, temp = 0.0, round(38.0 + 0.6 * _noise(rng), 1)
                if at in ("2026-03-03 12:00", "2026-03-10 12:00") or (
                    asset_id == 5 and at == "2026-03-06 16:00"
                ):
                    load = round(40.0 + 1.5 * _noise(rng), 1)
                    temp = round(80.0 + 1.5 * _noise(rng), 1)
                    fuel[asset_id] = round(fuel[asset_id] - 1.2, 1)
                if outage:
                    load = round((64.0 if asset_id == 4 else 59.0) + 2.0 * _noise(rng), 1)
                    temp = round(86.0 + 1.0 * _noise(rng), 1)
                if at == "2026-03-08 04:00":
                    fuel[asset_id] = round(fuel[asset_id] - 0.5, 1)
                if at == "2026-03-08 08:00":
                    fuel[asset_id] = 47.9 if asset_id == 4 else 79.6
                if at == "2026-03-08 12:00":
                    fuel[asset_id] = 37.9 if asset_id == 4 else 72.3
                    temp = 52.0 if asset_id == 4 else 51.4
                if at == "2026-03-09 12:00":
                    fuel[asset_id] = 95.0
                rows.append((asset_id, at, load, temp, fuel[asset_id], None))
            # UPS units: flat loads; discharged by the outage, then recharging.
            for asset_id, base, room in ((6, 46.0, 23.0), (7, 63.0, 24.0), (8, 28.0, 27.5)):
                load = round(base * (0.93 + 0.07 * SHAPE[hour]) * (1 + 0.03 * _noise(rng)), 1)
                temp = round(room + 0.8 * _noise(rng), 1)
                battery = 100.0
                if day == date(2026, 3, 8) and hour >= 4:
                    steps = battery_after_outage[asset_id]
                    index = HOURS.index(hour) - 1
                    battery = steps[index] if index < len(steps) else 100.0
                rows.append((asset_id, at, load, temp, None, battery))
    return rows


def _later(stamp: str, hours: int, minutes: int = 0) -> str:
    at = datetime.strptime(stamp, "%Y-%m-%d %H:%M") + timedelta(hours=hours, minutes=minutes)
    return at.strftime("%Y-%m-%d %H:%M")


def _derived_alarms(readings: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The field controller's LOAD_HIGH/TEMP_HIGH alarms for the transformers (limits 85/98 %,
    75/90 C): raised 1 minute after the reading over a limit, cleared 1 minute after the next
    reading back under it (a warning that escalates is cleared and a critical raised); an alarm
    still over the limit at the last reading stays open."""
    out: list[list[Any]] = []
    by_asset: dict[int, list[tuple[Any, ...]]] = {}
    for row in readings:
        if row[0] in (1, 2, 3):
            by_asset.setdefault(row[0], []).append(row)
    limits = (
        (2, "LOAD_HIGH", "Load", 85.0, 98.0, "%"),
        (3, "TEMP_HIGH", "Oil temperature", 75.0, 90.0, " C"),
    )
    for asset_id, rows in by_asset.items():
        for col, code, noun, warn, trip, unit in limits:
            current: list[Any] | None = None
            for row in rows:
                value = row[col]
                severity = "critical" if value >= trip else "warning" if value >= warn else None
                at = _later(row[1], 0, 1)
                if current is not None and current[2] != severity:
                    current[5] = at
                    current = None
                if severity is not None and current is None:
                    limit, name = (trip, "trip") if severity == "critical" else (warn, "warning")
                    message = f"{noun} {value:.1f}{unit} above {name} limit {limit:.0f}{unit}"
                    current = [asset_id, at, severity, code, message, None]
                    out.append(current)
    return [tuple(a) for a in out]


def dataset(seed: int = SEED) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, in insertion order."""
    rng = random.Random(seed)
    readings = _readings(rng)
    alarms = sorted(_derived_alarms(readings) + [tuple(a) for a in EVENT_ALARMS], key=lambda a: (a[1], a[0]))
    return {
        "assets": ASSETS,
        "transformer_specs": TRANSFORMER_SPECS,
        "generator_specs": GENERATOR_SPECS,
        "ups_specs": UPS_SPECS,
        "readings": readings,
        "alarms": [(i + 1, *a) for i, a in enumerate(alarms)],
        "maintenance": [(i + 1, *m) for i, m in enumerate(MAINTENANCE)],
    }


def build_db(workspace: Path = WORKSPACE, seed: int = SEED) -> Path:
    """(Re)build ``db/command_center.db`` of ``workspace`` from its schema; returns its path."""
    target = workspace / DATABASE
    schema = (workspace / SCHEMA).read_text(encoding="utf-8")
    fd, tmp_name = tempfile.mkstemp(prefix=".command_center.", suffix=".db", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(schema)
        for table, rows in dataset(seed).items():
            if rows:
                marks = ",".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    os.replace(tmp, target)
    return target


def dump(db_path: Path) -> str:
    """The database as SQL text (``sqlite3 .dump`` equivalent), for comparing rebuilds."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump()) + "\n"
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m claude_rl.samples.build_workspace", description=__doc__)
    parser.add_argument(
        "--workspace", type=Path, default=WORKSPACE, help="workspace folder (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    path = build_db(args.workspace, args.seed)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
