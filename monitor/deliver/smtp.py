"""Sending a finished message to the SMTP server named by MONITOR_SMTP_URL.

    smtp://user:pass@host:25            plain (no TLS; for a relay on localhost or a trusted network)
    smtp+starttls://user:pass@host:587  STARTTLS, refused if the server does not offer it (no silent downgrade)
    smtps://user:pass@host:465          implicit TLS

Query parameters: `cafile=/path/ca.pem` (trust this CA, e.g. an internal relay's), `helo=name` (EHLO name),
`timeout=30` (seconds per network operation; the digests.yaml `smtp_timeout` otherwise). User and password are
percent-decoded. Credentials live only in the environment: they are never written to the database or a log, and
every error message passes through `redact`.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from monitor.errors import DeliveryError

ENV_VAR = "MONITOR_SMTP_URL"
Mode = Literal["plain", "starttls", "tls"]
_SCHEMES: dict[str, tuple[Mode, int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}


class SmtpError(DeliveryError):
    """The SMTP server could not take the message. `kind`: config, connect, timeout, disconnected, tls, auth,
    refused. After a timeout or a dropped connection during DATA the server may still have the message; the
    caller resends with the same Message-ID so clients can tell it is a repeat."""

    def __init__(self, message: str, *, kind: str, code: int | None = None) -> None:
        self.kind = kind
        self.code = code
        super().__init__(message, channel="smtp")


@dataclass(frozen=True)
class SmtpTarget:
    mode: Mode
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    helo: str | None = None
    timeout: float | None = None

    def describe(self) -> str:
        """Where mail goes, safe to show: the password never appears, the user name is masked."""
        scheme = {"plain": "smtp", "starttls": "smtp+starttls", "tls": "smtps"}[self.mode]
        user = "***@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"

    def redact(self, text: str) -> str:
        """`text` with the credentials replaced, for messages that may quote what the server echoed."""
        for secret in (self.password, self.username):
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text


def parse_smtp_url(url: str) -> SmtpTarget:
    """Parse MONITOR_SMTP_URL; errors never repeat the URL (it may carry a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise SmtpError(f"{ENV_VAR} is not a valid URL", kind="config") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise SmtpError(
            f"{ENV_VAR} must start with smtp://, smtp+starttls:// or smtps:// (got {scheme or 'no'} scheme)",
            kind="config",
        )
    if not parts.hostname:
        raise SmtpError(f"{ENV_VAR} has no host", kind="config")
    mode, default_port = _SCHEMES[scheme]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"cafile", "helo", "timeout"}
    if unknown:
        raise SmtpError(f"{ENV_VAR}: unknown parameter(s) {', '.join(sorted(unknown))}", kind="config")
    timeout: float | None = None
    if "timeout" in query:
        try:
            timeout = float(query["timeout"])
        except ValueError:
            raise SmtpError(f"{ENV_VAR}: timeout must be a number of seconds", kind="config") from None
        if timeout <= 0:
            raise SmtpError(f"{ENV_VAR}: timeout must be positive", kind="config")
    return SmtpTarget(
        mode=mode,
        host=parts.hostname,
        port=port or default_port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        cafile=query.get("cafile"),
        helo=query.get("helo"),
        timeout=timeout,
    )


def target_from_env() -> SmtpTarget:
    url = os.environ.get(ENV_VAR, "").strip()
    if not url:
        raise SmtpError(f"{ENV_VAR} is not set: nowhere to send email", kind="config")
    return parse_smtp_url(url)


def _tls_context(target: SmtpTarget) -> ssl.SSLContext:
    try:
        # Certificates and host names are always verified; `cafile` is how a private CA is trusted.
        return ssl.create_default_context(cafile=target.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise SmtpError(f"cannot read cafile {target.cafile}: {exc}", kind="config") from None


def send_message(
    target: SmtpTarget,
    raw: bytes,
    envelope_from: str,
    recipients: Sequence[str],
    *,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Hand `raw` (a complete RFC 5322 message) to the server. Returns recipients the server refused while
    accepting others ({address: reply}); raises SmtpError when the message was not accepted at all."""
    timeout = target.timeout or timeout
    where = target.describe()
    # socket.getfqdn() (smtplib's default EHLO name) can block on DNS for seconds; the host name is enough.
    helo = target.helo or socket.gethostname() or "localhost"
    client: smtplib.SMTP | None = None
    stage = "connect"
    try:
        if target.mode == "tls":
            client = smtplib.SMTP_SSL(
                target.host, target.port, timeout=timeout, context=_tls_context(target), local_hostname=helo
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=timeout, local_hostname=helo)
        stage = "ehlo"
        client.ehlo()
        if target.mode == "starttls":
            if not client.has_extn("starttls"):
                raise SmtpError(
                    f"{where}: server does not offer STARTTLS; refusing to send in clear text", kind="tls"
                )
            stage = "starttls"
            client.starttls(context=_tls_context(target))
            client.ehlo()
        if target.username:
            stage = "login"
            client.login(target.username, target.password or "")
        stage = "send"
        refused = client.sendmail(envelope_from, list(recipients), raw)
        _quit(client)
        client = None
    except SmtpError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpError(
            f"{where}: authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}",
            kind="auth",
            code=exc.smtp_code,
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        detail = "; ".join(f"{a}: {c} {_text(m)}" for a, (c, m) in exc.recipients.items())
        raise SmtpError(
            target.redact(f"{where}: every recipient refused: {detail}"), kind="refused"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise SmtpError(
            target.redact(f"{where}: server refused at {stage}: {exc.smtp_code} {_text(exc.smtp_error)}"),
            kind="refused",
            code=exc.smtp_code,
        ) from None
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):  # smtplib reports a read timeout as a disconnect
            raise SmtpError(f"{where}: no answer within {timeout:g}s at {stage}", kind="timeout") from None
        raise SmtpError(
            target.redact(f"{where}: server closed the connection at {stage}: {exc}"), kind="disconnected"
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise SmtpError(target.redact(f"{where}: {exc}"), kind="refused") from None
    except TimeoutError:
        raise SmtpError(f"{where}: no answer within {timeout:g}s at {stage}", kind="timeout") from None
    except ssl.SSLError as exc:
        raise SmtpError(target.redact(f"{where}: TLS failed at {stage}: {exc}"), kind="tls") from None
    except (OSError, smtplib.SMTPException) as exc:
        kind = "connect" if stage == "connect" else "disconnected"
        raise SmtpError(target.redact(f"{where}: {stage} failed: {exc}"), kind=kind) from None
    finally:
        if client is not None:
            client.close()  # after a failure: no polite QUIT, which could wait out another timeout
    return {addr: f"{code} {_text(msg)}" for addr, (code, msg) in refused.items()}


def _quit(client: smtplib.SMTP) -> None:
    # The message is already accepted; a failing QUIT changes nothing.
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
