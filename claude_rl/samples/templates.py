"""Task templates of the sample corpus.

A template is a kind of task with several instances (different assets, dates, modules). For one
instance, ``template.plan(rng, params)`` gives a ``Plan``: the user's prompt, the tool calls a
careful senior engineer would make (each with its stated reason), and ``answer(results)``, which
writes the final answer from the calls' ACTUAL results (``claude_rl.tools.runtime.ToolResult``,
in call order). Nothing in an answer is hard-coded that a tool call did not show.

Habits the templates keep: schema before query, search before edit, run after edit; tables for
comparisons; concrete numbers; ``file:line`` for code. A call's ``input`` may be a function of the
results so far (a Read at the line a Grep found). ``parallel=True`` issues a call in the same
assistant message as the previous one. ``expect`` says how the call must turn out ("error" or
"empty" for the first try of a self-correction); the generator checks it, so a change to the
workspace that breaks a template's story fails loudly.

Templates marked ``heldout`` are kept out of training (``split_hint: heldout_template``): whole
workflow patterns the model must transfer to, not instances it has seen.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from claude_rl.tools.runtime import VIRTUAL_ROOT, ToolResult

V = VIRTUAL_ROOT
DB = "db/command_center.db"
Results = Sequence[ToolResult]


@dataclass
class Call:
    tool: str
    input: dict[str, Any] | Callable[[Results], dict[str, Any]]
    reason: str | None = None
    parallel: bool = False  # issued in the same assistant message as the previous call
    expect: str = "ok"  # ok | error | empty | any
    keep_reason: bool = False  # never left unstated by the generator's sampling


@dataclass
class Plan:
    prompt: str
    calls: list[Call]
    answer: Callable[[Results], str]


@dataclass(frozen=True)
class Template:
    name: str
    category: str
    heldout: bool
    instances: tuple[dict[str, Any], ...]
    plan: Callable[[random.Random, dict[str, Any]], Plan]
    description: str = ""
    edition: int = 1  # the corpus edition that added it (see claude_rl.samples.generate)


# =============================================================================================
# Building calls


def pick(rng: random.Random, options: Sequence[Any]) -> Any:
    return options[int(rng.random() * len(options))]


def sql(query: str, description: str) -> dict[str, Any]:
    return {"command": f'sqlite3 -header -column {DB} "{query}"', "description": description}


def bash(command: str, description: str) -> dict[str, Any]:
    return {"command": command, "description": description}


def read(rel: str, offset: int | None = None, limit: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"file_path": f"{V}/{rel}"}
    if offset is not None:
        out["offset"] = offset
    if limit is not None:
        out["limit"] = limit
    return out


def grep(pattern: str, path: str | None = None, **options: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"pattern": pattern}
    if path is not None:
        out["path"] = f"{V}/{path}" if path else V
    for key, value in options.items():
        out[{"n": "-n", "i": "-i", "A": "-A", "B": "-B", "C": "-C"}.get(key, key)] = value
    return out


def schema_of(table: str, after: int = 8) -> dict[str, Any]:
    """Grep the schema for one table's definition."""
    return grep(f"CREATE TABLE {table}", "db/schema.sql", output_mode="content", A=after)


def read_at(
    index: int, needle: str, rel: str, before: int = 2, limit: int = 14
) -> Callable[[Results], dict[str, Any]]:
    """A Read of ``rel`` starting a little before the first line of results[index] that holds
    ``needle`` (a Grep content result or a numbered Read)."""

    def build(results: Results) -> dict[str, Any]:
        line = line_of(results[index].output_text, needle)
        return read(rel, max(1, line - before), limit)

    return build


# =============================================================================================
# Reading results


def rows(result: ToolResult | str) -> list[dict[str, str]]:
    """Rows of ``sqlite3 -header -column`` output (column spans from the dashes line)."""
    text = result if isinstance(result, str) else result.output_text
    lines = text.split("\n")
    if len(lines) < 2 or not lines[1].startswith("-"):
        return []
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[1])]
    names = [lines[0][a:b].strip() for a, b in spans]
    out = []
    for line in lines[2:]:
        cells = [line[a : (b if i < len(spans) - 1 else None)].strip() for i, (a, b) in enumerate(spans)]
        out.append(dict(zip(names, cells, strict=True)))
    return out


def row(result: ToolResult | str) -> dict[str, str]:
    found = rows(result)
    if not found:
        raise AssertionError(f"no rows in {result}")
    return found[0]


def num(value: str | float) -> float:
    return float(value)


def fmt(value: str | float, digits: int = 1) -> str:
    """A number as written in an answer: thousands separators, at most ``digits`` decimals."""
    x = float(value)
    if x == int(x):
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


def line_of(text: str | ToolResult, needle: str) -> int:
    """Line number of the first line holding ``needle`` in numbered Read output or Grep content."""
    body = text if isinstance(text, str) else text.output_text
    for line in body.split("\n"):
        m = re.match(r"^\s*(\d+)\t(.*)$", line)
        if m and needle in m.group(2):
            return int(m.group(1))
        m = re.match(r"^[^:\n]+?[:-](\d+)[:-](.*)$", line)
        if m and needle in m.group(2):
            return int(m.group(1))
    raise AssertionError(f"{needle!r} not found in:\n{body[:800]}")


def grep_lines(result: ToolResult) -> list[tuple[str, int, str]]:
    """(path, line, text) of each matching line of a Grep content result."""
    out = []
    for line in result.output_text.split("\n"):
        m = re.match(r"^([^:\n]+?):(\d+):(.*)$", line)
        if m:
            out.append((m.group(1), int(m.group(2)), m.group(3)))
    return out


def table(headers: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
    return "\n".join(lines)


def hm(stamp: str) -> str:
    """'2026-03-08 04:00' → '03-08 04:00'."""
    return stamp[5:] if len(stamp) >= 16 else stamp


TEMPLATES: list[Template] = []


def template(
    name: str, category: str, instances: Sequence[dict[str, Any]], heldout: bool = False, edition: int = 1
) -> Callable[
    [Callable[[random.Random, dict[str, Any]], Plan]], Callable[[random.Random, dict[str, Any]], Plan]
]:
    def register(
        fn: Callable[[random.Random, dict[str, Any]], Plan],
    ) -> Callable[[random.Random, dict[str, Any]], Plan]:
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        TEMPLATES.append(Template(name, category, heldout, tuple(instances), fn, doc, edition))
        return fn

    return register


def tag_filter(*tags: str) -> str:
    return "(" + ",".join(f"'{t}'" for t in tags) + ")"


def _pct_word(a: float, b: float) -> str:
    """'58 % more' / '12 % less': a relative to b."""
    if b == 0:
        return "n/a"
    d = (a - b) / b * 100
    return f"{abs(d):.0f} % {'more' if d >= 0 else 'less'}"


# =============================================================================================
# compare


SEED_PROMPT = "What's the difference between transformer 1 and transformer 2?"


@template("seed_transformer_compare", "compare", [{}])
def seed_transformer_compare(rng: random.Random, p: dict[str, Any]) -> Plan:
    """The seed example: TX-1 vs TX-2 (Read schema → Grep → Bash sqlite3 → Bash sqlite3)."""
    specs = (
        "SELECT a.tag, a.name, a.location, a.commissioned, t.rating_kva, t.primary_kv, t.secondary_v, "
        "t.cooling, t.impedance_pct FROM assets a JOIN transformer_specs t ON t.asset_id = a.id WHERE a.tag "
        "IN ('TX-1','TX-2');"
    )
    stats = (
        "SELECT a.tag, ROUND(AVG(r.load_pct),1) AS avg_load_pct, MAX(r.load_pct) AS peak_load_pct, "
        "ROUND(AVG(r.temp_c),1) AS avg_oil_c, MAX(r.temp_c) AS max_oil_c, (SELECT COUNT(*) FROM alarms al "
        "WHERE al.asset_id = a.id) AS alarms, (SELECT COUNT(*) FROM alarms al WHERE al.asset_id = a.id AND "
        "al.cleared_at IS NULL) AS open_alarms FROM assets a JOIN readings r ON r.asset_id = a.id WHERE "
        "a.tag IN ('TX-1','TX-2') AND r.taken_at >= '2026-03-01' AND r.taken_at < '2026-03-15' GROUP BY "
        "a.tag;"
    )
    calls = [
        Call(
            "Read",
            read("db/schema.sql"),
            "I'll start with the schema so the queries use the right tables and column names.",
            keep_reason=True,
        ),
        Call(
            "Grep",
            grep("transformer_load_pct|rating_kva", "app", output_mode="content", n=True),
            "Transformers are in `assets` + `transformer_specs`, measurements in `readings`. Before "
            "comparing load, let me check how the app defines it.",
            keep_reason=True,
        ),
        Call(
            "Bash",
            sql(specs, "Compare nameplate specs of TX-1 and TX-2"),
            "`load_pct` is kVA drawn over nameplate kVA (`app/loading.py`). Nameplate data for both units "
            "first.",
            keep_reason=True,
        ),
        Call(
            "Bash",
            sql(stats, "Compare load, oil temperature and alarms, 2026-03-01..14"),
            "Now how hard each one works: load, oil temperature and alarms over the two weeks of readings.",
            keep_reason=True,
        ),
    ]

    def answer(r: Results) -> str:
        s = {x["tag"]: x for x in rows(r[2])}
        o = {x["tag"]: x for x in rows(r[3])}
        a, b, oa, ob = s["TX-1"], s["TX-2"], o["TX-1"], o["TX-2"]
        ra, rb = num(a["rating_kva"]), num(b["rating_kva"])
        peak_a = ra * num(oa["peak_load_pct"]) / 100
        peak_b = rb * num(ob["peak_load_pct"]) / 100
        line = line_of(r[1], "def transformer_load_pct")
        body = [
            ("Location", a["location"], b["location"]),
            ("Commissioned", a["commissioned"], b["commissioned"]),
            ("Rating", f"{fmt(ra)} kVA", f"{fmt(rb)} kVA"),
            (
                "Voltage",
                f"{a['primary_kv']} kV / {fmt(a['secondary_v'])} V",
                f"{b['primary_kv']} kV / {fmt(b['secondary_v'])} V",
            ),
            ("Cooling", a["cooling"], b["cooling"]),
            ("Impedance", f"{a['impedance_pct']} %", f"{b['impedance_pct']} %"),
            ("Avg load (03-01..14)", f"{oa['avg_load_pct']} %", f"{ob['avg_load_pct']} %"),
            (
                "Peak load",
                f"{oa['peak_load_pct']} % ({fmt(peak_a, 0)} kVA)",
                f"{ob['peak_load_pct']} % ({fmt(peak_b, 0)} kVA)",
            ),
            (
                "Avg / max oil temp",
                f"{oa['avg_oil_c']} / {oa['max_oil_c']} °C",
                f"{ob['avg_oil_c']} / {ob['max_oil_c']} °C",
            ),
            (
                "Alarms (open)",
                f"{oa['alarms']} ({oa['open_alarms']})",
                f"{ob['alarms']} ({ob['open_alarms']})",
            ),
        ]
        hotter = num(ob["avg_oil_c"]) - num(oa["avg_oil_c"])
        return (
            f"**TX-1 vs TX-2: both are {a['primary_kv']} kV → {fmt(a['secondary_v'])} V main service "
            "transformers; they differ in size, cooling and how hard they work.**\n\n"
            + table(["", "TX-1", "TX-2"], body)
            + f"\n\n**What matters:** TX-2 is the smaller ({fmt(rb)} vs {fmt(ra)} kVA), newer, fan-cooled "
            f"unit and it runs much closer to its rating: average {ob['avg_load_pct']} % vs "
            f"{oa['avg_load_pct']} %, peak {ob['peak_load_pct']} %, oil {hotter:.1f} °C hotter on average, "
            f"and {ob['alarms']} alarms against {oa['alarms']} ({ob['open_alarms']} still open). TX-1 "
            f"carries more kVA in absolute terms but keeps about {fmt(ra - peak_a, 0)} kVA of headroom at "
            f"its peak; TX-2 had {fmt(rb - peak_b, 0)} kVA. Moving some of TX-2's feeders to TX-1 would "
            "bring both into a comfortable range.\n\nLoad % is kVA drawn over nameplate kVA, as in "
            f"`app/loading.py:{line}` (`transformer_load_pct`, power factor 0.9)."
        )

    return Plan(SEED_PROMPT, calls, answer)


_SPEC_QUERIES = {
    "transformer": (
        "transformer_specs",
        "SELECT a.tag, a.commissioned, t.rating_kva, t.cooling, t.impedance_pct FROM assets a JOIN "
        "transformer_specs t ON t.asset_id = a.id WHERE a.tag IN {tags};",
        "SELECT a.tag, COUNT(*) AS n, ROUND(AVG(r.load_pct),1) AS avg_load, MAX(r.load_pct) AS peak_load, "
        "MAX(r.temp_c) AS max_oil_c, (SELECT COUNT(*) FROM alarms al WHERE al.asset_id = a.id) AS alarms "
        "FROM assets a JOIN readings r ON r.asset_id = a.id WHERE a.tag IN {tags} GROUP BY a.tag;",
    ),
    "generator": (
        "generator_specs",
        "SELECT a.tag, a.commissioned, g.rating_kw, g.tank_l, g.burn_l_per_h FROM assets a JOIN "
        "generator_specs g ON g.asset_id = a.id WHERE a.tag IN {tags};",
        "SELECT a.tag, SUM(r.load_pct > 0) AS readings_running, MAX(r.load_pct) AS peak_load, "
        "MIN(r.fuel_pct) AS min_fuel, (SELECT COUNT(*) FROM alarms al WHERE al.asset_id = a.id AND "
        "al.severity != 'info') AS alarms FROM assets a JOIN readings r ON r.asset_id = a.id WHERE a.tag IN "
        "{tags} GROUP BY a.tag;",
    ),
    "ups": (
        "ups_specs",
        "SELECT a.tag, a.location, a.commissioned, u.rating_kva, u.battery, u.runtime_min FROM assets a "
        "JOIN ups_specs u ON u.asset_id = a.id WHERE a.tag IN {tags};",
        "SELECT a.tag, ROUND(AVG(r.load_pct),1) AS avg_load, MAX(r.load_pct) AS peak_load, "
        "MIN(r.battery_pct) AS min_battery, MAX(r.temp_c) AS max_room_c, (SELECT COUNT(*) FROM alarms al "
        "WHERE al.asset_id = a.id AND al.severity != 'info') AS alarms FROM assets a JOIN readings r ON "
        "r.asset_id = a.id WHERE a.tag IN {tags} GROUP BY a.tag;",
    ),
}
_KIND = {"TX": "transformer", "GEN": "generator", "UPS": "ups"}


@template(
    "compare_assets",
    "compare",
    [
        {"a": "TX-1", "b": "TX-3", "prompt": "Compare TX-1 and TX-3."},
        {"a": "TX-2", "b": "TX-3", "prompt": "How does TX-3 differ from TX-2?"},
        {"a": "TX-1", "b": "TX-3", "prompt": "TX-1 vs TX-3: which one has more room for extra load?"},
        {"a": "GEN-1", "b": "GEN-2", "prompt": "Compare the two standby generators, GEN-1 and GEN-2."},
        {"a": "GEN-1", "b": "GEN-2", "prompt": "GEN-1 vs GEN-2: which one is in better shape?"},
        {"a": "UPS-1", "b": "UPS-2", "prompt": "Compare UPS-1 and UPS-2."},
        {"a": "UPS-1", "b": "UPS-3", "prompt": "What's the difference between UPS-1 and UPS-3?"},
        {"a": "UPS-2", "b": "UPS-3", "prompt": "Contrast UPS-2 with UPS-3, as a table."},
    ],
)
def compare_assets(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Two assets of one kind side by side: spec table, operating figures, (generators) maintenance."""
    a, b = p["a"], p["b"]
    kind = _KIND[a.split("-")[0]]
    spec_table, spec_q, stats_q = _SPEC_QUERIES[kind]
    tags = tag_filter(a, b)
    parallel = rng.random() < 0.5
    calls = [
        Call(
            "Grep",
            schema_of(spec_table, 6),
            pick(
                rng,
                [
                    f"Check the `{spec_table}` columns before querying.",
                    "Schema first, so the column names are right.",
                ],
            ),
        ),
        Call(
            "Bash",
            sql(spec_q.format(tags=tags), f"Nameplate data of {a} and {b}"),
            f"Nameplate data for {a} and {b}"
            + (", and their operating figures in the same message." if parallel else "."),
        ),
        Call(
            "Bash",
            sql(stats_q.format(tags=tags), f"Operating figures of {a} and {b}"),
            None if parallel else "Now how they have been running: loads, extremes and alarms.",
            parallel=parallel,
        ),
    ]
    if kind == "generator":
        maint = (
            "SELECT a.tag, m.done_on, m.kind, m.notes FROM maintenance m JOIN assets a ON a.id = m.asset_id "
            f"WHERE a.tag IN {tags} ORDER BY m.done_on;"
        )
        calls.append(
            Call(
                "Bash",
                sql(maint, "Maintenance history of both generators"),
                "Maintenance history matters for standby units.",
            )
        )

    def answer(r: Results) -> str:
        s = {x["tag"]: x for x in rows(r[1])}
        o = {x["tag"]: x for x in rows(r[2])}
        sa, sb, oa, ob = s[a], s[b], o[a], o[b]
        if kind == "transformer":
            ra, rb = num(sa["rating_kva"]), num(sb["rating_kva"])
            room_a = ra * (100 - num(oa["peak_load"])) / 100
            room_b = rb * (100 - num(ob["peak_load"])) / 100
            body = [
                ("Commissioned", sa["commissioned"], sb["commissioned"]),
                ("Rating", f"{fmt(ra)} kVA", f"{fmt(rb)} kVA"),
                ("Cooling", sa["cooling"], sb["cooling"]),
                ("Impedance", f"{sa['impedance_pct']} %", f"{sb['impedance_pct']} %"),
                (
                    "Avg / peak load",
                    f"{oa['avg_load']} / {oa['peak_load']} %",
                    f"{ob['avg_load']} / {ob['peak_load']} %",
                ),
                ("Headroom at peak", f"{fmt(room_a, 0)} kVA", f"{fmt(room_b, 0)} kVA"),
                ("Max oil temp", f"{oa['max_oil_c']} °C", f"{ob['max_oil_c']} °C"),
                ("Alarms", oa["alarms"], ob["alarms"]),
            ]
            more = a if room_a >= room_b else b
            notes = (
                f"{more} has more room for extra load: {fmt(max(room_a, room_b), 0)} kVA spare at its peak "
                f"vs {fmt(min(room_a, room_b), 0)} kVA. {a} averages {oa['avg_load']} % of {fmt(ra)} kVA, "
                f"{b} {ob['avg_load']} % of {fmt(rb)} kVA, over {oa['n']} readings each (every 4 h)."
            )
        elif kind == "generator":
            maint_rows = rows(r[3])
            last = {t: [m for m in maint_rows if m["tag"] == t][-1] for t in (a, b)}
            body = [
                ("Commissioned", sa["commissioned"], sb["commissioned"]),
                ("Rating", f"{fmt(sa['rating_kw'])} kW", f"{fmt(sb['rating_kw'])} kW"),
                (
                    "Tank / burn at full load",
                    f"{fmt(sa['tank_l'])} l / {fmt(sa['burn_l_per_h'])} l/h",
                    f"{fmt(sb['tank_l'])} l / {fmt(sb['burn_l_per_h'])} l/h",
                ),
                ("Readings under load", oa["readings_running"], ob["readings_running"]),
                ("Peak load", f"{oa['peak_load']} %", f"{ob['peak_load']} %"),
                ("Lowest fuel", f"{oa['min_fuel']} %", f"{ob['min_fuel']} %"),
                ("Warning/critical alarms", oa["alarms"], ob["alarms"]),
                (
                    "Last maintenance",
                    f"{last[a]['done_on']} {last[a]['kind']}",
                    f"{last[b]['done_on']} {last[b]['kind']}",
                ),
            ]
            repairs = [m for m in maint_rows if m["kind"] == "repair"]
            full_a = num(sa["tank_l"]) / num(sa["burn_l_per_h"])
            full_b = num(sb["tank_l"]) / num(sb["burn_l_per_h"])
            notes = (
                f"{a} is the bigger set and burns faster: a full tank lasts about {full_a:.1f} h at full "
                f"load vs {full_b:.1f} h for {b}."
            )
            if repairs:
                bad = repairs[0]["tag"]
                good = b if bad == a else a
                low = oa if good == a else ob
                refuelled = any(m["tag"] == good and m["kind"] == "refuel" for m in maint_rows)
                notes += (
                    f"\n\n**Shape:** {good} has the cleaner record. {bad} needed a repair on "
                    f"{repairs[0]['done_on']}: {repairs[0]['notes']}. {good}'s only issue was fuel, down to "
                    f"{low['min_fuel']} % at its lowest{', since refuelled' if refuelled else ''}."
                )
        else:
            ra, rb = num(sa["rating_kva"]), num(sb["rating_kva"])
            body = [
                ("Location", sa["location"], sb["location"]),
                ("Commissioned", sa["commissioned"], sb["commissioned"]),
                ("Rating", f"{fmt(ra)} kVA", f"{fmt(rb)} kVA"),
                (
                    "Battery / runtime at full load",
                    f"{sa['battery']}, {fmt(sa['runtime_min'])} min",
                    f"{sb['battery']}, {fmt(sb['runtime_min'])} min",
                ),
                (
                    "Avg / peak load",
                    f"{oa['avg_load']} / {oa['peak_load']} %",
                    f"{ob['avg_load']} / {ob['peak_load']} %",
                ),
                ("Lowest charge", f"{oa['min_battery']} %", f"{ob['min_battery']} %"),
                ("Max room temp", f"{oa['max_room_c']} °C", f"{ob['max_room_c']} °C"),
                ("Warning/critical alarms", oa["alarms"], ob["alarms"]),
            ]
            weak = a if num(oa["min_battery"]) < num(ob["min_battery"]) else b
            wo = oa if weak == a else ob
            notes = (
                f"{a} carries about {fmt(ra * num(oa['avg_load']) / 100, 0)} kVA on average, {b} about "
                f"{fmt(rb * num(ob['avg_load']) / 100, 0)} kVA. The battery to watch is {weak}'s: its charge "
                f"dropped to {wo['min_battery']} %."
            )
        return f"**{a} vs {b}**\n\n" + table(["", a, b], body) + f"\n\n{notes}"

    return Plan(p["prompt"], calls, answer)


_METRICS = {
    # metric: (column, label, unit, limit for the "at or over" count)
    "load": ("load_pct", "load", "%", {"transformer": 85, "ups": 80}),
    "temp": ("temp_c", "oil temperature", "°C", {"transformer": 75}),
}


@template(
    "compare_periods",
    "compare",
    [
        {
            "tag": "TX-2",
            "metric": "load",
            "prompt": "Compare TX-2's load in the first week of March with the second week.",
        },
        {
            "tag": "TX-1",
            "metric": "load",
            "prompt": "How does TX-1's load in week 1 (Mar 1-7) compare with week 2 (Mar 8-14)?",
        },
        {
            "tag": "TX-3",
            "metric": "load",
            "prompt": "Compare TX-3's loading between the two weeks of March we have data for.",
        },
        {
            "tag": "TX-2",
            "metric": "temp",
            "prompt": "Compare TX-2's oil temperature in week 1 of March with week 2.",
        },
        {
            "tag": "TX-1",
            "metric": "temp",
            "prompt": "Was TX-1's oil hotter in the first or the second week of March? Compare them.",
        },
        {
            "tag": "UPS-2",
            "metric": "load",
            "prompt": "Compare UPS-2's load between the first and second week of March.",
        },
        {"tag": "UPS-1", "metric": "load", "prompt": "UPS-1 load, week 1 vs week 2 of March: any change?"},
    ],
    heldout=True,
)
def compare_periods(rng: random.Random, p: dict[str, Any]) -> Plan:
    """One asset, two periods: readings schema + thresholds in parallel, a grouped query, outliers."""
    tag, metric = p["tag"], p["metric"]
    kind = _KIND[tag.split("-")[0]]
    col, label, unit, limits = _METRICS[metric]
    limit = limits[kind]
    key = "load_warn_pct" if metric == "load" else "temp_warn_c"
    grouped = (
        "SELECT CASE WHEN r.taken_at < '2026-03-08' THEN 'week 1' ELSE 'week 2' END AS period, COUNT(*) AS "
        f"n, ROUND(AVG(r.{col}),1) AS avg, MIN(r.{col}) AS min, MAX(r.{col}) AS max, SUM(r.{col} >= {limit}) "
        f"AS at_or_over_{limit} FROM readings r JOIN assets a ON a.id = r.asset_id WHERE a.tag = '{tag}' AND "
        "r.taken_at >= '2026-03-01' AND r.taken_at < '2026-03-15' GROUP BY period;"
    )
    outliers = (
        "SELECT r.taken_at, r.load_pct, r.temp_c FROM readings r JOIN assets a ON a.id = r.asset_id WHERE "
        f"a.tag = '{tag}' AND r.taken_at >= '2026-03-08' AND r.taken_at < '2026-03-15' ORDER BY r.{col} "
        "LIMIT 3;"
    )
    calls = [
        Call(
            "Grep",
            schema_of("readings", 7),
            "I need the readings columns and the warning limit for this kind; fetching both at once.",
        ),
        Call(
            "Grep", grep(f"^\\[|{key}", "config/thresholds.ini", output_mode="content"), None, parallel=True
        ),
        Call(
            "Bash",
            sql(grouped, f"{tag} {label} by week"),
            "Week 1 = 03-01..03-07, week 2 = 03-08..03-14. Grouping in SQL, with a count of readings at or "
            f"over the {limit} {unit} warning limit.",
        ),
        Call(
            "Bash",
            sql(outliers, f"Lowest week-2 {label} readings of {tag}"),
            "Before reading anything into the averages, check week 2's lowest readings for outliers.",
        ),
    ]

    def answer(r: Results) -> str:
        g = {x["period"]: x for x in rows(r[2])}
        w1, w2 = g["week 1"], g["week 2"]
        low = rows(r[3])
        d = num(w2["avg"]) - num(w1["avg"])
        over = f"at_or_over_{limit}"
        body = [
            ("Readings", w1["n"], w2["n"]),
            (f"Average {label}", f"{w1['avg']} {unit}", f"{w2['avg']} {unit}"),
            ("Min / max", f"{w1['min']} / {w1['max']} {unit}", f"{w2['min']} / {w2['max']} {unit}"),
            (f"Readings ≥ {limit} {unit}", w1[over], w2[over]),
        ]
        text = f"**{tag} {label}: week 1 (03-01..07) vs week 2 (03-08..14)**\n\n" + table(
            ["", "Week 1", "Week 2"], body
        )
        zeros = [x for x in low if num(x["load_pct"]) == 0]
        n2 = int(w2["n"])
        if zeros:
            rest = [x for x in low if num(x["load_pct"]) > 0]
            when = " and ".join(hm(x["taken_at"]) for x in zeros)
            text += (
                f"\n\nWeek 2 contains {len(zeros)} readings at 0 % load ({when}): the unit was de-energised "
                "then, so they are not operating data."
            )
            if metric == "load":
                adjusted = (num(w2["avg"]) * n2) / (n2 - len(zeros))
                d = adjusted - num(w1["avg"])
                text += f" Without them week 2 averages about {adjusted:.1f} %."
            else:
                text += f" Its lowest real reading was {rest[0]['temp_c'] if rest else '?'} °C."
        else:
            text += (
                f"\n\nNo outliers in week 2: its lowest readings were {', '.join(x[col] for x in low)} "
                f"{unit}."
            )
        if metric == "load" or not zeros:
            verdict = (
                "essentially unchanged"
                if abs(d) < 1.5
                else ("higher in week 2" if d > 0 else "lower in week 2")
            )
            text += (
                f" Overall the {label} is {verdict} ({d:+.1f} {'points' if unit == '%' else unit} on the "
                "average)."
            )
        else:
            verdict = "higher" if num(w2["max"]) > num(w1["max"]) else "lower"
            text += f" The peak was {verdict} in week 2 ({w2['max']} vs {w1['max']} °C)."
        text += f" The warning limit used for the count is `{key} = {limit}` in config/thresholds.ini."
        return text

    return Plan(p["prompt"], calls, answer)


# =============================================================================================
# lookup

_READING_LABELS = {
    "temp_c": {
        "TX": ("oil temperature", "°C"),
        "GEN": ("coolant temperature", "°C"),
        "UPS": ("battery room temperature", "°C"),
    },
    "load_pct": {"": ("load", "%")},
    "fuel_pct": {"": ("fuel level", "%")},
    "battery_pct": {"": ("battery charge", "%")},
}


def _reading_label(col: str, tag: str) -> tuple[str, str]:
    labels = _READING_LABELS[col]
    return labels.get(tag.split("-")[0]) or labels[""]


@template(
    "lookup_reading",
    "lookup",
    [
        {"tag": "TX-3", "at": "2026-03-07 12:00", "col": "temp_c", "wrong": "oil_temp_c", "form": 0},
        {"tag": "UPS-2", "at": "2026-03-04 08:00", "col": "load_pct", "form": 1},
        {"tag": "GEN-1", "at": "2026-03-08 12:00", "col": "fuel_pct", "wrong": "fuel_level", "form": 0},
        {"tag": "UPS-3", "at": "2026-03-08 04:00", "col": "battery_pct", "form": 2},
        {"tag": "TX-1", "at": "2026-03-10 16:00", "col": "load_pct", "wrong": "load", "form": 1},
        {"tag": "TX-2", "at": "2026-03-11 12:00", "col": "temp_c", "iso": True, "form": 0},
        {"tag": "GEN-2", "at": "2026-03-08 08:00", "col": "load_pct", "form": 2},
        {"tag": "UPS-1", "at": "2026-03-08 04:00", "col": "battery_pct", "wrong": "soc_pct", "form": 0},
        {"tag": "TX-2", "at": "2026-03-02 12:00", "col": "load_pct", "wrong_time": "timestamp", "form": 1},
        {"tag": "GEN-2", "at": "2026-03-03 12:00", "col": "temp_c", "form": 0},
        {"tag": "TX-3", "at": "2026-03-13 16:00", "col": "load_pct", "iso": True, "form": 2},
        {"tag": "UPS-3", "at": "2026-03-12 20:00", "col": "temp_c", "form": 1},
    ],
)
def lookup_reading(rng: random.Random, p: dict[str, Any]) -> Plan:
    """One reading of one asset at one time; some instances first get a column or the time format wrong."""
    tag, at, col = p["tag"], p["at"], p["col"]
    label, unit = _reading_label(col, tag)
    prompt = [
        f"What was {tag}'s {label} at {at}, according to the database?",
        f"Query the {label} of {tag} at {at}.",
        f"Look up {tag}'s {label} reading for {at}.",
    ][p["form"]]
    extra = "r.load_pct" if col != "load_pct" else "r.temp_c"

    def query(column: str = col, time_col: str = "taken_at", stamp: str = at) -> str:
        return (
            f"SELECT r.{time_col}, r.{column}, {extra} FROM readings r JOIN assets a ON a.id = r.asset_id "
            f"WHERE a.tag = '{tag}' AND r.{time_col} = '{stamp}';"
        )

    desc = f"{tag} {label} at {at}"
    schema = Call("Grep", schema_of("readings", 7), "Check the readings columns first.")
    calls: list[Call]
    if p.get("wrong") or p.get("wrong_time"):
        wrong_col = p.get("wrong", col)
        wrong_time = p.get("wrong_time", "taken_at")
        bad = wrong_col if p.get("wrong") else wrong_time
        right = col if p.get("wrong") else "taken_at"
        calls = [
            Call(
                "Bash",
                sql(query(wrong_col, wrong_time), desc),
                pick(rng, ["A quick query should do it.", f"Querying the readings table for {tag} at {at}."]),
                expect="error",
            ),
            Call(
                "Grep",
                schema_of("readings", 7),
                f"No column `{bad}`. Checking the readings table definition instead of guessing again.",
                keep_reason=True,
            ),
            Call(
                "Bash",
                sql(query(), desc),
                f"The column is `{right}`, not `{bad}`. Rerunning with the right name.",
                keep_reason=True,
            ),
        ]
    elif p.get("iso"):
        iso = at.replace(" ", "T")
        calls = [
            schema,
            Call("Bash", sql(query(stamp=iso), desc), f"Reading for {tag} at {iso}.", expect="empty"),
            Call(
                "Bash",
                sql("SELECT taken_at FROM readings LIMIT 2;", "Sample the stored timestamp format"),
                "No rows, yet the data should cover that time. Checking how `taken_at` is stored.",
                keep_reason=True,
            ),
            Call(
                "Bash",
                sql(query(), desc),
                "Timestamps are stored as 'YYYY-MM-DD HH:MM' with a space, not ISO 'T'. Rerunning with that "
                "format.",
                keep_reason=True,
            ),
        ]
    else:
        calls = [
            schema,
            Call("Bash", sql(query(), desc), pick(rng, ["Now the reading itself.", f"Query {tag} at {at}."])),
        ]

    def answer(r: Results) -> str:
        x = row(r[-1])
        value = x[col]
        other = "load" if col != "load_pct" else "oil temperature" if tag.startswith("TX") else "temperature"
        other_value = x["load_pct"] if col != "load_pct" else x["temp_c"]
        other_unit = "%" if col != "load_pct" else "°C"
        text = (
            f"{tag}'s {label} at {at} was **{value} {unit}** ({other} {other_value} {other_unit} in the same "
            "reading)."
        )
        if p.get("iso"):
            text += (
                "\n\nNote: `taken_at` is text in 'YYYY-MM-DD HH:MM' form, so an ISO 'T' timestamp matches "
                "nothing."
            )
        elif p.get("wrong") or p.get("wrong_time"):
            text += f"\n\n(Column names: readings use `{col}` and `taken_at`.)"
        return text

    return Plan(prompt, calls, answer)


@template(
    "lookup_alarms",
    "lookup",
    [
        {"case": "tx2_week1"},
        {"case": "critical"},
        {"case": "open"},
        {"case": "on_battery"},
        {"case": "warnings_per_asset"},
        {"case": "fuel"},
        {"case": "on_day"},
        {"case": "duration"},
        {"case": "per_severity"},
        {"case": "generators"},
    ],
)
def lookup_alarms(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Counting and listing alarms; three instances first get a value or the time format wrong."""
    case = p["case"]
    join = "FROM alarms al JOIN assets a ON a.id = al.asset_id"
    schema = Call(
        "Grep",
        schema_of("alarms", 8),
        pick(rng, ["Check the alarms table first.", "Alarm columns first, so the query is right."]),
    )
    calls: list[Call] = [schema]
    prompt = ""
    answer: Callable[[Results], str]
    if case == "tx2_week1":
        prompt = "How many alarms did TX-2 raise in the first week of March?"
        q = (
            f"SELECT al.code, al.severity, COUNT(*) AS n {join} WHERE a.tag = 'TX-2' AND al.raised_at >= "
            "'2026-03-01' AND al.raised_at < '2026-03-08' GROUP BY al.code, al.severity;"
        )
        calls.append(
            Call(
                "Bash",
                sql(q, "TX-2 alarms 03-01..03-07 by code"),
                "Count by code and severity for 03-01..03-07.",
            )
        )

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            total = sum(int(x["n"]) for x in xs)
            return f"TX-2 raised **{total} alarms** from 2026-03-01 to 03-07:\n\n" + table(
                ["Code", "Severity", "Count"], [(x["code"], x["severity"], x["n"]) for x in xs]
            )

    elif case == "critical":
        prompt = "How many critical alarms were raised between 2026-03-01 and 2026-03-14?"
        base = f"SELECT a.tag, al.raised_at, al.code {join} WHERE al.severity = '{{sev}}' " + (
            "AND al.raised_at >= '2026-03-01' AND al.raised_at < '2026-03-15' ORDER BY al.raised_at;"
        )
        calls = [  # straight to the query; the schema's CHECK constraint would have shown the casing
            Call(
                "Bash",
                sql(base.format(sev="Critical"), "Critical alarms 03-01..03-14"),
                "Listing them, not just counting.",
                expect="empty",
            ),
            Call(
                "Bash",
                sql("SELECT DISTINCT severity FROM alarms;", "Distinct severity values"),
                "Nothing came back, which is suspicious for two weeks. Checking the stored severity values.",
                keep_reason=True,
            ),
            Call(
                "Bash",
                sql(base.format(sev="critical"), "Critical alarms 03-01..03-14"),
                "Severities are lowercase. Rerunning with 'critical'.",
                keep_reason=True,
            ),
        ]

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            return (
                f"**{len(xs)} critical alarms** between 2026-03-01 and 2026-03-14:\n\n"
                + table(["Asset", "Raised", "Code"], [(x["tag"], x["raised_at"], x["code"]) for x in xs])
                + "\n\n(Severities are stored lowercase: `info`, `warning`, `critical`.)"
            )

    elif case == "open":
        prompt = "Query the alarms that are still open."
        q = (
            f"SELECT al.id, a.tag, al.raised_at, al.severity, al.code, al.message {join} WHERE al.cleared_at "
            "IS NULL ORDER BY al.raised_at;"
        )
        calls.append(Call("Bash", sql(q, "Open alarms"), "Open means `cleared_at IS NULL`."))

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            return f"**{len(xs)} alarms are open:**\n\n" + table(
                ["Id", "Asset", "Raised", "Severity", "Code", "Message"],
                [(x["id"], x["tag"], x["raised_at"], x["severity"], x["code"], x["message"]) for x in xs],
            )

    elif case == "on_battery":
        prompt = "How many times did the UPS units go on battery?"
        q = (
            "SELECT a.tag, COUNT(*) AS n, MIN(al.raised_at) AS first, MAX(al.cleared_at) AS last_cleared "
            f"{join} WHERE al.code = 'ON_BATTERY' GROUP BY a.tag;"
        )
        calls.append(Call("Bash", sql(q, "ON_BATTERY alarms per UPS"), "ON_BATTERY alarms, per unit."))

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            total = sum(int(x["n"]) for x in xs)
            same = len({x["first"] for x in xs}) == 1
            text = f"**{total} times in total**, " + ", ".join(f"{x['tag']} {x['n']}" for x in xs) + ".\n\n"
            text += table(
                ["UPS", "Count", "First", "Cleared"],
                [(x["tag"], x["n"], x["first"], x["last_cleared"]) for x in xs],
            )
            if same:
                text += (
                    f"\n\nAll of them went on battery at the same moment ({xs[0]['first']}), one site-wide "
                    "event."
                )
            return text

    elif case == "warnings_per_asset":
        prompt = "Count the warnings per asset for 2026-03-01 to 2026-03-14."
        q = (
            f"SELECT a.tag, COUNT(*) AS warnings, GROUP_CONCAT(DISTINCT al.code) AS codes {join} WHERE "
            "al.severity = 'warning' AND al.raised_at >= '2026-03-01' AND al.raised_at < '2026-03-15' GROUP "
            "BY a.tag ORDER BY warnings DESC;"
        )
        calls.append(Call("Bash", sql(q, "Warnings per asset 03-01..03-14"), "Group the warnings by asset."))

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            total = sum(int(x["warnings"]) for x in xs)
            top = xs[0]
            return (
                f"{total} warnings in the period:\n\n"
                + table(["Asset", "Warnings", "Codes"], [(x["tag"], x["warnings"], x["codes"]) for x in xs])
                + f"\n\n{top['tag']} accounts for {int(top['warnings']) * 100 // total} % of them. Assets "
                "not listed had none."
            )

    elif case == "fuel":
        prompt = "How many FUEL alarms has GEN-1 had?"
        base = (
            f"SELECT al.raised_at, al.code, al.message, al.cleared_at {join} WHERE a.tag = 'GEN-1' AND "
            "al.code = '{code}';"
        )
        calls += [
            Call(
                "Bash",
                sql(base.format(code="FUEL"), "GEN-1 fuel alarms"),
                "Filter on the fuel code.",
                expect="empty",
            ),
            Call(
                "Bash",
                sql("SELECT DISTINCT code FROM alarms ORDER BY code;", "Distinct alarm codes"),
                "No rows. The code is probably spelled differently; listing the codes in use.",
                keep_reason=True,
            ),
            Call(
                "Bash",
                sql(base.format(code="FUEL_LOW"), "GEN-1 FUEL_LOW alarms"),
                "The code is `FUEL_LOW`. Rerunning with it.",
                keep_reason=True,
            ),
        ]

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            x = xs[0]
            return (
                f"GEN-1 has had **{len(xs)} fuel alarm{'s' if len(xs) != 1 else ''}** (code `FUEL_LOW`): "
                f"raised {x['raised_at']} ({x['message']}), cleared {x['cleared_at']}."
            )

    elif case == "on_day":
        prompt = "Look up every alarm raised on 2026-03-08."
        base = (
            f"SELECT a.tag, al.raised_at, al.severity, al.code, al.cleared_at {join} WHERE {{cond}} ORDER BY "
            "al.raised_at, a.tag;"
        )
        calls += [
            Call(
                "Bash",
                sql(base.format(cond="al.raised_at = '2026-03-08'"), "Alarms raised on 2026-03-08"),
                "Alarms for that day.",
                expect="empty",
            ),
            Call(
                "Bash",
                sql(base.format(cond="date(al.raised_at) = '2026-03-08'"), "Alarms raised on 2026-03-08"),
                "`raised_at` holds a time too, so equality with a bare date matches nothing. Using "
                "date(raised_at).",
                keep_reason=True,
            ),
        ]

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            early = [x for x in xs if x["raised_at"] < "2026-03-08 04:00"]
            return (
                f"**{len(xs)} alarms** were raised on 2026-03-08:\n\n"
                + table(
                    ["Asset", "Raised", "Severity", "Code", "Cleared"],
                    [
                        (x["tag"], x["raised_at"], x["severity"], x["code"], x["cleared_at"] or "open")
                        for x in xs
                    ],
                )
                + f"\n\n{len(early)} of them came within two minutes of 03:52: one supply-loss event hitting "
                "every asset."
            )

    elif case == "duration":
        prompt = "How long was TX-2's critical LOAD_HIGH alarm open? Check the database."
        q = (
            "SELECT al.raised_at, al.cleared_at, ROUND((julianday(al.cleared_at) - julianday(al.raised_at)) "
            f"* 1440) AS minutes, al.message {join} WHERE a.tag = 'TX-2' AND al.code = 'LOAD_HIGH' AND "
            "al.severity = 'critical';"
        )
        calls.append(
            Call(
                "Bash",
                sql(q, "Duration of TX-2 critical LOAD_HIGH"),
                "Compute the open time in SQL with julianday().",
            )
        )

        def answer(r: Results) -> str:
            x = row(r[-1])
            minutes = int(num(x["minutes"]))
            return (
                f"**{minutes // 60} h {minutes % 60:02d} min**: raised {x['raised_at']} ({x['message']}), "
                f"cleared {x['cleared_at']}. The readings are 4 h apart, so the alarm clears at the first "
                "reading back under the limit; the real excursion may have been shorter."
            )

    elif case == "per_severity":
        prompt = "What's the total number of alarms per severity?"
        q = (
            "SELECT severity, COUNT(*) AS n, SUM(cleared_at IS NULL) AS still_open FROM alarms GROUP BY "
            "severity ORDER BY n DESC;"
        )
        calls.append(Call("Bash", sql(q, "Alarms per severity"), "Group by severity, with the open ones."))

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            total = sum(int(x["n"]) for x in xs)
            return f"{total} alarms in total:\n\n" + table(
                ["Severity", "Alarms", "Still open"], [(x["severity"], x["n"], x["still_open"]) for x in xs]
            )

    else:  # generators
        prompt = "How many alarms did the generators raise, and with which codes?"
        q = (
            f"SELECT a.tag, al.code, al.severity, al.raised_at {join} WHERE a.kind = 'generator' ORDER BY "
            "al.raised_at;"
        )
        calls.append(
            Call("Bash", sql(q, "Generator alarms"), "Generators are `kind = 'generator'` in assets.")
        )

        def answer(r: Results) -> str:
            xs = rows(r[-1])
            real = [x for x in xs if x["severity"] != "info"]
            return (
                f"The generators raised **{len(xs)} alarms**, {len(real)} of them warning or critical:\n\n"
                + table(
                    ["Asset", "Code", "Severity", "Raised"],
                    [(x["tag"], x["code"], x["severity"], x["raised_at"]) for x in xs],
                )
            )

    return Plan(prompt, calls, answer)


@template(
    "lookup_maintenance",
    "lookup",
    [
        {"case": "gen2_last"},
        {"case": "ups3_history"},
        {"case": "tx2_oil"},
        {"case": "per_kind"},
        {"case": "march"},
        {"case": "tx1_inspected"},
    ],
)
def lookup_maintenance(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Maintenance log questions: `.schema maintenance`, then one query."""
    case = p["case"]
    join = "FROM maintenance m JOIN assets a ON a.id = m.asset_id"
    schema = Call(
        "Bash",
        {"command": f'sqlite3 {DB} ".schema maintenance"', "description": "Show the maintenance table"},
        pick(rng, ["Check the maintenance table's columns first.", "Schema of the maintenance table first."]),
    )
    prompt, q, why = "", "", ""
    if case == "gen2_last":
        prompt = "Look up when GEN-2 was last serviced, and what was done."
        q = f"SELECT m.done_on, m.kind, m.notes {join} WHERE a.tag = 'GEN-2' ORDER BY m.done_on DESC LIMIT 3;"
        why = "Latest entries first; a few, to see what counts as service."
    elif case == "ups3_history":
        prompt = "Look up the maintenance history of UPS-3."
        q = f"SELECT m.done_on, m.kind, m.notes {join} WHERE a.tag = 'UPS-3' ORDER BY m.done_on;"
        why = "All entries for UPS-3, oldest first."
    elif case == "tx2_oil":
        prompt = "What is the latest oil sample result for TX-2?"
        q = (
            f"SELECT m.done_on, m.notes {join} WHERE a.tag = 'TX-2' AND m.kind = 'oil_sample' ORDER BY "
            "m.done_on DESC LIMIT 1;"
        )
        why = "Oil samples are `kind = 'oil_sample'`."
    elif case == "per_kind":
        prompt = "How many maintenance jobs were logged per asset kind?"
        q = (
            f"SELECT a.kind, COUNT(*) AS jobs, MAX(m.done_on) AS latest {join} GROUP BY a.kind ORDER BY jobs "
            "DESC;"
        )
        why = "Group by the asset's kind."
    elif case == "march":
        prompt = "Query the maintenance log for everything done in March 2026."
        q = (
            f"SELECT a.tag, m.done_on, m.kind, m.notes {join} WHERE m.done_on >= '2026-03-01' AND m.done_on "
            "< '2026-04-01' ORDER BY m.done_on;"
        )
        why = "`done_on` is a date, so a half-open range covers March."
    else:
        prompt = "Query the maintenance log: when was TX-1 last inspected?"
        q = f"SELECT m.done_on, m.kind, m.notes {join} WHERE a.tag = 'TX-1' ORDER BY m.done_on DESC;"
        why = "All TX-1 entries, newest first."
    calls = [schema, Call("Bash", sql(q, "Maintenance query"), why)]

    def answer(r: Results) -> str:
        xs = rows(r[-1])
        if case == "gen2_last":
            x = xs[0]
            service = next((y for y in xs if y["kind"] != "refuel"), x)
            return (
                f"The last entry for GEN-2 is **{x['done_on']}** ({x['kind']}: {x['notes']}). The last "
                f"actual service work was **{service['done_on']}**, a {service['kind']}: "
                f"{service['notes']}.\n\n"
                + table(["Date", "Kind", "Notes"], [(y["done_on"], y["kind"], y["notes"]) for y in xs])
            )
        if case == "ups3_history":
            return (
                f"UPS-3 has {len(xs)} maintenance entr{'y' if len(xs) == 1 else 'ies'}:\n\n"
                + table(["Date", "Kind", "Notes"], [(y["done_on"], y["kind"], y["notes"]) for y in xs])
                + "\n\nNo replacement has been logged since the quote."
            )
        if case == "tx2_oil":
            x = xs[0]
            return f"The latest oil sample for TX-2 was taken on **{x['done_on']}**: {x['notes']}."
        if case == "per_kind":
            return table(["Kind", "Jobs", "Latest"], [(y["kind"], y["jobs"], y["latest"]) for y in xs])
        if case == "march":
            return f"{len(xs)} maintenance jobs in March 2026:\n\n" + table(
                ["Asset", "Date", "Kind", "Notes"],
                [(y["tag"], y["done_on"], y["kind"], y["notes"]) for y in xs],
            )
        inspections = [y for y in xs if y["kind"] == "inspection"]
        x = inspections[0]
        return f"TX-1 was last inspected on **{x['done_on']}**: {x['notes']}."

    return Plan(prompt, calls, answer)


_LIMITS = {
    # (asset kind, metric): (column, label, unit, config key, alarm code, over?)
    ("transformer", "load"): ("load_pct", "load", "%", "load_warn_pct", "LOAD_HIGH", True),
    ("transformer", "temp"): ("temp_c", "oil temperature", "°C", "temp_warn_c", "TEMP_HIGH", True),
    ("generator", "temp"): ("temp_c", "coolant temperature", "°C", "temp_warn_c", "TEMP_HIGH", True),
    ("generator", "fuel"): ("fuel_pct", "fuel level", "%", "fuel_warn_pct", "FUEL_LOW", False),
    ("ups", "battery"): ("battery_pct", "battery charge", "%", "battery_warn_pct", "BATTERY_LOW", False),
}


def configured_limit(result: ToolResult, section: str, key: str) -> tuple[float, int]:
    """(value, line) of ``key`` under ``[section]`` in a Grep content result of thresholds.ini."""
    current = ""
    for _, n, text in grep_lines(result):
        if text.startswith("["):
            current = text.strip("[] ")
        elif current == section and text.startswith(key):
            return num(text.split("=")[1]), n
    raise AssertionError(f"{key} not under [{section}] in:\n{result.output_text[:400]}")


@template(
    "limit_breaches",
    "lookup",
    [
        {
            "tag": "TX-2",
            "metric": "load",
            "prompt": "How many TX-2 readings went over the load warning limit, and when?",
        },
        {
            "tag": "TX-2",
            "metric": "temp",
            "prompt": "Look up the times TX-2's oil temperature hit its warning limit.",
        },
        {
            "tag": "GEN-1",
            "metric": "fuel",
            "prompt": "How many times was GEN-1's fuel below the warning level?",
        },
        {
            "tag": "UPS-3",
            "metric": "battery",
            "prompt": "Look up whether UPS-3's battery charge dropped below its warning level.",
        },
        {
            "tag": "TX-1",
            "metric": "load",
            "prompt": "How many TX-1 readings exceeded its load warning limit?",
        },
        {
            "tag": "GEN-2",
            "metric": "temp",
            "prompt": "Query GEN-2's coolant temperatures at or above the warning limit.",
        },
        {
            "tag": "TX-3",
            "metric": "temp",
            "prompt": "Look up TX-3's oil temperature readings over its warning limit.",
        },
    ],
    edition=2,
)
def limit_breaches(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Readings past a configured warning limit: schema + limit in parallel, the breaches, (alarms)."""
    tag, metric = p["tag"], p["metric"]
    kind = _KIND[tag.split("-")[0]]
    col, label, unit, key, code, over = _LIMITS[(kind, metric)]
    op = ">=" if over else "<"
    # the controller's alarms are worth a look only where there is something to check them against
    check_alarms = rng.random() < 0.7

    def breaches(r: Results) -> dict[str, Any]:
        limit, _ = configured_limit(r[1], kind, key)
        query = (
            f"SELECT COUNT(*) OVER () AS total, r.taken_at, r.{col} FROM readings r JOIN assets a ON a.id = "
            f"r.asset_id WHERE a.tag = '{tag}' AND r.{col} {op} {fmt(limit)} ORDER BY r.{col} "
            f"{'DESC' if over else 'ASC'}, r.taken_at LIMIT 6;"
        )
        return sql(query, f"{tag} readings {'at or over' if over else 'under'} the {label} warning limit")

    calls = [
        Call(
            "Grep",
            schema_of("readings", 7),
            pick(
                rng,
                [
                    "I need the readings columns and the configured limit; fetching both at once.",
                    f"Two lookups first, in parallel: the readings table and the {kind} section's `{key}`.",
                ],
            ),
            keep_reason=True,
        ),
        Call(
            "Grep", grep(f"^\\[|{key}", "config/thresholds.ini", output_mode="content"), None, parallel=True
        ),
        Call(
            "Bash",
            breaches,
            f"Counting the readings {'at or over' if over else 'under'} the limit, worst first.",
            expect="any",
        ),
    ]
    if check_alarms:
        alarms_q = (
            "SELECT al.raised_at, al.severity, al.message, al.cleared_at FROM alarms al JOIN assets a "
            f"ON a.id = al.asset_id WHERE a.tag = '{tag}' AND al.code = '{code}' ORDER BY al.raised_at;"
        )
        calls.append(
            Call(
                "Bash",
                sql(alarms_q, f"{code} alarms of {tag}"),
                "Did the field controller raise alarms for them?",
                expect="any",
            )
        )

    def answer(r: Results) -> str:
        limit, line = configured_limit(r[1], kind, key)
        found = rows(r[2])
        total = int(found[0]["total"]) if found else 0
        where = f"`{key} = {fmt(limit)}` in `[{kind}]`, `config/thresholds.ini:{line}`"
        if not total:
            text = (
                f"**None.** No {tag} reading {'reached' if over else 'fell below'} the "
                f"{fmt(limit)} {unit} {label} warning limit ({where})."
            )
        else:
            text = (
                f"**{total} of {tag}'s readings {'was' if total == 1 else 'were'} "
                f"{'at or over' if over else 'below'} the "
                f"{fmt(limit)} {unit} {label} warning limit** ({where})"
            )
            text += (
                ":\n\n"
                if total <= len(found)
                else f"; the {len(found)} {'highest' if over else 'lowest'}:\n\n"
            )
            text += table(
                ["Reading", label.capitalize()], [(hm(x["taken_at"]), f"{x[col]} {unit}") for x in found]
            )
        if check_alarms:
            alarms = rows(r[3])
            if alarms:
                text += (
                    f"\n\nThe field controller raised {len(alarms)} {code} "
                    f"alarm{'s' if len(alarms) != 1 else ''} for {tag}:\n\n"
                    + table(
                        ["Raised", "Severity", "Message", "Cleared"],
                        [
                            (hm(a["raised_at"]), a["severity"], a["message"], hm(a["cleared_at"]) or "open")
                            for a in alarms
                        ],
                    )
                )
                if total and len(alarms) != total:
                    text += (
                        f"\n\n{len(alarms)} alarm{'s' if len(alarms) != 1 else ''} against {total} "
                        "readings past the limit: compare the raised and cleared times with the readings."
                    )
            else:
                text += f" The field controller raised no {code} alarm for {tag}" + (
                    " either." if not total else ", so these readings went unalarmed."
                )
        return text

    return Plan(p["prompt"], calls, answer)


# =============================================================================================
# code_search


def _hits(result: ToolResult, needle: str = "") -> list[str]:
    """'path:line' of each Grep content hit (whose text holds ``needle``)."""
    return [f"{path}:{n}" for path, n, text in grep_lines(result) if needle in text]


@template(
    "code_search",
    "code_search",
    [
        {"case": "load_pct"},
        {"case": "thresholds"},
        {"case": "report_columns"},
        {"case": "db_path"},
        {"case": "severity"},
        {"case": "headroom_callers"},
        {"case": "readings_on"},
        {"case": "polling"},
        {"case": "ups_load"},
        {"case": "selfcheck_output"},
    ],
)
def code_search(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Find where something lives in the code: Grep first, then Read just the lines around the hit."""
    case = p["case"]
    calls: list[Call]
    if case == "load_pct":
        prompt = "Where is the transformer load percentage computed?"
        calls = [
            Call(
                "Grep",
                grep("def \\w*load_pct", "app", output_mode="content"),
                "Search for the load functions by name.",
            ),
            Call(
                "Read",
                read_at(0, "def transformer_load_pct", "app/loading.py", 1, 5),
                "Read the function itself.",
            ),
        ]

        def answer(r: Results) -> str:
            line = line_of(r[1], "def transformer_load_pct")
            body = line_of(r[1], "return kw")
            return (
                f"In `app/loading.py:{line}`, `transformer_load_pct(kw, rating_kva, "
                "power_factor=0.9)`:\n\n```python\nreturn kw / power_factor / rating_kva * 100   # line "
                f"{body}\n```\n\nIt converts metered kW to kVA with the power factor (0.9 by default) and "
                "divides by the nameplate kVA. The same module has the generator and UPS versions ("
                + ", ".join(
                    f"`{pth}:{n}`"
                    for pth, n, t in grep_lines(r[0])
                    if "loading.py" in pth and "transformer" not in t
                )
                + ")."
            )

    elif case == "thresholds":
        prompt = "Find where the alarm thresholds are loaded from the config files."
        calls = [
            Call(
                "Grep", grep("thresholds", "app", output_mode="content"), "Search the app for `thresholds`."
            ),
            Call("Read", read("app/config.py", 9, 10), "`app/config.py` defines it; reading the loader."),
        ]

        def answer(r: Results) -> str:
            d = line_of(r[1], "def thresholds")
            load = line_of(r[1], "def _load")
            callers = [h for h in _hits(r[0], "thresholds(") if "config.py" not in h]
            return (
                f'`thresholds(kind)` in `app/config.py:{d}` loads them: it calls `_load("thresholds.ini")` '
                f"(`app/config.py:{load}`, a `configparser` over `config/`), takes the section named after "
                "the asset kind and converts every value to float.\n\nIt is called from `evaluate()` when "
                f"no limits are passed ({', '.join(f'`{c}`' for c in callers)}); `app/alarms.py` imports it "
                "at the top."
            )

    elif case == "report_columns":
        prompt = "Which file defines the columns of the daily report?"
        calls = [
            Call(
                "Grep",
                grep("avg_load|headroom_kva", "app", output_mode="content"),
                "Grep for a column name from the report header.",
            ),
        ]

        def answer(r: Results) -> str:
            header = _hits(r[0], "print(")
            build = _hits(r[0], "def build") or _hits(r[0], "spare = headroom_kva")
            return (
                f"`app/report.py`. The header line is printed at `{header[0]}`; the values come from "
                f"`build()` in the same file, where headroom is computed (`{build[0]}`) with `headroom_kva` "
                "from `app/loading.py`."
            )

    elif case == "db_path":
        prompt = "Where is the path to the SQLite database set?"
        calls = [
            Call(
                "Grep",
                grep("command_center\\.db|DB_PATH", "app", output_mode="content"),
                "Grep for the file name and any path constant.",
            ),
        ]

        def answer(r: Results) -> str:
            hits = grep_lines(r[0])
            const = next(f"{pth}:{n}" for pth, n, t in hits if "DB_PATH =" in t)
            use = next(f"{pth}:{n}" for pth, n, t in hits if "def connect" in t)
            return (
                f"`DB_PATH` at `{const}`: `db/command_center.db`, resolved relative to the app package, so "
                f"it does not depend on the working directory. `connect(path=DB_PATH)` (`{use}`) opens it "
                "read-only (`mode=ro`); pass another path to `connect()` to use a different file."
            )

    elif case == "severity":
        prompt = "Locate the code that decides whether an alarm is a warning or critical."
        calls = [
            Call(
                "Grep",
                grep('"critical"', "app", output_mode="content"),
                "Search for where the severity strings are produced.",
            ),
            Call(
                "Read",
                read_at(0, "critical", "app/alarms.py", 6, 22),
                "All in `app/alarms.py`; reading `evaluate()`.",
            ),
        ]

        def answer(r: Results) -> str:
            d = line_of(r[1], "def evaluate")
            first = line_of(r[1], 'if load >= limits["load_trip_pct"]')
            bug = line_of(r[1], 'elif load >= limits["load_trip_pct"]')
            temp = line_of(r[1], 'if temp >= limits["temp_trip_c"]')
            return (
                f"`evaluate()` in `app/alarms.py:{d}`. Each reading is compared with the limits of its kind: "
                "at or above the trip limit → `critical`, at or above the warn limit → `warning`; load at "
                f"line {first}, temperature at line {temp}. Fuel and battery only ever raise "
                f"warnings.\n\nOne thing stands out: the load warning branch at line {bug} compares with "
                "`load_trip_pct` again, not `load_warn_pct`, so a load warning can never fire. That looks "
                "like a bug."
            )

    elif case == "headroom_callers":
        prompt = "Find every caller of headroom_kva."
        calls = [
            Call(
                "Grep",
                grep("headroom_kva", "", output_mode="content"),
                "Grep the whole workspace, not just app/.",
            )
        ]

        def answer(r: Results) -> str:
            hits = grep_lines(r[0])
            d = next(f"{pth}:{n}" for pth, n, t in hits if "def headroom_kva" in t)
            calls_ = [f"`{pth}:{n}`" for pth, n, t in hits if "headroom_kva(" in t and "def " not in t]
            return (
                f"Defined at `{d}`. Called from {len(calls_)} place{'s' if len(calls_) != 1 else ''}: "
                + ", ".join(calls_)
                + ". The other hits are imports and the report's column header."
            )

    elif case == "readings_on":
        prompt = "Where are one day's readings selected from the database?"
        calls = [
            Call(
                "Grep",
                grep("def readings_on", "app", output_mode="content", A=6),
                "Find the helper and its callers at once.",
            ),
            Call("Grep", grep("readings_on\\(", "app", output_mode="content"), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            d = _hits(r[0], "def readings_on")[0]
            where = line_of(r[0], "date(r.taken_at)")
            users = [h for h in _hits(r[1]) if "db.py" not in h]
            return (
                f"`readings_on(conn, tag, day)` at `{d}`. It joins readings to assets by tag and filters "
                f"with `date(r.taken_at) = ?` (line {where}), so any time on that day matches; oldest first. "
                f"Used by {', '.join(f'`{u}`' for u in users)}."
            )

    elif case == "polling":
        prompt = "Search the code for where the polling interval is read."
        calls = [
            Call(
                "Grep",
                grep("poll_interval", "", output_mode="content"),
                "Search for the obvious name first.",
                expect="empty",
            ),
            Call(
                "Grep",
                grep("polling", "", output_mode="content", i=True),
                "Nothing under that name. Broadening to anything mentioning polling.",
                keep_reason=True,
            ),
        ]

        def answer(r: Results) -> str:
            hits = grep_lines(r[1])
            d = next(f"{pth}:{n}" for pth, n, t in hits if "def polling_seconds" in t)
            ini = next(f"{pth}:{n}" for pth, n, t in hits if t.strip() == "[polling]")
            return (
                f"`polling_seconds(kind)` at `{d}` reads `<kind>_seconds` from the `[polling]` section of "
                f"`config/polling.ini` (`{ini}`). Nothing in `app/` calls it yet: the intervals are for the "
                "SCADA gateway, and the database keeps one reading per 4 hours."
            )

    elif case == "ups_load":
        prompt = "Where is the UPS load computed?"
        calls = [
            Call(
                "Grep",
                grep("ups_load_percent", "app", output_mode="content"),
                "Look for a UPS load function.",
                expect="empty",
            ),
            Call(
                "Grep",
                grep("def \\w*load\\w*\\(", "app", output_mode="content"),
                "No such name. Listing every load function instead.",
                keep_reason=True,
            ),
        ]

        def answer(r: Results) -> str:
            h = _hits(r[1], "def ups_load_pct")[0]
            return (
                f"`ups_load_pct(kva, rating_kva)` at `{h}`: kVA drawn over the nameplate kVA, in percent. "
                "UPS readings already store `load_pct`, so the app only needs it when converting raw kVA."
            )

    else:  # selfcheck_output
        prompt = "Which module prints the self-check results?"
        calls = [
            Call(
                "Glob", {"pattern": "app/*.py"}, "List the modules and grep for the result format together."
            ),
            Call("Grep", grep("FAIL", "app", output_mode="content"), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            h = _hits(r[1], "FAIL")[0]
            n = len([x for x in r[0].output_text.split("\n") if x.endswith(".py")])
            return (
                f"`app/selfcheck.py` (one of the {n} modules in `app/`). `main()` runs each check and prints "
                f"`ok` or `FAIL` per check (`{h}`), then a passed/failed summary; it exits 1 when any check "
                "fails. Run it with `python3 -m app.selfcheck`."
            )

    return Plan(prompt, calls, answer)


_SETTINGS = {
    "fuel": (
        "fuel_warn_pct",
        "Find the setting that controls the generator fuel warning and where the code reads it.",
    ),
    "battery": ("battery_warn_pct", "Where is the UPS battery warning level set, and where is it used?"),
    "trip": ("load_trip_pct", "Where is the transformer trip limit configured, and which code uses it?"),
    "gen_poll": ("generator_seconds", "Find where the generator polling interval is configured and read."),
    "temp": ("temp_warn_c", "Where does the oil temperature warning limit come from?"),
    "interval": ("reading_interval_hours", "Locate the reading interval setting and anything that uses it."),
}


@template("code_search_config", "code_search", [{"case": c} for c in _SETTINGS], heldout=True)
def code_search_config(rng: random.Random, p: dict[str, Any]) -> Plan:
    """A setting: where it is configured and where the code reads it (parallel Grep config/ + app/)."""
    case = p["case"]
    key, prompt = _SETTINGS[case]
    code_pattern = {"gen_poll": "_seconds|polling"}.get(case, key)
    if case in ("gen_poll", "interval"):
        config_grep = grep(key, "config", output_mode="content", B=3)
    else:
        config_grep = grep(f"^\\[|{key}", "config/thresholds.ini", output_mode="content")
    calls = [
        Call("Grep", config_grep, "Search the config and the code at the same time."),
        Call(
            "Grep",
            grep(code_pattern, "app", output_mode="content"),
            None,
            parallel=True,
            expect="empty" if case == "interval" else "ok",
        ),
    ]
    if case in ("fuel", "battery", "temp", "trip"):
        calls.append(
            Call(
                "Read",
                read_at(1, key, "app/alarms.py", 2, 6),
                "The comparison is in `app/alarms.py`; reading the lines around it.",
            )
        )

    def answer(r: Results) -> str:
        conf = grep_lines(r[0])
        code = grep_lines(r[1])
        if case == "gen_poll":
            c = next(x for x in conf if x[2].startswith("generator_seconds"))
            fn = next(x for x in code if "def polling_seconds" in x[2])
            return (
                f"Configured in `{c[0]}:{c[1]}` (`{c[2].strip()}`, in the `[polling]` section). Read by "
                f"`polling_seconds(kind)` at `{fn[0]}:{fn[1]}`, which builds the key as "
                '`f"{kind}_seconds"`, so '
                "a plain grep for `generator_seconds` finds only the config. Nothing in `app/` calls it yet."
            )
        if case == "interval":
            c = next(x for x in conf if x[2].startswith(key))
            return (
                f"`{c[2].strip()}` is set in `{c[0]}:{c[1]}` (section `[storage]`). No code reads it: the "
                "grep of `app/` for it came back empty. It documents what the gateway does (one averaged "
                "reading per asset every 4 hours); nothing in the app depends on it."
            )
        rows_ = [x for x in conf if x[2].startswith(key)]
        sections = {}
        current = ""
        for _, n, text in grep_lines(r[0]):
            if text.startswith("["):
                current = text
            sections[n] = current
        body = [(sections.get(n, "") or "?", text.strip(), f"{pth}:{n}") for pth, n, text in rows_]
        uses = [f"`{pth}:{n}`" for pth, n, t in code if key in t and pth.endswith("alarms.py")]
        copies = [f"`{pth}:{n}`" for pth, n, t in code if key in t and pth.endswith("selfcheck.py")]
        text = f"**`{key}`** is set in `config/thresholds.ini`"
        text += (
            (" per asset kind:\n\n" + table(["Section", "Setting", "Where"], body))
            if len(body) > 1
            else (f" (`{body[0][1]}` in `{body[0][0]}`, `{body[0][2]}`)." if body else ".")
        )
        text += (
            "\n\nThe code reads it through `thresholds(kind)` (`app/config.py`), which loads the section "
            f"for the asset's kind; `evaluate()` in `app/alarms.py` uses it at {', '.join(uses)}."
        )
        if copies:
            text += (
                f" The self-checks keep their own copy of the limits ({copies[0]}), so they don't follow the "
                "config."
            )
        if case == "trip":
            bug = next(n for pth, n, t in code if "elif load >=" in t)
            text += (
                f"\n\nNote: line {bug} (the warning branch) also compares with `load_trip_pct`; it should "
                "use `load_warn_pct`, otherwise load warnings never fire."
            )
        if case in ("fuel", "battery"):
            text += " It only raises a warning; there is no critical level for it."
        return text

    return Plan(prompt, calls, answer)


# =============================================================================================
# explain

_MODULES = {
    "alarms": ("app/alarms.py", "config/thresholds.ini", "Explain what app/alarms.py does."),
    "report": ("app/report.py", "app/db.py", "Walk me through app/report.py."),
    "db": ("app/db.py", None, "Describe app/db.py."),
    "selfcheck": ("app/selfcheck.py", None, "Explain app/selfcheck.py."),
    "loading": ("app/loading.py", None, "Summarize what app/loading.py provides."),
    "config": ("app/config.py", "config/polling.ini", "Explain how app/config.py works."),
    "thresholds": ("config/thresholds.ini", "app/config.py", "Explain what config/thresholds.ini controls."),
}


def _by_file(hits: Sequence[tuple[str, int]]) -> str:
    """'`a.py:3,9`, `b.py:4`' from (path, line) pairs."""
    lines: dict[str, list[str]] = {}
    for pth, n in hits:
        lines.setdefault(pth, []).append(str(n))
    return ", ".join(f"`{pth}:{','.join(ns)}`" for pth, ns in lines.items())


@template("explain_module", "explain", [{"module": m} for m in _MODULES])
def explain_module(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Explain one module: Read it (with the file it works with, in parallel), Grep its users."""
    module = p["module"]
    path, partner, prompt = _MODULES[module]
    calls = [Call("Read", read(path), pick(rng, [f"Reading `{path}` first.", "Start with the file itself."]))]
    if partner:
        calls[0].reason = f"Reading `{path}` together with `{partner}`, which it works with."
        calls.append(Call("Read", read(partner), None, parallel=True))
    users = {
        "alarms": "from app.alarms|app\\.alarms",
        "report": "app\\.report",
        "db": "from app import db|db\\.\\w+\\(",
        "selfcheck": "selfcheck",
        "loading": "from app.loading",
        "config": "from app.config|config import",
        "thresholds": "thresholds\\(",
    }[module]
    calls.append(
        Call(
            "Grep",
            grep(users, "", output_mode="content", glob="*.{py,md}"),
            "Now who uses it, to explain its role.",
        )
    )

    def answer(r: Results) -> str:
        src = r[0]
        used = grep_lines(r[-1])
        where = sorted({pth for pth, _, _ in used if pth != path})
        if module == "alarms":
            ev, main = line_of(src, "def evaluate"), line_of(src, "def main")
            bug = line_of(src, 'elif load >= limits["load_trip_pct"]')
            warn = line_of(r[1], "load_warn_pct")
            return (
                "`app/alarms.py` turns readings into alarms.\n\n- **`evaluate(kind, reading, "
                f"limits=None)`** (line {ev}): compares one reading with the limits of its asset kind "
                "(loaded by `thresholds(kind)` from `config/thresholds.ini` unless passed in) and returns "
                "`(severity, code, message)` tuples: `LOAD_HIGH` and `TEMP_HIGH` (critical at the trip "
                "limit, warning at the warn limit), `FUEL_LOW` and `BATTERY_LOW` (warnings). An empty list "
                f"means the reading is fine.\n- **`main(argv)`** (line {main}): `python3 -m app.alarms TAG "
                "YYYY-MM-DD` prints one line per reading of that day with its result or `ok`.\n\nUsed by "
                f"{', '.join(f'`{w}`' for w in where)}; the report counts readings with any alarm as "
                f"`flagged`.\n\n**Watch out:** line {bug}, the load *warning* branch, compares with "
                f"`load_trip_pct` instead of `load_warn_pct` (`config/thresholds.ini:{warn}`), so load "
                "warnings never fire. Worth fixing."
            )
        if module == "report":
            b, m = line_of(src, "def build"), line_of(src, "def main")
            flag = line_of(src, "flagged = ")
            return (
                "`app/report.py` prints the daily report, one line per asset: `python3 -m app.report --date "
                f"YYYY-MM-DD`.\n\n1. `main()` (line {m}) parses `--date`, opens the database read-only "
                f"(`db.connect()`) and prints a header.\n2. `build(conn, day)` (line {b}) loops over the "
                "assets, gets that day's readings with `db.readings_on()` (defined in "
                f"`app/db.py:{line_of(r[1], 'def readings_on')}`) and computes average and peak load, max "
                f"temperature, the number of **flagged** readings (line {flag}: readings for which "
                "`evaluate()` returns any alarm) and, for transformers, `headroom_kva` at peak.\n3. Assets "
                "without readings that day are skipped; the last line counts open alarms across all "
                f"assets.\n\nMentioned in {', '.join(f'`{w}`' for w in where)}."
            )
        if module == "db":
            return (
                "`app/db.py` is the data-access layer, three functions over SQLite:\n\n- "
                f"`connect(path=DB_PATH)` (line {line_of(src, 'def connect')}): opens `db/command_center.db` "
                "**read-only** (`mode=ro` URI) with `sqlite3.Row` rows, so columns can be read by name.\n- "
                f"`asset(conn, tag)` (line {line_of(src, 'def asset')}): one row of `assets`; raises "
                "`KeyError` for an unknown tag.\n- `readings_on(conn, tag, day)` (line "
                f"{line_of(src, 'def readings_on')}): one asset's readings on one UTC day, oldest first, "
                "using `date(taken_at) = ?`.\n\nCallers: "
                f"{_by_file([(pth, n) for pth, n, t in used if pth != path and 'import' not in t])}. Nothing "
                "writes to the database."
            )
        if module == "selfcheck":
            checks = [
                ln.split("def ")[1].split("(")[0]
                for ln in src.output_text.split("\n")
                if "\tdef check_" in ln
            ]
            return (
                "`app/selfcheck.py` is a tiny test runner for the calculations and alarm rules (`python3 -m "
                f"app.selfcheck`).\n\n- {len(checks)} checks, plain functions with `assert`: "
                + ", ".join(f"`{c}`" for c in checks)
                + ".\n- They call `evaluate()` with fixed limits (`TX_LIMITS`, line "
                f"{line_of(src, 'TX_LIMITS =')}), not the config, so they test the logic, not the "
                f"settings.\n- `main()` (line {line_of(src, 'def main')}) prints `ok`/`FAIL` per check and a "
                "summary, and returns 1 if any failed, so it can gate a deploy."
            )
        if module == "loading":
            fns = [
                (ln.split("def ")[1].split(":")[0], int(ln.split("\t")[0]))
                for ln in src.output_text.split("\n")
                if "\tdef " in ln
            ]
            return (
                "`app/loading.py` holds the load arithmetic; every load is a percentage of the nameplate "
                "rating.\n\n"
                + table(
                    ["Function", "Line", "Computes"],
                    [
                        (
                            f"`{f}`",
                            n,
                            {
                                "transformer": "kW / power factor / kVA rating × 100",
                                "generator": "kW / kW rating × 100",
                                "ups": "kVA / kVA rating × 100",
                                "headroom": "kVA left before the rating: rating × (100 − load) / 100",
                            }[
                                next(
                                    k
                                    for k in ("transformer", "generator", "ups", "headroom")
                                    if f.startswith(k)
                                )
                            ],
                        )
                        for f, n in fns
                    ],
                )
                + f"\n\nUsed by {', '.join(f'`{w}`' for w in where)}."
            )
        if module == "config":
            return (
                "`app/config.py` reads the `.ini` files under `config/` with `configparser`.\n\n- "
                f"`_load(name)` (line {line_of(src, 'def _load')}): parses `config/<name>`; called on every "
                "lookup, so edits take effect without a restart.\n- `thresholds(kind)` (line "
                f"{line_of(src, 'def thresholds')}): the `[kind]` section of `thresholds.ini` as a dict of "
                f"floats.\n- `polling_seconds(kind)` (line {line_of(src, 'def polling_seconds')}): "
                f"`<kind>_seconds` from `[polling]` in `polling.ini` (line {line_of(r[1], '[polling]')} "
                f"there).\n\nImported by {', '.join(f'`{w}`' for w in where)}."
            )
        # thresholds.ini
        sections = [
            (ln.split("\t")[1], int(ln.split("\t")[0])) for ln in src.output_text.split("\n") if "\t[" in ln
        ]
        return (
            "`config/thresholds.ini` sets the alarm limits, one section per asset kind: "
            + ", ".join(f"`{s}` (line {n})" for s, n in sections)
            + ". Loads are % of nameplate rating.\n\n- `*_warn_*` → a `warning`, `*_trip_*` → a `critical` "
            "alarm.\n- Transformers and generators have load and temperature limits, generators also "
            "`fuel_warn_pct`; UPS units have load and `battery_warn_pct` but no temperature "
            f"limits.\n\n`thresholds(kind)` in `app/config.py:{line_of(r[1], 'def thresholds')}` loads a "
            "section; `evaluate()` calls it "
            f"({', '.join(f'`{pth}:{n}`' for pth, n, _ in used if pth.endswith('alarms.py'))})."
        )

    return Plan(prompt, calls, answer)


@template(
    "explain_flow",
    "explain",
    [
        {"case": c}
        for c in (
            "flagged",
            "headroom",
            "check_load_warning",
            "readings_for_day",
            "thresholds_to_alarm",
            "tx2_peak",
        )
    ],
)
def explain_flow(rng: random.Random, p: dict[str, Any]) -> Plan:
    """How one behaviour works across files: Grep to find the pieces, Read the relevant lines."""
    case = p["case"]
    if case == "flagged":
        prompt = "How does the daily report decide how many readings are flagged?"
        calls = [
            Call(
                "Grep",
                grep("flagged", "app/report.py", output_mode="content"),
                "Find where `flagged` is computed.",
            ),
            Call(
                "Read",
                read("app/alarms.py", 12, 22),
                "It counts readings for which `evaluate()` returns anything; reading `evaluate()`.",
            ),
        ]

        def answer(r: Results) -> str:
            f = next(n for _, n, t in grep_lines(r[0]) if "flagged = " in t)
            bug = line_of(r[1], 'elif load >= limits["load_trip_pct"]')
            return (
                f"`app/report.py:{f}`: `flagged = sum(1 for r in readings if evaluate(asset['kind'], r))`. A "
                "reading counts once if `evaluate()` in `app/alarms.py` returns at least one alarm for it, "
                "whatever the number of alarms.\n\n`evaluate()` checks load (trip → critical, warn → "
                "warning), temperature, fuel (generators) and battery charge (UPS) against "
                f"`config/thresholds.ini`.\n\nCaveat: the load warning at `app/alarms.py:{bug}` compares "
                "with `load_trip_pct` instead of `load_warn_pct`, so readings between the warn and trip "
                "limits are **not** flagged today. The count under-reports load warnings until that is "
                "fixed."
            )

    elif case == "headroom":
        prompt = "How is headroom_kva computed, and what does the report use it for?"
        calls = [
            Call("Grep", grep("headroom_kva", "app", output_mode="content"), "Definition and callers first."),
            Call(
                "Read",
                read("app/loading.py", 17, 3),
                "Read the definition.",
            ),
            Call("Read", read("app/report.py", 23, 5), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            d = line_of(r[1], "def headroom_kva")
            use = line_of(r[2], "spare = headroom_kva")
            return (
                f"`headroom_kva(rating_kva, load_pct)` (`app/loading.py:{d}`) returns `rating_kva * (100 - "
                "load_pct) / 100`: the kVA left before the nameplate rating.\n\nThe report calls it for "
                f"transformers only (`app/report.py:{use}`), with the rating from `transformer_specs` and "
                "the day's **peak** load, so `headroom_kva` is the margin at the worst reading of the day "
                "(e.g. 1,500 kVA at 90 % → 150 kVA). Other kinds show `-`."
            )

    elif case == "check_load_warning":
        prompt = "What does check_load_warning do?"
        calls = [
            Call(
                "Grep", grep("def check_load_warning", "app", output_mode="content", A=3), "Find the check."
            ),
            Call(
                "Grep",
                grep("TX_LIMITS =", "app/selfcheck.py", output_mode="content"),
                "And the limits it passes.",
                parallel=False,
            ),
        ]

        def answer(r: Results) -> str:
            d = _hits(r[0], "def check_load_warning")[0]
            return (
                f"`check_load_warning` (`{d}`) evaluates a transformer reading at 90 % load with the fixed "
                "`TX_LIMITS` (warn 85 %, trip 98 %) and asserts the result is exactly one `('warning', "
                "'LOAD_HIGH')`. 90 % sits between the two limits, so it pins down the warning band. "
                "`python3 -m app.selfcheck` runs it with the other checks."
            )

    elif case == "readings_for_day":
        prompt = "How does app.alarms find the readings for a day?"
        calls = [
            Call(
                "Grep",
                grep("readings_on", "app/alarms.py", output_mode="content"),
                "Find the call in app.alarms.",
            ),
            Call("Read", read("app/db.py", 22, 7), "It calls `db.readings_on`; reading it."),
        ]

        def answer(r: Results) -> str:
            call = grep_lines(r[0])[0]
            d = line_of(r[1], "def readings_on")
            q = line_of(r[1], "date(r.taken_at)")
            return (
                f"`main()` calls `db.readings_on(conn, tag, day)` (`app/alarms.py:{call[1]}`). That function "
                f"(`app/db.py:{d}`) joins `readings` to `assets` on the tag and keeps rows where "
                f"`date(r.taken_at) = ?` (line {q}), ordered by time. `date()` drops the time part of "
                "'YYYY-MM-DD HH:MM', so all six 4-hourly readings of that UTC day match."
            )

    elif case == "thresholds_to_alarm":
        prompt = "Explain how the thresholds get from config/thresholds.ini into an alarm."
        calls = [
            Call("Read", read("app/config.py", 9, 10), "Reading the loader and the call site together."),
            Call(
                "Grep",
                grep("thresholds\\(|limits\\[", "app/alarms.py", output_mode="content"),
                None,
                parallel=True,
            ),
        ]

        def answer(r: Results) -> str:
            t = line_of(r[0], "def thresholds")
            call = next(n for _, n, tx in grep_lines(r[1]) if "thresholds(kind)" in tx)
            first = grep_lines(r[1])[1][1]
            return (
                "1. `config/thresholds.ini` has one section per asset kind (`[transformer]`, `[generator]`, "
                f"`[ups]`).\n2. `thresholds(kind)` (`app/config.py:{t}`) parses the file with `configparser` "
                "on each call and returns that section as floats.\n3. `evaluate(kind, reading)` fetches "
                f"them when no limits are passed (`app/alarms.py:{call}`) and compares the reading's load, "
                f"temperature, fuel and battery with them (from line {first}).\n4. Each broken limit becomes "
                "a `(severity, code, message)` tuple; the report counts them as `flagged` and `python3 -m "
                "app.alarms` prints them."
            )

    else:  # tx2_peak
        prompt = "How does the report compute peak load and headroom for TX-2?"
        q = (
            "SELECT t.rating_kva, MAX(r.load_pct) AS peak_load FROM readings r JOIN assets a ON a.id = "
            "r.asset_id JOIN transformer_specs t ON t.asset_id = a.id WHERE a.tag = 'TX-2' AND "
            "date(r.taken_at) = '2026-03-13';"
        )
        calls = [
            Call("Read", read("app/report.py", 13, 16), "Reading `build()` in the report."),
            Call(
                "Bash",
                sql(q, "TX-2 rating and peak on 2026-03-13"),
                "A worked example with TX-2's real numbers for one day.",
            ),
        ]

        def answer(r: Results) -> str:
            peak = line_of(r[0], "loads = ")
            h = line_of(r[0], "spare = headroom_kva")
            x = row(r[1])
            rating, top = num(x["rating_kva"]), num(x["peak_load"])
            return (
                f"For each asset `build()` collects that day's readings; `loads` (line {peak}) is the list "
                "of `load_pct` values and peak is `max(loads)`. For a transformer like TX-2 it then reads "
                "`rating_kva` from `transformer_specs` and computes `headroom_kva(rating, max(loads))` "
                f"(line {h}): the kVA left at the day's peak.\n\nExample, 2026-03-13: TX-2 is rated "
                f"{fmt(rating)} kVA and peaked at {fmt(top)} %, so headroom = {fmt(rating)} × (100 − "
                f"{fmt(top)}) / 100 = **{fmt(rating * (100 - top) / 100, 0)} kVA**."
            )

    return Plan(prompt, calls, answer)


# =============================================================================================
# debug

_BUG_OLD = '    elif load >= limits["load_trip_pct"]:'
_BUG_NEW = '    elif load >= limits["load_warn_pct"]:'
_FIX_EDIT = {"file_path": f"{V}/app/alarms.py", "old_string": _BUG_OLD, "new_string": _BUG_NEW}
SELFCHECK = "python3 -m app.selfcheck"


def _selfcheck_summary(result: ToolResult) -> str:
    return result.output_text.strip().split("\n")[-1]


def _failing(result: ToolResult) -> list[str]:
    return [ln.split()[1].rstrip(":") for ln in result.output_text.split("\n") if ln.startswith("FAIL")]


@template(
    "fix_load_warning",
    "debug",
    [
        {"variant": v}
        for v in ("grep_first", "selfcheck_first", "alarms_first", "debug_exit", "diagnose_fix", "report")
    ],
)
def fix_load_warning(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Fix the planted bug (load warnings never fire): reproduce or search, read, edit, verify."""
    v = p["variant"]
    fix_reason = pick(
        rng,
        [
            "The warning branch compares with `load_trip_pct` again, so it can never be reached. It should "
            "use `load_warn_pct`.",
            "Line 19 repeats the trip comparison; the `elif` is dead code. Comparing with `load_warn_pct` "
            "instead.",
        ],
    )
    edit = Call("Edit", _FIX_EDIT, fix_reason, keep_reason=True)
    read_eval = Call("Read", read("app/alarms.py", 12, 10), "Reading `evaluate()` before touching it.")
    check = Call("Bash", bash(SELFCHECK, "Run the self-checks"), "Verify with the self-checks.")
    calls: list[Call]
    if v == "grep_first":
        prompt = "Fix the bug in app/alarms.py: load warnings never fire."
        calls = [
            Call(
                "Grep",
                grep("load_warn_pct|load_trip_pct", "app/alarms.py", output_mode="content"),
                "Find where the load limits are compared.",
            ),
            read_eval,
            edit,
            check,
        ]
    elif v == "selfcheck_first":
        prompt = "python3 -m app.selfcheck fails on check_load_warning. Fix it."
        calls = [
            Call(
                "Bash", bash(SELFCHECK, "Run the self-checks"), "Reproduce the failure first.", expect="error"
            ),
            Call(
                "Grep",
                grep("def check_load_warning", "app/selfcheck.py", output_mode="content", A=3),
                "What does the check expect?",
            ),
            Call(
                "Read",
                read("app/alarms.py", 12, 10),
                "It expects one warning at 90 % and gets nothing. Reading `evaluate()`.",
            ),
            edit,
            Call("Bash", bash(SELFCHECK, "Run the self-checks"), "Rerun the checks."),
        ]
    elif v == "alarms_first":
        prompt = "TX-2 hit 91.3% on 2026-03-04 but app.alarms reports ok at 12:00. Fix the evaluator."
        calls = [
            Call(
                "Bash",
                bash("python3 -m app.alarms TX-2 2026-03-04", "Evaluate TX-2 readings on 2026-03-04"),
                "Reproduce.",
            ),
            Call("Read", read("app/alarms.py", 12, 10), "Reading the evaluator and the limits together."),
            Call("Read", read("config/thresholds.ini", 4, 5), None, parallel=True),
            edit,
            Call(
                "Bash",
                bash(
                    f"python3 -m app.alarms TX-2 2026-03-04 && {SELFCHECK}",
                    "Re-evaluate TX-2 and run the self-checks",
                ),
                "Re-run the same evaluation, then the self-checks.",
            ),
        ]
    elif v == "debug_exit":
        prompt = "Debug why python3 -m app.selfcheck exits with status 1, then fix it."
        calls = [
            Call("Bash", bash(SELFCHECK, "Run the self-checks"), "See which check fails.", expect="error"),
            read_eval,
            edit,
            Call(
                "Bash",
                bash(f"{SELFCHECK}; echo exit=$?", "Run the self-checks and show the exit status"),
                "Check the exit status too.",
            ),
        ]
    elif v == "diagnose_fix":
        prompt = "Diagnose and fix the missing load warnings in the alarm evaluator."
        calls = [
            Call("Grep", grep("LOAD_HIGH", "app", output_mode="content"), "Where is LOAD_HIGH produced?"),
            read_eval,
            edit,
            Call(
                "Bash",
                bash(
                    f"{SELFCHECK} && python3 -m app.alarms TX-2 2026-03-09",
                    "Self-checks, then TX-2 on 2026-03-09",
                ),
                "Self-checks, plus a real day where TX-2 crossed the warning limit.",
            ),
        ]
    else:  # report
        prompt = "Fix: the daily report flags too few TX-2 readings on 2026-03-06."
        calls = [
            Call(
                "Bash",
                bash("python3 -m app.report --date 2026-03-06", "Daily report for 2026-03-06"),
                "Look at the report first.",
            ),
            Call(
                "Grep",
                grep("flagged = ", "app/report.py", output_mode="content"),
                "How is `flagged` counted?",
            ),
            Call(
                "Read",
                read("app/alarms.py", 12, 10),
                "It counts readings with any result from `evaluate()`. Reading that.",
            ),
            edit,
            Call(
                "Bash",
                bash("python3 -m app.report --date 2026-03-06", "Daily report for 2026-03-06"),
                "Re-run the report.",
            ),
        ]

    def answer(r: Results) -> str:
        reads = [x for x in r if "def evaluate" in x.output_text]
        line = line_of(reads[0], _BUG_OLD.strip())
        last = r[-1].output_text
        text = (
            f"Fixed `app/alarms.py:{line}`. The load warning branch compared the reading with "
            "`load_trip_pct`, the same limit as the critical branch just above it, so it could never be "
            "reached: anything between the warn and trip limits came back as no "
            f"alarm.\n\n```diff\n-{_BUG_OLD}\n+{_BUG_NEW}\n```\n\n"
        )
        if v in ("selfcheck_first", "debug_exit"):
            before = r[0].output_text.split("\n")
            failed = next(ln for ln in before if ln.startswith("FAIL"))
            status = [ln for ln in last.split("\n") if ln.startswith("exit=")]
            text += (
                f"Before: `{failed.strip()}`. After: "
                f"`{_selfcheck_summary(r[-1]) if not status else last.split(chr(10))[-2]}`"
                + (f", `{status[0]}`." if status else ".")
            )
        elif v == "alarms_first":
            noon = next(ln for ln in r[0].output_text.split("\n") if " 12:00 " in ln)
            after = next(ln for ln in last.split("\n") if " 12:00 " in ln)
            warn = line_of(r[2], "load_warn_pct")
            text += (
                f"Before: `{noon.strip()}`\n\nAfter: `{after.strip()}`\n\nThe limit is `load_warn_pct = 85` "
                f"(`config/thresholds.ini:{warn}`). Self-checks: {_selfcheck_summary(r[-1])}."
            )
        elif v == "report":

            def tx2(out: str) -> list[str]:
                return next(ln for ln in out.split("\n") if ln.startswith("TX-2")).split()

            b, a = tx2(r[0].output_text), tx2(last)
            text += (
                f"TX-2 on 2026-03-06: flagged readings went from {b[5]} to {a[5]} (peak {a[3]} %). The "
                "report only counts readings for which `evaluate()` returns something, so it inherited the "
                "bug."
            )
        elif v == "diagnose_fix":
            warned = [ln.strip() for ln in last.split("\n") if "warning LOAD_HIGH" in ln]
            text += (
                f"Self-checks: {last.split(chr(10))[6] if len(last.split(chr(10))) > 6 else ''}. TX-2 on "
                "2026-03-09 now warns:\n\n" + "\n".join(f"- `{w}`" for w in warned)
            )
        else:
            text += f"Self-checks: {_selfcheck_summary(r[-1])}."
        return text

    return Plan(prompt, calls, answer)


@template(
    "run_selfcheck",
    "run_test",
    [{"variant": v} for v in range(5)],
)
def run_selfcheck(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Run the self-checks and explain the failure (without fixing it)."""
    v = p["variant"]
    prompt = [
        "Run the self-checks and tell me what fails.",
        "Run python3 -m app.selfcheck and explain any failure.",
        "Run the self-checks; if they pass, run the report for 2026-03-10.",
        "Run the app's checks before I deploy.",
        "Test the alarm rules with the self-check script.",
    ][v]
    calls = [
        Call(
            "Bash",
            bash(SELFCHECK, "Run the self-checks"),
            pick(rng, ["Run them.", "Running the self-checks."]),
            expect="error",
        ),
        Call(
            "Grep",
            grep("TX_LIMITS =|def check_load_warning", "app/selfcheck.py", output_mode="content", A=2),
            "`check_load_warning` fails; what does it expect, with which limits?",
        ),
        Call(
            "Read",
            read("app/alarms.py", 16, 5),
            "It gets no alarm at 90 %. Reading the load branch of `evaluate()`.",
        ),
    ]

    def answer(r: Results) -> str:
        failing = _failing(r[0])
        fail_line = next(ln for ln in r[0].output_text.split("\n") if ln.startswith("FAIL"))
        bug = line_of(r[2], _BUG_OLD.strip())
        text = (
            f"**{_selfcheck_summary(r[0])}** (exit status 1). The "
            f"failure:\n\n```\n{fail_line}\n```\n\n`{failing[0]}` expects a `('warning', 'LOAD_HIGH')` at 90 "
            f"% load (warn limit 85, trip 98) and gets an empty list. Cause: `app/alarms.py:{bug}`, the "
            "warning branch, compares with `load_trip_pct` instead of `load_warn_pct`, so it is unreachable "
            "and load warnings never fire, in the self-checks and in production (the daily report's "
            "`flagged` count misses them too).\n\n"
        )
        if v == 2:
            text += "I stopped there and did not run the report, since the checks did not pass. "
        elif v == 3:
            text += "I would not deploy as is. "
        text += f"The fix is a one-word change on line {bug}; want me to make it?"
        return text

    return Plan(prompt, calls, answer)


@template(
    "debug_missing_warning",
    "debug",
    [
        {"day": d, "form": i % 3}
        for i, d in enumerate(
            (
                "2026-03-02",
                "2026-03-04",
                "2026-03-05",
                "2026-03-10",
                "2026-03-09",
                "2026-03-12",
                "2026-03-03",
                "2026-03-13",
            )
        )
    ],
    heldout=True,
)
def debug_missing_warning(rng: random.Random, p: dict[str, Any]) -> Plan:
    """From a data symptom to the code: reproduce, compare with the controller's alarms, read the rule."""
    day, form = p["day"], p["form"]
    prompt = [
        f"Why doesn't python3 -m app.alarms flag TX-2's midday reading on {day}? Debug it.",
        f"The field controller raised a LOAD_HIGH warning on TX-2 on {day}, but app.alarms shows ok for that "
        "day. Debug why.",
        f"Diagnose why the daily report for {day} flags so few TX-2 readings.",
    ][form]
    q = (
        "SELECT al.raised_at, al.severity, al.code, al.message, al.cleared_at FROM alarms al JOIN assets a "
        f"ON a.id = al.asset_id WHERE a.tag = 'TX-2' AND date(al.raised_at) = '{day}' ORDER BY al.raised_at;"
    )
    calls = [
        Call(
            "Bash",
            bash(f"python3 -m app.alarms TX-2 {day}", f"Evaluate TX-2 readings on {day}"),
            "Reproduce with the evaluator first.",
        ),
        Call(
            "Bash",
            sql(q, f"Controller alarms for TX-2 on {day}"),
            "What did the field controller raise that day?",
        ),
        Call(
            "Read",
            read("config/thresholds.ini", 4, 5),
            "Readings over 85 % came back ok. Checking the configured limits and the comparison together.",
        ),
        Call(
            "Grep", grep("load_(warn|trip)_pct", "app/alarms.py", output_mode="content"), None, parallel=True
        ),
    ]

    def answer(r: Results) -> str:
        lines = [ln for ln in r[0].output_text.split("\n") if ln.strip()]
        loads = [(ln[:16], float(ln.split("load")[1].split("%")[0])) for ln in lines]
        warn = num(next(ln.split("=")[1] for ln in r[2].output_text.split("\n") if "load_warn_pct" in ln))
        trip = num(next(ln.split("=")[1] for ln in r[2].output_text.split("\n") if "load_trip_pct" in ln))
        missed = [
            (t, x) for (t, x), ln in zip(loads, lines, strict=True) if warn <= x < trip and ln.endswith("ok")
        ]
        ctrl = [x for x in rows(r[1]) if x["code"] == "LOAD_HIGH" and x["severity"] == "warning"]

        def controller(t: str) -> str:
            for c in ctrl:
                if c["raised_at"][:13] == t[:13]:
                    return f"warning raised {c['raised_at'][11:]}"
                if c["raised_at"] < t and (not c["cleared_at"] or c["cleared_at"] > t):
                    return "warning still active"
            return "-"

        bug = next(n for _, n, t in grep_lines(r[3]) if t.strip().startswith("elif load"))
        warn_line = line_of(r[2], "load_warn_pct")
        text = (
            f"**Cause: a bug in `app/alarms.py:{bug}`.** The load warning branch "
            f"reads\n\n```python\n{_BUG_OLD.strip()}\n```\n\nIt tests the trip limit again, right after the "
            "critical branch tested the same condition, so it can never be true. Anything between the warn "
            f"limit ({fmt(warn)} %, `config/thresholds.ini:{warn_line}`) and the trip limit ({fmt(trip)} %) "
            f"comes back `ok`.\n\nEvidence for TX-2 on {day}:\n\n"
            + table(
                ["Reading", "Load", "app.alarms", "Field controller"],
                [(t[11:], f"{x} %", "ok", controller(t)) for t, x in missed],
            )
            + f"\n\nThe controller, which applies the same {fmt(warn)} % limit, raised {len(ctrl)} LOAD_HIGH "
            f"warning{'s' if len(ctrl) != 1 else ''} that day; app.alarms raised none. "
        )
        if form == 2:
            text += (
                "The report's `flagged` column counts readings with any result from `evaluate()`, so it "
                "misses them too. "
            )
        text += (
            "The fix is to compare with `load_warn_pct` on that line. I haven't changed anything; say if "
            "you want the fix applied."
        )
        return text

    return Plan(prompt, calls, answer)


_KIND_NAME = {"transformer": "transformer", "generator": "generator", "ups": "UPS"}
_FLAG_LIMITS = {  # asset kind: (first line, line count) of its section in config/thresholds.ini
    "transformer": (4, 5),
    "generator": (10, 6),
    "ups": (17, 4),
}


@template(
    "explain_flag",
    "explain",
    [
        {
            "tag": "GEN-1",
            "day": "2026-03-08",
            "field": "fuel",
            "prompt": "Explain the FUEL_LOW warnings python3 -m app.alarms prints for GEN-1 on 2026-03-08.",
        },
        {
            "tag": "GEN-1",
            "day": "2026-03-09",
            "field": "fuel",
            "prompt": "Explain where GEN-1's warnings in app.alarms on 2026-03-09 come from.",
        },
        {
            "tag": "UPS-3",
            "day": "2026-03-08",
            "field": "battery",
            "prompt": "Explain why app.alarms flags UPS-3 on 2026-03-08.",
        },
        {
            "tag": "UPS-3",
            "day": "2026-03-08",
            "field": "battery",
            "prompt": "Check what app.alarms says about UPS-3 on 2026-03-08 and explain any flag.",
        },
        {
            "tag": "GEN-1",
            "day": "2026-03-09",
            "field": "fuel",
            "prompt": "Describe why python3 -m app.alarms GEN-1 2026-03-09 shows warnings.",
        },
    ],
    edition=2,
)
def explain_flag(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Why the evaluator flags a reading: reproduce, then the limits and the rule side by side."""
    tag, day, field_ = p["tag"], p["day"], p["field"]
    kind = _KIND[tag.split("-")[0]]
    start, count = _FLAG_LIMITS[kind]
    calls = [
        Call(
            "Bash",
            bash(f"python3 -m app.alarms {tag} {day}", f"Evaluate {tag} readings on {day}"),
            pick(rng, ["Reproduce it first.", "Run the evaluator for that day to see the flags."]),
        ),
        Call(
            "Read",
            read("config/thresholds.ini", start, count),
            f"Now the {_KIND_NAME[kind]} limits it compares with, and the rule that uses them.",
        ),
        Call("Grep", grep(field_, "app/alarms.py", output_mode="content"), None, parallel=True),
    ]

    def answer(r: Results) -> str:
        out = [ln for ln in r[0].output_text.split("\n") if ln.strip()]
        flagged = [ln for ln in out if not ln.endswith(" ok")]
        key = f"{field_}_warn_pct"
        limit = num(next(ln.split("=")[1] for ln in r[1].output_text.split("\n") if key in ln))
        limit_line = line_of(r[1], key)
        rule = next((n, t.strip()) for _, n, t in grep_lines(r[2]) if t.strip().startswith(f"if {field_}"))
        values = [re.search(rf"{field_} ([\d.]+)%", ln) for ln in flagged]
        body = [
            (ln[:16][5:], f"{m.group(1)} %" if m else "?", ln.split("  ")[-1].split(":")[0])
            for ln, m in zip(flagged, values, strict=True)
        ]
        text = (
            f"**{len(flagged)} of {tag}'s {len(out)} readings on {day} "
            f"{'is' if len(flagged) == 1 else 'are'} flagged, by the {field_} rule:**\n\n"
            + table(["Reading", field_.capitalize(), "Flag"], body)
            + f"\n\nThe rule is `app/alarms.py:{rule[0]}`: `{rule[1]}` raises a warning when {field_} drops "
            f"below `{key}`, which is {fmt(limit)} % for a {_KIND_NAME[kind]} "
            f"(`config/thresholds.ini:{limit_line}`). "
        )
        lowest = min(num(m.group(1)) for m in values if m)
        text += (
            f"The lowest reading was {fmt(lowest)} %, {fmt(limit - lowest)} points under the limit, so the "
            "flag is correct: it is a warning only; there is no critical level for it."
        )
        return text

    return Plan(p["prompt"], calls, answer)


_ALARM_SCHEMA = grep("CREATE TABLE (alarms|maintenance)", "db/schema.sql", output_mode="content", A=7)
_J = "JOIN assets a ON a.id = {x}.asset_id"


def _aj(alias: str = "al") -> str:
    return _J.format(x=alias)


@template(
    "debug_alarm",
    "debug",
    [
        {"case": c}
        for c in (
            "gen2_fail_to_start",
            "tx1_supply_lost",
            "gen1_fuel_low",
            "ups3_battery_low",
            "tx2_critical",
            "tx2_temp_high",
            "tx2_fan_fail",
            "ups1_on_battery",
            "gen2_fail_to_start_cause",
            "tx2_midday_pattern",
        )
    ],
)
def debug_alarm(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Investigate one alarm: the alarm row, readings around it, the maintenance log, then a diagnosis."""
    case = p["case"]
    schema = Call("Grep", _ALARM_SCHEMA, "Check the alarms and maintenance columns before querying.")
    calls: list[Call] = []
    if case == "gen2_fail_to_start":
        prompt = "Debug the FAIL_TO_START alarm GEN-2 raised on 2026-03-05."
        calls = [
            schema,
            Call(
                "Bash",
                sql(
                    f"SELECT al.raised_at, al.severity, al.message, al.cleared_at FROM alarms al {_aj()} "
                    "WHERE a.tag = 'GEN-2' AND al.code = 'FAIL_TO_START';",
                    "GEN-2 FAIL_TO_START alarm",
                ),
                "The alarm itself first.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT m.done_on, m.kind, m.notes FROM maintenance m {_aj('m')} WHERE a.tag = 'GEN-2' "
                    "ORDER BY m.done_on DESC LIMIT 3;",
                    "Recent GEN-2 maintenance",
                ),
                "It was cleared the next afternoon, so someone worked on it. Checking the maintenance log.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT r.taken_at, r.load_pct, r.temp_c, r.fuel_pct FROM readings r {_aj('r')} WHERE "
                    "a.tag = 'GEN-2' AND r.load_pct > 0 AND r.taken_at < '2026-03-08';",
                    "GEN-2 runs before the outage",
                ),
                "And the runs around it: did the set start on the tests before and after?",
            ),
        ]

        def answer(r: Results) -> str:
            al, maint, runs = row(r[1]), rows(r[2]), rows(r[3])
            repair = next(m for m in maint if m["kind"] == "repair")
            before = [x for x in runs if x["taken_at"] < al["raised_at"]]
            after = [x for x in runs if x["taken_at"] > al["raised_at"]]
            return (
                "**Root cause: a weak starter battery.** Timeline:\n\n"
                + table(
                    ["When", "What"],
                    [
                        *[
                            (x["taken_at"], f"test run OK: {x['load_pct']} % load, coolant {x['temp_c']} °C")
                            for x in before
                        ],
                        (al["raised_at"], f"{al['severity']} FAIL_TO_START: {al['message']}"),
                        (repair["done_on"], f"{repair['kind']}: {repair['notes']}"),
                        (al["cleared_at"], "alarm cleared"),
                        *[
                            (x["taken_at"], f"retest OK: {x['load_pct']} % load, coolant {x['temp_c']} °C")
                            for x in after
                        ],
                    ],
                )
                + f"\n\nFuel was not the problem ({after[0]['fuel_pct'] if after else '?'} % at the retest) "
                "and the set ran normally on the test before. The battery read 10.9 V while cranking, too "
                "low to turn the engine over three times. Worth load-testing GEN-1's starter battery too, "
                "since both are on the same test schedule."
            )

    elif case == "tx1_supply_lost":
        prompt = "Diagnose the SUPPLY_LOST alarm on TX-1 from 2026-03-08."
        calls = [
            Call(
                "Bash",
                sql(
                    f"SELECT a.tag, al.raised_at, al.severity, al.code, al.cleared_at FROM alarms al {_aj()} "
                    "WHERE al.raised_at BETWEEN '2026-03-08 03:45' AND '2026-03-08 04:00' ORDER BY "
                    "al.raised_at, a.tag;",
                    "Every alarm around 03:52 on 2026-03-08",
                ),
                "Start with everything raised around that moment, not just TX-1: a supply loss is rarely "
                "local.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT r.taken_at, a.tag, r.load_pct FROM readings r {_aj('r')} WHERE a.tag IN "
                    "('TX-1','GEN-1','GEN-2') AND r.taken_at BETWEEN '2026-03-08 00:00' AND '2026-03-08 "
                    "12:00' ORDER BY r.taken_at, a.tag;",
                    "TX-1 and generator loads 00:00-12:00",
                ),
                "Now how TX-1 and the generators loaded up around the event.",
            ),
        ]

        def answer(r: Results) -> str:
            al = rows(r[0])
            lost = [x for x in al if x["code"] == "SUPPLY_LOST"]
            ups = [x for x in al if x["code"] == "ON_BATTERY"]
            gens = [x for x in al if x["code"] == "RUNNING"]
            loads = rows(r[1])
            tx1 = {x["taken_at"][11:]: x["load_pct"] for x in loads if x["tag"] == "TX-1"}
            g1 = {x["taken_at"][11:]: x["load_pct"] for x in loads if x["tag"] == "GEN-1"}
            g2 = {x["taken_at"][11:]: x["load_pct"] for x in loads if x["tag"] == "GEN-2"}
            return (
                "**Not a TX-1 fault: the incoming 13.8 kV supply was lost site-wide** at "
                f"{lost[0]['raised_at']}. All {len(lost)} transformers raised SUPPLY_LOST in the same minute "
                f"and cleared together at {lost[0]['cleared_at']}; {len(gens)} generators started (RUNNING) "
                f"and {len(ups)} UPS units bridged the gap on battery for about a minute.\n\n"
                + table(
                    ["Time", "TX-1 load", "GEN-1 load", "GEN-2 load"],
                    [(t, f"{tx1[t]} %", f"{g1[t]} %", f"{g2[t]} %") for t in sorted(tx1)],
                )
                + "\n\nTX-1 read 0 % at 04:00 and 08:00 while the generators carried the site, and was back "
                "to normal at 12:00. The transformer itself needs no action. Follow up on the utility "
                "event, and on what it left behind: "
                + ", ".join(
                    f"{x['tag']} {x['code']} ({'still open' if not x['cleared_at'] else 'cleared'})"
                    for x in al
                    if x["severity"] == "warning"
                )
                + "."
            )

    elif case == "gen1_fuel_low":
        prompt = "Why did GEN-1 raise FUEL_LOW on 2026-03-08? Debug it."
        bad = (
            f"SELECT al.raised_at, al.code, al.message, al.cleared_at FROM alarms al {_aj()} WHERE a.tag = "
            "'GEN-1' AND {cond} ORDER BY al.raised_at;"
        )
        calls = [
            schema,
            Call(
                "Bash",
                sql(bad.format(cond="al.raised_at = '2026-03-08'"), "GEN-1 alarms on 2026-03-08"),
                "GEN-1's alarms that day.",
                expect="empty",
            ),
            Call(
                "Bash",
                sql(bad.format(cond="date(al.raised_at) = '2026-03-08'"), "GEN-1 alarms on 2026-03-08"),
                "Empty because `raised_at` includes the time. Comparing on date(raised_at) instead.",
                keep_reason=True,
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT r.taken_at, r.load_pct, r.fuel_pct FROM readings r {_aj('r')} WHERE a.tag = "
                    "'GEN-1' AND r.taken_at BETWEEN '2026-03-08 00:00' AND '2026-03-09 12:00' AND "
                    "(r.load_pct > 0 OR r.taken_at LIKE '% 00:00' OR r.taken_at LIKE '% 12:00') ORDER BY "
                    "r.taken_at;",
                    "GEN-1 fuel around the run",
                ),
                "It started on the mains failure; following the fuel level through the run and after.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT m.done_on, m.kind, m.notes FROM maintenance m {_aj('m')} WHERE a.tag = 'GEN-1' "
                    "AND m.done_on >= '2026-03-08';",
                    "GEN-1 maintenance since 03-08",
                ),
                "Was it refuelled?",
            ),
        ]

        def answer(r: Results) -> str:
            al = rows(r[2])
            fuel = rows(r[3])
            low = next(x for x in al if x["code"] == "FUEL_LOW")
            run = next(x for x in al if x["code"] == "RUNNING")
            refuel = rows(r[4])
            running = [x for x in fuel if num(x["load_pct"]) > 0]
            start = running[0]
            end = min(fuel, key=lambda x: num(x["fuel_pct"]))
            return (
                f"**The outage run drained the tank.** GEN-1 started at {run['raised_at']} (mains failure) "
                f"and ran until {run['cleared_at']}, at about {start['load_pct']} % load:\n\n"
                + table(
                    ["Reading", "Load", "Fuel"],
                    [(x["taken_at"], f"{x['load_pct']} %", f"{x['fuel_pct']} %") for x in fuel],
                )
                + f"\n\nFuel fell from {fuel[0]['fuel_pct']} % to {end['fuel_pct']} % in one run, and "
                f"crossed the 40 % warning limit at {low['raised_at'][11:]} ({low['message']}). "
                + (
                    f"It was refuelled on {refuel[0]['done_on']} ({refuel[0]['notes']}) and the alarm "
                    f"cleared at {low['cleared_at']}. "
                    if refuel
                    else ""
                )
                + "Nothing is wrong with the set; the alarm did its job. The lesson: GEN-1 started the "
                f"outage at only {fuel[0]['fuel_pct']} %, so a longer outage would have run it dry. Keeping "
                "it topped up after the weekly tests would help."
            )

    elif case == "ups3_battery_low":
        prompt = "Diagnose the open BATTERY_LOW alarm on UPS-3."
        calls = [
            schema,
            Call(
                "Bash",
                sql(
                    f"SELECT al.raised_at, al.code, al.message, al.cleared_at FROM alarms al {_aj()} WHERE "
                    "a.tag = 'UPS-3' ORDER BY al.raised_at;",
                    "UPS-3 alarms",
                ),
                "UPS-3's alarms, in order.",
            ),
            Call(
                "Bash",
                sql(
                    "SELECT a.tag, MIN(r.battery_pct) AS lowest, MIN(CASE WHEN r.taken_at > '2026-03-08 "
                    "04:00' AND r.battery_pct = 100 THEN r.taken_at END) AS back_to_100 FROM readings r "
                    f"{_aj('r')} WHERE a.kind = 'ups' GROUP BY a.tag;",
                    "Lowest charge per UPS and recovery time",
                ),
                "Compare with the other two UPS units, which saw the same event.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT m.done_on, m.kind, m.notes FROM maintenance m {_aj('m')} WHERE a.tag = 'UPS-3';",
                    "UPS-3 maintenance",
                ),
                "And UPS-3's battery history.",
            ),
        ]

        def answer(r: Results) -> str:
            al = rows(r[1])
            low = next(x for x in al if x["code"] == "BATTERY_LOW")
            ups = rows(r[2])
            m = rows(r[3])[-1]
            u3 = next(x for x in ups if x["tag"] == "UPS-3")
            return (
                f"**UPS-3's battery is worn out.** The alarm was raised at {low['raised_at']} "
                f"({low['message']}) during the site-wide supply loss, and is still open.\n\n"
                + table(
                    ["UPS", "Lowest charge", "Back to 100 %"],
                    [(x["tag"], f"{x['lowest']} %", x["back_to_100"] or "not yet") for x in ups],
                )
                + "\n\nThe same ~1-minute event took the other units down only a few percent; UPS-3 lost "
                f"{100 - num(u3['lowest']):.0f} points and recharged slowly. That matches the last impedance "
                f"test ({m['done_on']}): {m['notes']}. Recommendation: go ahead with the battery "
                "replacement; until then UPS-3's runtime for the protection relays is well below its rating."
            )

    elif case == "tx2_critical":
        prompt = "Why did TX-2 raise a critical alarm on 2026-03-09? Debug it."
        calls = [
            Call(
                "Bash",
                sql(
                    "SELECT al.raised_at, al.severity, al.code, al.message, al.cleared_at FROM alarms al "
                    f"{_aj()} WHERE a.tag = 'TX-2' AND date(al.raised_at) = '2026-03-09' ORDER BY "
                    "al.raised_at;",
                    "TX-2 alarms on 2026-03-09",
                ),
                "TX-2's alarms that day.",
            ),
            Call(
                "Bash",
                sql(
                    "SELECT r.taken_at, a.tag, r.load_pct, r.temp_c, ROUND(t.rating_kva * r.load_pct / 100) "
                    f"AS kva, t.rating_kva FROM readings r {_aj('r')} JOIN transformer_specs t ON t.asset_id "
                    "= a.id WHERE a.tag IN ('TX-1','TX-2') AND r.taken_at BETWEEN '2026-03-09 08:00' AND "
                    "'2026-03-09 20:00' ORDER BY r.taken_at, a.tag;",
                    "TX-1 and TX-2 loads on 2026-03-09",
                ),
                "Load and oil temperature through the day, with TX-1 alongside for the spare capacity.",
            ),
        ]

        def answer(r: Results) -> str:
            crit = next(x for x in rows(r[0]) if x["severity"] == "critical")
            rs = rows(r[1])
            tx2 = {x["taken_at"][11:]: x for x in rs if x["tag"] == "TX-2"}
            tx1 = {x["taken_at"][11:]: x for x in rs if x["tag"] == "TX-1"}
            t = crit["raised_at"][11:13] + ":00"
            spare = num(tx1[t]["rating_kva"]) - num(tx1[t]["kva"])
            return (
                f"**A real overload, not a false alarm.** At {t} TX-2 carried {tx2[t]['load_pct']} % of its "
                f"{fmt(tx2[t]['rating_kva'])} kVA rating ({fmt(tx2[t]['kva'])} kVA) and crossed the trip "
                f"limit: {crit['message']}. Oil reached {tx2[t]['temp_c']} °C.\n\n"
                + table(
                    ["Time", "TX-2 load", "TX-2 oil", "TX-1 load"],
                    [
                        (k, f"{v['load_pct']} %", f"{v['temp_c']} °C", f"{tx1[k]['load_pct']} %")
                        for k, v in tx2.items()
                    ],
                )
                + f"\n\nIt cleared at {crit['cleared_at'][11:]} when the load fell back. At the same moment "
                f"TX-1 had about {fmt(spare, 0)} kVA spare. TX-2 lives close to its warning limit every "
                "weekday; moving a feeder or two to TX-1 is the durable fix."
            )

    elif case == "tx2_temp_high":
        prompt = "Debug the TEMP_HIGH warning on TX-2 at 2026-03-06 12:01."
        calls = [
            Call(
                "Bash",
                sql(
                    f"SELECT r.taken_at, r.load_pct, r.temp_c FROM readings r {_aj('r')} WHERE a.tag = "
                    "'TX-2' AND r.taken_at BETWEEN '2026-03-06 08:00' AND '2026-03-06 20:00';",
                    "TX-2 readings around 2026-03-06 12:00",
                ),
                "The readings around the alarm first.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT al.raised_at, al.message, al.cleared_at FROM alarms al {_aj()} WHERE a.tag = "
                    "'TX-2' AND al.code = 'TEMP_HIGH' ORDER BY al.raised_at;",
                    "All TX-2 TEMP_HIGH alarms",
                ),
                "Is it a one-off? All TEMP_HIGH alarms on TX-2.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT m.done_on, m.kind, m.notes FROM maintenance m {_aj('m')} WHERE a.tag = 'TX-2' "
                    "ORDER BY m.done_on DESC LIMIT 2;",
                    "Latest TX-2 maintenance",
                ),
                "And the cooling maintenance.",
            ),
        ]

        def answer(r: Results) -> str:
            rs = rows(r[0])
            peak = max(rs, key=lambda x: num(x["temp_c"]))
            alarms_ = rows(r[1])
            m = rows(r[2])
            fans = next((x for x in m if "fan" in x["notes"].lower()), m[0])
            return (
                f"**The oil followed the load.** At {peak['taken_at'][11:]} TX-2 ran at {peak['load_pct']} % "
                f"and the oil reached {peak['temp_c']} °C, just over the 75 °C warning limit; it was back "
                "under by the next reading as the load dropped:\n\n"
                + table(
                    ["Reading", "Load", "Oil"],
                    [(x["taken_at"][11:], f"{x['load_pct']} %", f"{x['temp_c']} °C") for x in rs],
                )
                + f"\n\nIt is not a one-off: TX-2 has {len(alarms_)} TEMP_HIGH alarms ("
                + ", ".join(x["raised_at"][5:] for x in alarms_)
                + f"), all on heavy-load days. Cooling was checked on {fans['done_on']} ({fans['notes']}), "
                "so this is load, not a cooling fault. Same conclusion as the load alarms: TX-2 needs some "
                "of its load moved."
            )

    elif case == "tx2_fan_fail":
        prompt = "Diagnose the FAN_FAIL alarm that is open on TX-2."
        calls = [
            schema,
            Call(
                "Bash",
                sql(
                    f"SELECT al.id, al.raised_at, al.message FROM alarms al {_aj()} WHERE a.tag = 'TX-2' AND "
                    "al.code = 'FAN_FAIL' AND al.cleared_at IS NULL;",
                    "Open FAN_FAIL on TX-2",
                ),
                "The open alarm.",
            ),
            Call(
                "Bash",
                sql(
                    "SELECT r.taken_at, r.load_pct, r.temp_c, ROUND(r.temp_c / r.load_pct, 3) AS "
                    f"oil_per_load FROM readings r {_aj('r')} WHERE a.tag = 'TX-2' AND r.taken_at >= "
                    "'2026-03-12' AND (r.taken_at LIKE '% 12:00' OR r.taken_at LIKE '% 16:00');",
                    "TX-2 midday readings 03-12..14",
                ),
                "Has the oil run hotter for the same load since then? Midday readings before and after.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT m.done_on, m.notes FROM maintenance m {_aj('m')} WHERE a.tag = 'TX-2' AND "
                    "m.notes LIKE '%fan%';",
                    "TX-2 fan maintenance",
                ),
                "Fan history.",
            ),
        ]

        def answer(r: Results) -> str:
            al = row(r[1])
            rs = rows(r[2])
            before = [x for x in rs if x["taken_at"] < al["raised_at"]]
            after = [x for x in rs if x["taken_at"] > al["raised_at"]]
            m = row(r[3])
            avg_b = sum(num(x["oil_per_load"]) for x in before) / len(before)
            avg_a = sum(num(x["oil_per_load"]) for x in after) / len(after)
            return (
                f"**Cooling fan 3 on TX-2 stopped at {al['raised_at']}** (alarm {al['id']}, still open: "
                f"{al['message']}).\n\n"
                + table(
                    ["Reading", "Load", "Oil", "Oil °C per % load"],
                    [
                        (x["taken_at"][5:], f"{x['load_pct']} %", f"{x['temp_c']} °C", x["oil_per_load"])
                        for x in rs
                    ],
                )
                + f"\n\nSo far the effect is small: oil per % load averaged {avg_b:.3f} before and "
                f"{avg_a:.3f} after, and the weekend loads since have been light. It will matter on the next "
                "heavy weekday: TX-2 is ONAF and peaks near its limit. Fans 2 and 3 were last checked on "
                f"{m['done_on']} ({m['notes']}). Dispatch a technician before Monday; until the fan is back, "
                "treat 80 % as TX-2's practical limit."
            )

    elif case == "ups1_on_battery":
        prompt = "Debug why UPS-1 went on battery on 2026-03-08."
        bad = (
            f"SELECT al.raised_at, al.code, al.message, al.cleared_at FROM alarms al {_aj()} WHERE a.tag = "
            "'UPS-1' AND al.raised_at LIKE '{p}';"
        )
        calls = [
            Call(
                "Bash",
                sql(bad.format(p="2026-03-08T%"), "UPS-1 alarms on 2026-03-08"),
                "UPS-1's alarms that day.",
                expect="empty",
            ),
            Call(
                "Bash",
                sql(bad.format(p="2026-03-08 %"), "UPS-1 alarms on 2026-03-08"),
                "No rows: timestamps use a space, not 'T'. Rerunning the pattern with a space.",
                keep_reason=True,
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT a.tag, al.code, al.severity FROM alarms al {_aj()} WHERE al.raised_at = "
                    "'2026-03-08 03:52' ORDER BY a.kind, a.tag;",
                    "Everything raised at 03:52",
                ),
                "What else happened at 03:52?",
            ),
        ]

        def answer(r: Results) -> str:
            own = row(r[1])
            other = rows(r[2])
            lost = [x["tag"] for x in other if x["code"] == "SUPPLY_LOST"]
            return (
                f"**Because the site lost its incoming supply.** UPS-1 went on battery at {own['raised_at']} "
                f"and was off it at {own['cleared_at'][11:]}; in the same minute {', '.join(lost)} raised "
                "SUPPLY_LOST and both generators started:\n\n"
                + table(["Asset", "Code", "Severity"], [(x["tag"], x["code"], x["severity"]) for x in other])
                + "\n\nThat is the UPS doing its job: it carried the control room for the ~1 minute until "
                "the generators took the load. Nothing to fix on UPS-1."
            )

    elif case == "gen2_fail_to_start_cause":
        prompt = "GEN-2 failed to start during its test on 2026-03-05. Diagnose the cause."
        fixed = (
            f"SELECT al.raised_at, al.message, al.cleared_at FROM alarms al {_aj()} WHERE a.tag = 'GEN-2' "
            "AND al.code = 'FAIL_TO_START';"
        )
        calls = [
            Call(
                "Bash",
                sql(
                    f"SELECT m.done_on, m.kind, m.notes FROM maintenance m {_aj('m')} WHERE a.tag = 'GEN-2' "
                    "AND m.done_on >= '2026-03-01';",
                    "GEN-2 maintenance in March",
                ),
                "A failed start is usually the starter battery or fuel. Maintenance log first.",
            ),
            Call(
                "Bash",
                sql(
                    f"SELECT r.taken_at, r.temp_c, r.fuel_pct FROM readings r {_aj('r')} WHERE a.tag = "
                    "'GEN-2' AND date(r.taken_at) = '2026-03-05';",
                    "GEN-2 readings on 2026-03-05",
                ),
                "Rule out fuel and a cold block: coolant and fuel that day.",
            ),
            Call(
                "Bash",
                sql(
                    "SELECT raised_at, message, cleared_at FROM alarms WHERE asset = 'GEN-2' AND code = "
                    "'FAIL_TO_START';",
                    "GEN-2 FAIL_TO_START alarm",
                ),
                "Now the alarm's own message.",
                expect="error",
            ),
            Call(
                "Bash",
                sql(fixed, "GEN-2 FAIL_TO_START alarm"),
                "alarms has `asset_id`, not a tag column; joining assets to filter by tag.",
                keep_reason=True,
            ),
        ]

        def answer(r: Results) -> str:
            m = rows(r[0])
            repair = next(x for x in m if x["kind"] == "repair")
            rs = rows(r[1])
            al = row(r[3])
            fuel = rs[0]["fuel_pct"]
            temps = [num(x["temp_c"]) for x in rs]
            return (
                f"**The starter battery.** The alarm ({al['raised_at']}): {al['message']}. Three cranks "
                f"without a start, while:\n\n- fuel was fine: {fuel} % all day;\n- the block heater was "
                f"working: coolant {min(temps):.1f}-{max(temps):.1f} °C, so not a cold-start problem;\n- the "
                f"repair log says it: {repair['done_on']}, {repair['notes']}.\n\nThe alarm cleared at "
                f"{al['cleared_at']} after the replacement. 10.9 V at crank means the old battery had lost "
                "capacity; check GEN-1's starter battery on the next weekly test."
            )

    else:  # tx2_midday_pattern
        prompt = "TX-2 keeps raising LOAD_HIGH warnings around midday. Debug it."
        calls = [
            Call(
                "Bash",
                sql(
                    f"SELECT substr(al.raised_at, 12, 5) AS time, COUNT(*) AS n FROM alarms al {_aj()} WHERE "
                    "a.tag = 'TX-2' AND al.code = 'LOAD_HIGH' GROUP BY time;",
                    "TX-2 LOAD_HIGH by time of day",
                ),
                "When exactly do they fire?",
            ),
            Call(
                "Bash",
                sql(
                    "SELECT date(r.taken_at) AS day, strftime('%w', r.taken_at) AS dow, r.load_pct FROM "
                    f"readings r {_aj('r')} WHERE a.tag = 'TX-2' AND r.taken_at LIKE '% 12:00';",
                    "TX-2 noon load per day",
                ),
                "Noon load per day, with the weekday (0 = Sunday), and the operations notes on TX-2 "
                "alongside.",
            ),
            Call("Grep", grep("TX-2", "docs/operations.md", output_mode="content", A=1), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            by_time = rows(r[0])
            noon = rows(r[1])
            weekday = [
                num(x["load_pct"]) for x in noon if x["dow"] not in ("0", "6") and num(x["load_pct"]) > 0
            ]
            weekend = [num(x["load_pct"]) for x in noon if x["dow"] in ("0", "6") and num(x["load_pct"]) > 0]
            over = sum(1 for x in weekday if x >= 85)
            return (
                "**Not a sensor or alarm fault: TX-2 is undersized for its weekday midday load.**\n\n"
                + table(["Raised at", "Alarms"], [(x["time"], x["n"]) for x in by_time])
                + f"\n\nNoon loads: weekdays {min(weekday):.1f}-{max(weekday):.1f} % ({over} of "
                f"{len(weekday)} at or over 85 %), weekends {min(weekend):.1f}-{max(weekend):.1f} %. The "
                "warnings are the controller correctly reporting a daily peak. `docs/operations.md` already "
                "says what to do: shift feeders to TX-1 when the load stays above 85 %. Taking about "
                f"{max(weekday) - 85 + 3:.0f} points off TX-2's weekday peak ({max(weekday):.1f} % → about "
                "82 %) would stop the warnings with a little margin."
            )

    return Plan(prompt, calls, answer)


# =============================================================================================
# edit


def _edit(rel: str, old: str, new: str, replace_all: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"file_path": f"{V}/{rel}", "old_string": old, "new_string": new}
    if replace_all:
        out["replace_all"] = True
    return out


_BUILD_OLD = (
    "def build(conn, day):\n"
    '    """(tag, kind, avg load, peak load, max temp, flagged readings, headroom kVA) per asset."""\n'
    "    rows = []\n"
    '    for asset in conn.execute("SELECT id, tag, kind FROM assets ORDER BY id"):\n'
)
_BUILD_NEW = (
    "def build(conn, day, tag=None):\n"
    '    """(tag, kind, avg load, peak load, max temp, flagged readings, headroom kVA) per asset;\n'
    '    only the asset ``tag`` when given."""\n'
    "    rows = []\n"
    '    for asset in conn.execute("SELECT id, tag, kind FROM assets ORDER BY id"):\n'
    '        if tag is not None and asset["tag"] != tag:\n'
    "            continue\n"
)
_RUNTIME_FN = '''

def generator_runtime_h(fuel_pct, tank_l, burn_l_per_h, load_pct):
    """Hours of fuel left at a steady load (burn rate scales with load)."""
    return fuel_pct / 100 * tank_l / (burn_l_per_h * load_pct / 100)
'''
_OPEN_ALARMS_FN = '''

def open_alarms(conn):
    """Alarms not cleared yet, oldest first, with the asset tag."""
    return conn.execute(
        "SELECT a.tag, al.* FROM alarms al JOIN assets a ON a.id = al.asset_id "
        "WHERE al.cleared_at IS NULL ORDER BY al.raised_at"
    ).fetchall()
'''


def _snippet_line(result: ToolResult, needle: str) -> int:
    return line_of(result.output_text.split("\n", 1)[1], needle)


@template(
    "add_feature",
    "edit",
    [
        {"case": c}
        for c in (
            "report_tag",
            "runtime_helper",
            "ups_temp_limits",
            "selfcheck_generator",
            "open_alarms",
            "runbook",
            "rename_headroom",
            "ups_load_limit",
        )
    ],
)
def add_feature(rng: random.Random, p: dict[str, Any]) -> Plan:
    """A small feature: search/read first, edit, then run something that proves it works."""
    case = p["case"]
    if case == "report_tag":
        prompt = "Add a --tag option to app/report.py so the report can be limited to one asset."
        calls = [
            Call(
                "Read",
                read("app/report.py", 13, 4),
                "Reading the top of `build()` and the argument parsing in `main()`.",
            ),
            Call("Read", read("app/report.py", 31, 8), None, parallel=True),
            Call(
                "Edit",
                _edit("app/report.py", _BUILD_OLD, _BUILD_NEW),
                "Filter inside `build()` so callers get the same rows either way.",
            ),
            Call(
                "Edit",
                _edit(
                    "app/report.py",
                    '    parser.add_argument("--date", required=True, help="UTC day, YYYY-MM-DD")\n',
                    '    parser.add_argument("--date", required=True, help="UTC day, YYYY-MM-DD")\n'
                    '    parser.add_argument("--tag", help="only this asset, e.g. TX-2")\n',
                ),
                "Now the option.",
            ),
            Call(
                "Edit",
                _edit("app/report.py", "build(conn, args.date)", "build(conn, args.date, args.tag)"),
                "And pass it through.",
            ),
            Call(
                "Bash",
                bash(
                    "python3 -m app.report --date 2026-03-09 --tag TX-2 && python3 -m app.report --date "
                    "2026-03-09 | wc -l",
                    "Report with and without --tag",
                ),
                "Check both paths: with the tag, and the full report unchanged.",
            ),
        ]

        def answer(r: Results) -> str:
            out = r[-1].output_text.split("\n")
            tx2 = next(ln for ln in out if ln.startswith("TX-2"))
            return (
                "Added `--tag` to `app/report.py`:\n\n- `build(conn, day, tag=None)` skips other assets "
                f"when a tag is given (`app/report.py:{_snippet_line(r[2], 'def build')}`);\n- `main()` has "
                "`--tag` (optional) and passes it on "
                f"(`app/report.py:{_snippet_line(r[3], '--tag')}`).\n\n`python3 -m app.report --date "
                f"2026-03-09 --tag TX-2` now prints only\n\n```\n{tx2}\n```\n\nWithout `--tag` the report is "
                f"unchanged ({out[-1].strip()} lines: title, header, 8 assets, open alarms). The open-alarm "
                "count at the bottom still covers all assets; say if it should follow the tag too."
            )

    elif case == "runtime_helper":
        prompt = (
            "Add a generator_runtime_h(fuel_pct, tank_l, burn_l_per_h, load_pct) helper to app/loading.py."
        )
        spec_q = (
            "SELECT a.tag, g.tank_l, g.burn_l_per_h FROM generator_specs g JOIN assets a ON a.id = "
            "g.asset_id WHERE a.tag = 'GEN-1';"
        )

        def check(results: Results) -> dict[str, Any]:
            x = row(results[1])
            code = (
                f"from app.loading import generator_runtime_h as f; print(round(f(95.0, {x['tank_l']}, "
                f"{x['burn_l_per_h']}, 63.1), 1), round(f(95.0, {x['tank_l']}, {x['burn_l_per_h']}, 100), 1))"
            )
            return bash(f'python3 -c "{code}"', "Runtime of GEN-1 at 63.1 % and 100 % load")

        calls = [
            Call(
                "Read", read("app/loading.py"), "Reading the module, and GEN-1's specs for a realistic check."
            ),
            Call("Bash", sql(spec_q, "GEN-1 tank and burn rate"), None, parallel=True),
            Call(
                "Edit",
                _edit(
                    "app/loading.py",
                    "    return rating_kva * (100 - load_pct) / 100\n",
                    "    return rating_kva * (100 - load_pct) / 100\n" + _RUNTIME_FN,
                ),
                "Append it after `headroom_kva`, in the same style.",
            ),
            Call(
                "Bash",
                check,
                "Check it with GEN-1's numbers: 95 % fuel at the 63.1 % it ran during the outage, and at "
                "full load.",
            ),
        ]

        def answer(r: Results) -> str:
            x = row(r[1])
            at_load, full = r[-1].output_text.split()
            return (
                "Added `generator_runtime_h` to "
                f"`app/loading.py:{_snippet_line(r[2], 'def generator_runtime_h')}`:\n\n```python\nreturn "
                "fuel_pct / 100 * tank_l / (burn_l_per_h * load_pct / 100)\n```\n\nIt assumes the burn rate "
                "scales linearly with load (`burn_l_per_h` is the full-load figure in `generator_specs`). "
                f"Check with GEN-1 ({fmt(x['tank_l'])} l tank, {fmt(x['burn_l_per_h'])} l/h): at 95 % fuel "
                f"it runs **{at_load} h** at 63.1 % load and **{full} h** at full load. Real sets burn "
                "relatively more at light load, so treat it as an upper bound there."
            )

    elif case == "ups_temp_limits":
        prompt = "Add battery-room temperature limits for the UPS units: warn at 30 C, trip at 35 C."
        calls = [
            Call(
                "Grep",
                grep("temp_warn_c", "app/alarms.py", output_mode="content"),
                "Does `evaluate()` need a change, or only the config?",
            ),
            Call(
                "Read",
                read("config/thresholds.ini", 17, 4),
                "It checks temperature only when `temp_warn_c` is present, so config only. Reading the "
                "[ups] section.",
            ),
            Call(
                "Edit",
                _edit(
                    "config/thresholds.ini",
                    "battery_warn_pct = 80\n",
                    "battery_warn_pct = 80\ntemp_warn_c = 30\ntemp_trip_c = 35\n",
                ),
                "Add both limits to [ups].",
            ),
            Call(
                "Bash",
                bash(
                    "python3 -c \"from app.config import thresholds; print(thresholds('ups'))\" && "
                    f'sqlite3 -header -column {DB} "SELECT a.tag, MAX(r.temp_c) AS max_room_c FROM readings '
                    "r JOIN assets a ON a.id = r.asset_id WHERE a.kind = 'ups' GROUP BY a.tag;\"",
                    "Load the new limits and show the hottest UPS readings",
                ),
                "Confirm the config loads, and see how close the rooms have come.",
            ),
        ]

        def answer(r: Results) -> str:
            guard = next(n for _, n, t in grep_lines(r[0]) if "in limits" in t)
            lines = r[-1].output_text.split("\n")
            temps = rows("\n".join(lines[1:]))
            hottest = max(temps, key=lambda x: num(x["max_room_c"]))
            return (
                "Added to `[ups]` in `config/thresholds.ini` (line "
                f"{_snippet_line(r[2], 'temp_warn_c')}):\n\n```ini\ntemp_warn_c = 30\ntemp_trip_c = "
                "35\n```\n\nNo code change was needed: `evaluate()` checks temperature whenever the kind "
                f"has `temp_warn_c` (`app/alarms.py:{guard}`). `thresholds('ups')` now returns "
                f"`{lines[0]}`.\n\nThe hottest UPS room so far is {hottest['tag']}'s at "
                f"{hottest['max_room_c']} °C, so nothing would have alarmed in the last two weeks; the "
                f"warning gives about {30 - num(hottest['max_room_c']):.1f} °C of margin there."
            )

    elif case == "selfcheck_generator":
        prompt = "Add a self-check for generator_load_pct."
        calls = [
            Call(
                "Bash",
                bash(SELFCHECK, "Baseline self-check run"),
                "Baseline first, so I know what already fails.",
                expect="error",
            ),
            Call("Read", read("app/selfcheck.py", 1, 20), "Reading the imports and the first checks."),
            Call(
                "Edit",
                _edit(
                    "app/selfcheck.py",
                    "from app.loading import headroom_kva, transformer_load_pct",
                    "from app.loading import generator_load_pct, headroom_kva, transformer_load_pct",
                ),
                "Import it.",
            ),
            Call(
                "Edit",
                _edit(
                    "app/selfcheck.py",
                    "    assert headroom_kva(1500, 80) == 300\n",
                    "    assert headroom_kva(1500, 80) == 300\n\n\ndef check_generator_load_pct():\n    "
                    "assert generator_load_pct(625, 1250) == 50\n",
                ),
                "625 kW on a 1,250 kW set is exactly 50 %, with no float rounding.",
            ),
            Call(
                "Edit",
                _edit(
                    "app/selfcheck.py",
                    "    check_headroom_kva,\n",
                    "    check_headroom_kva,\n    check_generator_load_pct,\n",
                ),
                "Register it in CHECKS.",
            ),
            Call("Bash", bash(SELFCHECK, "Run the self-checks"), "Run them again.", expect="error"),
        ]

        def answer(r: Results) -> str:
            before, after = _selfcheck_summary(r[0]), _selfcheck_summary(r[-1])
            new = next(ln for ln in r[-1].output_text.split("\n") if "check_generator_load_pct" in ln)
            return (
                "Added `check_generator_load_pct` to `app/selfcheck.py` (line "
                f"{_snippet_line(r[3], 'def check_generator_load_pct')}): `generator_load_pct(625, 1250) == "
                f"50`, registered in `CHECKS` and imported.\n\nResult: `{new.strip()}`. Totals went from "
                f"{before} to {after}.\n\nThe remaining failure ({', '.join(_failing(r[-1]))}) was already "
                "failing in the baseline run and is unrelated to this change: it is the load-warning bug in "
                "`app/alarms.py`."
            )

    elif case == "open_alarms":
        prompt = (
            "Add an open_alarms(conn) helper to app/db.py that returns the open alarms with their asset tags."
        )
        calls = [
            Call("Read", read("app/db.py"), "Reading `app/db.py` to match its style."),
            Call(
                "Edit",
                _edit(
                    "app/db.py",
                    "        (tag, day),\n    ).fetchall()\n",
                    "        (tag, day),\n    ).fetchall()\n" + _OPEN_ALARMS_FN,
                ),
                "Append the helper at the end.",
            ),
            Call(
                "Bash",
                bash(
                    "python3 -c \"from app import db; conn = db.connect(); [print(r['tag'], r['raised_at'], "
                    "r['code']) for r in db.open_alarms(conn)]\"",
                    "Call open_alarms",
                ),
                "Try it against the real database.",
            ),
        ]

        def answer(r: Results) -> str:
            found = [ln.split(" ", 1) for ln in r[-1].output_text.split("\n") if ln.strip()]
            return (
                f"Added `open_alarms(conn)` at `app/db.py:{_snippet_line(r[1], 'def open_alarms')}`: alarms "
                "with `cleared_at IS NULL`, joined to `assets` for the tag, oldest first. Rows are "
                "`sqlite3.Row`, so `row['tag']`, `row['code']` etc. work like the other helpers.\n\nAgainst "
                f"the database it returns {len(found)}:\n\n"
                + "\n".join(f"- {tag}: {rest}" for tag, rest in found)
            )

    elif case == "runbook":
        prompt = "Create docs/runbook-generator-start.md with the checks for a generator that fails to start."
        q = (
            "SELECT a.tag, m.done_on, m.notes FROM maintenance m JOIN assets a ON a.id = m.asset_id WHERE "
            "m.kind = 'repair' AND a.kind = 'generator';"
        )

        def content(results: Results) -> dict[str, Any]:
            rep = row(results[1])
            body = (
                "# Runbook: generator fails to start\n\nA failed start on test or on demand raises "
                "`FAIL_TO_START` (critical). Work through these in order.\n\n1. **Starter battery.** "
                "Measure the voltage while cranking; below about 11 V, replace it. This was the cause on "
                f"{rep['tag']} on {rep['done_on']} ({rep['notes']}).\n2. **Fuel.** Check `fuel_pct` in the "
                "latest reading; keep it above 40 % (`fuel_warn_pct`).\n3. **Block heater.** Idle coolant "
                "should read about 38 C; much lower means a cold start.\n4. **Controls.** Check the "
                "controller for a latched shutdown and reset it.\n5. **Retest** under load (load bank, ~40 "
                "%) and clear the alarm.\n\nLog the work in the `maintenance` table (kind `repair`).\n"
            )
            return {"file_path": f"{V}/docs/runbook-generator-start.md", "content": body}

        calls = [
            Call(
                "Read",
                read("docs/operations.md", 9, 6),
                "Reading the generator notes and the last real failed start, so the runbook matches site "
                "practice.",
            ),
            Call("Bash", sql(q, "Generator repairs"), None, parallel=True),
            Call("Write", content, "Writing the runbook."),
            Call("Glob", {"pattern": "docs/*.md"}, "Check it sits with the other docs."),
        ]

        def answer(r: Results) -> str:
            rep = row(r[1])
            docs = [x.rsplit("/", 1)[-1] for x in r[-1].output_text.split("\n")]
            return (
                "Created `docs/runbook-generator-start.md`: five checks in order (starter battery, fuel, "
                "block heater, controls, retest under load) and a note to log the repair.\n\nIt cites the "
                f"one real case in the maintenance log ({rep['tag']}, {rep['done_on']}: {rep['notes']}) and "
                "uses the site's own numbers (40 % fuel warning, ~40 % load-bank test from "
                f"`docs/operations.md`). `docs/` now holds: {', '.join(docs)}."
            )

    elif case == "rename_headroom":
        prompt = "Rename headroom_kva to spare_capacity_kva in the code."
        calls = [
            Call("Grep", grep("headroom_kva", "app", output_mode="content"), "Find every use first."),
            Call("Read", read("app/loading.py", 17, 3), "Reading the three files before editing them."),
            Call("Read", read("app/report.py", 8, 3), None, parallel=True),
            Call("Read", read("app/selfcheck.py", 9, 1), None, parallel=True),
            Call(
                "Edit",
                _edit("app/loading.py", "def headroom_kva(", "def spare_capacity_kva("),
                "The definition.",
            ),
            Call(
                "Edit",
                _edit("app/report.py", "headroom_kva(conn.execute", "spare_capacity_kva(conn.execute"),
                "In the report, only the import and the call. The `headroom_kva` column label is output "
                "other tools may parse, so it stays.",
            ),
            Call(
                "Edit",
                _edit(
                    "app/report.py",
                    "from app.loading import headroom_kva",
                    "from app.loading import spare_capacity_kva",
                ),
                None,
            ),
            Call(
                "Edit",
                _edit("app/selfcheck.py", "headroom_kva", "spare_capacity_kva", replace_all=True),
                "Self-checks: every occurrence, including the check's name.",
            ),
            Call(
                "Bash",
                bash(
                    f"{SELFCHECK}; python3 -m app.report --date 2026-03-09 | sed -n '2,3p'",
                    "Self-checks and the report header",
                ),
                "Run the checks and the report.",
            ),
            Call("Grep", grep("headroom_kva", "app", output_mode="content"), "Anything left?"),
        ]

        def answer(r: Results) -> str:
            out = r[-2].output_text
            left = grep_lines(r[-1])
            return (
                "Renamed `headroom_kva` → `spare_capacity_kva`:\n\n"
                + table(
                    ["File", "Change"],
                    [
                        ("app/loading.py", "the definition"),
                        ("app/report.py", "import and call; the `headroom_kva` column label kept"),
                        (
                            "app/selfcheck.py",
                            "import, call and `check_headroom_kva` → `check_spare_capacity_kva` "
                            "(replace_all)",
                        ),
                    ],
                )
                + f"\n\nChecks: `{next(ln for ln in out.split(chr(10)) if 'spare_capacity' in ln).strip()}`; "
                f"summary `{next(ln for ln in out.split(chr(10)) if 'passed' in ln)}`. The one failure is "
                "the existing load-warning bug, not the rename. The report still runs. Remaining matches: "
                + ", ".join(f"`{pth}:{n}`" for pth, n, _ in left)
                + " (the column label, on purpose)."
            )

    else:  # ups_load_limit
        prompt = "Update the UPS load warning limit to 75 % and check what it changes for UPS-2."
        q = (
            "SELECT COUNT(*) AS readings, MAX(r.load_pct) AS peak, SUM(r.load_pct >= 75) AS at_or_over_75, "
            "SUM(r.load_pct >= 80) AS at_or_over_80 FROM readings r JOIN assets a ON a.id = r.asset_id "
            "WHERE a.tag = 'UPS-2';"
        )
        calls = [
            Call("Read", read("config/thresholds.ini", 17, 4), "Reading the [ups] section."),
            Call(
                "Edit",
                _edit(
                    "config/thresholds.ini",
                    "load_warn_pct = 80\nload_trip_pct = 95\n",
                    "load_warn_pct = 75\nload_trip_pct = 95\n",
                ),
                "`load_warn_pct = 80` also appears under [generator]; including the [ups] trip line makes "
                "the match unique.",
            ),
            Call(
                "Bash",
                sql(q, "UPS-2 readings against 75 % and 80 %"),
                "What the new limit would catch for UPS-2.",
            ),
            Call(
                "Grep",
                grep("load_warn_pct", "app/alarms.py", output_mode="content"),
                "And confirm the evaluator uses the warn limit.",
            ),
        ]

        def answer(r: Results) -> str:
            x = row(r[2])
            uses = grep_lines(r[3])
            return (
                "Changed `[ups] load_warn_pct` from 80 to **75** "
                f"(`config/thresholds.ini:{_snippet_line(r[1], 'load_warn_pct = 75')}`).\n\nFor UPS-2 it "
                f"changes nothing yet: its peak over {x['readings']} readings is {x['peak']} %, with "
                f"{x['at_or_over_75']} readings at or over 75 % (and {x['at_or_over_80']} over the old 80 "
                "%).\n\nOne problem found while checking: in `app/alarms.py` `load_warn_pct` is used only "
                f"in the message text ({', '.join(f'line {n}' for _, n, _ in uses)}); the warning branch "
                "itself compares with `load_trip_pct`. So load warnings never fire, whatever this limit is "
                "set to. That is worth fixing next; I left it alone since it is outside this change."
            )

    return Plan(prompt, calls, answer)


# =============================================================================================
# run_test


def _report_rows(text: str) -> list[list[str]]:
    return [ln.split() for ln in text.split("\n") if re.match(r"^(TX|GEN|UPS)-\d", ln)]


@template(
    "run_report",
    "run_test",
    [
        {"day": "2026-03-02", "form": 0},
        {"day": "2026-03-04", "form": 1},
        {"day": "2026-03-05", "form": 2, "forget_flag": True},
        {"day": "2026-03-06", "form": 0},
        {"day": "2026-03-08", "form": 1},
        {"day": "2026-03-09", "form": 2},
        {"day": "2026-03-11", "form": 0, "forget_flag": True},
        {"day": "2026-03-13", "form": 1},
        {"day": "2026-02-27", "form": 0, "out_of_range": True},
    ],
)
def run_report(rng: random.Random, p: dict[str, Any]) -> Plan:
    """Run the daily report and summarize what needs attention."""
    day = p["day"]
    prompt = [
        f"Run the daily report for {day} and summarize anything abnormal.",
        f"Run the report for {day}.",
        f"Run python3 -m app.report for {day} and tell me which assets need attention.",
    ][p["form"]]
    run = Call("Bash", bash(f"python3 -m app.report --date {day}", f"Daily report for {day}"), "Run it.")
    calls: list[Call] = []
    if p.get("forget_flag"):
        calls = [
            Call(
                "Bash",
                bash(f"python3 -m app.report {day}", f"Daily report for {day}"),
                "Run the report.",
                expect="error",
            ),
            Call(
                "Bash",
                bash(f"python3 -m app.report --date {day}", f"Daily report for {day}"),
                "It takes the day as `--date`, not a positional argument. Rerunning.",
                keep_reason=True,
            ),
        ]
    else:
        if rng.random() < 0.5:
            calls.append(
                Call(
                    "Grep",
                    grep("add_argument", "app/report.py", output_mode="content"),
                    "Check the report's arguments first.",
                )
            )
            run.reason = "It wants `--date YYYY-MM-DD`."
        calls.append(run)
        if p.get("out_of_range"):
            calls.append(
                Call(
                    "Bash",
                    sql(
                        "SELECT MIN(taken_at) AS first, MAX(taken_at) AS last, COUNT(*) AS readings FROM "
                        "readings;",
                        "Date range of the readings",
                    ),
                    "No asset lines at all. Checking which dates the database covers.",
                    keep_reason=True,
                )
            )

    def answer(r: Results) -> str:
        out = r[-1].output_text if not p.get("out_of_range") else r[-2].output_text
        open_line = next(ln for ln in out.split("\n") if ln.startswith("open alarms"))
        if p.get("out_of_range"):
            x = row(r[-1])
            return (
                f"The report for {day} is empty: no asset has readings that day. The database covers "
                f"**{x['first']} to {x['last']}** ({x['readings']} readings), so {day} is before the first "
                f"reading. The only line it prints is `{open_line}`, which is a current count, not specific "
                "to the date. Pick a day from 2026-03-01 onward."
            )
        rs = _report_rows(out)
        notes: list[str] = []
        gens = [x for x in rs if x[1] == "generator" and float(x[3]) > 0]
        txs = [x for x in rs if x[1] == "transformer"]
        for x in txs:
            if float(x[3]) >= 85:
                notes.append(f"**{x[0]}** peaked at {x[3]} % (headroom {x[6]} kVA), oil up to {x[4]} °C")
        if gens and any(float(x[2]) < 0.7 * float(x[3]) for x in txs):
            low = ", ".join(f"{x[0]} {x[2]} %" for x in txs)
            notes.append(
                f"generators ran ({', '.join(f'{g[0]} peak {g[3]} %' for g in gens)}) while the transformer "
                f"averages dropped ({low}): looks like a supply interruption; the day's alarms will confirm"
            )
        elif gens:
            notes.append(
                f"{', '.join(g[0] for g in gens)} ran (peak {', '.join(g[3] + ' %' for g in gens)}), "
                "consistent with a test run"
            )
        for x in rs:
            if int(x[5]) > 0 and not (x[1] == "transformer" and float(x[3]) >= 85):
                notes.append(
                    f"{x[0]} has {x[5]} flagged reading{'s' if int(x[5]) != 1 else ''} (`python3 -m "
                    f"app.alarms {x[0]} {day}` shows which limit)"
                )
        flagged = [x for x in rs if int(x[5]) > 0]
        text = ""
        if p.get("forget_flag"):
            text += (
                "(The report takes the day as `--date`; the first call without it failed on argument "
                "parsing.)\n\n"
            )
        text += f"**Daily report {day}**: {len(rs)} assets reported; {open_line}.\n\n"
        if notes:
            text += "Needs attention:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n"
        else:
            text += "Nothing abnormal: all loads and temperatures are in their usual range.\n\n"
        text += table(
            ["Asset", "Avg load", "Peak", "Max temp", "Flagged"],
            [(x[0], f"{x[2]} %", f"{x[3]} %", f"{x[4]} °C", x[5]) for x in rs if x in flagged or x in txs],
        )
        quiet = [x[0] for x in rs if x not in flagged and x not in txs]
        if quiet:
            text += f"\n\n{', '.join(quiet)}: normal."
        return text

    return Plan(prompt, calls, answer)


# =============================================================================================
# plan


@template(
    "plan_change",
    "plan",
    [
        {"case": c}
        for c in (
            "fuel_critical",
            "csv_export",
            "ups_temp_alarm",
            "minute_readings",
            "thresholds_in_db",
            "add_tx4",
        )
    ],
)
def plan_change(rng: random.Random, p: dict[str, Any]) -> Plan:
    """A plan grounded in the code: read what the change touches, then a numbered plan with file:line."""
    case = p["case"]
    if case == "fuel_critical":
        prompt = "Plan how to add a critical fuel level (below 20 %) for the generators."
        calls = [
            Call(
                "Read",
                read("config/thresholds.ini", 10, 6),
                "Reading the generator limits and how fuel is evaluated.",
            ),
            Call("Grep", grep("fuel", "app", output_mode="content", i=True), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            warn = line_of(r[0], "fuel_warn_pct")
            fuel = [(pth, n) for pth, n, t in grep_lines(r[1]) if "fuel_warn_pct" in t]
            return (
                "Plan (no changes made yet):\n\n1. **Config**: add `fuel_trip_pct = 20` under `[generator]` "
                f"in `config/thresholds.ini`, next to `fuel_warn_pct` (line {warn}). Keep the `trip` naming "
                f"the other limits use.\n2. **Evaluator**: in `evaluate()` (`app/alarms.py:{fuel[0][1]}`), "
                "check `fuel_trip_pct` first and raise `('critical', 'FUEL_LOW', ...)`, with the existing "
                "warning as the `elif`, like the load and temperature rules. Use "
                "`limits.get('fuel_trip_pct')` so kinds without it are unaffected.\n3. **Self-check**: add "
                "`check_fuel_critical` to `app/selfcheck.py` (15 % → critical, 30 % → warning).\n4. "
                "**Docs**: `docs/alarms.md` describes FUEL_LOW as a warning only; add the critical "
                "level.\n\nRisk is low: only generators carry fuel readings. Run `python3 -m app.selfcheck` "
                "and `python3 -m app.alarms GEN-1 2026-03-08` (fuel went below 40 % that day) to verify."
            )

    elif case == "csv_export":
        prompt = "Plan a CSV export of one asset's readings for a day."
        calls = [
            Call("Read", read("app/db.py", 22, 7), "The query helper and an existing CLI to copy from."),
            Call("Grep", grep("argparse|def main", "app", output_mode="content"), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            d = line_of(r[0], "def readings_on")
            mains = [f"`{pth}:{n}`" for pth, n, t in grep_lines(r[1]) if "def main" in t]
            return (
                "Plan:\n\n1. New module `app/export.py` with `main(argv)`: `python3 -m app.export TAG "
                "YYYY-MM-DD [--out FILE]`, argument parsing like the existing entry points "
                f"({', '.join(mains)}).\n2. Reuse `db.readings_on(conn, tag, day)` (`app/db.py:{d}`): it "
                "already returns one asset's readings for a UTC day, oldest first, as `sqlite3.Row`.\n3. "
                "Write with the `csv` module: header from the row keys (`taken_at, load_pct, temp_c, "
                "fuel_pct, battery_pct`, dropping `asset_id`), empty cells for NULLs, stdout by "
                "default.\n4. Unknown tag: `db.asset()` raises `KeyError`; turn that into a clear error and "
                "exit status 2.\n5. Add a self-check that exports a known day and counts 6 data rows (one "
                "reading every 4 hours).\n\nNo schema change needed; the database stays read-only."
            )

    elif case == "ups_temp_alarm":
        prompt = "Design an alarm for UPS battery-room temperature."
        calls = [
            Call(
                "Grep",
                grep("temp_", "app/alarms.py", output_mode="content"),
                "How does the evaluator handle temperature today, and how hot do the UPS rooms get?",
            ),
            Call(
                "Bash",
                sql(
                    "SELECT a.tag, ROUND(AVG(r.temp_c),1) AS avg_c, MAX(r.temp_c) AS max_c FROM readings r "
                    "JOIN assets a ON a.id = r.asset_id WHERE a.kind = 'ups' GROUP BY a.tag;",
                    "UPS room temperatures",
                ),
                None,
                parallel=True,
            ),
        ]

        def answer(r: Results) -> str:
            guard = next(n for _, n, t in grep_lines(r[0]) if "in limits" in t)
            ups = rows(r[1])
            hottest = max(ups, key=lambda x: num(x["max_c"]))
            return (
                "**Design: reuse TEMP_HIGH with per-kind limits; no new code path.**\n\n`evaluate()` "
                "already checks `temp_c` for any kind whose limits contain `temp_warn_c` "
                f"(`app/alarms.py:{guard}`), and UPS readings store the battery-room temperature in "
                "`temp_c`. UPS limits simply don't exist yet.\n\n"
                + table(
                    ["UPS", "Avg room", "Max room"],
                    [(x["tag"], f"{x['avg_c']} °C", f"{x['max_c']} °C") for x in ups],
                )
                + "\n\nProposal:\n\n1. `[ups]` in `config/thresholds.ini`: `temp_warn_c = 30`, `temp_trip_c "
                "= 35`. VRLA life halves for every ~8-10 °C over 25 °C, so 30 °C is an early warning; "
                f"today's hottest room ({hottest['tag']}, {hottest['max_c']} °C) stays under it.\n2. Message "
                "stays `temp X C >= 30C`; consider wording it as battery room in `docs/alarms.md`.\n3. "
                "Self-check: a UPS reading at 31 °C → warning, 36 °C → critical.\n4. Watch "
                f"{hottest['tag']}: its room runs warmest, and warm rooms age batteries faster."
            )

    elif case == "minute_readings":
        prompt = "Propose how to keep 1-minute readings without making the database huge."
        calls = [
            Call(
                "Bash",
                bash(
                    f'sqlite3 {DB} "SELECT COUNT(*) FROM readings; PRAGMA page_count; PRAGMA page_size;"',
                    "Row count and file size",
                ),
                "Current size per row first, and the configured intervals.",
            ),
            Call("Read", read("config/polling.ini"), None, parallel=True),
        ]

        def answer(r: Results) -> str:
            n, pages, size = (int(x) for x in r[0].output_text.split())
            per_row = pages * size / n
            retention = int(
                next(ln.split("=")[1] for ln in r[1].output_text.split("\n") if "retention_days" in ln)
            )
            assets = 8
            minute_rows = assets * 1440 * retention
            return (
                f"**Numbers first.** {n} readings take {pages} pages × {size} B ≈ {pages * size / 1024:.0f} "
                f"KiB, about {per_row:.0f} B per row (with the index and the other tables; an upper bound). "
                f"At one row per asset per minute with the configured `retention_days = {retention}`: "
                f"{assets} × 1,440 × {retention} ≈ {minute_rows / 1e6:.1f} M rows ≈ "
                f"{minute_rows * per_row / 1e9:.1f} GB. Too much for one table we scan "
                "daily.\n\n**Proposal:**\n\n1. `readings_raw` (1-minute) kept for **14 days** only, pruned "
                f"nightly; ~{assets * 1440 * 14 * per_row / 1e6:.0f} MB.\n2. Keep `readings` as the 4-hour "
                "rollup (avg/max per column), written by the same nightly job, for the full retention. The "
                "app and reports keep working unchanged.\n3. Add a 15-minute rollup if someone needs finer "
                "history (×16 the current table, still small).\n4. Index `readings_raw (asset_id, "
                "taken_at)`; store `taken_at` as integer epoch there to save space.\n\nAlarms should come "
                "from the raw stream (the controller already sees it); the 4-hour rows hide short "
                "excursions."
            )

    elif case == "thresholds_in_db":
        prompt = "Plan moving the alarm thresholds from config/thresholds.ini into the database."
        calls = [
            Call("Read", read("app/config.py", 15, 4), "What reads the thresholds today, and who calls it?"),
            Call("Grep", grep("thresholds\\(|TX_LIMITS", "app", output_mode="content"), None, parallel=True),
            Call(
                "Grep",
                grep("mode=ro", "app", output_mode="content"),
                "The app opens the database read-only; confirming.",
            ),
        ]

        def answer(r: Results) -> str:
            t = line_of(r[0], "def thresholds")
            calls_ = [
                f"`{pth}:{n}`"
                for pth, n, tx in grep_lines(r[1])
                if "thresholds(kind)" in tx and "def " not in tx
            ]
            ro = grep_lines(r[2])[0]
            return (
                "Plan:\n\n1. **Schema**: `CREATE TABLE thresholds (kind TEXT, name TEXT, value REAL, "
                "PRIMARY KEY (kind, name))` in `db/schema.sql`, seeded from the current `.ini` values.\n2. "
                f"**Loader**: change `thresholds(kind)` (`app/config.py:{t}`) to `SELECT name, value FROM "
                "thresholds WHERE kind = ?`, returning the same dict of floats, so its only caller "
                f"({', '.join(calls_)}) doesn't change.\n3. **Read-only access**: `connect()` opens the "
                f"database with `mode=ro` (`{ro[0]}:{ro[1]}`); reading thresholds is fine, but editing them "
                "needs a separate writable path (a small admin CLI), not the app.\n4. **Self-checks** pass "
                "their own `TX_LIMITS`, so they stay independent of the stored values.\n5. **Migration**: "
                "keep the `.ini` as a fallback for one release, then delete it and update "
                "`docs/alarms.md`.\n\nBenefit: limits get a history if you add `changed_at`/`changed_by`. "
                "Cost: one more thing in the database backup, and editing limits stops being a text-file "
                "change."
            )

    else:  # add_tx4
        prompt = "Outline the changes needed to add a fourth transformer, TX-4."
        calls = [
            Call(
                "Read",
                read("db/schema.sql", 2, 17),
                "The tables a transformer needs, and whether any code hard-codes the tags.",
            ),
            Call(
                "Grep",
                grep("TX-[0-9]|'transformer'|\"transformer\"", "app", output_mode="content"),
                None,
                parallel=True,
            ),
        ]

        def answer(r: Results) -> str:
            hard = grep_lines(r[1])
            kinds = [f"`{pth}:{n}`" for pth, n, t in hard if "transformer" in t and "selfcheck" not in pth]
            tags = [f"`{pth}:{n}`" for pth, n, t in hard if re.search(r"TX-\d", t)]
            return (
                "Outline:\n\n1. **Data only**: one row in `assets` (line "
                f"{line_of(r[0], 'CREATE TABLE assets')} of the schema) with `kind = 'transformer'`, and one "
                f"in `transformer_specs` (line {line_of(r[0], 'CREATE TABLE transformer_specs')}): rating, "
                "voltages, cooling, impedance.\n   ```sql\n   INSERT INTO assets (tag, kind, name, "
                "location, commissioned) VALUES ('TX-4', 'transformer', ...);\n   INSERT INTO "
                "transformer_specs VALUES (<new id>, <kVA>, 13.8, 480, 'ONAN', <Z %>);\n   ```\n2. "
                "**Code**: nothing to change. The app keys on `kind`, not on tags ("
                + ", ".join(kinds)
                + "), and the report loops over all assets"
                + (f"; the only tag in code is in examples ({', '.join(tags)})" if tags else "")
                + ".\n3. **Thresholds**: TX-4 inherits `[transformer]` limits; if it is ONAF or much "
                "smaller, say so before it goes live, since the limits are per kind, not per asset.\n4. "
                "**Gateway**: readings arrive from the SCADA gateway; it needs the new point mapped.\n5. "
                "**Docs**: update the asset list in `README.md` and `docs/operations.md`.\n\nSince the "
                "database is opened read-only by the app, step 1 runs as a one-off migration."
            )

    return Plan(prompt, calls, answer)
