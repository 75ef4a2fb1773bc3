"""A TLS-inspecting HTTPS proxy on loopback, as a corporate egress proxy is, for the test of
`KEYWARD_TLS_ROOTS=system` (functions/authorizer/tests/tls_roots.rs).

It makes its own certificate authority and writes it to FOLDER/ca.pem. It answers `CONNECT`,
then presents a certificate for the host asked for, signed by that authority, and answers
every request it decrypts with `200 {}` (DynamoDB's answer to a `GetItem` that finds no
item). It prints `listening PORT` once ready, then one line per event: `handshake HOST` when
a client accepted its certificate, `refused HOST` when a client did not, and `request HOST
TARGET` for each request (TARGET being its `X-Amz-Target`). It serves until it is killed.

With a PORT, it is instead an HTTPS front for the plain HTTP server on 127.0.0.1:PORT, as API
Gateway is for keyward (for the `keyward` client's test of HTTPS, tests/http_api/client.rs):
it presents a certificate for `localhost` signed by its authority, and passes the decrypted
bytes both ways.

usage: tls_proxy.py FOLDER [PORT]
"""

import datetime
import os
import re
import socket
import socketserver
import ssl
import sys
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FOLDER = sys.argv[1]
LOCK = threading.Lock()
CONTEXTS = {}


def say(line):
    with LOCK:
        print(line, flush=True)


def certificate(subject, issuer, public_key, signing_key, ca, host=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = "keyward test inspecting proxy"
CA = certificate(CA_NAME, CA_NAME, CA_KEY.public_key(), CA_KEY, ca=True)


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def context_for(host):
    with LOCK:
        if host in CONTEXTS:
            return CONTEXTS[host]
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = certificate(host, CA_NAME, key.public_key(), CA_KEY, ca=False, host=host)
        chain = os.path.join(FOLDER, f"{host}.pem")
        with open(chain, "wb") as f:
            f.write(pem(leaf) + pem(CA))
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain)
        CONTEXTS[host] = context
        return context


def read_head(stream):
    lines = []
    while True:
        line = stream.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            return lines
        lines.append(line.decode("latin-1").rstrip("\r\n"))


class Proxy(socketserver.StreamRequestHandler):
    def handle(self):
        head = read_head(self.rfile)
        if not head or not head[0].startswith("CONNECT "):
            return
        host = head[0].split()[1].rsplit(":", 1)[0]
        if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", host):
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        try:
            tls = context_for(host).wrap_socket(self.connection, server_side=True)
        except (ssl.SSLError, OSError):
            say(f"refused {host}")
            return
        say(f"handshake {host}")
        stream = tls.makefile("rwb")
        while True:
            head = read_head(stream)
            if head is None:
                return
            headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
            headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
            stream.read(int(headers.get("content-length", "0")))
            say(f"request {host} {headers.get('x-amz-target', '-')}")
            stream.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            )
            stream.flush()


def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Front(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            tls = context_for("localhost").wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            say("refused localhost")
            return
        say("handshake localhost")
        backend = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
        back = threading.Thread(target=pipe, args=(backend, tls), daemon=True)
        back.start()
        pipe(tls, backend)
        back.join()
        tls.close()
        backend.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    with open(os.path.join(FOLDER, "ca.pem"), "wb") as f:
        f.write(pem(CA))
    server = Server(("127.0.0.1", 0), Front if len(sys.argv) > 2 else Proxy)
    say(f"listening {server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
