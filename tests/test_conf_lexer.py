"""The tokenizer: nginx's rules, fed whole and byte by byte."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfront.conf.ast import ErrorNode, Node, parse
from mailfront.conf.lexer import End, Lexer, Stmt, tokenize, unescape


def stmts(text: str | bytes, **kw: bool) -> list[tuple[tuple[str, ...], str, int]]:
    data = text.encode() if isinstance(text, str) else text
    return [
        (s.args, s.end.value, s.line) if s.end is not End.ERROR else ((), s.error, s.line)
        for s in tokenize(data, **kw)
    ]


def bytewise(data: bytes, **kw: bool) -> list[Stmt]:
    lexer = Lexer(**kw)
    out: list[Stmt] = []
    for i in range(len(data)):
        out += lexer.feed(data[i : i + 1])
        if out and out[-1].end is End.ERROR:
            return out
    return out + lexer.finish()


def test_words_and_terminators() -> None:
    assert stmts("a b;\nc {\n}\n") == [
        (("a", "b"), ";", 1),
        (("c",), "{", 2),
        ((), "}", 3),
        ((), "eof", 4),
    ]


def test_line_is_where_the_statement_ends() -> None:
    assert stmts("timeout\n  5s\n  ;")[0] == (("timeout", "5s"), ";", 3)


def test_comments() -> None:
    assert stmts("a # b;\n c; # d\n") == [(("a", "c"), ";", 2), ((), "eof", 3)]
    assert stmts("a b#c;") == [(("a", "b#c"), ";", 1), ((), "eof", 1)]


def test_quotes_and_escapes() -> None:
    assert stmts(r'''a "b c" 'd;e' "f\"g" 'h\'i' "\\" "\t\r\n" "\x";''')[0][0] == (
        "a", "b c", "d;e", 'f"g', "h'i", "\\", "\t\r\n", "\\x",
    )  # fmt: skip
    assert stmts(r"a b\ c;")[0][0] == ("a", "b\\ c")
    assert unescape(rb"a\"b\\c\nd\q") == b'a"b\\c\nd\\q'


def test_empty_quoted_word() -> None:
    assert stmts('a "";')[0][0] == ("a", "")


def test_variables_do_not_open_blocks() -> None:
    assert stmts("a ${b}c x${y};")[0][0] == ("a", "${b}c", "x${y}")


def test_close_brace_inside_a_word() -> None:
    assert stmts("a b}c;")[0][0] == ("a", "b}c")


def test_paren_after_quote_starts_a_word() -> None:
    assert stmts('a "b")c;')[0][0] == ("a", "b", ")c")


def test_errors() -> None:
    assert stmts('a "b"c;')[-1] == ((), 'unexpected "c"', 1)
    assert stmts(";")[-1] == ((), 'unexpected ";"', 1)
    assert stmts("\n{")[-1] == ((), 'unexpected "{"', 2)
    assert stmts("a }")[-1] == ((), 'unexpected "}"', 1)
    assert stmts("a b")[-1] == ((), 'unexpected end of file, expecting ";" or "}"', 1)
    assert stmts('a "b')[-1] == ((), 'unexpected end of file, expecting ";" or "}"', 1)
    assert stmts("a", param=True)[-1] == ((), 'unexpected end of parameter, expecting ";"', 0)


def test_nothing_after_an_error() -> None:
    lexer = Lexer()
    out = lexer.feed(b"; a;")
    assert [s.end for s in out] == [End.ERROR]
    assert lexer.feed(b"b;") == [] and lexer.finish() == []


def test_too_long_word() -> None:
    ok = b"a " + b"x" * 4000 + b";"
    assert stmts(ok)[0][1] == ";"
    long_word = b"a\n" + b"x" * 5000 + b";"
    assert stmts(long_word)[-1] == ((), 'too long parameter "xxxxxxxxxx..." started', 2)
    quoted = b'a\n"' + b"x\n" * 3000
    assert stmts(quoted)[-1] == (
        (), 'too long parameter, probably missing terminating """ character', 2,
    )  # fmt: skip
    # the file may end exactly at the limit: that is the end of file, not a long word
    assert stmts(b"x" * 4096)[-1][1] == 'unexpected end of file, expecting ";" or "}"'
    # the -g text has no buffer limit
    assert stmts(b"a " + b"x" * 5000 + b";", param=True)[0][1] == ";"


def test_span_counts_from_the_last_word() -> None:
    # nginx's buffer keeps the text from the start of the last word: a long run of
    # spaces after a word fills it too
    assert stmts(b"a" + b" " * 5000 + b";")[-1][1].startswith('too long parameter "a ')


def test_tree_blocks_and_errors() -> None:
    nodes = parse(b"a {\n b;\n}\nc;\n", "f")
    assert isinstance(nodes[0], Node) and nodes[0].block is not None
    assert [n.args for n in nodes[0].block if isinstance(n, Node)] == [("b",)]
    assert isinstance(nodes[1], Node) and nodes[1].args == ("c",)
    assert parse(b"}", "f") == [ErrorNode('unexpected "}"', "f", 1)]
    eof = parse(b"a {\nb;\n", "f")
    assert isinstance(eof[0], Node) and eof[0].block is not None
    assert eof[0].block[-1] == ErrorNode('unexpected end of file, expecting "}"', "f", 3)
    assert parse(b"a {", "cl", param=True) == [
        ErrorNode("block directives are not supported in -g option", "cl", 0)
    ]


CONFIG_ALPHABET = b" \t\r\n;{}#\\\"'$()ab;x"


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.lists(st.sampled_from(list(CONFIG_ALPHABET))).map(bytes))
def test_any_split_gives_the_same_statements(data: bytes) -> None:
    whole = tokenize(data)
    assert bytewise(data) == whole
    assert whole[-1].end in (End.EOF, End.ERROR)
    param = tokenize(data, param=True)
    assert bytewise(data, param=True) == param


@settings(max_examples=100)
@given(st.integers(min_value=4000, max_value=4200), st.integers(min_value=1, max_value=97))
def test_long_words_split_anywhere(length: int, chunk: int) -> None:
    data = b"a " + b"y" * length + b";\n" + b"# " + b"z" * length + b"\nb;"
    lexer = Lexer()
    out: list[Stmt] = []
    for i in range(0, len(data), chunk):
        out += lexer.feed(data[i : i + chunk])
    if not out or out[-1].end is not End.ERROR:
        out += lexer.finish()
    assert out == tokenize(data)


@given(st.lists(st.text(alphabet="abc xyz;{}\"'\\", max_size=8), max_size=6))
def test_quoted_words_round_trip(words: list[str]) -> None:
    def quote(w: str) -> str:
        return '"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = "d " + " ".join(quote(w) for w in words) + ";"
    first = tokenize(text.encode())[0]
    assert first.end is End.SEMICOLON
    assert first.args == ("d", *words)
