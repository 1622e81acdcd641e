"""`train report`: write run/report/index.html (and a page per tag) for a finished run.

    train report --model run/                      # -> run/report/index.html, open it offline
    train report --model run/ --shards other/ --examples 8 --out /tmp/report

`train` writes this report by itself at the end of a run (`--no-report` skips it).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from html import escape
from pathlib import Path

import numpy as np

from cli_kit.command_line import HelpFormatter, add_deprecated_alias, run_main

from ..errors import TrainError
from ..metrics import score
from ..records import METRICS_CSV, read_metrics, series
from ..runs import load_run
from . import pages
from .analysis import hits, pr_curve, tag_rows, worst
from .scores import ValScores, validation_scores
from .svg import line_chart
from .thumbs import write_thumbnails

log = logging.getLogger(__name__)
EXAMPLES = 12            # false positives and false negatives shown per tag, each


def write_report(run_dir: str | Path, *, out: str | Path | None = None, shards: str | None = None,
                 examples: int = EXAMPLES, device: str = "auto", batch_size: int = 64,
                 quiet: bool = False) -> Path:
    """Score the validation shards with the run's model and write the report folder
    (default run/report/), replacing an older one only once the new one is complete.
    Returns the path of index.html. Raises TrainError."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report"
    run = load_run(run_dir, device=device)
    shards = shards or str(run.config.get("shards") or "")
    if not shards:
        raise TrainError(f"{run_dir}/config.json names no shards: give --shards")
    val = validation_scores(run, shards, batch_size=batch_size, quiet=quiet)
    tags = ([t for t in run.tags if t["name"] == run.positive][:1] if run.task == "binary"
            else run.tags)
    categories = np.array([t["category"] for t in tags])
    counts = np.array([t["count"] for t in tags], dtype=np.float64)
    threshold = 0.5 if run.task == "binary" else float(run.config.get("threshold", 0.4))
    report = score(val.scores, val.targets, categories, counts, threshold,
                   int(run.config.get("min_support", 5)))
    per_tag = np.asarray(report["per_tag"]["threshold"])
    rows = tag_rows(val.scores, val.targets, per_tag)
    for i, (tag, row) in enumerate(zip(tags, rows, strict=True)):
        row.update(name=tag["name"], category=tag["category"], count=tag["count"],
                   page=f"{i:05d}")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tags").mkdir(parents=True)
    shown = _tag_pages(tmp, val, rows, examples)
    write_thumbnails(shards, {val.keys[i]: f"{i:06d}" for i in sorted(shown)}, tmp / "thumbs")
    summary = _summary(run_dir, run, shards, val, time.perf_counter() - start)
    body = (f"<h1>Evaluation report: {escape(run_dir.resolve().name)}</h1>"
            f"{pages.summary_list(summary)}<h2>Headline metrics (validation)</h2>"
            f"{pages.headline_table(report)}<h2>Training curves</h2>"
            f'<div class="charts">{_curves(run_dir / METRICS_CSV)}</div>'
            f"<h2>Tags</h2><p>Click a header to sort, a tag for its precision-recall curve and "
            f"the pictures it gets most wrong. Precision, recall and F1 are at each tag's "
            f"threshold (its best-F1 one; the P=R threshold below "
            f"{int(run.config.get('min_support', 5))} positives).</p>{pages.tag_table(rows)}")
    (tmp / "index.html").write_text(pages.page(f"report: {run_dir.name}", body, pages.SORT_JS),
                                    encoding="utf-8")
    (tmp / "report.json").write_text(json.dumps(
        {k: v for k, v in report.items() if k != "per_tag"} | {"tags": rows}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out / "index.html"


def _tag_pages(folder: Path, val: ValScores, rows: list[dict], k: int) -> set[int]:
    """tags/<page>.html for every tag; returns the validation rows whose thumbnails they show."""
    shown: set[int] = set()
    for i, row in enumerate(rows):
        scores, targets = val.scores[:, i], val.targets[:, i]
        fp, fn = worst(scores, targets, row["threshold"], k)
        tp = hits(scores, targets, row["threshold"], k)
        shown.update(fp.tolist())
        shown.update(fn.tolist())
        shown.update(tp.tolist())
        precision, recall, _ = pr_curve(scores, targets)
        chart = line_chart({row["name"]: (recall, precision)}, "precision-recall", "recall",
                           y_label="precision", y_range=(0.0, 1.0), x_range=(0.0, 1.0),
                           css_class="chart pr", markers=False)

        def items(idx: np.ndarray, scores=scores) -> list[dict]:
            return [{"key": val.keys[j], "thumb": f"{j:06d}", "score": float(scores[j]),
                     "tags": val.tags[j]} for j in idx]

        at = f"{row['threshold']:.2f}"
        if row["support"]:
            quality = [("AP", pages.num(row["ap"])),
                       ("precision / recall / F1", f"{pages.num(row['precision'])} / "
                        f"{pages.num(row['recall'])} / {pages.num(row['f1'])}")]
            missed = "none: every picture with the tag scores over the threshold"
        else:           # nothing to find: no AP, recall or F1, and no false negative either
            quality = [("AP", pages.NO_POSITIVES), ("precision / recall / F1",
                                                    pages.NO_POSITIVES)]
            missed = f"none: {pages.NO_POSITIVES}"
        stats = [("category", pages.CATEGORIES.get(row["category"], "?")),
                 ("validation support", row["support"]), *quality,
                 ("threshold", pages.num(row["threshold"], 2)),
                 ("true / false positives, false negatives",
                  f"{row['tp']} / {row['fp']}, {row['fn']}"),
                 ("training count", row["count"])]
        body = (f'<p><a href="../index.html">&larr; all tags</a></p><h1>{escape(row["name"])}'
                f"</h1>{pages.summary_list(stats)}<div class=\"charts\">{chart}</div>"
                + pages.examples(f"Highest-scoring false positives (score ≥ {at}, tag absent)",
                                 items(fp), "false-positives", "none: no picture without the "
                                 "tag scores over the threshold")
                + pages.examples(f"Lowest-scoring false negatives (score < {at}, tag present)",
                                 items(fn), "false-negatives", missed)
                + pages.examples(f"Highest-scoring true positives (score ≥ {at}, tag present)",
                                 items(tp), "true-positives",
                                 f"none: {pages.NO_POSITIVES}" if not row["support"] else
                                 "none: no picture with the tag scores over the threshold"))
        (folder / "tags" / f"{row['page']}.html").write_text(
            pages.page(f"{row['name']}: report", body), encoding="utf-8")
    return shown


def _summary(run_dir: Path, run, shards: str, val: ValScores, seconds: float) -> list:
    c = run.config
    final = _json(run_dir / "eval.json")
    rows = read_metrics(run_dir / METRICS_CSV)
    rates = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    images = int(rows[-1]["images"]) if rows and rows[-1].get("images") else None
    items = [("run", str(run_dir.resolve())), ("shards", shards),
             ("model", f"{c.get('model')} ({c.get('head')} head, weights {c.get('weights')})"),
             ("task", run.task), ("labels", f"{len(run.names)} outputs"),
             ("image size", f"{run.image_size} px ({run.resize})"),
             ("settings", f"{c.get('epochs')} epochs, batch {c.get('batch_size')}, "
              f"{c.get('optimizer')} lr {c.get('lr')}, {c.get('loss')} loss, "
              f"{c.get('precision')} on {c.get('device')}"),
             ("trained", f"{final.get('step', '?')} steps, {final.get('epoch', '?')} epochs"
              + (f", {images:,} images" if images else ""))]
    if rates:
        rate = float(np.mean(rates))
        items.append(("throughput", f"{rate:.1f} images/s (mean over epochs)"
                      + (f", about {images / rate / 60:.1f} min of training" if images
                         else "")))
    norm = run.normalization
    items.append(("preprocessing", f"{norm.channel_order}, mean {list(norm.mean)} std "
                  f"{list(norm.std)}, {norm.interpolation}, padded with {norm.pad_color} "
                  f"({norm.source})"))
    if isinstance(final.get("init_tags"), dict):
        items.append(("label space", _init_tags(final["init_tags"], c.get("init_from"))))
    if isinstance(final.get("retention"), dict):
        from ..retention import summary_line
        items.append(("forgetting", summary_line(final["retention"])))
    items.append(("validation", f"{len(val.keys)} pictures; this report took {seconds:.0f} s "
                  f"(scores recomputed from model.safetensors on {run.device.type})"))
    return items


def _init_tags(record: dict, source) -> str:
    """eval.json's `init_tags` in words: which tags came from the starting model's head."""
    def listed(key: str, shown: int = 20) -> str:
        names = list(record.get(key) or [])
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return f"{len(names)} {key}" + (f" ({', '.join(names[:shown])}{more})" if names else "")
    return (f"from {source}: {len(record.get('carried') or [])} carried (their rows kept), "
            f"{listed('added')}, {listed('dropped')}")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _curves(path: Path) -> str:
    rows = read_metrics(path)
    loss = {k: series(rows, k) for k in ("train_loss", "val_loss")}
    quality = {k: series(rows, k) for k in ("mAP", "micro_f1", "macro_f1")}
    return (line_chart(loss, "loss", "step", css_class="chart curve")
            + line_chart(quality, "validation", "step", y_range=(0.0, 1.0),
                         css_class="chart curve"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train report", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--model", type=Path, metavar="RUN",
                   help="a finished train run folder (required)")
    add_deprecated_alias(p, "--run", "--model", "model", type=Path, metavar="RUN")
    p.add_argument("--out", type=Path, help="report folder (default: RUN/report)")
    p.add_argument("--shards", help="shards with the validation split (default: the run's)")
    p.add_argument("--examples", type=int, default=EXAMPLES, metavar="N",
                   help="false positives and false negatives shown per tag")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64, metavar="N",
                   help="validation images per forward pass")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def run_report(args: argparse.Namespace) -> int:
    """Write the report the flags describe; the exit code."""
    if args.model is None:
        raise TrainError("--model RUN is required")
    if args.examples < 0 or args.batch_size < 1:
        raise TrainError("--examples must be 0 or more and --batch-size at least 1")
    index = write_report(args.model, out=args.out, shards=args.shards, examples=args.examples,
                         device=args.device, batch_size=args.batch_size, quiet=args.quiet)
    size = sum(f.stat().st_size for f in index.parent.rglob("*") if f.is_file())
    print(f"train report: wrote {index} ({size / 1e6:.1f} MB with its thumbnails)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `train report`; the exit code (0 ok, 2 usage error or no report)."""
    return run_main("train report", build_parser(), argv, run_report, (TrainError,))
