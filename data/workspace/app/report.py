"""Daily report: one line per asset for one UTC day.

    python3 -m app.report --date 2026-03-09
"""

import argparse

from app import db
from app.alarms import evaluate
from app.loading import headroom_kva


def build(conn, day):
    """(tag, kind, avg load, peak load, max temp, flagged readings, headroom kVA) per asset."""
    rows = []
    for asset in conn.execute("SELECT id, tag, kind FROM assets ORDER BY id"):
        readings = [dict(r) for r in db.readings_on(conn, asset["tag"], day)]
        if not readings:
            continue
        loads = [r["load_pct"] for r in readings]
        temps = [r["temp_c"] for r in readings if r["temp_c"] is not None]
        flagged = sum(1 for r in readings if evaluate(asset["kind"], r))
        spare = None
        if asset["kind"] == "transformer":
            sql = "SELECT rating_kva FROM transformer_specs WHERE asset_id = ?"
            spare = headroom_kva(conn.execute(sql, (asset["id"],)).fetchone()[0], max(loads))
        rows.append((asset["tag"], asset["kind"], sum(loads) / len(loads), max(loads), max(temps), flagged, spare))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="app.report", description="Daily asset report")
    parser.add_argument("--date", required=True, help="UTC day, YYYY-MM-DD")
    args = parser.parse_args(argv)
    conn = db.connect()
    print(f"Daily report {args.date} (UTC)")
    print("tag    kind         avg_load  peak_load  max_temp  flagged  headroom_kva")
    for tag, kind, avg, peak, temp, flagged, spare in build(conn, args.date):
        spare_text = "-" if spare is None else f"{spare:.0f}"
        print(f"{tag:<6} {kind:<11} {avg:9.1f} {peak:10.1f} {temp:9.1f} {flagged:8d} {spare_text:>13}")
    open_alarms = conn.execute("SELECT COUNT(*) FROM alarms WHERE cleared_at IS NULL").fetchone()[0]
    print(f"open alarms (all assets): {open_alarms}")


if __name__ == "__main__":
    main()
