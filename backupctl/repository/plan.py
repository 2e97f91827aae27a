"""gc plans: packs chosen for deletion, waiting for the operations that might still use them.

See gc.py for the protocol. Writers read the plans so they never reuse a doomed blob,
and the index prefers copies of a blob that live outside doomed packs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PLANS_PREFIX = "gc/"
_AAD = b"backupctl-gc-plan"


@dataclass
class Plan:
    id: str
    created: float
    packs: list[str]          # hex pack ids to delete
    blobs: list[str]          # hex blob ids that disappear with them (unused at plan time)
    wait_for: list[str]       # lock ids held when the plan was written
    # False while its gc has not yet written what it waits for (see gc.py): a plan left so by a
    # gc that died or lost its lock is dropped, never executed
    complete: bool = True

    def to_json(self) -> bytes:
        return json.dumps({"created": self.created, "packs": self.packs, "blobs": self.blobs,
                           "wait_for": self.wait_for, "complete": self.complete}).encode()


_FIELDS = set(Plan.__dataclass_fields__) - {"id"}     # a later version's plan reads too


def load_plans(repo) -> list[Plan]:
    plans = []
    for name, _ in repo.store.list(PLANS_PREFIX):
        try:
            d = json.loads(repo.key.decrypt(repo.store.get(name), _AAD, f"gc plan {name}"))
        except FileNotFoundError:
            continue
        plans.append(Plan(id=name[len(PLANS_PREFIX):], **{k: v for k, v in d.items() if k in _FIELDS}))
    return plans


def pending_deletions(repo) -> frozenset[bytes]:
    """Blobs that a written gc plan will delete: writers must not reuse them."""
    return frozenset(bytes.fromhex(b) for plan in load_plans(repo) for b in plan.blobs)


def save_plan(repo, plan: Plan) -> None:
    repo.store.put(PLANS_PREFIX + plan.id, repo.key.encrypt(plan.to_json(), _AAD))


def doomed_packs(repo) -> frozenset[bytes]:
    return frozenset(bytes.fromhex(p) for plan in load_plans(repo) for p in plan.packs)
