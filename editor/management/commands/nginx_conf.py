"""`manage.py nginx_conf`: prints the nginx configuration for N collab processes.

The same template makes docker/nginx/collab.conf (editor/deploy/nginx.py); docs/DEPLOY.md shows
it in a bare-metal install. Run it with the production environment: MAX_CONTENT_BYTES and the
WebSocket ping settings shape the output.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from editor.deploy import nginx


class Command(BaseCommand):
    help = (
        "Prints a complete nginx configuration for the given collab processes: document "
        "affinity for WebSockets, round-robin HTTP. Run it with "
        "nginx -p PREFIX -c FILE -g 'daemon off;'."
    )
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--backend",
            action="append",
            required=True,
            dest="backends",
            metavar="HOST:PORT",
            help="A `manage.py serve` process; give one per process.",
        )
        parser.add_argument(
            "--listen", required=True, metavar="[HOST:]PORT", help="Where nginx listens."
        )
        parser.add_argument(
            "--static-root",
            metavar="DIR",
            help="Serve /static/ from this directory (STATIC_ROOT after collectstatic); "
            "without it the processes serve static files themselves.",
        )
        parser.add_argument(
            "--access-log",
            default=nginx.Options.access_log,
            metavar="PATH",
            help="Access log, relative to nginx's prefix unless absolute; `off` for none "
            "(access.log).",
        )
        parser.add_argument(
            "--error-log",
            default=nginx.Options.error_log,
            metavar="PATH",
            help="Error log, relative to nginx's prefix unless absolute, or `stderr` (error.log).",
        )
        parser.add_argument(
            "--tls-certificate",
            metavar="FILE",
            help="Serve HTTPS on --listen with this certificate chain (PEM); needs --tls-key.",
        )
        parser.add_argument("--tls-key", metavar="FILE", help="The certificate's private key.")

    def handle(
        self,
        *args: Any,
        backends: list[str],
        listen: str,
        static_root: str | None,
        access_log: str,
        error_log: str,
        tls_certificate: str | None,
        tls_key: str | None,
        **options: Any,
    ) -> None:
        config = nginx.Options(
            backends=tuple(backends),
            listen=listen,
            static_root=static_root,
            access_log=access_log,
            error_log=error_log,
            tls_certificate=tls_certificate,
            tls_key=tls_key,
        )
        try:
            self.stdout.write(nginx.render(config), ending="")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
