#!/usr/bin/env python3
"""Deterministic feeders for the Gatling stress test.

Writes, into the Gatling project's test resources:
  warriors.csv  one column `payload`: the raw JSON body of a POST /warrior
  terms.csv     one column `term`: a search term for GET /warrior?t=

CSV is written with Python's csv module (RFC 4180: every field quoted, inner
quotes doubled), which Gatling's csv() feeder reads back verbatim, so bodies
can hold anything JSON can: null, a number as dob, a string as fight_skills.

Same --seed, same files. Prints how many payloads of each kind were written
and which status each kind should get (see docs/API.md, "Validation").
"""
import argparse
import calendar
import csv
import json
import random
import string
from collections import Counter
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "gatling/src/test/resources"

SKILLS = [
    "Karate", "Judo", "Kendo", "Aikido", "Katana", "Muay Thai", "Capoeira",
    "Krav Maga", "Taekwondo", "Kung Fu", "Jiu-Jitsu", "Boxing", "Wrestling",
    "Savate", "Sambo", "Kali", "Silat", "Hapkido", "Wing Chun", "Kyudo",
    "Iaido", "Naginatajutsu", "Bojutsu", "Sumo", "Kickboxing", "Fencing",
]
# The three invalid kinds, about 1% of payloads each. Every kind's values are
# spread evenly; the expected status is per value.
BAD_NAME = ("name >100 chars", 422)
BAD_DOBS = [("dob '12-12-2000'", "12-12-2000", 422), ("dob null", None, 422),
            ("dob 10", 10, 400), ("dob '?!?!?'", "?!?!?", 422)]
# A 40-digit skill is within this API's 50-character limit: that payload keeps
# the status of the rest of its body (None below). It is kept because the
# original test sends it.
BAD_SKILLS = [("skills [40 digits]", "40 digits", None), ("skills 'string'", "string", 400),
              ("skills 1", 1, 400)]
LETTERS_AND_SPACE = string.ascii_letters + " "


def text(rng, min_len, max_len):
    """1..max_len letters and spaces with at least one letter."""
    while True:
        s = "".join(rng.choices(LETTERS_AND_SPACE, k=rng.randint(min_len, max_len)))
        if s.strip():
            return s


def valid_warrior(rng):
    """A well-typed payload; its dob may still be impossible (month 13, Feb 29)."""
    year, month, day = rng.randint(1940, 2020), rng.randint(1, 13), rng.randint(1, 29)
    skills = None if rng.randrange(14) == 0 else rng.choices(SKILLS, k=rng.randint(1, 26))
    real_date = month <= 12 and day <= calendar.monthrange(year, month)[1]
    kind = "valid" if real_date else "impossible dob (month 13 or Feb 29)"
    body = {"name": text(rng, 1, 100), "dob": f"{year:04d}-{month:02d}-{day:02d}",
            "fight_skills": skills}
    return kind, (201 if real_date else 422), body


def payload(rng):
    """(kind, expected status, body) with ~97% well-typed bodies and ~1% of each bad kind."""
    kind, status, body = valid_warrior(rng)
    roll = rng.random()
    if roll < 0.01:
        body["name"] = "".join(rng.choices(string.ascii_letters, k=120))
        kind, status = BAD_NAME
    elif roll < 0.02:
        kind, body["dob"], status = rng.choice(BAD_DOBS)
    elif roll < 0.03:
        kind, body["fight_skills"], bad_status = rng.choice(BAD_SKILLS)
        if body["fight_skills"] == "40 digits":
            body["fight_skills"] = ["".join(rng.choices(string.digits, k=40))]
        if bad_status is None and status == 422:
            kind += " + impossible dob"
        status = bad_status or status
    return kind, status, body


def write_csv(path, column, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writerow([column])
        w.writerows([r] for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--payloads", type=int, default=100_000)
    ap.add_argument("--terms", type=int, default=5_000)
    ap.add_argument("--out", type=Path, default=RESOURCES)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    kinds, statuses, bodies = Counter(), Counter(), []
    for _ in range(args.payloads):
        kind, status, body = payload(rng)
        kinds[(kind, status)] += 1
        statuses[status] += 1
        bodies.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")))
    terms = [text(rng, 1, 50).strip() for _ in range(args.terms)]

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "warriors.csv", "payload", bodies)
    write_csv(args.out / "terms.csv", "term", terms)

    print(f"{args.out}/warriors.csv: {len(bodies)} payloads (seed {args.seed})")
    for (kind, status), n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {n:7d}  {100 * n / len(bodies):5.2f}%  -> {status}  {kind}")
    print("  expected: " + ", ".join(f"{s}: {statuses[s]}" for s in sorted(statuses)))
    print(f"{args.out}/terms.csv: {len(terms)} terms")


if __name__ == "__main__":
    main()
