"""Writes raw bytes, in one TLS write, to the test's server; prints one JSON
line with what came back first. usage: raw_tls.py PORT CERT BYTES (Python
escapes: \\r, \\n)"""
import json, socket, ssl, sys

port, cert, text = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = text.encode().decode("unicode_escape").encode("latin-1")
context = ssl.create_default_context(cafile=cert)
try:
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                             server_hostname="127.0.0.1") as tls:
        tls.sendall(data)
        print(json.dumps({"ok": True, "answer": tls.recv(200).decode("latin-1")}))
except Exception as error:
    print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
    sys.exit(1)
