"""A calculator tool that evaluates plain arithmetic and nothing else.

The expression is parsed with `ast` and walked node by node: only numbers, `+ - * / // % **`,
unary `+`/`-`, parentheses, a few named constants and a whitelist of `math` functions are
evaluated. Anything else (names, attributes, strings, calls to other functions, lambdas,
comprehensions) is refused before it runs, so nothing the model writes reaches `eval`.

The limits keep every call fast and its answer printable:

- `MAX_LENGTH` (1,000 characters) bounds parsing time; arithmetic a model writes is far shorter.
- `MAX_DEPTH` (200 nested nodes) keeps the recursive walk well inside Python's recursion limit
  (1,000 frames) while allowing a sum of 200 terms, which nests one level per `+`.
- `MAX_DIGITS` (4,000 digits) bounds integer results below Python's own 4,300-digit limit on
  turning an int into text. A power is checked *before* it is computed (its digit count is
  estimated from `exponent * log10(base)`), so `9**9**9` is refused at once instead of running
  for minutes; every other integer result is checked after, which is cheap because its
  operands were already bounded.
- `factorial` and `comb` take arguments up to a few thousand, which stay well under a
  millisecond.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from agentflow.tool import ToolError, tool

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "MAX_LENGTH", "calculate", "calculator", "format_number"]

MAX_LENGTH = 1_000
"""Characters an expression may have."""
MAX_DEPTH = 200
"""Nesting depth of the parsed expression."""
MAX_DIGITS = 4_000
"""Decimal digits an integer result may have."""
_MAX_FACTORIAL = 1_500
_MAX_COMB = 10_000

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _factorial(n: int) -> int:
    if isinstance(n, int) and n > _MAX_FACTORIAL:
        raise ToolError(f"factorial argument too large (at most {_MAX_FACTORIAL})")
    return math.factorial(n)


def _comb(n: int, k: int) -> int:
    if isinstance(n, int) and n > _MAX_COMB:
        raise ToolError(f"comb argument too large (at most {_MAX_COMB})")
    return math.comb(n, k)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "hypot": math.hypot,
    "degrees": math.degrees,
    "radians": math.radians,
    "floor": math.floor,
    "ceil": math.ceil,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "factorial": _factorial,
    "comb": _comb,
}


def calculate(expression: str) -> Number:
    """Evaluate an arithmetic expression; raise `ToolError` for anything that is not arithmetic."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"expression too long ({len(expression)} characters, at most {MAX_LENGTH})")
    tree = _parse(expression)
    try:
        return _evaluate(tree.body, 0)
    except ZeroDivisionError as exc:
        raise ToolError("division by zero") from exc
    except OverflowError as exc:
        raise ToolError("result too large for a floating-point number") from exc
    except (ValueError, TypeError) as exc:
        raise ToolError(f"math error: {exc}") from exc


def _parse(expression: str) -> ast.Expression:
    if not expression.strip():
        raise ToolError("empty expression")
    try:
        return ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not a valid expression: {exc.msg}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(f"not a valid expression: {exc}") from exc


def _evaluate(node: ast.expr, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError(f"expression nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; known constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        return _checked(_binary(node.op, left, right))
    if isinstance(node, ast.Call):
        return _checked(_call(node, depth))
    raise ToolError(f"not arithmetic: {_describe(node)} is not allowed")


def _constant(value: object) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"not a number: {value!r}")
    return value


def _binary(op: ast.operator, left: Number, right: Number) -> Any:
    if isinstance(op, ast.Pow):
        return _power(left, right)
    if isinstance(op, ast.BitXor):
        raise ToolError("'^' is not a power here: write powers as '**'")
    if type(op) not in _BINARY:
        raise ToolError(f"operator {type(op).__name__} is not allowed")
    return _BINARY[type(op)](left, right)


def _power(base: Number, exponent: Number) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        digits = exponent * math.log10(abs(base))
        if digits > MAX_DIGITS:
            raise ToolError(f"result too large: about {digits:.3g} digits (at most {MAX_DIGITS})")
    return base**exponent


def _call(node: ast.Call, depth: int) -> Any:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        raise ToolError(
            f"function {_describe(node.func)} is not allowed; known functions: "
            + ", ".join(sorted(_FUNCTIONS))
        )
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ToolError(f"{node.func.id}() takes plain positional arguments only")
    args = [_evaluate(arg, depth + 1) for arg in node.args]
    return _FUNCTIONS[node.func.id](*args)


def _checked(value: Any) -> Number:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * math.log2(10):
        raise ToolError(f"result too large: more than {MAX_DIGITS} digits")
    if not isinstance(value, int | float):
        raise ToolError(f"unexpected result of type {type(value).__name__}")
    return value


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return repr(node.id)
    if isinstance(node, ast.Attribute):
        return f"attribute access ({ast.unparse(node)[:40]!r})"
    return f"{type(node).__name__} ({ast.unparse(node)[:40]!r})"


def format_number(value: Number) -> str:
    """Integers exactly; floats to 15 significant digits, so `0.1 + 0.2` reads `0.3`."""
    return str(value) if isinstance(value, int) else format(value, ".15g")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. `(17 * 23 + 4) / 3` or `sqrt(2) * pi`. Allowed:
    numbers, + - * / // % ** (power), parentheses, the constants pi, e, tau, and the functions
    abs, round, min, max, sqrt, exp, log, log2, log10, sin, cos, tan, asin, acos, atan, atan2,
    sinh, cosh, tanh, hypot, degrees, radians, floor, ceil, gcd, lcm, factorial, comb. Integers
    are exact; floats are shown to 15 significant digits.
    """
    return format_number(calculate(expression))
