"""docs/benchmarks.md: each benchmark owns one section between its markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, start: str, end: str, section: str) -> None:
    """Replace the text between `start` and `end` with `section` (appended, markers included,
    when the markers are not there yet; the file is created when missing)."""
    block = f"{start}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def cpu_model() -> str:
    """The processor's name: machines of the same kind (cores, memory) differ in it, and the
    same code measured twice as fast on one as on another."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
