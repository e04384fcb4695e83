"""Checks that schemathesis runs on every answer in `tests/api_fuzz.rs`, beside its own: the
caller's role decides whether an operation answers 401, 403 or neither, as the operation's
`x-witness-needs` (from the router's guard) says. The caller is `WITNESS_FUZZ_CALLER`:
`anonymous`, `viewer`, `operator`, `admin` or a site's name; a request sent without the
`Authorization` header (schemathesis probes those too) is anonymous."""

import os

import schemathesis

CALLER = os.environ["WITNESS_FUZZ_CALLER"]
RANK = {"viewer": 1, "operator": 2, "admin": 3}


def refusal(caller, needs, case):
    """The status `caller` must get for an operation that needs `needs`; None: not refused."""
    if needs == "none":
        return None
    if caller == "anonymous":
        return 401
    if caller not in RANK:
        # A site's token: its own heartbeats only.
        return None if needs == "site" and case.path_parameters.get("site") == caller else 403
    if needs == "metrics":
        return None
    if needs in RANK:
        return None if RANK[caller] >= RANK[needs] else 403
    return 403


@schemathesis.check
def refused_exactly_as_the_role_says(ctx, response, case):
    needs = case.operation.definition.raw.get("x-witness-needs")
    if needs is None:
        raise AssertionError("the operation does not say who may call it (x-witness-needs)")
    caller = CALLER if "Authorization" in response.request.headers else "anonymous"
    status = response.status_code
    want = refusal(caller, needs, case)
    # A group or site name no config could hold is refused before authorization (404).
    if want is not None and status == 404 and "is named" in response.text:
        return
    if want is not None and status != want:
        raise AssertionError(f"{caller} called an operation that needs {needs}: got {status}, not {want}")
    if want is None and status in (401, 403):
        raise AssertionError(f"{caller} may call an operation that needs {needs}, but got {status}")
