#!/usr/bin/env python3
"""The bytes DuckDB reads to answer each query of the suite, over a day in each format.

usage: query_bytes.py --ctagg CTAGG --ndjson GLOB --parquet GLOB [--queries DIR] [--only NAME,…]

Runs every tests/queries/*.sql (or those named by --only) as scripts/query_suite.py runs them
(the same tables, the same bridge from Athena's SQL), in a fresh process per query and format,
and counts the bytes the process read from files while the query ran (`rchar` of
/proc/self/io: every read(2)/pread(2), whatever the page cache holds): what Athena bills for
(bytes scanned, compressed). Prints a Markdown row per query and exits non-zero if the formats'
answers differ (query_suite's comparison).
Needs a Python with duckdb (`pip install duckdb`; .ci/run's venv has it).
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import query_suite  # noqa: E402


def rchar():
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def child(args):
    table, pattern, ctagg, path = args
    con = query_suite.connect(table, pattern, ctagg)
    con.execute("SET threads = 2")
    sql = open(path, encoding="utf-8").read()
    before = rchar()
    rows = query_suite.run(con, sql)
    read = rchar() - before
    if query_suite.without_limit(sql) != sql.strip():
        # The answers are compared whole (query_suite.without_limit); not counted.
        rows = query_suite.run(con, query_suite.without_limit(sql))
    print(json.dumps({"read": read, "rows": rows}, default=str))


def main():
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctagg", required=True)
    ap.add_argument("--ndjson", required=True)
    ap.add_argument("--parquet", required=True)
    ap.add_argument("--queries", default=os.path.join(query_suite.ROOT, "tests", "queries"))
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    only = [o for o in args.only.split(",") if o]
    sizes = {}
    for table in ("ndjson", "parquet"):
        import glob

        sizes[table] = sum(os.path.getsize(f) for f in glob.glob(getattr(args, table)))
    print(f"NDJSON: {sizes['ndjson'] / 1e6:.2f} MB, Parquet: {sizes['parquet'] / 1e6:.2f} MB")
    print("| query | MB read, NDJSON | MB read, Parquet | Parquet / NDJSON |")
    print("|---|---|---|---|")
    failed, empty = [], []
    for name, _ in query_suite.queries(args.queries):
        if only and not any(name.startswith(o) for o in only):
            continue
        path = os.path.join(args.queries, name)
        out = {}
        for table in ("ndjson", "parquet"):
            text = subprocess.run(
                [sys.executable, __file__, "--child", table, getattr(args, table), args.ctagg, path],
                check=True, capture_output=True, text=True,
            ).stdout
            out[table] = json.loads(text)
        n, p = out["ndjson"]["read"], out["parquet"]["read"]
        print(f"| `{name}` | {n / 1e6:.2f} | {p / 1e6:.2f} | {p / n if n else 0:.3f} |")
        diff = query_suite.compare(name, out["ndjson"]["rows"], out["parquet"]["rows"])
        if diff and not (out["ndjson"]["rows"] or out["parquet"]["rows"]):
            empty.append(name)
        elif diff:
            failed.append(f"{name}: {diff}")
    if empty:
        print(f"no rows on either format (the data holds no such events): {', '.join(empty)}")
    if failed:
        sys.exit("the answers differ:\n" + "\n".join(failed))
    print("same answers over both formats")


main()
