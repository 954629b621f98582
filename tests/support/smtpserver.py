"""A real SMTP server (aiosmtpd) on 127.0.0.1 for delivery tests: records what arrives, and can be told to refuse,
hang or drop the connection. TLS variants use a self-signed certificate made with the `openssl` command.

    with SmtpServer() as srv:                          # plain
    with SmtpServer(tls="starttls", certs=certs):      # STARTTLS offered
    with SmtpServer(tls="implicit", certs=certs):      # smtps
    srv.mode = "refuse" | "hang" | "drop" | "accept"
    srv.url(user="u", password="p")  -> value for MONITOR_SMTP_URL
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Certs:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_certs(folder: Path) -> Certs | None:
    """A self-signed certificate for 127.0.0.1/localhost, or None when the openssl command is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyCertSign",
        ],
        check=True,
        capture_output=True,
    )
    return Certs(cert, key)


@dataclass
class _Handler:
    owner: SmtpServer
    received: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mode = self.owner.mode
        if mode == "refuse":
            return f"{self.owner.refuse_code} 5.7.1 refused for the test"
        if mode == "hang":
            # Longer than any client timeout a test uses; the client gives up, the server never answers.
            await asyncio.sleep(self.owner.hang_seconds)
            return "451 4.3.0 too late"
        if mode == "drop":
            assert server.transport is not None
            server.transport.close()
            return "421 4.3.0 gone"
        data = envelope.original_content or b""
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), data))
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpServer:
    def __init__(
        self,
        *,
        tls: str | None = None,  # None | "starttls" | "implicit"
        certs: Certs | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.tls = tls
        self.certs = certs
        self.auth = auth
        self.mode = "accept"
        self.refuse_code = 554
        self.hang_seconds = 30.0
        self.port = _free_port()
        self.handler = _Handler(self)
        self.auth_attempts: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 10}
        if tls is not None:
            assert certs is not None, "TLS needs certificates"
        if tls == "starttls":
            assert certs is not None
            kwargs["tls_context"] = certs.server_context()
            kwargs["require_starttls"] = False
        elif tls == "implicit":
            assert certs is not None
            kwargs["ssl_context"] = certs.server_context()
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = False
        self.controller = Controller(self.handler, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, pw = auth_data.login.decode(), auth_data.password.decode()
            self.auth_attempts.append((user, pw))
            # handled=False: aiosmtpd then answers 535 itself (handled=True would leave the client waiting)
            return AuthResult(success=(user, pw) == self.auth, handled=False)
        return AuthResult(success=False, handled=False)

    @property
    def messages(self) -> list[Received]:
        return self.handler.received

    def url(self, *, user: str | None = None, password: str | None = None, **params: str) -> str:
        scheme = {None: "smtp", "starttls": "smtp+starttls", "implicit": "smtps"}[self.tls]
        cred = ""
        if user is not None:
            cred = (
                quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
            )
        if self.certs is not None and self.tls is not None:
            params.setdefault("cafile", str(self.certs.cert))
        query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
        return f"{scheme}://{cred}127.0.0.1:{self.port}" + (f"?{query}" if query else "")

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.controller.stop()
