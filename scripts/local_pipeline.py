#!/usr/bin/env python3
"""The whole pipeline on this machine, without AWS: queue -> function -> S3.

- moto_server (already running; --moto URL) plays S3 and SQS, with the trigger queue's
  dead-letter redrive policy;
- `cargo lambda watch` runs the real Lambda binary (started here);
- this script plays Lambda's SQS event source: receive one message, invoke the function
  with the SQS event, delete the message unless the invocation failed or the response
  names it in batchItemFailures.

Phase 1 invokes every events/*.json with `cargo lambda invoke --data-file` and checks the
responses; then it enqueues two days with `ctagg backfill` plus one raw message for a day
before CloudTrail existed, drains the queue, and checks that both days were aggregated
and that exactly the bad message ended in the dead-letter queue.

Phase 2 (fan-out) restarts the function with SHARD_MAX_FILES=3 and SHARD_QUEUE_URL set to
its queue: a day of 28 files becomes a plan of 10 shards, sent back to the queue by the
invocation that plans it. The driver delivers the first shard message twice (two
invocations of one receive), holds back the first delivery of another one (neither run
nor deleted: it comes back after the visibility timeout) and checks that no manifest
exists until it ran; then the day's records, read in the manifest's order, must be
exactly those of `ctagg run` of the same day as one shard. A second day has a file that
no shard can read: its shard fails every time and is dead-lettered with an error naming
the day, the shard and the object, the day gets no manifest, and `ctagg status` says
which shard failed.

Usage: scripts/local_pipeline.py --moto http://127.0.0.1:5000 --ctagg target/debug/ctagg
"""

import argparse
import gzip
import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC, DST = "local-cloudtrail-logs", "local-aggregated"
FUNCTION = "cloudtrail-aggregator"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def log(msg):
    print(f"[local-pipeline] {msg}", flush=True)


def fail(msg):
    log(f"FAILED: {msg}")
    sys.exit(1)


def record(account, region, i):
    return {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "accountId": account, "userName": f"user{i}"},
        "eventTime": f"2024-02-11T00:{i % 60:02d}:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "awsRegion": region,
        "requestParameters": {"key": "a\u003db"},
        "eventID": f"{account}-{region}-{i}",
    }


def load_sources(s3):
    """Two days of deliveries: generated ones and the real fixtures; plus noise."""
    counts = {}
    for day, n in (("2024/02/11", 3), ("2024/02/12", 4)):
        total = 0
        for f in range(n):
            recs = [record("111111111111", "us-east-1", f * 10 + i) for i in range(f + 1)]
            body = gzip.compress(json.dumps({"Records": recs}, separators=(",", ":")).encode())
            key = f"AWSLogs/o-abc123def4/111111111111/CloudTrail/us-east-1/{day}/f{f}.json.gz"
            s3.put_object(Bucket=SRC, Key=key, Body=body)
            total += len(recs)
        counts[day] = total
    real = ROOT / "tests/fixtures/cloudtrail/SerializerTestFileCompact.json.gz"
    s3.put_object(Bucket=SRC, Key="AWSLogs/222222222222/CloudTrail/eu-west-1/2024/02/12/real.json.gz", Body=real.read_bytes())
    counts["2024/02/12"] += 6
    s3.put_object(Bucket=SRC, Key="AWSLogs/222222222222/CloudTrail-Digest/eu-west-1/2024/02/12/d.json.gz", Body=b"not read")
    return counts


def wait_port(port, seconds):
    end = time.time() + seconds
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    fail(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def invoke(port, event):
    """Invokes the function through cargo lambda watch; returns (ok, payload)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/{FUNCTION}/invocations",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            body = resp.read()
            failed = resp.headers.get("X-Amz-Function-Error")
    except urllib.error.HTTPError as e:
        return False, e.read().decode(errors="replace")
    payload = json.loads(body) if body else None
    if failed or (isinstance(payload, dict) and "errorType" in payload):
        return False, payload
    return True, payload


def sqs_event(msg, queue_arn):
    body = msg["Body"]
    return {
        "Records": [
            {
                "messageId": msg["MessageId"],
                "receiptHandle": msg["ReceiptHandle"],
                "body": body,
                "attributes": msg.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
        ]
    }


def drain(sqs, queue_url, queue_arn, port, deadline, on_message):
    """Plays the event source: one message per invocation until the queue is empty.
    `on_message(msg)` returns "invoke", "invoke-twice" or "hold" (neither run nor
    deleted: redelivered after the visibility timeout). Returns the invocations'
    (message, ok, payload) in order."""
    seen = []
    while time.time() < deadline:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1, AttributeNames=["All"])
        msgs = got.get("Messages", [])
        if not msgs:
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            if attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
                return seen
            continue
        msg = msgs[0]
        what = on_message(msg)
        if what == "hold":
            log(f"message {msg['MessageId']} ({msg['Body']}) held back: it comes back after the visibility timeout")
            continue
        runs = 2 if what == "invoke-twice" else 1
        for _ in range(runs):
            ok, payload = invoke(port, sqs_event(msg, queue_arn))
            seen.append((msg, ok, payload))
        failed_ids = [f["itemIdentifier"] for f in (payload or {}).get("batchItemFailures", [])] if ok else [msg["MessageId"]]
        if msg["MessageId"] in failed_ids:
            log(f"message {msg['MessageId']} ({msg['Body']}) failed; left on the queue: {payload}")
        else:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
            log(f"message {msg['MessageId']} ({msg['Body']}) done ({runs} invocation(s)); deleted")
    fail("the queue did not drain in time")


def start_function(port, fn_env):
    watch = subprocess.Popen(
        ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(port), "--bin", FUNCTION],
        cwd=ROOT,
        env=fn_env,
        start_new_session=True,
    )
    wait_port(port, 300)
    return watch


def stop_function(watch):
    os.killpg(watch.pid, signal.SIGTERM)
    try:
        watch.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(watch.pid, signal.SIGKILL)


def make_queue(sqs, name, receives):
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": "2",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(receives)}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return queue_url, queue_arn, dlq_url


def dead_letters(sqs, dlq_url):
    dead = []
    for _ in range(5):
        got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        dead += got.get("Messages", [])
    return dead


def manifest_order_ndjson(s3, prefix):
    """The day's records, its chunks read in the manifest's order, and the manifest."""
    manifest = json.loads(s3.get_object(Bucket=DST, Key=f"{prefix}_manifest.json")["Body"].read())
    data = b"".join(gzip.decompress(s3.get_object(Bucket=DST, Key=c["key"])["Body"].read()) for c in manifest["chunks"])
    return data, manifest


def exists(s3, key):
    try:
        s3.head_object(Bucket=DST, Key=key)
        return True
    except Exception:  # noqa: BLE001
        return False


def fan_out_phase(s3, sqs, args, env):
    """Phase 2: a day of many shards through the queue (see the module doc)."""
    good, bad = "2024/02/20", "2024/02/21"
    for day in (good, bad):
        for a, account in enumerate(("111111111111", "222222222222", "333333333333")):
            for r, region in enumerate(("eu-west-1", "us-east-1", "ap-south-1")):
                for f in range(3):
                    recs = [record(account, region, 100 * a + 10 * r + f * 3 + i) for i in range(1 + f)]
                    body = gzip.compress(json.dumps({"Records": recs}, separators=(",", ":")).encode())
                    if day == bad and (a, r, f) == (1, 1, 1):
                        body = gzip.compress(b'{"Records":[{"eventID":')
                    key = f"AWSLogs/o-abc123def4/{account}/CloudTrail/{region}/{day}/{account}_CloudTrail_{region}_{f}.json.gz"
                    s3.put_object(Bucket=SRC, Key=key, Body=body)
        real = ROOT / "tests/fixtures/cloudtrail/SerializerTestFileCompact.json.gz"
        s3.put_object(Bucket=SRC, Key=f"AWSLogs/444444444444/CloudTrail/eu-west-1/{day}/real.json.gz", Body=real.read_bytes())
    bad_key = f"AWSLogs/o-abc123def4/222222222222/CloudTrail/us-east-1/{bad}/222222222222_CloudTrail_us-east-1_1.json.gz"

    # The reference: the same day as one shard, by ctagg.
    out = subprocess.run(
        [args.ctagg, "run", "2024-02-20", "--src-bucket", SRC, "--dst-bucket", DST, "--dst-prefix", "single/"],
        env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        fail(f"ctagg run (one shard): {out.stderr}")
    reference, ref_manifest = manifest_order_ndjson(s3, f"single/{good}/")
    if len(ref_manifest["shards"]) != 1:
        fail(f"the reference ran as {len(ref_manifest['shards'])} shards")

    queue_url, queue_arn, dlq_url = make_queue(sqs, "fanout", 2)
    fn_env = dict(env, SRC_BUCKET=SRC, DST_BUCKET=DST, DST_PREFIX="cloudtrail-daily/", LOG_LEVEL="info",
                  SHARD_MAX_FILES="3", SHARD_QUEUE_URL=queue_url)
    watch = start_function(args.port, fn_env)
    try:
        folder = f"cloudtrail-daily/{good}/"
        sqs.send_message(QueueUrl=queue_url, MessageBody='{"date":"2024-02-20"}')
        state = {"twice": None, "held": None, "held_ran": False, "early": []}

        def on_message(msg):
            body = json.loads(msg["Body"])
            shard = body.get("shard")
            if shard is None:
                return "invoke"
            if state["held"] is None and shard["index"] == 5:
                state["held"] = msg["MessageId"]
                return "hold"
            if msg["MessageId"] == state["held"]:
                state["held_ran"] = True
            elif not state["held_ran"] and exists(s3, f"{folder}_manifest.json"):
                state["early"].append(msg["Body"])
            if state["twice"] is None:
                state["twice"] = msg["MessageId"]
                return "invoke-twice"
            return "invoke"

        runs = drain(sqs, queue_url, queue_arn, args.port, time.time() + args.timeout, on_message)
        if state["early"]:
            fail(f"a manifest existed before the held shard ran (seen at {state['early']})")
        if not state["held_ran"] or state["twice"] is None:
            fail(f"the held shard ran: {state['held_ran']}; a message delivered twice: {state['twice']}")
        failures = [(m["Body"], p) for m, ok, p in runs if not ok]
        if failures:
            fail(f"invocations failed: {failures}")
        data, manifest = manifest_order_ndjson(s3, folder)
        if len(manifest["shards"]) < 8:
            fail(f"{len(manifest['shards'])} shards; expected at least 8")
        if data != reference:
            fail("the shards' records, in the manifest's order, differ from the single run's")
        names = [c["key"] for c in manifest["chunks"]]
        present = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=DST, Prefix=folder).get("Contents", []))
        if present != sorted(names + [f"{folder}_manifest.json"]):
            fail(f"the folder holds {present}, the manifest lists {names}")
        log(f"fan-out: {len(manifest['shards'])} shards, {manifest['records']} records, exactly the single run's, "
            f"{len(runs)} invocations (one message twice, one held back)")

        # A day with a file no shard can read.
        sqs.send_message(QueueUrl=queue_url, MessageBody='{"date":"2024-02-21"}')
        runs = drain(sqs, queue_url, queue_arn, args.port, time.time() + args.timeout, lambda m: "invoke")
        if exists(s3, f"cloudtrail-daily/{bad}/_manifest.json"):
            fail("a day with a shard that cannot be read has a manifest")
        dead = [json.loads(m["Body"]) for m in dead_letters(sqs, dlq_url)]
        if len(dead) != 1 or dead[0].get("shard", {}).get("day") != "2024-02-21":
            fail(f"the dead-letter queue holds {dead}, expected one shard message of 2024-02-21")
        shard = dead[0]["shard"]
        want = f"2024-02-21, shard {shard['index']} of {shard['of']}"
        errors = [json.dumps(p) for m, ok, p in runs if not ok]
        if not errors or not all(want in e and bad_key in e for e in errors):
            fail(f"the failed invocations do not name {want!r} and {bad_key}: {errors}")
        out = subprocess.run([args.ctagg, "status", "2024-02-21", "--src-bucket", SRC, "--dst-bucket", DST],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0 or f"shard {shard['index']} failed at" not in out.stdout or bad_key not in out.stdout:
            fail(f"ctagg status 2024-02-21 does not name the failed shard: {out.stdout} {out.stderr}")
        log(f"a shard that always fails: dead-lettered, named ({want}), no manifest; ctagg status: {out.stdout.splitlines()[0]}")
    finally:
        stop_function(watch)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moto", default=os.environ.get("MOTO_ENDPOINT", "http://127.0.0.1:5000"))
    ap.add_argument("--ctagg", default=str(ROOT / "target/debug/ctagg"))
    ap.add_argument("--port", type=int, default=9000, help="cargo lambda watch's port")
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()

    env = dict(os.environ, **CREDS, AWS_ENDPOINT_URL=args.moto, AWS_EC2_METADATA_DISABLED="true")
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=args.moto)
    sqs = session.client("sqs", endpoint_url=args.moto)

    for b in (SRC, DST):
        s3.create_bucket(Bucket=b)
    counts = load_sources(s3)
    dlq_url = sqs.create_queue(QueueName="local-trigger-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName="local-trigger",
        Attributes={
            "VisibilityTimeout": "2",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    log(f"moto at {args.moto}: buckets {SRC}, {DST}; queue {queue_url} -> DLQ {dlq_url}")

    fn_env = dict(env, SRC_BUCKET=SRC, DST_BUCKET=DST, SRC_PREFIX="AWSLogs/", DST_PREFIX="cloudtrail-daily/", LOG_LEVEL="info")
    watch = start_function(args.port, fn_env)
    try:
        deadline = time.time() + args.timeout

        # 1. Every events/*.json through the runtime, as `cargo lambda invoke` sends it.
        for path in sorted((ROOT / "events").glob("*.json")):
            out = subprocess.run(
                ["cargo", "lambda", "invoke", FUNCTION, "--invoke-address", "127.0.0.1", "--invoke-port", str(args.port), "--data-file", str(path), "--output-format", "json"],
                cwd=ROOT, env=fn_env, capture_output=True, text=True, timeout=600,
            )
            event = json.loads(path.read_text())
            ids = [r["messageId"] for r in event["Records"]]
            bad = [r["messageId"] for r in event["Records"] if '"day":30' in r["body"]]
            if out.returncode != 0:
                fail(f"cargo lambda invoke {path.name}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
            resp = json.loads(out.stdout)
            got = [f["itemIdentifier"] for f in resp.get("batchItemFailures", [])]
            if got != bad:
                fail(f"{path.name}: batchItemFailures {got}, expected {bad} (messages {ids})")
            log(f"invoked {path.name}: {len(ids)} message(s), failures {got} as expected")
        # The events aggregate 2024-02-12; start the queue run from a clean destination.
        for obj in s3.list_objects_v2(Bucket=DST).get("Contents", []):
            s3.delete_object(Bucket=DST, Key=obj["Key"])

        # 2. The queue: two days by backfill, one impossible day sent raw.
        out = subprocess.run(
            [args.ctagg, "backfill", "--queue-url", queue_url, "--from", "2024-02-11", "--to", "2024-02-12"],
            env=env, capture_output=True, text=True,
        )
        if out.returncode != 0:
            fail(f"ctagg backfill: {out.stderr}")
        log(out.stdout.strip())
        sqs.send_message(QueueUrl=queue_url, MessageBody='{"year":2013,"month":10,"day":31}')

        invocations = 0
        while time.time() < deadline:
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1, AttributeNames=["All"])
            msgs = got.get("Messages", [])
            if not msgs:
                if attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
                    break
                continue
            msg = msgs[0]
            ok, payload = invoke(args.port, sqs_event(msg, queue_arn))
            invocations += 1
            failed_ids = [f["itemIdentifier"] for f in (payload or {}).get("batchItemFailures", [])] if ok else [msg["MessageId"]]
            if msg["MessageId"] in failed_ids:
                log(f"message {msg['MessageId']} ({msg['Body']}) failed; left on the queue: {payload}")
            else:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
                log(f"message {msg['MessageId']} ({msg['Body']}) done; deleted")
        else:
            fail("the queue did not drain in time")

        # 3. Check the outcome.
        for day, n in counts.items():
            key = f"cloudtrail-daily/{day}/_manifest.json"
            try:
                manifest = json.loads(s3.get_object(Bucket=DST, Key=key)["Body"].read())
            except Exception as e:  # noqa: BLE001
                fail(f"no manifest s3://{DST}/{key}: {e}")
            if manifest["records"] != n:
                fail(f"{day}: {manifest['records']} records, expected {n}")
            chunk = s3.get_object(Bucket=DST, Key=f"cloudtrail-daily/{day}/000000.ndjson.gz")["Body"].read()
            lines = gzip.decompress(chunk).decode().splitlines()
            if len(lines) != n or not all(json.loads(line) for line in lines):
                fail(f"{day}: the chunk holds {len(lines)} lines, expected {n}")
        dead = []
        for _ in range(5):
            got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            dead += got.get("Messages", [])
        bodies = [m["Body"] for m in dead]
        if bodies != ['{"year":2013,"month":10,"day":31}']:
            fail(f"dead-letter queue holds {bodies}, expected exactly the 2013-10-31 message")
        log(f"OK: {invocations} invocations; 2 days aggregated ({counts}); 1 message in the DLQ")
    finally:
        stop_function(watch)
    fan_out_phase(s3, sqs, args, env)
    log("OK: fan-out")


if __name__ == "__main__":
    main()
