"""``python -m hvd_compress.bench report``: write BENCHMARKS.md (and its plots) from benchmark JSON.

Reads what the other commands wrote with ``--json`` into ``--results`` (default
``bench/results``): ``codecs.json`` (``bench codecs``, ideally with ``--baseline``), any
``step*.json`` (``bench step``) and ``accuracy.json`` (``bench accuracy``); writes the markdown
with each table's producing command under it, and the plots under ``--plots`` (default
``docs/bench``): step time against link rate, loss against bytes sent, codec throughput.
Nothing is measured here, so the report can be regenerated at any time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[2]


def _load(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def codecs_section(res: dict, plots: Path, rel) -> List[str]:
    rows = res["rows"]
    has_base = any("baseline_gbps" in r for r in rows)
    out = [
        "## Codec throughput",
        "",
        f"Encode + decode of one fp32 tensor, GB/s of fp32 input (median of repeats), "
        f"{res['threads']} thread(s), clock: {res.get('clock', 'wall')}. "
        f"*path*: native kernels (`hvd_compress/_native`) or plain torch; *plain*: the same codec "
        f"with the native kernels off (`HVD_COMPRESS_NATIVE=0`), timed in the same run; "
        f"*reference*: the same math in plain torch ops with an unpacked int8 payload "
        f"(`hvd_compress/bench/reference.py`)."
        + (
            f" *before*: the codecs at `{res['baseline']}` (before the fast paths), timed in the same run, "
            "interleaved."
            if has_base
            else ""
        ),
        f"Memory-copy roofline (`dst.copy_(src)`, {res['copy_numel'] * 4 / 2**20:.0f} MiB): "
        f"**{res['copy_gbps']:.2f} GB/s**.",
        "",
    ]
    head = "| codec | values | path | enc+dec | encode | decode | plain | vs plain | reference | vs ref |"
    sep = "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    if has_base:
        head += " before | speedup |"
        sep += "---:|---:|"
    head += " bits/value | of copy |"
    sep += "---:|---:|"
    out += [head, sep]
    for r in rows:
        ref, plain = r.get("reference_gbps"), r.get("plain_gbps")
        line = (
            f"| {r['codec']} | {r['size']:,} | {r.get('path', '-')} | **{r['encode_decode_gbps']:.2f}** | "
            f"{r['encode_gbps']:.2f} | {r['decode_gbps']:.2f} | "
        )
        line += f"{plain:.2f} | {r['encode_decode_gbps'] / plain:.1f}x | " if plain else "- | - | "
        line += f"{ref:.2f} | {r['encode_decode_gbps'] / ref:.1f}x |" if ref else "- | - |"
        if has_base:
            if "baseline_gbps" in r:
                line += f" {r['baseline_gbps']:.2f} | {r['speedup_vs_baseline']:.1f}x |"
            else:
                line += " - | - |"
        line += f" {r['bits_per_value']:.3f} | {100 * r['encode_decode_gbps'] / res['copy_gbps']:.0f}% |"
        out.append(line)
    out += ["", f"Produced by: `{res['command']}`", ""]
    try:
        png = plots / "codecs.png"
        plot_codecs(res, png)
        out += [f"![codec throughput]({rel(png)})", ""]
    except Exception as exc:  # plotting is optional
        out += [f"(no plot: {exc})", ""]
    return out


def plot_codecs(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["size"] == max(x["size"] for x in res["rows"])]
    names = [r["codec"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    y = range(len(rows))
    h = 0.2
    ax.barh([i + 1.5 * h for i in y], [r["encode_decode_gbps"] for r in rows], height=h, label="hvd_compress")
    ax.barh(
        [i + 0.5 * h for i in y],
        [r.get("plain_gbps") or 0 for r in rows],
        height=h,
        label="plain torch path (native off)",
    )
    ax.barh(
        [i - 0.5 * h for i in y], [r.get("reference_gbps") or 0 for r in rows], height=h, label="plain reference (int8)"
    )
    if any("baseline_gbps" in r for r in rows):
        ax.barh([i - 1.5 * h for i in y], [r.get("baseline_gbps", 0) for r in rows], height=h, label="before")
    ax.axvline(res["copy_gbps"], color="grey", linestyle=":", label="copy bandwidth")
    ax.axvline(1.0, color="red", linewidth=0.8, linestyle="--", label="1 GB/s")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"encode+decode GB/s of fp32 input ({rows[0]['size']:,} values)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def targets_lines(res: dict) -> List[str]:
    out = []
    for name in ("qsgd", "onebit", "efsign", "terngrad"):
        rs = [r for r in res["rows"] if r["codec"] == name]
        if not rs:
            continue
        cells = ", ".join(f"{r['encode_decode_gbps']:.2f} GB/s at {r['size']:,}" for r in rs)
        best = max(r["encode_decode_gbps"] for r in rs)
        out.append(
            f"- **{name}**: {cells} (best {100 * best / res['copy_gbps']:.0f}% of copy bandwidth; "
            f"{'meets' if min(r['encode_decode_gbps'] for r in rs) >= 1 else 'below'} 1 GB/s "
            f"{'at every size' if min(r['encode_decode_gbps'] for r in rs) >= 1 else 'at some sizes'})"
        )
    return out


def aggregation_section(res: dict) -> List[str]:
    from hvd_compress.bench.aggregation import _rate, format_table

    links = [(name, _rate(name)) for name in res.get("model_links", [])]
    return [
        f"## Aggregation time of the linear codecs (GradiVeQ, PowerSGD), {res['world_size']} workers",
        "",
        "```",
        format_table(res, links),
        "```",
        "",
        f"Produced by: `{res['command']}`",
        "",
    ]


def step_section(results: List[dict], plots: Path, rel) -> List[str]:
    from hvd_compress.bench.step import BASELINES, format_table, plot

    out = ["## Training step over a shaped link", ""]
    for res in results:
        out += ["```", format_table(res), "```", "", f"Produced by: `{res['command']}`", ""]
        links = sorted(set(r["link_bits"] for r in res["rows"]))
        if len(links) > 1:
            name = f"step-vs-link-{res['model']}-np{res['np']}.png"
            plot(res, str(plots / name))
            out += [f"![step time against link rate]({rel(plots / name)})", ""]
        for link in res["links"]:
            rows = [r for r in res["rows"] if r["link"] == link]
            fp32 = next((r for r in rows if r["codec"] == "none"), None)
            fp16 = next((r for r in rows if r["codec"] == "hvd-fp16"), None)
            best = min((r for r in rows if r["codec"] not in BASELINES), key=lambda r: r["step_time_s"], default=None)
            if best and fp32 and fp16:
                out.append(
                    f"- {res['model']}, {res['np']} workers, {link} ({res['link_model']}): best codec "
                    f"**{best['label']}** {1000 * best['step_time_s']:.0f} ms/step: "
                    f"**{fp32['step_time_s'] / best['step_time_s']:.2f}x** faster than fp32 "
                    f"({1000 * fp32['step_time_s']:.0f} ms), **{fp16['step_time_s'] / best['step_time_s']:.2f}x** "
                    f"faster than Horovod fp16 ({1000 * fp16['step_time_s']:.0f} ms); bytes/step "
                    f"{best['bytes_per_step'] / 1e6:.2f} MB measured vs {best['nominal_bytes_per_step'] / 1e6:.2f} MB "
                    f"nominal ({best['bits_per_value']:.2f} bits/value)."
                )
        out.append("")
    return out


def accuracy_section(res: dict, plots: Path, rel) -> List[str]:
    from hvd_compress.bench.accuracy import format_table, plot

    out = [
        "## Accuracy and bits to a target loss",
        "",
        "```",
        format_table(res),
        "```",
        "",
        "Published figures (from `/work/shared/ALGORITHMS.md`, other models and data sets):",
        "",
    ]
    seen = set()
    for r in res["rows"]:
        key = r["codec"].split(":")[0]
        if key in seen or r["published"] in ("baseline", "-"):
            continue
        seen.add(key)
        out.append(f"- {key}: {r['published']}")
    png = plots / "loss-vs-bytes.png"
    plot(res, str(png))
    out += ["", f"Produced by: `{res['command']}`", "", f"![loss against bytes sent]({rel(png)})", ""]
    return out


def build(results_dir: Path, out_path: Path, plots: Path, notes: Optional[str]) -> str:
    out_dir = out_path.parent.resolve()

    def rel(p: Path) -> str:
        return os.path.relpath(Path(p).resolve(), out_dir)

    lines = [
        "# Benchmarks: where compression pays",
        "",
        f"Generated by `python -m hvd_compress.bench report` on {time.strftime('%Y-%m-%d')} from the JSON in "
        f"`{rel(results_dir)}`. Machine: {_cpu_name()}, {os.cpu_count()} cores, shared with other jobs "
        "while these ran (timings are noisy; ratios within one run are the meaningful numbers).",
        "",
    ]
    if notes:
        lines += [Path(notes).read_text().rstrip(), ""]
    codecs = _load(results_dir / "codecs.json")
    if codecs:
        lines += codecs_section(codecs, plots, rel)
        lines += (
            [
                "Issue #8's bar: QSGD, OneBit, EFSign and TernGrad encode+decode at >= 1 GB/s of fp32 input "
                "(goal: 40% of copy bandwidth):",
                "",
            ]
            + targets_lines(codecs)
            + [""]
        )
    steps = [r for r in (_load(p) for p in sorted(results_dir.glob("step*.json"))) if r]
    if steps:
        lines += step_section(steps, plots, rel)
    acc = _load(results_dir / "accuracy.json")
    if acc:
        lines += accuracy_section(acc, plots, rel)
    for agg in (r for r in (_load(p) for p in sorted(results_dir.glob("aggregation*.json"))) if r):
        lines += aggregation_section(agg)
    text = "\n".join(lines).rstrip() + "\n"
    out_path.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hvd_compress.bench report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--results", default=str(REPO / "bench" / "results"))
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--plots", default=str(REPO / "docs" / "bench"))
    ap.add_argument("--notes", help="a markdown file inserted after the header (findings, limitations)")
    args = ap.parse_args(argv)
    build(Path(args.results), Path(args.out), Path(args.plots), args.notes)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
