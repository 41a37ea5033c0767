#!/usr/bin/env python3
"""A second, independent implementation of the ctxsync document checksum (format b3m1,
DESIGN §7 and docs/checksum.md), written from the definition, not from the Rust code.

    python3 docs/checksum_reference.py --check docs/checksum-vectors.json
    python3 docs/checksum_reference.py --write docs/checksum-vectors.json

Needs the `blake3` package from PyPI. Numbers: integers and floats whose shortest text
has no exponent (the JSON text must be what serde_json writes; Python's repr agrees there).
"""
import json
import sys

import blake3


def B(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def u64le(n: int) -> bytes:
    return n.to_bytes(8, "little")


def total(entries):
    s = 0
    for e in entries:
        s = (s + int.from_bytes(e, "little")) % (1 << 256)
    return s.to_bytes(32, "little")


def number_text(n) -> str:
    if isinstance(n, bool):
        raise TypeError("bool is not a number")
    if isinstance(n, int):
        return str(n)
    text = repr(n)
    if "e" in text or "inf" in text or "nan" in text:
        raise ValueError(f"{n!r}: this reference only writes numbers without an exponent")
    return text


def h(v) -> bytes:
    if v is None:
        return B(b"\x00")
    if v is True:
        return B(b"\x01\x01")
    if v is False:
        return B(b"\x01\x00")
    if isinstance(v, (int, float)):
        return B(b"\x02" + number_text(v).encode())
    if isinstance(v, str):
        return B(b"\x03" + v.encode("utf-8"))
    if isinstance(v, list):
        entries = [B(b"\x06" + u64le(i) + h(e)) for i, e in enumerate(v)]
        return B(b"\x04" + u64le(len(v)) + total(entries))
    if isinstance(v, dict):
        entries = [B(b"\x07" + u64le(len(k.encode())) + k.encode() + h(x)) for k, x in v.items()]
        return B(b"\x05" + u64le(len(v)) + total(entries))
    raise TypeError(type(v))


def canonical(v) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


VECTORS = [
    ("empty object", {}),
    ("empty array", []),
    ("null", None),
    ("true", True),
    ("false", False),
    ("integer", 42),
    ("negative float", -0.125),
    ("string with escapes and non-ASCII", "quote\" back\\ nl\n tab\t é ✓"),
    ("member order does not matter (1)", {"a": 1, "b": [1, 2]}),
    ("member order does not matter (2)", {"b": [1, 2], "a": 1}),
    ("element order matters", {"a": 1, "b": [2, 1]}),
    ("string one is not number one", {"a": "1"}),
    ("seed-shaped context", {
        "project_state": {
            "current_phase": "implementation",
            "active_tasks": [
                {"id": "task-1", "title": "Write the op log", "status": "in_progress", "owner": "builder"},
                {"id": "task-2", "title": "Review the merge", "status": "todo", "depends_on": ["task-1"]},
            ],
            "blocked_tasks": [],
            "completed_tasks": [{"id": "task-0", "done_at": "2026-12-01T10:00:00Z"}],
        },
        "technical_context": {"architecture": "one writer, group commit", "dependencies": {"rusqlite": "0.37"}},
        "decisions_log": {"recent": [{"id": "dec-1", "summary": "ids over positions"}], "archived_count": 0},
        "communication": {"pending_questions": [], "handovers": [], "notes": ["a", "b", None, 1.5, False]},
        "version": "1.0",
    }),
]


def vectors():
    out = []
    for name, doc in VECTORS:
        out.append({
            "name": name,
            "document": doc,
            "checksum": h(doc).hex(),
            "size": len(canonical(doc).encode()),
        })
    return {"format": "b3m1", "definition": "docs/checksum.md", "vectors": out}


def main(argv):
    if len(argv) != 3 or argv[1] not in ("--check", "--write"):
        sys.exit(__doc__)
    mine = vectors()
    if argv[1] == "--write":
        with open(argv[2], "w", encoding="utf-8") as f:
            json.dump(mine, f, indent=2, ensure_ascii=False)
            f.write("\n")
        return
    with open(argv[2], encoding="utf-8") as f:
        stored = json.load(f)
    bad = 0
    for v in stored["vectors"]:
        got = h(v["document"]).hex()
        if got != v["checksum"] or len(canonical(v["document"]).encode()) != v["size"]:
            print(f"MISMATCH {v['name']}: {got}")
            bad += 1
    print(f"{len(stored['vectors'])} vectors checked, {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(sys.argv)
