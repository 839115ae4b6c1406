"""Runs one SQL statement with psycopg2 (libpq's PQexec); prints one JSON line.
usage: pg_client.py SOCKDIR SQL"""
import json, sys

import psycopg2

connection = psycopg2.connect(host=sys.argv[1], user="postgres", dbname="postgres")
connection.autocommit = True
try:
    connection.cursor().execute(sys.argv[2])
    print(json.dumps({"ok": True}))
except Exception as error:
    print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
    sys.exit(1)
