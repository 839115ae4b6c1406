"""Runs one SQL statement through a libpq the process loads itself, as a
wheel brings its own (psycopg2-binary); prints one JSON line.
usage: pq_ctypes.py LIBPQ SOCKDIR SQL"""
import ctypes, json, sys

libpq = ctypes.CDLL(sys.argv[1])
libpq.PQconnectdb.restype = ctypes.c_void_p
libpq.PQconnectdb.argtypes = [ctypes.c_char_p]
libpq.PQstatus.argtypes = [ctypes.c_void_p]
libpq.PQexec.restype = ctypes.c_void_p
libpq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
libpq.PQresultStatus.argtypes = [ctypes.c_void_p]
connection = libpq.PQconnectdb(f"host={sys.argv[2]} user=postgres dbname=postgres".encode())
if libpq.PQstatus(connection) != 0:
    print(json.dumps({"ok": False, "error": "no connection"}))
    sys.exit(1)
result = libpq.PQexec(connection, sys.argv[3].encode())
# PGRES_COMMAND_OK
ok = bool(result) and libpq.PQresultStatus(result) == 1
print(json.dumps({"ok": ok}))
sys.exit(0 if ok else 1)
