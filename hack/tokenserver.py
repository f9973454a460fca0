#!/usr/bin/env python3
"""A Docker registry token server for kraal's token-auth test registry.

Usage:
  hack/tokenserver.py --key KEY.pem --cert CERT.pem --port-file FILE
                      --user U --password P [--issuer ISS] [--service SVC] [--log FILE]

Listens on 127.0.0.1 on a free port (chosen by the kernel: no clash possible) and writes
that port to --port-file (atomically) once it accepts connections. Python standard library
plus the openssl CLI, which signs the tokens (`openssl dgst -sha256 -sign KEY.pem`).

  GET /token?service=SVC&scope=repository:NAME:pull[,push][&scope=...]
      with HTTP Basic credentials U/P (the only user) ->
      200 {"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": RFC 3339}
      Missing or wrong credentials -> 401 with a Basic challenge: there is no anonymous
      access, not even to pull.
  POST /token  (application/x-www-form-urlencoded, the OAuth2 flow containerd tries first)
      grant_type=password&username=U&password=P&service=SVC&scope=S1 S2&client_id=...
      -> 200 {"access_token", "token", "expires_in", "issued_at", "scope"}
      Wrong credentials -> 401 {"error": "invalid_grant"}; any other grant_type
      (refresh_token included: no refresh tokens are issued) -> 400 unsupported_grant_type.

The JWT is RS256 with header {"typ": "JWT", "alg": "RS256", "x5c": [base64 DER of CERT]},
so docker distribution verifies it against `rootcertbundle: CERT.pem` without libtrust key
ids. Claims: iss, sub (the user), aud (the requested service, else --service), exp (+300 s),
nbf (-10 s), iat, jti and access [{"type": "repository", "name": NAME, "actions": [...]}]
with, per repository scope, the requested actions among pull and push (any repository).
Other scope types (registry:catalog:*) and other actions are not granted.

Every request is logged, one line each, to --log (default stderr).
"""

import argparse
import base64
import datetime
import hmac
import http.server
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

EXPIRES_IN = 300
GRANTABLE = ("pull", "push")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rfc3339(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def parse_scopes(values):
    """['repository:a/b:pull,push repository:c:pull', ...] -> [(type, name, [actions])]."""
    out = []
    for value in values:
        for scope in value.split():
            kind, sep, rest = scope.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not kind or not name:
                continue  # malformed: grant nothing for it
            out.append((kind, name, [a for a in actions.split(",") if a]))
    return out


class Issuer:
    def __init__(self, args):
        self.key = args.key
        self.issuer = args.issuer
        self.service = args.service
        with open(args.cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        self.header = b64url(json.dumps(header, separators=(",", ":")).encode())

    def access(self, scopes):
        merged = {}  # name -> granted actions, in request order, no duplicates
        for kind, name, actions in scopes:
            if kind != "repository":
                continue
            granted = merged.setdefault(name, [])
            for action in actions:
                if action in GRANTABLE and action not in granted:
                    granted.append(action)
        return [{"type": "repository", "name": name, "actions": actions}
                for name, actions in merged.items() if actions]

    def token(self, user, service, scopes):
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": service or self.service,
            "exp": now + EXPIRES_IN,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": self.access(scopes),
        }
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self.header}.{payload}".encode()
        proc = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                              input=signing_input, capture_output=True, timeout=30)
        if proc.returncode != 0 or not proc.stdout:
            raise RuntimeError("openssl dgst -sign failed: "
                               + proc.stderr.decode(errors="replace").strip())
        return f"{signing_input.decode()}.{b64url(proc.stdout)}", now, claims["access"]


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "kraal-tokenserver/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # the access log line is written by note()
        pass

    def note(self, status, what):
        line = (f"{rfc3339(time.time())} {self.client_address[0]} {self.command} "
                f"{self.path.split('?')[0]} {status} {what}\n")
        with self.server.log_lock:
            self.server.log.write(line)
            self.server.log.flush()

    def reply(self, status, body, headers=None):
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def credentials_ok(self, user, password):
        cfg = self.server.cfg
        # compare_digest on both (bytes: it refuses non-ASCII str) so timing says nothing
        ok_user = hmac.compare_digest(user.encode(), cfg.user.encode())
        ok_password = hmac.compare_digest(password.encode(), cfg.password.encode())
        return ok_user and ok_password

    def basic_user(self):
        """The user of a valid Basic Authorization header, else None."""
        header = self.headers.get("Authorization", "")
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True) \
                .decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if not sep or not self.credentials_ok(user, password):
            return None
        return user

    def issue(self, user, service, scopes, oauth):
        try:
            token, now, access = self.server.issuer.token(user, service, scopes)
        except Exception as err:  # openssl missing or failing: a 500 the client can see
            self.note(500, f"user={user} {err}")
            self.reply(500, {"errors": [{"code": "UNKNOWN", "message": str(err)}]})
            return
        body = {"token": token, "access_token": token, "expires_in": EXPIRES_IN,
                "issued_at": rfc3339(now)}
        if oauth:
            body["scope"] = " ".join(f"{k}:{n}:{','.join(a)}" for k, n, a in scopes)
        granted = ";".join(f"{a['name']}:{','.join(a['actions'])}" for a in access) or "-"
        self.note(200, f"user={user} service={service} granted={granted}")
        self.reply(200, body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self.note(404, "-")
            self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "try /token"}]})
            return
        user = self.basic_user()
        if user is None:
            had = "wrong credentials" if "Authorization" in self.headers else "no credentials"
            self.note(401, had)
            self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                         "message": "valid basic credentials required"}]},
                       {"WWW-Authenticate": 'Basic realm="kraal-test-token"'})
            return
        query = urllib.parse.parse_qs(url.query)
        service = query.get("service", [""])[0]
        self.issue(user, service, parse_scopes(query.get("scope", [])), oauth=False)

    do_HEAD = do_GET

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > 1 << 16:
            self.note(413, "-")
            self.reply(413, {"error": "invalid_request"}, {"Connection": "close"})
            self.close_connection = True
            return
        form = urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace"))
        if url.path != "/token":
            self.note(404, "-")
            self.reply(404, {"error": "invalid_request"})
            return
        grant = form.get("grant_type", [""])[0]
        if grant != "password":
            self.note(400, f"grant_type={grant or '-'}")
            self.reply(400, {"error": "unsupported_grant_type",
                             "error_description": "only grant_type=password"})
            return
        user = form.get("username", [""])[0]
        if not self.credentials_ok(user, form.get("password", [""])[0]):
            self.note(401, "oauth wrong credentials")
            self.reply(401, {"error": "invalid_grant",
                             "error_description": "wrong username or password"})
            return
        service = form.get("service", [""])[0]
        self.issue(user, service, parse_scopes(form.get("scope", [])), oauth=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--key", required=True, help="RSA private key (PEM) to sign with")
    parser.add_argument("--cert", required=True, help="its certificate (PEM), sent as x5c")
    parser.add_argument("--port-file", required=True, help="where to write the port")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--issuer", default="kraal-test-issuer")
    parser.add_argument("--service", default="kraal-test-registry",
                        help="aud when a request names no service")
    parser.add_argument("--log", help="access log (appended to); default stderr")
    args = parser.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.cfg = args
    server.issuer = Issuer(args)
    server.log = open(args.log, "a") if args.log else sys.stderr
    server.log_lock = threading.Lock()
    port = server.server_address[1]

    out_dir = os.path.dirname(os.path.abspath(args.port_file))
    fd, tmp = tempfile.mkstemp(prefix=".tokenserver.", suffix=".port", dir=out_dir)
    with os.fdopen(fd, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)
    server.log.write(f"{rfc3339(time.time())} tokenserver: listening on 127.0.0.1:{port}, "
                     f"pid {os.getpid()}\n")
    server.log.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
