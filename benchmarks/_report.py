"""Plain-text tables for the benchmark scripts (they print to stdout, so results diff cleanly)."""

from pathlib import Path


def format_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """Columns padded to their widest cell; `align` is one 'l'/'r' per column (default: text left, rest right)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    pad = lambda s, i: s.ljust(widths[i]) if align[i] == "l" else s.rjust(widths[i])  # noqa: E731
    lines = ["  ".join(pad(c, i) for i, c in enumerate(r)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(text: str, out_dir: str | None, filename: str) -> None:
    """Print the report; with --out, also keep it as out_dir/filename (benchmarks/results/ in the repo)."""
    print(text)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / filename).write_text(text + "\n")


def best(fn, rounds: int = 3):
    """(fastest wall time of `rounds` calls, the last call's result): best-of-n damps a shared machine's noise."""
    import time

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out
