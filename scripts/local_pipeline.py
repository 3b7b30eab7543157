#!/usr/bin/env python3
"""The whole pipeline on this machine, without AWS: queue -> function -> S3.

- moto_server (already running; --moto URL) plays S3 and SQS, with the trigger queue's
  dead-letter redrive policy;
- `cargo lambda watch` runs the real Lambda binary (started here);
- this script plays Lambda's SQS event source: receive one message, invoke the function
  with the SQS event, delete the message unless the invocation failed or the response
  names it in batchItemFailures.

It first invokes every events/*.json with `cargo lambda invoke --data-file` and checks the
responses; then it enqueues two days with `ctagg backfill` plus one raw message for a day
before CloudTrail existed, drains the queue, and checks that both days were aggregated
and that exactly the bad message ended in the dead-letter queue.

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
    watch = subprocess.Popen(
        ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", str(args.port), "--bin", FUNCTION],
        cwd=ROOT,
        env=fn_env,
        start_new_session=True,
    )
    try:
        wait_port(args.port, 300)
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
        os.killpg(watch.pid, signal.SIGTERM)
        try:
            watch.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(watch.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
