"""Schemathesis hooks for load-tests/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Stateful sequences get an Idempotency-Key of their own on every create.
Generated keys are short and repeat ("0", "A"), so a sequence could replay a
create whose warrior an earlier sequence had deleted: by the contract that
repeat answers the first 201 again, and the lookup that follows rightly gives
404, which the resource-availability check would report as a warrior created
but not found. Outside stateful sequences keys are left as generated, so
repeats (201 replays and 422 reuses) are still exercised.
"""

import itertools

import schemathesis

_NEXT = itertools.count(1)
_HEADER = "Idempotency-Key"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers
    if not headers or _HEADER not in headers or case.meta is None:
        return
    if str(case.meta.phase.name) != "stateful":
        return
    suffix = f"~st{next(_NEXT)}"
    # Still 1 to 255 visible characters, first and last not a space.
    headers[_HEADER] = str(headers[_HEADER])[: 255 - len(suffix)] + suffix
