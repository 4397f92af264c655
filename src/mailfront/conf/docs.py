"""Generate ``docs/directives.md`` from the command table::

python -m mailfront.conf.docs            # print it
python -m mailfront.conf.docs FILE       # write it to FILE
python -m mailfront.conf.docs --check FILE   # exit 1 if FILE is not up to date
"""

from __future__ import annotations

import sys

from mailfront.conf import directives as d
from mailfront.conf.slots import Ctx

SECTIONS = (
    ("core", "Main level (nginx core)"),
    ("events", "events { } (nginx core)"),
    ("mail", "mail { }"),
    ("mail_core", "ngx_mail_core_module"),
    ("mail_auth_http", "ngx_mail_auth_http_module"),
    ("mail_proxy", "ngx_mail_proxy_module"),
    ("mail_realip", "ngx_mail_realip_module"),
    ("mail_imap", "ngx_mail_imap_module"),
    ("mail_pop3", "ngx_mail_pop3_module"),
    ("mail_smtp", "ngx_mail_smtp_module"),
    ("mail_ssl", "ngx_mail_ssl_module"),
    ("mailfront", "mailfront extensions (not in nginx)"),
    ("http", "Blocks of other nginx modules"),
    ("stream", ""),
)

CONTEXT_NAMES = (
    (Ctx.MAIN, "main"),
    (Ctx.EVENTS, "events"),
    (Ctx.MAIL, "mail"),
    (Ctx.SERVER, "server"),
)


def _context(ctx: Ctx) -> str:
    return ", ".join(name for bit, name in CONTEXT_NAMES if ctx & bit)


def _status(row: d.Directive) -> str:
    if row.ignored:
        return "accepted, ignored"
    if not row.supported:
        return "**not supported yet**"
    only = d.SUPPORTED_VALUES_ONLY.get(row.name) if row.ctx & (Ctx.MAIL | Ctx.SERVER) else None
    if only is not None:
        return "supported: " + ", ".join(f"`{v}`" for v in sorted(only)) + " only"
    if row.name == "listen" and d.UNSUPPORTED_LISTEN_PARAMS:
        return "supported, except " + ", ".join(
            f"`{p}`" for p in sorted(d.UNSUPPORTED_LISTEN_PARAMS)
        )
    return "supported"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else "—"


def render() -> str:
    out = [
        "# Directives",
        "",
        "<!-- Generated from src/mailfront/conf/directives.py by "
        "`python -m mailfront.conf.docs docs/directives.md`; do not edit. -->",
        "",
        "mailfront reads nginx's configuration language and every directive of nginx's mail",
        "modules, with nginx's syntax, defaults, contexts and error messages. Directives of",
        "nginx's mail modules that mailfront does not implement yet are refused with",
        '`"x" directive is not supported yet`, never silently ignored. nginx core settings',
        "that mean nothing to mailfront are accepted and ignored, so that a complete",
        "`nginx.conf` loads. Any other directive is an error, as in nginx.",
        "",
        "Contexts: `main` is the top level, `mail` is `mail { }`, `server` is",
        "`mail { server { } }`. A directive allowed in `mail` and `server` is inherited by",
        "every server that does not set it; for the list-valued ones (`*_capabilities`,",
        "`auth_http_header`, `ssl_certificate(_key)`, `ssl_conf_command`,",
        "`ssl_session_ticket_key`, `set_real_ip_from`, `error_log`) a server's own list",
        "replaces the inherited one. Times take nginx's units, combinable in decreasing",
        "order (`1h30m`): `ms s m h d w`, or `s m h d w M y` for the few directives that",
        "take seconds (`ssl_session_timeout`); a bare number is seconds. Sizes take `k`",
        "and `m`.",
        "",
        "`include file | mask;` is allowed everywhere; relative paths (and those of",
        "certificate files and `auth_file`) are relative to the folder of the main",
        "configuration file, `pid` and `error_log` files to the prefix (`-p`).",
        "",
    ]
    for module, title in SECTIONS:
        rows = [r for r in d.TABLE if r.module == module]
        if not rows:
            continue
        if title:
            out += [f"## {title}", ""]
            out += [
                "| Directive | Syntax | Default | Context | From | Status |",
                "|---|---|---|---|---|---|",
            ]
        for r in rows:
            syntax = f"`{r.name} {r.syntax}`" if r.syntax else f"`{r.name}`"
            origin = "mailfront extension" if r.origin == "mailfront" else "nginx"
            status = _status(r)
            if r.note:
                status += ". " + r.note
            out.append(
                f"| `{r.name}` | {_cell(syntax)} | {_cell(r.default)} | {_context(r.ctx)} "
                f"| {origin} | {_cell(status)} |"
            )
        if module != "http":
            out.append("")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if not args:
        sys.stdout.write(text)
        return 0
    if args[0] == "--check":
        with open(args[1], encoding="utf-8") as f:
            return 0 if f.read() == text else 1
    with open(args[0], "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
