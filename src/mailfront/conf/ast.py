"""The directive tree of one configuration file, as ``ngx_conf_parse`` sees it.

A file becomes a list of :class:`Node`: a directive with its arguments, the
line nginx reports for it and, for ``name ... {``, the nodes of its block.
Errors of the tokenizer and of the block structure (an unexpected ``}``, a
missing one at the end of the file) are kept in place as an :class:`ErrorNode`,
so that whoever walks the tree meets them in the same order as nginx, after
the directives before them.  ``include`` is not expanded here: nginx reads an
included file when it reaches the ``include``, in the context of that place,
and reads it again at each ``include``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailfront.conf.lexer import End, Lexer, Stmt


@dataclass(slots=True)
class Node:
    args: tuple[str, ...]  # args[0] is the directive name
    file: str  # the file name as nginx prints it, or COMMAND_LINE
    line: int
    block: list[Node | ErrorNode] | None = None  # for "name ... {"

    @property
    def name(self) -> str:
        return self.args[0]

    @property
    def is_block(self) -> bool:
        return self.block is not None


@dataclass(slots=True)
class ErrorNode:
    msg: str
    file: str
    line: int


Nodes = list["Node | ErrorNode"]


@dataclass(slots=True)
class _Frame:
    nodes: Nodes = field(default_factory=list)


def parse(data: bytes, file: str, *, param: bool = False) -> Nodes:
    """The tree of one file (or of the ``-g`` text when ``param``)."""
    lexer = Lexer(param=param)
    stmts = lexer.feed(data)
    if not stmts or stmts[-1].end is not End.ERROR:
        stmts += lexer.finish()
    return build(stmts, file, param=param)


def build(stmts: list[Stmt], file: str, *, param: bool = False) -> Nodes:
    """Assemble statements into nested nodes with ``ngx_conf_parse``'s rules."""
    root: Nodes = []
    stack: list[Nodes] = [root]
    for stmt in stmts:
        current = stack[-1]
        if stmt.end is End.ERROR:
            current.append(ErrorNode(stmt.error, file, stmt.line))
            return root
        if stmt.end is End.BLOCK_DONE:
            if len(stack) == 1:
                current.append(ErrorNode('unexpected "}"', file, stmt.line))
                return root
            stack.pop()
            continue
        if stmt.end is End.EOF:
            if len(stack) > 1:
                current.append(ErrorNode('unexpected end of file, expecting "}"', file, stmt.line))
            return root
        if stmt.end is End.BLOCK_START:
            if param:
                current.append(
                    ErrorNode("block directives are not supported in -g option", file, stmt.line)
                )
                return root
            node = Node(stmt.args, file, stmt.line, [])
            current.append(node)
            assert node.block is not None
            stack.append(node.block)
            continue
        current.append(Node(stmt.args, file, stmt.line))
    return root
