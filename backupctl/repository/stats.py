"""Repository size figures: logical (what the snapshots hold) vs stored (after dedup and compression)."""

from __future__ import annotations


def repository_stats(repo) -> dict:
    snaps = repo.snapshots()
    logical = sum(int(s.summary.get("bytes_total", 0)) for s in snaps)
    index = repo.index
    unique_raw = sum(e.raw_length for e in index.blobs.values())
    stored = sum(size for _name, size in repo.store.list("data/"))
    return {"snapshots": len(snaps), "logical_bytes": logical, "unique_raw_bytes": unique_raw, "blobs": len(index),
            "stored_bytes": stored, "packs": len(index.packs), "ratio": (logical / stored) if stored else 0.0}
