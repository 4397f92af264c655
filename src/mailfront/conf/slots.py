"""What a directive handler works with, and nginx's generic "slot" handlers.

A handler receives a :class:`Call`: the directive's arguments and place, the
storage of the block it appears in (:class:`Level`), and the loader's services
(warnings, name resolution, prefixes).  It returns ``None`` on success, or one
of nginx's short verdicts (``"is duplicate"``, ``"invalid value"``,
``"invalid number"``) which the loader turns into ``"name" directive is
duplicate``; any other error is raised as a :class:`ConfError` at the
directive's place, as ``ngx_conf_log_error`` does.

The slots reproduce ``ngx_conf_set_*_slot``: each stores one value per block
and refuses a second one; flags, enums and bitmask keywords are
case-insensitive; bitmask keywords accumulate with a warning on repeats.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailfront.conf.ast import Node
from mailfront.conf.errors import ConfError
from mailfront.conf.values import (
    Resolver,
    atoi,
    parse_flag,
    parse_size,
    parse_time,
)


class Ctx(enum.Flag):
    """Where a directive may appear (nginx's NGX_*_CONF bits)."""

    MAIN = enum.auto()  # the top level (NGX_MAIN_CONF)
    EVENTS = enum.auto()  # events { } (NGX_EVENT_CONF)
    MAIL = enum.auto()  # mail { } (NGX_MAIL_MAIN_CONF)
    SERVER = enum.auto()  # mail { server { } } (NGX_MAIL_SRV_CONF)
    SKIP = enum.auto()  # inside a block mailfront does not read (http { }, stream { })


@dataclass(frozen=True, slots=True)
class Arity:
    """How many arguments a directive takes (NGX_CONF_TAKE*, FLAG, 1MORE, ...)."""

    counts: frozenset[int] | None  # exact counts allowed, or None for "at least min_args"
    min_args: int = 0
    label: str = ""

    def ok(self, n: int) -> bool:
        if self.counts is None:
            return n >= self.min_args
        return n in self.counts


NOARGS = Arity(frozenset({0}), label="NOARGS")
TAKE1 = Arity(frozenset({1}), label="TAKE1")
TAKE2 = Arity(frozenset({2}), label="TAKE2")
TAKE12 = Arity(frozenset({1, 2}), label="TAKE12")
TAKE23 = Arity(frozenset({2, 3}), label="TAKE23")
FLAG = Arity(frozenset({1}), label="FLAG")
ONEMORE = Arity(None, 1, label="1MORE")
TWOMORE = Arity(None, 2, label="2MORE")
ANY = Arity(None, 0, label="ANY")


@dataclass(slots=True)
class Level:
    """The values set in one block: the top level, events{}, mail{} or a server{}."""

    kind: str  # "main", "events", "mail", "server"
    file: str  # where the block was opened (nginx's cscf->file_name/line)
    line: int
    v: dict[str, Any] = field(default_factory=dict)


class Services(Protocol):
    """What the loader offers to handlers."""

    resolver: Resolver | None
    prefix: str  # -p: pid and log files are relative to it
    conf_prefix: str  # the main file's folder: include and certificates are relative to it
    shared_zones: dict[str, int]  # the shared memory zones declared so far, by name: size

    def warn(self, text: str) -> None: ...

    def read_file(self, path: str) -> bytes: ...  # OSError as open() raises it

    def mail_listen(self) -> list[Any]: ...


@dataclass(slots=True)
class Call:
    node: Node
    level: Level
    services: Services

    @property
    def name(self) -> str:
        return self.node.args[0]

    @property
    def args(self) -> tuple[str, ...]:
        return self.node.args[1:]

    @property
    def conf(self) -> dict[str, Any]:
        return self.level.v

    def error(self, msg: str) -> ConfError:
        return ConfError(msg, self.node.file, self.node.line)

    def warn(self, msg: str) -> None:
        self.services.warn(str(ConfError(msg, self.node.file, self.node.line)))


Handler = Callable[[Call], "str | None"]


def flag(key: str) -> Handler:
    def set_flag(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        value = parse_flag(c.args[0])
        if value is None:
            raise c.error(
                f'invalid value "{c.args[0]}" in "{c.name}" directive, it must be "on" or "off"'
            )
        c.conf[key] = value
        return None

    return set_flag


def msec(key: str) -> Handler:
    """Milliseconds, stored as float seconds."""

    def set_msec(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        value = parse_time(c.args[0], False)
        if value is None:
            return "invalid value"
        c.conf[key] = value / 1000
        return None

    return set_msec


def sec(key: str) -> Handler:
    def set_sec(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        value = parse_time(c.args[0], True)
        if value is None:
            return "invalid value"
        c.conf[key] = float(value)
        return None

    return set_sec


def size(key: str) -> Handler:
    def set_size(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        value = parse_size(c.args[0])
        if value is None:
            return "invalid value"
        c.conf[key] = value
        return None

    return set_size


def num(key: str) -> Handler:
    def set_num(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        value = atoi(c.args[0])
        if value is None:
            return "invalid number"
        c.conf[key] = value
        return None

    return set_num


def string(key: str) -> Handler:
    def set_str(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        c.conf[key] = c.args[0]
        return None

    return set_str


def enum_slot(key: str, values: Mapping[str, Any]) -> Handler:
    def set_enum(c: Call) -> str | None:
        if key in c.conf:
            return "is duplicate"
        word = c.args[0]
        for name, value in values.items():
            if name.lower() == word.lower():
                c.conf[key] = value
                return None
        raise c.error(f'invalid value "{word}"')

    return set_enum


def bitmask(key: str, values: Mapping[str, int]) -> Handler:
    def set_bitmask(c: Call) -> str | None:
        mask = c.conf.get(key, 0)
        for word in c.args:
            for name, bit in values.items():
                if name.lower() == word.lower():
                    if mask & bit:
                        c.warn(f'duplicate value "{word}"')
                    else:
                        mask |= bit
                    break
            else:
                c.conf[key] = mask
                raise c.error(f'invalid value "{word}"')
        c.conf[key] = mask
        return None

    return set_bitmask


def str_array(key: str) -> Handler:
    def set_str_array(c: Call) -> str | None:
        c.conf.setdefault(key, []).append(c.args[0])
        return None

    return set_str_array


def keyval(key: str) -> Handler:
    def set_keyval(c: Call) -> str | None:
        c.conf.setdefault(key, []).append((c.args[0], c.args[1]))
        return None

    return set_keyval


def capabilities(key: str) -> Handler:
    """``ngx_mail_capabilities``: every argument is appended, repeats accumulate."""

    def set_capabilities(c: Call) -> str | None:
        c.conf.setdefault(key, []).extend(c.args)
        return None

    return set_capabilities


def ignore(c: Call) -> str | None:
    """An nginx directive mailfront accepts and has no use for."""
    return None
