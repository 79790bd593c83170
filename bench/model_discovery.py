"""How long model discovery takes on a folder of 1,000 files, beside a bare directory walk.

The folder (a temporary directory) holds, in nested subfolders four levels deep: symlinks to the
real bundled GGUF (253 MB, a 262k-token vocabulary in its header), small distinct GGUF files
(header only, written here, so every one is really parsed) and other files (text, JSON, binary)
that discovery must skip. Reported: ``discover()`` in a fresh process state (no header cached)
and again (headers cached per file, size and mtime, as on a second "Look for models"), each
beside ``os.walk`` over the same tree, which is the floor any scan pays.

Usage::

    .venv/bin/python bench/model_discovery.py [--files 1000] [--links 100] [--small 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import tempfile
import time
from pathlib import Path

from engine.models import gguf
from engine.models.bundled import bundled_model_path
from engine.models.discovery import discover


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def small_gguf(index: int) -> bytes:
    """A valid GGUF header with a few metadata keys and no tensors."""
    pairs = [
        ("general.architecture", 8, _string("llama")),
        ("general.name", 8, _string(f"synthetic-{index}")),
        ("general.file_type", 4, struct.pack("<I", 15)),
        ("llama.context_length", 4, struct.pack("<I", 4096)),
    ]
    body = b"".join(_string(key) + struct.pack("<I", kind) + value for key, kind, value in pairs)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + body


def build(root: Path, files: int, links: int, small: int, model: Path) -> None:
    for index in range(files):
        folder = root / f"a{index % 7}" / f"b{index % 5}" / f"c{index % 3}" / f"d{index % 11}"
        folder.mkdir(parents=True, exist_ok=True)
        if index < links:
            (folder / f"linked-{index}.gguf").symlink_to(model)
        elif index < links + small:
            (folder / f"small-{index}.gguf").write_bytes(small_gguf(index))
        else:
            suffix = (".txt", ".json", ".bin", ".safetensors")[index % 4]
            (folder / f"other-{index}{suffix}").write_bytes(b"x" * (index % 300))


def walk(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def timed(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--links", type=int, default=100)
    parser.add_argument("--small", type=int, default=100)
    args = parser.parse_args()
    model = bundled_model_path()
    with tempfile.TemporaryDirectory(prefix="arbor-discovery-bench-") as tmp:
        root = Path(tmp)
        build(root, args.files, args.links, args.small, model)
        gguf._read_cached.cache_clear()
        start = time.perf_counter()
        found = discover([], folders=[root])
        cold = time.perf_counter() - start
        warm = timed(lambda: discover([], folders=[root]))
        floor = timed(lambda: walk(root))
    usable = len(found.usable)
    print(
        f"{found.files_seen} files ({args.links} links to the bundled GGUF, {args.small} small "
        f"GGUF files, {args.files - args.links - args.small} others) in nested folders"
    )
    print(f"found {len(found.candidates)} candidates, {usable} usable")
    print(f"discover(), nothing cached: {cold * 1000:.0f} ms ({cold / floor:.0f}x os.walk)")
    print(f"discover(), headers cached: {warm * 1000:.0f} ms ({warm / floor:.1f}x os.walk)")
    print(f"os.walk over the same tree:  {floor * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
