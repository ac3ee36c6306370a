"""Config templating: Jinja2 templates and JMESPath expressions inside node configs.

Every string value of a node's config that contains ``{{``, ``{%`` or ``{#`` is a Jinja2
template, rendered in an immutable sandbox with ``StrictUndefined`` over the node's scope:

- ``input``: the node's input; ``execution_input`` and ``execution.input``: the execution's
  input; ``execution.id`` and ``execution_id``; ``execution.resume_url``: the resume link of
  the execution's (first unfinished) ``wait_for_event`` node, ``execution.resume_urls.<key>``
  those of each (built only when a template reads them); ``nodes``: outputs of finished upstream nodes
  by key (loaded only when a template mentions ``nodes``); ``credentials.<name>.<field>``:
  a credential of the workflow's owner, decrypted only when read, its values then redacted
  from everything the run stores or logs (executions.credentials).

A string that is exactly one ``{{ expression }}`` keeps the expression's JSON type (a number
stays a number, a list a list); any other template renders to a string. An object of the
single key ``jmespath`` (``{"jmespath": "length(input.items)"}``) is replaced by the value of
that JMESPath expression over the same scope. Nothing here reaches ``eval``: Jinja compiles
to sandboxed bytecode that refuses unsafe attributes (``__class__`` and the like), and
JMESPath is a query language with no calls into Python.

A missing variable, a forbidden attribute or a non-JSON result fails the node with a
:class:`NonRetryableError` naming the config path, because running it again cannot help.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import jmespath
import jmespath.exceptions
from jinja2 import StrictUndefined, TemplateError, Undefined, meta
from jinja2 import nodes as jinja_nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from executions.credentials.services import TemplateCredentials
from executions.events.waits import default_resume_node, resume_url, resume_urls
from executions.nodes import sandbox_limits
from executions.nodes.base import Context, NodeType, NonRetryableError

# Repetition and powers are the cheap ways to make a sandboxed expression allocate without
# bound ('x' * 10**10); the sandbox lets us intercept them and refuse huge results.
MAX_REPEAT_ITEMS = 10_000_000
MAX_POWER_EXPONENT = 1_000

_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_SOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Filters such as center, indent, format and wordwrap allocate whatever their
        # arguments ask for: each is checked before and after it runs (sandbox_limits).
        self.filters = {
            name: sandbox_limits.guard_filter(name, func) for name, func in self.filters.items()
        }

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805  (Jinja's signature)
        # String methods ("x".ljust(10**9), "{:>100000000}".format(1)) are filters by
        # another name.
        what, args = sandbox_limits.check_method_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return sandbox_limits.check_result(what, result) if what else result

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Data first: `input.items` is the "items" key of the input, not dict.items (Jinja's
        # default prefers the attribute, which hides common keys such as items, keys, values).
        if isinstance(obj, Mapping) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int):
                    if len(seq) * count > MAX_REPEAT_ITEMS:
                        raise SecurityError(
                            f"repetition result longer than {MAX_REPEAT_ITEMS} items"
                        )
            return operator.mul(left, right)
        if operator_name == "**":
            if isinstance(right, int | float) and abs(right) > MAX_POWER_EXPONENT:
                raise SecurityError(f"exponent larger than {MAX_POWER_EXPONENT}")
            return operator.pow(left, right)
        if operator_name == "%":
            sandbox_limits.check_percent(left, right)
            return operator.mod(left, right)
        return super().call_binop(context, operator_name, left, right)


ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class TemplateProblem(Exception):
    """A template or expression that cannot compile (reported at save) or evaluate."""


def is_template(value: str) -> bool:
    return any(marker in value for marker in _TEMPLATE_MARKERS)


def is_jmespath_object(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get("jmespath"), str)


# --- compiling (cached: the same config strings are rendered on every run) -------------------


class _Compiled:
    """A compiled template: either a native-valued expression or a string template."""

    __slots__ = ("evaluate", "uses_nodes")

    def __init__(self, evaluate: Callable[[dict[str, Any]], Any], uses_nodes: bool):
        self.evaluate = evaluate
        self.uses_nodes = uses_nodes


@functools.lru_cache(maxsize=2048)
def compile_template(source: str) -> _Compiled:
    try:
        ast = ENV.parse(source)
        uses_nodes = "nodes" in meta.find_undeclared_variables(ast)
        match = _SOLE_EXPRESSION.match(source)
        if match and _is_single_output(ENV.parse(source.strip())):
            expression = ENV.compile_expression(match.group("expr"), undefined_to_none=False)
            return _Compiled(lambda scope: expression(**scope), uses_nodes)
        template = ENV.from_string(source)
        return _Compiled(functools.partial(_render_bounded, template), uses_nodes)
    except TemplateError as exc:
        raise TemplateProblem(f"template does not compile: {exc}") from None


def _render_bounded(template, scope: dict[str, Any]) -> str:
    """Render piece by piece and stop once the text passes the output limit: a loop printing a
    large value 100,000 times must fail, not build gigabytes first."""
    cap = sandbox_limits.limit()
    parts: list[str] = []
    size = 0
    for part in template.generate(**scope):
        size += len(part)
        if size > cap:
            raise SecurityError(f"template output longer than {cap} characters")
        parts.append(part)
    return "".join(parts)


def _is_single_output(ast: jinja_nodes.Template) -> bool:
    """True when the whole template is one ``{{ ... }}`` (not e.g. ``{{ a }} and {{ b }}``)."""
    return (
        len(ast.body) == 1
        and isinstance(ast.body[0], jinja_nodes.Output)
        and len(ast.body[0].nodes) == 1
        and not isinstance(ast.body[0].nodes[0], jinja_nodes.TemplateData)
    )


@functools.lru_cache(maxsize=2048)
def compile_jmespath(source: str) -> jmespath.parser.ParsedResult:
    try:
        return jmespath.compile(source)
    except jmespath.exceptions.JMESPathError as exc:
        raise TemplateProblem(f"JMESPath expression does not compile: {exc}") from None


@functools.lru_cache(maxsize=2048)
def compile_jinja_expression(source: str) -> _Compiled:
    """A bare Jinja expression (no braces), as used by condition and switch."""
    try:
        uses_nodes = "nodes" in meta.find_undeclared_variables(ENV.parse("{{ " + source + " }}"))
        expression = ENV.compile_expression(source, undefined_to_none=False)
    except TemplateError as exc:
        raise TemplateProblem(f"expression does not compile: {exc}") from None
    return _Compiled(lambda scope: expression(**scope), uses_nodes)


# --- evaluating ------------------------------------------------------------------------------


class ExecutionVariables(Mapping):
    """``execution`` in templates: its id and input, and resume links computed when read
    (they need a query, which most templates should not pay for)."""

    _LAZY = ("resume_url", "resume_urls")

    def __init__(self, execution_id: str, execution_input: Any):
        self._values: dict[str, Any] = {"id": execution_id, "input": execution_input}

    def __getitem__(self, name: str) -> Any:
        if name not in self._values and name in self._LAZY:
            if name == "resume_urls":
                self._values[name] = resume_urls(self._values["id"])
            else:
                node = default_resume_node(self._values["id"])
                if node is None:
                    raise KeyError(name)  # no wait_for_event node: undefined, a clear error
                self._values[name] = resume_url(self._values["id"], node)
        return self._values[name]

    def __iter__(self):
        keys = ["id", "input", "resume_urls"]
        if "resume_url" in self:  # only with a wait_for_event node
            keys.append("resume_url")
        return iter(keys)

    def __len__(self) -> int:
        return len(list(iter(self)))


class Scope:
    """The variables templates and expressions see. ``nodes`` is loaded on first need."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._base = {
            "input": ctx.input,
            "execution_input": ctx.execution_input,
            "execution": ExecutionVariables(ctx.execution_id, ctx.execution_input),
            "execution_id": ctx.execution_id,
            "credentials": TemplateCredentials(ctx.owner_id),
        }

    def variables(self, with_nodes: bool) -> dict[str, Any]:
        if with_nodes:
            return {**self._base, "nodes": self.ctx.nodes}
        return self._base


def to_json(value: Any, where: str, error_type: str = "TemplateError") -> Any:
    """The JSON value of an evaluation result; refuses undefined values and what is not JSON
    or what PostgreSQL's jsonb cannot store (NaN, Infinity, the NUL character)."""
    if isinstance(value, Undefined):
        try:
            value._fail_with_undefined_error()
        except Exception as exc:  # UndefinedError or SecurityError, both say what was missing
            raise NonRetryableError(f"{where}: {exc}", error_type=error_type) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise NonRetryableError(
            f"{where}: evaluated to {value}, which is not a JSON number", error_type=error_type
        )
    if isinstance(value, str):
        if "\x00" in value:
            raise NonRetryableError(
                f"{where}: a string contains the NUL character, which cannot be stored",
                error_type=error_type,
            )
        return str(value) if type(value) is not str else value
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {
            to_json(str(k), where, error_type): to_json(v, where, error_type)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [to_json(v, where, error_type) for v in value]
    raise NonRetryableError(
        f"{where}: evaluated to a {type(value).__name__}, which is not a JSON value",
        error_type=error_type,
    )


def _evaluate(compiled: _Compiled, scope: Scope, where: str) -> Any:
    try:
        value = compiled.evaluate(scope.variables(compiled.uses_nodes))
    except (TemplateError, SecurityError) as exc:
        raise NonRetryableError(f"{where}: {exc}", error_type="TemplateError") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise NonRetryableError(
            f"{where}: {type(exc).__name__}: {exc}", error_type="TemplateError"
        ) from None
    return to_json(value, where)


def render_string(source: str, scope: Scope, where: str) -> Any:
    if not is_template(source):
        return source
    try:
        compiled = compile_template(source)
    except TemplateProblem as exc:
        raise NonRetryableError(f"{where}: {exc}", error_type="TemplateError") from None
    return _evaluate(compiled, scope, where)


def evaluate_jinja_expression(source: str, scope: Scope, where: str) -> Any:
    try:
        compiled = compile_jinja_expression(source)
    except TemplateProblem as exc:
        raise NonRetryableError(f"{where}: {exc}", error_type="TemplateError") from None
    return _evaluate(compiled, scope, where)


def evaluate_jmespath(source: str, scope: Scope, where: str) -> Any:
    try:
        expression = compile_jmespath(source)
    except TemplateProblem as exc:
        raise NonRetryableError(f"{where}: {exc}", error_type="TemplateError") from None
    # A whole-word mention of "nodes" is the only way an expression can reach upstream outputs.
    with_nodes = re.search(r"\bnodes\b", source) is not None
    try:
        value = expression.search(scope.variables(with_nodes))
    except jmespath.exceptions.JMESPathError as exc:
        raise NonRetryableError(f"{where}: {exc}", error_type="TemplateError") from None
    return to_json(value, where)


def render_value(value: Any, scope: Scope, where: str) -> Any:
    """Render templates and JMESPath objects anywhere inside ``value``."""
    if isinstance(value, str):
        return render_string(value, scope, where)
    if is_jmespath_object(value):
        return evaluate_jmespath(value["jmespath"], scope, where)
    if isinstance(value, Mapping):
        return {k: render_value(v, scope, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def render_config(
    ctx: Context, raw_keys: frozenset[str] = frozenset(), scope: Scope | None = None
) -> dict[str, Any]:
    """The node's config with every template rendered, except the top-level ``raw_keys``
    (expressions a type evaluates itself)."""
    scope = scope or Scope(ctx)
    return {
        k: v if k in raw_keys else render_value(v, scope, f"config[{k!r}]")
        for k, v in ctx.config.items()
    }


def template_errors(
    value: Any, where: str = "config", raw_keys: frozenset[str] = frozenset()
) -> list[str]:
    """Every template or JMESPath expression in ``value`` that does not compile (for saving)."""
    errors: list[str] = []
    if isinstance(value, str):
        if is_template(value):
            try:
                compile_template(value)
            except TemplateProblem as exc:
                errors.append(f"{where}: {exc}")
    elif is_jmespath_object(value):
        try:
            compile_jmespath(value["jmespath"])
        except TemplateProblem as exc:
            errors.append(f"{where}: {exc}")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if where == "config" and k in raw_keys:
                continue
            errors.extend(template_errors(v, f"{where}[{k!r}]"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            errors.extend(template_errors(v, f"{where}[{i}]"))
    return errors


class TemplatedNodeType(NodeType):
    """A node type whose config is rendered before it runs: subclasses implement
    ``execute(ctx, config)`` and list in ``raw_keys`` the top-level keys they evaluate
    themselves."""

    raw_keys: frozenset[str] = frozenset()

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        return template_errors(config, raw_keys=self.raw_keys)

    def run(self, ctx: Context) -> Any:
        scope = Scope(ctx)
        return self.execute(ctx, render_config(ctx, self.raw_keys, scope), scope)

    def execute(
        self, ctx: Context, config: dict[str, Any], scope: Scope
    ) -> Any:  # pragma: no cover
        raise NotImplementedError
