"""Exceptions raised at the user's edge.

Inside jit and vmap nothing raises: a failed fit carries a status code (see
:mod:`jaxhlm.optimize`).  Before any array reaches JAX, bad input is reported with
one of these, naming the column, term or value at fault.
"""


class JaxhlmError(Exception):
    """Base class of every error jaxhlm raises on purpose."""


class FormulaError(JaxhlmError, ValueError):
    """A formula that cannot be parsed, or that names something the data lack."""


class DataError(JaxhlmError, ValueError):
    """Data that cannot be fitted: empty, non-numeric response, bad grouping factors."""


def caret(text: str, position: int) -> str:
    """Show ``text`` with a caret under character ``position`` (for error messages)."""
    position = max(0, min(position, len(text)))
    return f"  {text}\n  {' ' * position}^"


def explain_formulaic(err: Exception) -> str:
    """formulaic's message with its highlighted span (``⧛...⧚`` plus terminal colour
    codes) turned into plain text with a caret under the place it points at."""
    import re

    message = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    head, _, shown = message.partition("\n\n")
    if "⧛" not in shown:
        return message
    position = shown.index("⧛")
    return f"{head}\n{caret(shown.replace('⧛', '').replace('⧚', ''), position)}"


def explain_syntax(err: SyntaxError, text: str) -> str:
    """A Python ``SyntaxError`` raised while formulaic reads a piece of formula ``text``
    (it parses some terms as Python expressions; nothing is evaluated), with a caret
    under the piece it could not read."""
    piece = (err.text or "").strip()
    where = text.find(piece) if piece else -1
    shown = f"\n{caret(text, where)}" if where >= 0 else ""
    return f"{err.msg}{shown}"
