"""The bytes DuckDB reads to answer two queries over a day in each format.

usage: query_bytes.py NDJSON_DAY_FOLDER PARQUET_DAY_FOLDER [EVENT_SOURCE]

Runs, in a fresh process per format and query, `SELECT eventName, count(*) ... WHERE
eventSource = EVENT_SOURCE GROUP BY 1` (two narrow columns), then `SELECT eventName,
count(*) ... WHERE userIdentity's type = 'AssumedRole' GROUP BY 1` (the userIdentity JSON column),
and counts the bytes the process read from files while the query ran (`rchar` of
/proc/self/io: every read(2)/pread(2), whatever the page cache holds). That is what Athena
bills for (bytes scanned, compressed). Prints a Markdown row per format and query and
exits non-zero if the formats' answers differ.
Needs a Python with duckdb (`pip install duckdb`; .ci/run's venv has it).
"""
import glob
import json
import os
import subprocess
import sys

NDJSON = "read_json({files}, format = 'newline_delimited', columns = {{%s}})"
PARQUET = "read_parquet({files})"
QUERIES = {
    "source": {
        "ndjson": "SELECT eventName, count(*) FROM "
        + NDJSON % "eventSource: 'VARCHAR', eventName: 'VARCHAR'"
        + " WHERE eventSource = ? GROUP BY 1 ORDER BY 1",
        "parquet": "SELECT eventName, count(*) FROM " + PARQUET
        + " WHERE eventSource = ? GROUP BY 1 ORDER BY 1",
    },
    "identity": {
        "ndjson": "SELECT eventName, count(*) FROM "
        + NDJSON % "eventName: 'VARCHAR', userIdentity: 'JSON'"
        + " WHERE json_extract_string(userIdentity, '$.type') = 'AssumedRole'"
        " GROUP BY 1 ORDER BY 1",
        "parquet": "SELECT eventName, count(*) FROM " + PARQUET
        + " WHERE json_extract_string(userIdentity, '$.type') = 'AssumedRole'"
        " GROUP BY 1 ORDER BY 1",
    },
}
SUFFIX = {"ndjson": "*.ndjson.gz", "parquet": "*.parquet"}


def rchar():
    with open("/proc/self/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("rchar:"))


def child(query, fmt, folder, source):
    import duckdb

    files = sorted(glob.glob(os.path.join(folder, SUFFIX[fmt])))
    assert files, f"no {SUFFIX[fmt]} in {folder}"
    con = duckdb.connect()
    con.execute("SET threads = 2")
    sql = QUERIES[query][fmt].format(files="[" + ", ".join("'%s'" % f for f in files) + "]")
    before = rchar()
    rows = con.execute(sql, [source] if "?" in sql else []).fetchall()
    read = rchar() - before
    size = sum(os.path.getsize(f) for f in files)
    print(json.dumps({"read": read, "size": size, "files": len(files), "rows": rows}))


def main():
    if sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    ndjson, parquet = sys.argv[1], sys.argv[2]
    source = sys.argv[3] if len(sys.argv) > 3 else "sts.amazonaws.com"
    titles = {
        "source": f"WHERE eventSource = '{source}'",
        "identity": "WHERE json_extract_string(userIdentity, '$.type') = 'AssumedRole'",
    }
    print("| query: SELECT eventName, count(*) … GROUP BY 1 | format | files | output MB "
          "| MB read by the query | read / NDJSON read |")
    print("|---|---|---|---|---|---|")
    failed = []
    for query in QUERIES:
        out = {}
        for fmt, folder in (("ndjson", ndjson), ("parquet", parquet)):
            text = subprocess.run(
                [sys.executable, __file__, "--child", query, fmt, folder, source],
                check=True, capture_output=True, text=True,
            ).stdout
            out[fmt] = json.loads(text)
        for fmt in ("ndjson", "parquet"):
            o = out[fmt]
            print(
                f"| `{titles[query]}` | {fmt} | {o['files']} | {o['size'] / 1e6:.1f} "
                f"| {o['read'] / 1e6:.2f} | {o['read'] / out['ndjson']['read']:.3f} |"
            )
        if out["ndjson"]["rows"] != out["parquet"]["rows"]:
            failed.append(f"{query}: ndjson {out['ndjson']['rows']}, parquet {out['parquet']['rows']}")
        elif not out["ndjson"]["rows"]:
            failed.append(f"{query}: no rows over either format (nothing compared)")
    if failed:
        sys.exit("the answers differ:\n" + "\n".join(failed))
    print("same answers over both formats")


main()
