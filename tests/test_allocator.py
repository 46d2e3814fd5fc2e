"""`keep_freed_memory` (hf_pals/allocator.py): with it, freeing and re-allocating a large CPU tensor reuses
the memory instead of faulting fresh pages in; `HF_PALS_KEEP_FREED_MEMORY=0` leaves glibc's defaults.

Each case runs in a fresh Python process (malloc settings are per process and cannot be undone) and
counts minor page faults (a count, not a timing) of glibc's own malloc, which PyTorch's CPU tensors use.
What it saves in a real training step is measured by `hf-pals bench adapters`, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ALLOCATOR = Path(__file__).resolve().parents[1] / "hf_pals" / "allocator.py"

CHILD = f"""
import ctypes, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("allocator", {str(ALLOCATOR)!r})
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
applied = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def step():  # a 64 MiB block (above glibc's largest automatic mmap threshold, 32 MiB) written, then freed
    block = libc.malloc(64 * 2**20)
    libc.memset(block, 1, 64 * 2**20)
    libc.free(block)
step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(json.dumps({{"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start}}))
"""
PAGES = 64 * 2**20 // 4096  # pages of one block


def run_child(mode: str, **env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    default = run_child("default")
    kept = run_child("keep")
    assert kept["applied"] is True
    assert default["faults"] > 2.5 * PAGES  # each of the three steps faults its block in anew
    assert kept["faults"] < 0.1 * PAGES  # the block freed by the first step is reused


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_switch_off_leaves_the_defaults():
    off = run_child("keep", HF_PALS_KEEP_FREED_MEMORY="0")
    assert off["applied"] is False
    assert off["faults"] > 2.5 * PAGES


def test_cli_applies_it_before_running_a_command(monkeypatch, tmp_path):
    """`hf-pals` calls it at start, whatever the command."""
    import hf_pals.allocator as allocator
    from hf_pals import cli

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["plot", str(tmp_path / "missing")]) == 2  # a run dir that does not exist
    assert calls == [1]
