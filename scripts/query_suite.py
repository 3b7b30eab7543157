#!/usr/bin/env python3
"""The query suite: queries written for AWS's CloudTrail table, run unchanged on both of our
tables with DuckDB, must return the same rows.

usage: query_suite.py --ctagg CTAGG --ndjson GLOB --parquet GLOB [--queries DIR]

- The NDJSON table is read as Athena's JSON SerDe reads it: `read_json` with the columns the
  table declares (`ctagg schema --duckdb`: AWS's STRUCTs, strings for the rest), so a JSON null
  and an absent key are both NULL and an object in a string column is its JSON text.
- The Parquet table is the files as they are (`read_parquet`).
- Each tests/queries/*.sql (Athena's SQL, table `cloudtrail_logs`) runs on both, through the
  small bridge below from Athena's functions to DuckDB's, and must return at least one row and
  the same rows on both: compared as multisets, on the columns both return (`SELECT *` of the
  Parquet table has eventtime_ts and otherfields too), struct keys and JSON text compared as
  values (one engine's `{"a":1}` is another's `{"a": 1}`).

Exits non-zero naming every query that fails, errs or differs.

The bridge (Athena is Trino; DuckDB's SQL differs in three functions, nothing else is touched):
- json_extract_scalar(json, path): DuckDB's json_extract_string;
- from_iso8601_timestamp(text): CAST(text AS TIMESTAMP WITH TIME ZONE);
- replace(text, search) with two arguments (Trino's removal): replace(text, search, '').
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRIDGE = [
    "CREATE OR REPLACE MACRO json_extract_scalar(j, p) AS json_extract_string(j, p)",
    "CREATE OR REPLACE MACRO from_iso8601_timestamp(t) AS CAST(t AS TIMESTAMP WITH TIME ZONE)",
]
TWO_ARG_REPLACE = re.compile(r"replace\(([^,()]+(?:\([^()]*\))?),\s*('[^']*')\)", re.IGNORECASE)


def to_duckdb(sql):
    """Athena's SQL as DuckDB runs it (see the module doc)."""
    return TWO_ARG_REPLACE.sub(r"replace(\1, \2, '')", sql)


def files(pattern):
    found = sorted(glob.glob(pattern))
    if not found:
        sys.exit(f"no files match {pattern}")
    return "[" + ", ".join("'%s'" % f for f in found) + "]"


def connect(table, pattern, ctagg):
    """A DuckDB connection with `cloudtrail_logs` over one format's files."""
    con = duckdb.connect()
    for stmt in BRIDGE:
        con.execute(stmt)
    if table == "ndjson":
        columns = subprocess.run([ctagg, "schema", "--duckdb"], check=True, capture_output=True, text=True).stdout.strip()
        con.execute(
            f"CREATE VIEW cloudtrail_logs AS SELECT * FROM read_json({files(pattern)}, "
            f"format = 'newline_delimited', columns = {columns})"
        )
    else:
        con.execute(f"CREATE VIEW cloudtrail_logs AS SELECT * FROM read_parquet({files(pattern)})")
    return con


def normal(v):
    """A value as compared: JSON text and structs as values, keys in lower case."""
    if isinstance(v, dict):
        return {str(k).lower(): normal(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [normal(x) for x in v]
    if isinstance(v, str) and v[:1] in "{[":
        try:
            return normal(json.loads(v))
        except ValueError:
            return v
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def run(con, sql):
    """The rows of `sql`, as dicts of lower-case column names."""
    cur = con.execute(to_duckdb(sql))
    names = [d[0].lower() for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def without_limit(sql):
    """`sql` without a final `LIMIT n`: a LIMIT under an ORDER BY with ties (the AWS examples
    have them) may keep different rows of the same answer, on Athena as here, so the
    formats' answers are compared whole."""
    return re.sub(r"\s+LIMIT\s+\d+\s*;?\s*$", "", sql.strip(), flags=re.IGNORECASE)


def multiset(rows, columns):
    return sorted(json.dumps({c: normal(r[c]) for c in columns}, sort_keys=True, default=str) for r in rows)


def compare(name, ndjson_rows, parquet_rows):
    """None when both return the same non-empty rows, else what differs."""
    if not ndjson_rows and not parquet_rows:
        return "no rows on either table: the query proves nothing"
    common = sorted(set(ndjson_rows[0] if ndjson_rows else {}) & set(parquet_rows[0] if parquet_rows else {}))
    a, b = multiset(ndjson_rows, common), multiset(parquet_rows, common)
    if a != b:
        only_a = [r for r in a if r not in b][:3]
        only_b = [r for r in b if r not in a][:3]
        return f"{len(a)} rows on NDJSON, {len(b)} on Parquet; only on NDJSON: {only_a}; only on Parquet: {only_b}"
    return None


def queries(folder):
    paths = sorted(glob.glob(os.path.join(folder, "*.sql")))
    if len(paths) < 20:
        sys.exit(f"{folder} holds {len(paths)} queries; the suite has at least 20")
    return [(os.path.basename(p), open(p, encoding="utf-8").read()) for p in paths]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctagg", required=True)
    ap.add_argument("--ndjson", required=True, help="glob of the NDJSON files")
    ap.add_argument("--parquet", required=True, help="glob of the Parquet files")
    ap.add_argument("--queries", default=os.path.join(ROOT, "tests", "queries"))
    args = ap.parse_args()
    cons = {t: connect(t, getattr(args, t), args.ctagg) for t in ("ndjson", "parquet")}
    failed = []
    for name, sql in queries(args.queries):
        try:
            rows = {t: run(con, sql) for t, con in cons.items()}
        except duckdb.Error as e:
            failed.append(f"{name}: {e}")
            print(f"FAIL {name}: {e}")
            continue
        diff = compare(name, rows["ndjson"], rows["parquet"])
        if diff and without_limit(sql) != sql.strip():
            whole = {t: run(con, without_limit(sql)) for t, con in cons.items()}
            diff = compare(name, whole["ndjson"], whole["parquet"])
            if not diff and len(rows["ndjson"]) != len(rows["parquet"]):
                diff = f"{len(rows['ndjson'])} rows on NDJSON, {len(rows['parquet'])} on Parquet"
        if diff:
            failed.append(f"{name}: {diff}")
            print(f"FAIL {name}: {diff}")
        else:
            print(f"ok   {name}: {len(rows['ndjson'])} rows, the same on both")
    if failed:
        sys.exit(f"{len(failed)} queries failed")
    print("all queries return the same rows on both tables")


if __name__ == "__main__":
    main()
