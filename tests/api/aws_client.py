"""One boto3 call against the test's moto server; prints one JSON line.
usage: aws_client.py PORT CERT ACTION [ARG]; ACTION: run_instance,
describe, terminate ID, create_bucket NAME, list_buckets, delete_bucket
NAME. No retries unless RETRIES=N (total attempts) says so.
THEN=fork: list the buckets first (a TLS connection), then make the call
in a forked child on that same connection; THEN=exec: list the buckets,
then run this script again by exec to make the call."""
import json, os, sys

import boto3
from botocore.config import Config

port, cert, action, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
config = Config(s3={"addressing_style": "path"},
                retries={"total_max_attempts": int(os.environ.get("RETRIES", "1"))})
options = dict(endpoint_url=f"https://127.0.0.1:{port}", verify=cert, region_name="us-east-1",
               aws_access_key_id="testing", aws_secret_access_key="testing", config=config)
ec2, s3 = boto3.client("ec2", **options), boto3.client("s3", **options)
then = os.environ.pop("THEN", None)
if then:
    s3.list_buckets()
if then == "exec":
    os.execv(sys.executable, [sys.executable] + sys.argv)
if then == "fork":
    child = os.fork()
    if child:
        sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
try:
    if action == "run_instance":
        out = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    elif action == "describe":
        out = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
               for i in r["Instances"]}
    elif action == "terminate":
        out = ec2.terminate_instances(InstanceIds=[args[0]])["TerminatingInstances"][0]["CurrentState"]["Name"]
    elif action == "create_bucket":
        out = s3.create_bucket(Bucket=args[0])["ResponseMetadata"]["HTTPStatusCode"]
    elif action == "list_buckets":
        out = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    elif action == "delete_bucket":
        out = s3.delete_bucket(Bucket=args[0])["ResponseMetadata"]["HTTPStatusCode"]
    else:
        sys.exit(f"unknown action {action}")
    print(json.dumps({"ok": True, "out": out}))
except Exception as error:
    print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
    sys.exit(1)
