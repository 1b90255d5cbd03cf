#!/usr/bin/env python3
"""Print per-request figures of a Gatling report: summary.py REPORT_DIR

Gatling 3.10+ writes a binary simulation.log and (3.12+) no js/stats.json, so
the figures are read from the statistics table of the report's index.html.
Columns are found by their header text, not by position. Exits 1 if any
request is KO, 0 otherwise.
"""
import sys
from html.parser import HTMLParser
from pathlib import Path

WANTED = ["Total", "KO", "50th pct", "95th pct", "99th pct", "Max"]


class StatsTable(HTMLParser):
    """Collects {column id: header text} and one {column id: text} per request row."""

    def __init__(self):
        super().__init__()
        self.headers, self.rows = {}, []
        self.cell = None  # ("th" | "td" | "name", column id) while inside one

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "th" and a.get("id", "").startswith("col-"):
            self.cell = ("th", a["id"])
        elif tag == "tr" and "id" in a:  # ROOT ("All Requests") or req_...
            self.rows.append({})
        elif tag == "span" and "ellipsed-name" in classes and self.rows:
            self.cell = ("name", "name")
        elif tag == "td" and "value" in classes and self.rows:
            col = [c for c in classes if c.startswith("col-")]  # other tables have none
            self.cell = ("td", col[0]) if col else None

    def handle_endtag(self, tag):
        if tag in ("th", "td", "span"):
            self.cell = None

    def handle_data(self, data):
        if self.cell and data.strip():
            kind, col = self.cell
            target = self.headers if kind == "th" else self.rows[-1]
            target[col] = target.get(col, "") + data.strip()


def read_stats(report):
    """[(request name, {column: text})] for the WANTED columns, "All Requests"
    first as in the report; raises ValueError if a column is missing."""
    report = Path(report)
    table = StatsTable()
    table.feed((report / "index.html").read_text(encoding="utf-8"))
    column = {text: col for col, text in table.headers.items()}
    missing = [w for w in WANTED if w not in column]
    if missing:
        raise ValueError(f"{report}/index.html: no column {missing}; Gatling's report layout changed?")
    return [(row["name"], {w: row.get(column[w], "?") for w in WANTED}) for row in table.rows if "name" in row]


def main():
    try:
        rows = read_stats(sys.argv[1])
    except ValueError as e:
        sys.exit(str(e))

    print(f"{'request':<24}" + "".join(f"{w:>10}" for w in WANTED))
    total_ko = 0
    for name, values in rows:
        print(f"{name:<24}" + "".join(f"{values[w]:>10}" for w in WANTED))
        if name == "All Requests":
            total_ko = int(values["KO"])
    print("(response times in ms)")
    sys.exit(1 if total_ko else 0)


if __name__ == "__main__":
    main()
