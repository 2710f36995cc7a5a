"""Checks of our own for the schemathesis run (`SCHEMATHESIS_HOOKS=tests.security.schemathesis_hooks`)."""

from __future__ import annotations

import re

import schemathesis

# What a Python stack trace, or an exception's repr, looks like inside a response body (JSON escapes the quotes).
STACK_TRACE = re.compile(r'Traceback \(most recent call last\)|File \\?"[^"\\]+\\?", line \d+|\b[A-Z]\w*(Error|Exception)\(')


@schemathesis.check
def no_stack_trace(ctx, response, case):
    """A body never carries a stack trace or an exception repr: errors are one message for the client."""
    match = STACK_TRACE.search(response.text or "")
    if match:
        raise AssertionError(f"the body holds a stack trace or an exception repr: {match.group(0)!r}")


@schemathesis.check
class EveryOperationSucceedsOnce:
    """Each operation answered 2xx at least once: the fuzzer got through the token and past validation, not only
    into the 4xx paths."""

    def __init__(self):
        self.tested, self.succeeded = set(), set()

    def after_response(self, ctx, response, case):
        self.tested.add(case.operation.label)
        if 200 <= response.status_code < 300:
            self.succeeded.add(case.operation.label)

    def after_run(self, ctx):
        never = sorted(self.tested - self.succeeded)
        if never:
            raise AssertionError(f"never answered 2xx: {', '.join(never)}")
