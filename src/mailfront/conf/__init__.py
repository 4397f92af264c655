"""nginx's configuration language, read into frozen dataclasses (no sockets, no asyncio).

``load(conf_file, prefix, directives)`` reads a configuration the way ``nginx -t``
does and returns a :class:`~mailfront.conf.model.Config`, or raises
:class:`ConfError` with nginx's message (``str(e)`` ends with `` in FILE:LINE``).
"""

from __future__ import annotations

from mailfront.conf.build import Loader, default_hostname, hosts_file_resolver
from mailfront.conf.errors import ConfError
from mailfront.conf.model import Config
from mailfront.conf.values import ResolveError, Resolver


def load(
    conf_file: str,
    prefix: str,
    directives: str | None = None,
    *,
    resolver: Resolver | None = None,
    hostname: str | None = None,
) -> Config:
    """Read ``conf_file`` (relative to ``prefix`` unless absolute) as nginx would.

    ``directives`` is the ``-g`` text: main-level directives, read before the
    file as nginx does (errors say `` in command line``).  ``resolver`` turns a
    host name into addresses (``auth_http``, ``listen`` ...); without one only
    ``/etc/hosts`` is consulted (``mailfront.cli.system_resolver`` uses
    getaddrinfo).  ``hostname`` is the default ``server_name`` (default: the
    lower-cased host name, as nginx).
    """
    return Loader(conf_file, prefix, directives, resolver=resolver, hostname=hostname).load()


__all__ = [
    "ConfError",
    "Config",
    "Loader",
    "ResolveError",
    "Resolver",
    "default_hostname",
    "hosts_file_resolver",
    "load",
]
