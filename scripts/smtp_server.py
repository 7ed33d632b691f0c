"""A real SMTP server for Cairn's tests, built on aiosmtpd.

Three listeners on 127.0.0.1, all storing every message they accept in one
Maildir (aiosmtpd adds X-MailFrom and X-RcptTo headers with the envelope):

- plain:    no TLS, no authentication (the `none` mode of Cairn);
- starttls: STARTTLS required, then AUTH PLAIN/LOGIN required;
- smtps:    TLS from the first byte, then AUTH required.

Usage: smtp_server.py MAILDIR CERT KEY USER PASSWORD PLAIN STARTTLS SMTPS
"""

import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    maildir, cert, key, user, password = sys.argv[1:6]
    plain_port, starttls_port, smtps_port = (int(p) for p in sys.argv[6:9])

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = Mailbox(maildir)
    controllers = [
        Controller(handler, hostname="127.0.0.1", port=plain_port),
        Controller(
            handler,
            hostname="127.0.0.1",
            port=starttls_port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_required=True,
        ),
        Controller(
            handler,
            hostname="127.0.0.1",
            port=smtps_port,
            ssl_context=context,
            authenticator=authenticate,
            auth_required=True,
            auth_require_tls=False,
        ),
    ]
    for controller in controllers:
        controller.start()
    print(f"smtp: plain {plain_port}, starttls {starttls_port}, smtps {smtps_port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    for controller in controllers:
        controller.stop()


if __name__ == "__main__":
    main()
