"""Reads a day written as Parquet with DuckDB and checks it against the same day
written as NDJSON (the byte-exact records, read with Python's json module).

usage: duckdb_check.py NDJSON_DAY_FOLDER PARQUET_DAY_FOLDER

Exits non-zero, saying what differs, unless: the row counts and eventID multisets are
equal; every record read back from Parquet (the non-null columns, JSON text columns
parsed, then the entries of otherFields over them; README "Parquet output") equals its
NDJSON record, in order; eventTime is a TIMESTAMP WITH TIME ZONE; and
GROUP BY eventSource, eventName counts the same over both formats.
"""
import collections
import datetime
import glob
import gzip
import json
import os
import sys

import duckdb

ndjson_dir, parquet_dir = sys.argv[1], sys.argv[2]
ndjson_files = sorted(glob.glob(os.path.join(ndjson_dir, "*.ndjson.gz")))
parquet_files = sorted(glob.glob(os.path.join(parquet_dir, "*.parquet")))
assert ndjson_files and parquet_files, (ndjson_files, parquet_files)

source = []
for f in ndjson_files:
    with gzip.open(f, "rt", encoding="utf-8") as fh:
        source.extend(json.loads(line) for line in fh)

con = duckdb.connect()
files = "[" + ", ".join("'%s'" % f for f in parquet_files) + "]"
con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({files})")
types = dict((r[0], r[1]) for r in con.execute("DESCRIBE t").fetchall())
assert types["eventTime"] == "TIMESTAMP WITH TIME ZONE", types["eventTime"]
assert types["readOnly"] == "BOOLEAN", types["readOnly"]
assert types["eventName"] == "VARCHAR", types["eventName"]

columns = list(types)
json_columns = {
    "userIdentity", "requestParameters", "responseElements", "additionalEventData",
    "resources", "serviceEventDetails", "addendum", "edgeDeviceDetails", "tlsDetails",
    "insightDetails",
}
select = ", ".join(
    'epoch_us("eventTime")' if c == "eventTime" else '"%s"' % c for c in columns
)
# file_row_number keeps the files' order, as the records were written.
rows = con.execute(
    f"SELECT {select} FROM read_parquet({files}, filename = true, file_row_number = true) "
    "ORDER BY filename, file_row_number"
).fetchall()
assert len(rows) == len(source), f"rows: parquet {len(rows)}, ndjson {len(source)}"


def event_time(micros):
    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        microseconds=micros
    )
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if micros % 1_000_000 == 0:
        return text + "Z"
    if micros % 1000 == 0:
        return text + ".%03dZ" % (micros % 1_000_000 // 1000)
    return text + ".%06dZ" % (micros % 1_000_000)


for i, (row, want) in enumerate(zip(rows, source)):
    got = {}
    for name, value in zip(columns, row):
        if value is None or name == "otherFields":
            continue
        if name == "eventTime":
            value = event_time(value)
        elif name in json_columns:
            value = json.loads(value)
        got[name] = value
    other = row[columns.index("otherFields")]
    if other is not None:
        got.update(json.loads(other))
    if got != want:
        sys.exit(f"record {i} differs:\n parquet {got}\n  ndjson {want}")

ids_parquet = collections.Counter(r[0] for r in con.execute('SELECT "eventID" FROM t').fetchall())
ids_source = collections.Counter(r.get("eventID") for r in source if isinstance(r.get("eventID"), str))
ids_parquet.pop(None, None)
assert ids_parquet == ids_source, "eventID multisets differ"

group = 'SELECT "eventSource", "eventName", count(*) FROM {} GROUP BY 1, 2 ORDER BY 1, 2'
ndjson_glob = os.path.join(ndjson_dir, "*.ndjson.gz")
over_ndjson = con.execute(
    group.format(
        f"read_json('{ndjson_glob}', format = 'newline_delimited', "
        "columns = {'eventSource': 'VARCHAR', 'eventName': 'VARCHAR'})"
    )
).fetchall()
over_parquet = con.execute(group.format("t")).fetchall()
assert over_ndjson == over_parquet, f"GROUP BY differs:\n{over_ndjson}\n{over_parquet}"

print(f"eventTime: {types['eventTime']}")
print(f"groups equal: {len(over_parquet)}")
print(f"records equal: {len(rows)}")
