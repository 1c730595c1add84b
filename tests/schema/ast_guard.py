"""Keeps a CPython 3.11 bug (python/cpython#106905) from ending a schemathesis run.

On Python 3.11, a RecursionError inside `ast.parse` leaves the AST builder's depth counter off by the frames it
unwound, and the call raises `SystemError: AST constructor recursion depth mismatch` instead. Hypothesis parses
source code to describe a lambda (text only, for a strategy's repr), sometimes deep in the stack while it
generates nested JSON, so a run could end in that SystemError: a failure of the tool, not of the API. Here the
description falls back to what Hypothesis prints whenever it cannot tell a lambda's body.
"""

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description
