"""A renderer for the subset of Go's text/template that edgetune's Ollama TEMPLATEs use, so a Modelfile's template
can be checked against the model's Jinja chat template without Ollama or a Go toolchain.

The subset, with text/template's semantics (https://pkg.go.dev/text/template): text and `{{ }}` actions with the
`{{- ` / ` -}}` whitespace trims; `if` / `else if` / `else` / `end`; `range $i, $v := PIPE` and `range PIPE`
(the dot becomes the element); `$x := PIPE` (scoped to the enclosing block); fields (`.Role`, `$.Messages`,
`$v.Content`); string, integer and boolean literals; parenthesised calls of `and`, `or`, `not`, `eq`, `ne`, `len`,
`slice` and `index`. Truth is Go's (false, 0, "", empty list, nil are false). Anything else (pipes `|`, other
functions, `with`, `define`) raises GoTemplateError naming it: the renderer refuses what it cannot render
faithfully rather than guessing. Data are dicts and lists; a missing field is an error (Ollama's data are structs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class GoTemplateError(ValueError):
    """A template outside the supported subset, or an error while rendering it."""


_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.DOTALL)
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<var>\$\w*(?:\.\w+)*)'
                    r'|(?P<field>(?:\.\w+)+|\.)|(?P<ident>[A-Za-z_]\w*)|(?P<op>:=|[(),|]))')
_STR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


@dataclass
class _Node:
    kind: str  # text, output, assign, if, range
    text: str = ""
    expr: Any = None
    names: tuple[str, ...] = ()
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _lex(source: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", s) pieces, with the trim markers applied to the neighbouring text."""
    pieces: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(source):
        text = source[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if text:
            pieces.append(("text", text))
        pieces.append(("action", m.group(2).strip()))
        pos, trim_next = m.end(), bool(m.group(3))
    text = source[pos:]
    if "{{" in text:
        raise GoTemplateError(f"unclosed action near {text[text.index('{{'):][:30]!r}")
    if trim_next:
        text = text.lstrip(" \t\r\n")
    if text:
        pieces.append(("text", text))
    return pieces


def _tokens(action: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(action):
        if action[pos:].strip() == "":
            break
        m = _TOKEN.match(action, pos)
        if m is None:
            raise GoTemplateError(f"cannot parse {action[pos:]!r} in {{{{ {action} }}}}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _parse_expr(toks: list[tuple[str, str]], action: str) -> Any:
    """A pipeline without `|`: a call `fn arg...` or a single operand. Returns a nested tuple tree."""
    pos = 0

    def operand() -> Any:
        nonlocal pos
        kind, value = toks[pos]
        pos += 1
        if kind == "op" and value == "(":
            inner = command(stop=")")
            if pos >= len(toks) or toks[pos] != ("op", ")"):
                raise GoTemplateError(f"unbalanced parentheses in {{{{ {action} }}}}")
            pos += 1
            return inner
        if kind == "str":
            return ("lit", re.sub(r"\\(.)", lambda e: _STR_ESCAPES.get(e.group(1), e.group(0)), value[1:-1]))
        if kind == "num":
            return ("lit", int(value))
        if kind == "ident" and value in ("true", "false"):
            return ("lit", value == "true")
        if kind in ("var", "field"):
            return (kind, value)
        raise GoTemplateError(f"unsupported {value!r} in {{{{ {action} }}}}")

    def command(stop: str | None) -> Any:
        nonlocal pos
        if pos < len(toks) and toks[pos][0] == "ident" and toks[pos][1] not in ("true", "false"):
            name = toks[pos][1]
            if name not in _FUNCS:
                raise GoTemplateError(f"unsupported function {name!r} in {{{{ {action} }}}}")
            pos += 1
            args = []
            while pos < len(toks) and toks[pos] != ("op", stop or ""):
                if toks[pos] == ("op", "|"):
                    raise GoTemplateError(f"pipes are not supported: {{{{ {action} }}}}")
                args.append(operand())
            return ("call", name, tuple(args))
        value = operand()
        if pos < len(toks) and toks[pos] == ("op", "|"):
            raise GoTemplateError(f"pipes are not supported: {{{{ {action} }}}}")
        if pos < len(toks) and toks[pos] != ("op", stop or ""):
            raise GoTemplateError(f"unexpected {toks[pos][1]!r} in {{{{ {action} }}}}")
        return value

    if not toks:
        raise GoTemplateError("empty action {{ }}")
    expr = command(stop=None)
    if pos != len(toks):
        raise GoTemplateError(f"unexpected {toks[pos][1]!r} in {{{{ {action} }}}}")
    return expr


def parse(source: str) -> list[_Node]:
    """The template as a node tree. Raises GoTemplateError for anything outside the subset."""
    pieces = _lex(source)
    pos = 0

    def block(stops: tuple[str, ...]) -> tuple[list[_Node], str]:
        nonlocal pos
        nodes: list[_Node] = []
        while pos < len(pieces):
            kind, text = pieces[pos]
            pos += 1
            if kind == "text":
                nodes.append(_Node("text", text=text))
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in ("end", "else"):
                if word not in stops and not (word == "else" and "else" in stops):
                    raise GoTemplateError(f"unexpected {{{{ {text} }}}}")
                return nodes, text
            if word == "if":
                nodes.append(_if(text[2:].strip()))
            elif word == "range":
                nodes.append(_range(text[5:].strip()))
            elif word in ("with", "define", "template", "block", "break", "continue"):
                raise GoTemplateError(f"unsupported action {{{{ {text} }}}}")
            elif text.startswith("/*"):
                continue
            else:
                toks = _tokens(text)
                if len(toks) >= 2 and toks[0][0] == "var" and toks[1] == ("op", ":="):
                    nodes.append(_Node("assign", names=(toks[0][1],), expr=_parse_expr(toks[2:], text)))
                else:
                    nodes.append(_Node("output", expr=_parse_expr(toks, text)))
        if stops:
            raise GoTemplateError(f"missing {{{{ end }}}} (expected one of {', '.join(stops)})")
        return nodes, ""

    def _if(cond: str) -> _Node:
        node = _Node("if", expr=_parse_expr(_tokens(cond), f"if {cond}"))
        node.body, stop = block(("end", "else"))
        if stop.startswith("else"):
            rest = stop[4:].strip()
            if rest.startswith("if "):
                node.orelse = [_if(rest[3:].strip())]  # the nested if consumes the shared {{ end }}
            else:
                node.orelse, _ = block(("end",))
        return node

    def _range(spec: str) -> _Node:
        toks = _tokens(spec)
        names: tuple[str, ...] = ()
        if ("op", ":=") in toks:
            at = toks.index(("op", ":="))
            names = tuple(v for k, v in toks[:at] if k == "var")
            toks = toks[at + 1:]
        node = _Node("range", expr=_parse_expr(toks, f"range {spec}"), names=names)
        node.body, stop = block(("end", "else"))
        if stop.startswith("else"):
            node.orelse, _ = block(("end",))
        return node

    nodes, _ = block(())
    return nodes


def truth(value: Any) -> bool:
    """Go's truth: false, 0, "", nil and empty collections are false."""
    return value is not None and value is not False and value != 0 and value != "" and \
        not (isinstance(value, (list, tuple, dict)) and not value)


def _slice(value: Any, *idx: int) -> Any:
    if len(idx) > 2:
        raise GoTemplateError("slice with 3 indices is not supported")
    return value[idx[0]:idx[1]] if len(idx) == 2 else value[idx[0]:] if idx else value


_FUNCS = {"and", "or", "not", "eq", "ne", "len", "slice", "index"}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    return str(value)


class _Scope:
    def __init__(self, root: Any, dot: Any):
        self.frames: list[dict[str, Any]] = [{"$": root}]
        self.dot = dot

    def var(self, name: str) -> Any:
        base, *path = name.split(".")
        for frame in reversed(self.frames):
            if base in frame:
                return _fields(frame[base], path, name)
        raise GoTemplateError(f"undefined variable {base}")


def _fields(value: Any, path: list[str], where: str) -> Any:
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            raise GoTemplateError(f"can't evaluate field {name} in {where}")
        value = value[name]
    return value


def _eval(expr: Any, s: _Scope) -> Any:
    kind = expr[0]
    if kind == "lit":
        return expr[1]
    if kind == "var":
        return s.var(expr[1])
    if kind == "field":
        return s.dot if expr[1] == "." else _fields(s.dot, expr[1].split(".")[1:], expr[1])
    name, args = expr[1], expr[2]
    if name in ("and", "or"):  # short-circuit, returning the deciding argument (Go >= 1.18)
        value = None
        for arg in args:
            value = _eval(arg, s)
            if truth(value) != (name == "and"):
                return value
        return value
    vals = [_eval(a, s) for a in args]
    if name == "not":
        return not truth(vals[0])
    if name == "eq":
        return any(vals[0] == v for v in vals[1:])
    if name == "ne":
        return vals[0] != vals[1]
    if name == "len":
        return len(vals[0])
    if name == "slice":
        return _slice(vals[0], *vals[1:])
    if name == "index":
        value = vals[0]
        for i in vals[1:]:
            value = value[i]
        return value
    raise GoTemplateError(f"unsupported function {name!r}")


def _run(nodes: list[_Node], s: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "output":
            out.append(_fmt(_eval(node.expr, s)))
        elif node.kind == "assign":
            s.frames[-1][node.names[0]] = _eval(node.expr, s)
        elif node.kind == "if":
            s.frames.append({})
            _run(node.body if truth(_eval(node.expr, s)) else node.orelse, s, out)
            s.frames.pop()
        elif node.kind == "range":
            items = _eval(node.expr, s)
            if not truth(items):
                _run(node.orelse, s, out)
                continue
            pairs = items.items() if isinstance(items, Mapping) else enumerate(items)
            outer = s.dot
            for key, value in pairs:
                s.frames.append({})
                if len(node.names) == 1:
                    s.frames[-1][node.names[0]] = value
                elif len(node.names) == 2:
                    s.frames[-1].update({node.names[0]: key, node.names[1]: value})
                s.dot = value
                _run(node.body, s, out)
                s.frames.pop()
            s.dot = outer


def render(source: str, data: Mapping[str, Any]) -> str:
    """`source` executed on `data` as text/template would. Raises GoTemplateError."""
    out: list[str] = []
    try:
        _run(parse(source), _Scope(data, data), out)
    except (IndexError, TypeError, KeyError) as exc:
        raise GoTemplateError(f"template failed: {exc}") from exc
    return "".join(out)
