"""What the error stream carries at the end of an exec or attach (docs/streaming.md, "Status").

v4 and v5 channel protocols: a Kubernetes metav1.Status JSON object, the same fields and order
as the kubelet's remotecommand server writes; v1-v3: the failure message as plain text, nothing
on success.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None = 0  # None: the session failed before or without a process exit
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.message


def exited(code: int, cmd: tuple[str, ...] | list[str]) -> Outcome:
    if code == 0:
        return Outcome(0)
    return Outcome(code, f"command terminated with non-zero exit code: command '{' '.join(cmd)}' exited with {code}")


def failed(message: str) -> Outcome:
    return Outcome(None, message)


def status_json(outcome: Outcome) -> bytes:
    if outcome.ok:
        doc: dict = {"metadata": {}, "status": "Success"}
    elif outcome.exit_code is not None:
        doc = {
            "metadata": {},
            "status": "Failure",
            "message": outcome.message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(outcome.exit_code)}]},
        }
    else:
        message = f"Internal error occurred: {outcome.message}"
        doc = {
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "details": {"causes": [{"message": outcome.message}]},
            "code": 500,
        }
    return json.dumps(doc, separators=(",", ":")).encode()


def status_text(outcome: Outcome) -> bytes:
    return b"" if outcome.ok else outcome.message.encode()
