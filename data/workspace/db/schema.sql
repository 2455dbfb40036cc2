-- Command center asset database (SQLite). Times are UTC text: 'YYYY-MM-DD HH:MM'.
CREATE TABLE assets (
    id           INTEGER PRIMARY KEY,
    tag          TEXT NOT NULL UNIQUE,   -- TX-1, GEN-2, UPS-3
    kind         TEXT NOT NULL CHECK (kind IN ('transformer', 'generator', 'ups')),
    name         TEXT NOT NULL,
    location     TEXT NOT NULL,
    commissioned DATE NOT NULL
);

CREATE TABLE transformer_specs (
    asset_id      INTEGER PRIMARY KEY REFERENCES assets(id),
    rating_kva    REAL NOT NULL,
    primary_kv    REAL NOT NULL,
    secondary_v   REAL NOT NULL,
    cooling       TEXT NOT NULL,         -- ONAN, ONAF
    impedance_pct REAL NOT NULL
);

CREATE TABLE generator_specs (
    asset_id      INTEGER PRIMARY KEY REFERENCES assets(id),
    rating_kw     REAL NOT NULL,
    fuel          TEXT NOT NULL,
    tank_l        REAL NOT NULL,
    burn_l_per_h  REAL NOT NULL          -- at full load
);

CREATE TABLE ups_specs (
    asset_id      INTEGER PRIMARY KEY REFERENCES assets(id),
    rating_kva    REAL NOT NULL,
    battery       TEXT NOT NULL,         -- VRLA, Li-ion
    runtime_min   REAL NOT NULL          -- at full load, new battery
);

-- One row per asset every 4 hours; load_pct is % of nameplate rating.
CREATE TABLE readings (
    asset_id    INTEGER NOT NULL REFERENCES assets(id),
    taken_at    TEXT NOT NULL,
    load_pct    REAL NOT NULL,
    temp_c      REAL,                    -- oil (TX), coolant (GEN), battery (UPS)
    fuel_pct    REAL,                    -- generators only
    battery_pct REAL,                    -- UPS only, state of charge
    PRIMARY KEY (asset_id, taken_at)
);

CREATE TABLE alarms (
    id          INTEGER PRIMARY KEY,
    asset_id    INTEGER NOT NULL REFERENCES assets(id),
    raised_at   TEXT NOT NULL,
    severity    TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    code        TEXT NOT NULL,           -- LOAD_HIGH, TEMP_HIGH, FAIL_TO_START, ...
    message     TEXT NOT NULL,
    cleared_at  TEXT                     -- NULL while the alarm is open
);

CREATE TABLE maintenance (
    id          INTEGER PRIMARY KEY,
    asset_id    INTEGER NOT NULL REFERENCES assets(id),
    done_on     DATE NOT NULL,
    kind        TEXT NOT NULL,           -- inspection, oil_sample, load_test, repair, battery, refuel
    notes       TEXT NOT NULL
);
