"""Writing a benchmark's table into BENCHMARKS.md (one `## ...` section per benchmark)."""
import os

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "BENCHMARKS.md")


def write_section(section: str, body: str, path: str = BENCHMARKS) -> None:
    """Replace (or append) the section whose heading line is `section`."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    start = text.find(section)
    if start >= 0:
        end = text.find("\n## ", start + len(section))
        text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
    text = text.rstrip("\n") + f"\n\n{section}\n\n{body}\n"
    with open(path, "w") as f:
        f.write(text)
