"""Configuration errors a person can act on: one line per problem, with its location."""

from pydantic import ValidationError


def error_lines(source: object, exc: ValidationError) -> str:
    """``<source>: <dotted.location>: <message>``, one line per error of ``exc``."""
    return "\n".join(
        f"{source}: {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )
