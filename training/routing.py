"""Route each face to the model that serves it best, by its size: from the evaluation curves of the
student and the teacher on *validation* people, the smallest face size from which the teacher
identifies at least as well as the student (at that size and every larger one). Test people only
ever see the choice, never make it."""

from __future__ import annotations

from typing import Any

PROTOCOL_SIZE = {"hr": 150}  # the aligned HR chip; lr<N> and surveillance<N> are N px


def protocol_size(protocol: str) -> int:
    if protocol in PROTOCOL_SIZE:
        return PROTOCOL_SIZE[protocol]
    return int(protocol.removeprefix("surveillance").removeprefix("lr"))


def choose_size_threshold(student: dict[str, float], teacher: dict[str, float]) -> int | None:
    """Smallest size from which ``teacher`` rank-1 >= ``student`` rank-1 at every size at or above it
    (both keyed by clean protocols: 'lr<N>' and 'hr'); None when the student wins at the largest."""
    sizes = sorted({protocol_size(p) for p in student if not p.startswith("surveillance")})
    by_size = {protocol_size(p): p for p in student if not p.startswith("surveillance")}
    threshold = None
    for size in reversed(sizes):
        protocol = by_size[size]
        if teacher[protocol] >= student[protocol]:
            threshold = size
        else:
            break
    return threshold


def routed_results(student: dict[str, Any], teacher: dict[str, Any], threshold: int | None) -> dict[str, Any]:
    """The evaluation entry of the routed service: per probe protocol, the teacher's figures where the
    probe's size reaches ``threshold``, else the student's (gallery through the same model)."""
    out: dict[str, Any] = {}
    for key, value in student.items():
        if "@" not in key:
            continue
        protocol = key.split("@", 1)[1]
        if protocol.startswith("det") or key.startswith("fusion"):
            continue  # detector crops and tracks: the student's own rows (the teacher was not run on them)
        use_teacher = threshold is not None and protocol_size(protocol) >= threshold and key in teacher
        out[key] = teacher[key] if use_teacher else value
    return out
