"""The page of ``n2m eval memorization``: thresholds and their calibration, score distributions, and each generated
clip beside its nearest training clip (and its audio prompt) as embedded players. Built from :mod:`n2m.eval.report`'s
blocks; ``report.json`` holds every figure, the page adds the audio."""

from __future__ import annotations

import json
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from n2m.eval import report as reports
from n2m.eval import svg
from n2m.eval.memorization_match import open_shard
from n2m.layout import BuildLayout
from n2m.storage import write_bytes_atomic, write_json


def listen_items(items: list[dict], count: int) -> list[dict]:
    """The clips that get players (``items`` come flagged first, then by audio match): every flagged one, and at
    least ``count``; none when ``count`` is 0."""
    flagged = sum(it["flagged"] for it in items)
    return items[: max(count, flagged)] if count > 0 else []


def _training_audio(build: str, wanted: list[dict], budget: list[int]) -> dict[str, str]:
    """Data URIs of the wanted training clips (``{"key", "split", "shard"}``), read from their shards."""
    by_shard: dict[tuple[str, str], set[str]] = defaultdict(set)
    for clip in wanted:
        by_shard[(clip["split"], clip["shard"])].add(clip["key"])
    uris: dict[str, str] = {}
    for (split, shard), keys in sorted(by_shard.items()):
        tar = f"{BuildLayout(build).shard_dir(split)}/{shard}"
        with open_shard(split, tar, set(), False) as opened:
            for clip, path in zip(opened.clips, opened.files):
                if clip.key in keys:
                    _add_uri(uris, f"train:{clip.key}", path, budget)
    return uris


def _add_uri(uris: dict[str, str], name: str, path: str | Path, budget: list[int]) -> None:
    uri = reports.audio_data_uri(path)
    if uri is not None and len(uri) <= budget[0]:
        uris[name] = uri
        budget[0] -= len(uri)


def players(report: dict, listen: list[dict], build: str) -> dict[str, str]:
    """Audio of the listened clips (generated, nearest training clip by audio match and by embedding, prompt) as data
    URIs, within :data:`n2m.eval.report.MAX_SAMPLE_BYTES`."""
    budget = [reports.MAX_SAMPLE_BYTES]
    uris: dict[str, str] = {}
    for item in listen:
        _add_uri(uris, f"gen:{item['id']}", item["path"], budget)
        if item.get("prompt"):
            _add_uri(uris, f"prompt:{item['id']}", item["prompt"]["path"], budget)
    wanted = [n[0] for it in listen for n in (it["views"]["match"]["nearest"], it["views"]["embedding"]["nearest"])
              if n]
    uris.update(_training_audio(build, wanted, budget))
    return uris


def _player(uri: str | None, caption: str) -> str:
    audio = (f'<audio controls preload=none src="{uri}"></audio>' if uri
             else "<span class=meta>no audio (page size cap)</span>")
    return f"<td>{audio}<div class=tags>{escape(caption)}</div></td>"


def _nearest_caption(view: str, near: dict) -> str:
    """``match 0.991 at +2.5 s: KEY (track.mp3 from 30.0 s)``."""
    shift = f" at {near['shift_s']:+.1f} s" if "shift_s" in near else ""
    return (f"{view} {near['score']:.3f}{shift}: {near['key']} ({Path(near['source_uri']).name or '?'} "
            f"from {near['offset_s']:.1f} s)")


def _listen(report: dict, listen: list[dict], uris: dict[str, str]) -> str:
    rows = []
    for item in listen:
        views = item["views"]
        verdict = "FLAGGED: copies a training clip" if item["flagged"] else "not flagged"
        scores = ", ".join(f"{v} {views[v]['score']:.3f}" for v in views if views[v]["score"] is not None)
        cells = [f"<td>{escape(item['id'])}<div class=tags>{verdict}: {escape(scores)}</div></td>",
                 _player(uris.get(f"gen:{item['id']}"), "generated")]
        for view in ("match", "embedding"):
            near = views[view]["nearest"][0] if views[view]["nearest"] else None
            cells.append(_player(uris.get(f"train:{near['key']}"), _nearest_caption(view, near)) if near else
                         "<td class=meta>–</td>")
        prompt = item.get("prompt")
        cells.append(_player(uris.get(f"prompt:{item['id']}"), f"prompt: match {prompt['match']:.3f}"
                             + (f", embedding {prompt['embedding']:.3f}" if "embedding" in prompt else ""))
                     if prompt else "<td class=meta>–</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ("<h2>Listen</h2><p class=meta>Flagged clips first, then the highest audio matches; middle 10 s of each, "
            "mono 16 kHz Ogg Vorbis. 'at +2.0 s': the generated clip lines up with the training clip when it starts "
            "2 s after the training clip's start (minus: before it); 'from': where the training clip sits in its "
            "track.</p>"
            "<table><tr><th>generated clip</th><th>generated</th><th>nearest by audio match</th>"
            "<th>nearest by embedding</th><th>audio prompt</th></tr>" + "".join(rows) + "</table>") if rows else ""


def _calibration(report: dict) -> str:
    section = report["memorization"]
    parts = ["<h2>Thresholds</h2><p>Each view's threshold comes from held-out real clips of the build (never seen in "
             "training): each is scored against every training clip exactly as the generated clips are, and a clip is "
             "flagged above the ceil((n+1)(1-alpha))-th smallest of those n best scores (split conformal). A model "
             "that copies nothing makes clips that relate to its training set as unseen tracks do, and each is then "
             "flagged with probability at most the stated bound.</p>"]
    rows = [[view, reports.fmt_number(t["value"]), t["source"], t["heldout_clips"] or "–", t["rank"] or "–",
             reports.fmt_number(t["false_positive_bound"])] for view, t in section["thresholds"].items()]
    parts.append(reports.html_table(["view", "threshold", "source", "held-out clips", "rank", "false-positive bound"],
                                    rows, (1, 3, 4, 5)))
    plots = []
    for view in ("match", "embedding"):
        generated = [it["views"][view]["score"] for it in section["items"] if it["views"][view]["score"] is not None]
        series = {"held-out real clips": section["heldout_scores"][view], "generated clips": generated}
        plots.append(svg.histogram(series, f"best {view} score against the training clips "
                                           f"(threshold {section['thresholds'][view]['value']:.3f})", f"{view} score"))
    return "".join(parts) + f"<div class=plots>{''.join(plots)}</div>"


def render_html(report: dict[str, Any], listen: list[dict], uris: dict[str, str]) -> str:
    title = f"n2m eval memorization: {report['name']}"
    build = report["build"]
    parts = [f"<h1>{escape(title)}</h1><p class=meta>{escape(report['created'])} · n2m "
             f"{escape(report['versions'].get('n2m', '?'))} · build {escape(str(build['id']))}: "
             f"{build['training_clips']} training clips (splits {escape(', '.join(build['train_splits']))}"
             f"{', held-out tracks excluded' if build['exclude_holdout'] else ''}), {build['heldout_clips']} held-out "
             "clips</p><h2>Metrics</h2>",
             reports.html_table(["metric", "value", "95% interval", "n", "note"],
                                reports.metric_rows(report["metrics"]), (1, 3))]
    if report["warnings"]:
        parts.append("<ul>" + "".join(f"<li class=warn>{escape(w)}</li>" for w in report["warnings"]) + "</ul>")
    parts += [_calibration(report), _listen(report, listen, uris)]
    rows = [[name, s["files"], s["used"], s["excluded"], ", ".join(f"{k}: {v}" for k, v in
                                                                    s["excluded_by_reason"].items())]
            for name, s in report["sets"].items()]
    parts.append("<h2>Audio sets</h2>" + reports.html_table(["set", "files", "used", "excluded", "reasons"], rows,
                                                            (1, 2, 3)))
    rows = [[name, m["id"], m["sample_rate"], json.dumps(m["settings"], sort_keys=True)]
            for name, m in report["models"].items()]
    parts.append("<h2>Models</h2>" + reports.html_table(["model", "id (weights hash)", "rate", "settings"], rows))
    detail = {k: v for k, v in report.items() if k != "memorization"}
    parts.append("<h2>Settings and lineage</h2><details><summary>report.json (without per-clip records)</summary><pre>"
                 f"{escape(json.dumps(detail, indent=2, default=str))}</pre></details>")
    return reports.page(title, "".join(parts))


def finish(report: dict[str, Any], out: Path, listen: list[dict], build: str) -> int:
    """Write ``report.json`` and the page (audio only there), print the headline table and the flagged clips."""
    uris = players(report, listen, build)
    out.mkdir(parents=True, exist_ok=True)
    write_json(str(out / "report.json"), report)
    write_bytes_atomic(str(out / "report.html"), render_html(report, listen, uris).encode("utf-8"))
    print(reports.text_table(["metric", "value", "95% interval", "n", "note"], reports.metric_rows(report["metrics"])))
    for item in report["memorization"]["items"]:
        if item["flagged"]:
            print(f"flagged: {item['id']} -> {_nearest_caption('match', item['views']['match']['nearest'][0])}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"report: {out / 'report.json'}  {out / 'report.html'}")
    return 0
