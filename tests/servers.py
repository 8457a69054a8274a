"""Real servers on 127.0.0.1 for notification tests: SMTP and an intercepting HTTPS proxy.

Slack's webhooks live at https://hooks.slack.com. The proxy answers CONNECT, presents a
certificate for that host issued by a throw-away CA (trusted by the child process through
REQUESTS_CA_BUNDLE only), and records the decrypted request, so the test asserts exactly
what Apprise would send to Slack, at the HTTP layer, without leaving the machine.
"""

import datetime
import socket
import ssl
import threading
from pathlib import Path


class SMTPServer:
    """aiosmtpd on 127.0.0.1 requiring AUTH with one user; keeps every message."""

    def __init__(self, user, password):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.messages = []
        self.logins = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                outer.messages.append({"from": envelope.mail_from,
                                       "to": list(envelope.rcpt_tos),
                                       "data": envelope.content.decode("utf-8", "replace")})
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            outer.logins.append(ok)
            return AuthResult(success=ok)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     authenticator=authenticator, auth_require_tls=False)
        self.controller.start()

    def stop(self):
        if self.controller._thread is not None:  # stop twice is fine (tests stop early)
            self.controller.stop()


def make_ca_and_leaf(directory, hostname):
    """A CA (ca.pem) and a server certificate for hostname signed by it (leaf.pem/.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strongroom test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (directory / "leaf.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.pem"


def _read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


class InterceptingProxy:
    """An HTTP CONNECT proxy that terminates TLS for one host and records requests."""

    def __init__(self, directory, hostname, status=200, answer=b"ok"):
        self.ca = make_ca_and_leaf(directory, hostname)
        self.requests, self.connects = [], []
        self.status, self.answer = status, answer
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(Path(directory) / "leaf.pem", Path(directory) / "leaf.key")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def env(self, base):
        env = {k: v for k, v in base.items() if k.lower() not in ("no_proxy", "https_proxy")}
        return {**env, "HTTPS_PROXY": self.url, "REQUESTS_CA_BUNDLE": str(self.ca)}

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            line, _, _ = _read_head(conn)
            self.connects.append(line)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = self.ctx.wrap_socket(conn, server_side=True)
            request_line, headers, body = _read_head(tls)
            while len(body) < int(headers.get("content-length", 0)):
                body += tls.recv(65536)
            method, path, _ = request_line.split(" ", 2)
            self.requests.append({"method": method, "path": path, "headers": headers,
                                  "body": body})
            tls.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Type: text/plain\r\n"
                        f"Content-Length: {len(self.answer)}\r\nConnection: close\r\n\r\n"
                        .encode() + self.answer)
            tls.close()
        except (OSError, ValueError):
            conn.close()

    def close(self):
        self.sock.close()


class S3Server:
    """moto's S3 API server on 127.0.0.1 (a real HTTP server, driven through rclone's s3)."""

    def __init__(self, directory):
        import subprocess
        import sys
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = Path(directory) / "moto.log"
        # a test tool, not the engine: the engine-only virtualenvs of other Pythons
        # (scripts/test-pythons) use the project's .venv for it
        server = Path(sys.executable).parent / "moto_server"
        if not server.exists():
            server = Path(__file__).resolve().parent.parent / ".venv/bin/moto_server"
        self.proc = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p",
             str(self.port)], stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def rclone_section(self, name="s3"):
        return (f"[{name}]\ntype = s3\nprovider = Other\naccess_key_id = test-key\n"
                f"secret_access_key = test-secret\nendpoint = {self.endpoint}\n"
                "region = us-east-1\n")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class PingReceiver:
    """A heartbeat endpoint on 127.0.0.1 (healthchecks and Uptime Kuma alike): records
    every request (method, path, query, body) and answers with the next status of a
    script (then 200). With hold=True it answers nothing until closed, an endpoint slower
    than any client's timeout."""

    def __init__(self, statuses=(), hold=False):
        import http.server
        import urllib.parse

        self.requests = []
        self.statuses = list(statuses)
        self.released = threading.Event()
        self.hold = hold
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(n) if n else b""
                path, _, query = self.path.partition("?")
                outer.requests.append({
                    "method": self.command, "path": path, "body": body,
                    "query": dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
                    "headers": dict(self.headers)})
                if outer.hold:
                    outer.released.wait()
                    return
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def url(self, path="/ping/0f5c1e42-7d1b-4c2a-9e0e-5b3f6a1d2c3b"):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port():
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
