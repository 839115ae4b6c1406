"""A DELETE over TLS from a worker thread, once TRIGGER exists (the pid
is written to PIDFILE when the thread is ready).

usage: worker_delete.py PORT CERT PATH TRIGGER PIDFILE
Prints the response's status, then lingers (a sent call's process stays
for guardd to find); or prints the error the call failed with and ends.
"""
import http.client
import os
import ssl
import sys
import threading
import time

port, cert, path, trigger, pid_file = sys.argv[1:6]


def delete():
    context = ssl.create_default_context(cafile=cert)
    # A GET first (let through in the kernel): what Python loads on its
    # first request (the idna codec's unicodedata: a dlopen stops too) is
    # loaded before the DELETE. The DELETE's connection is made before the
    # pid is written: a session's connect() may wait for guardd.
    warm = http.client.HTTPSConnection("127.0.0.1", int(port), context=context)
    warm.request("GET", path)
    warm.getresponse().read()
    connection = http.client.HTTPSConnection("127.0.0.1", int(port), context=context)
    connection.connect()
    with open(pid_file, "w") as out:
        out.write(str(os.getpid()))
    while not os.path.exists(trigger):
        time.sleep(0.01)
    try:
        connection.request("DELETE", path)
        print("delete:", connection.getresponse().status, flush=True)
        time.sleep(30)
    except OSError as err:
        print("delete failed:", err, flush=True)


worker = threading.Thread(target=delete)
worker.start()
worker.join()
