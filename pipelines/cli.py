"""``n2m build``'s command line: the options, parsed into :class:`n2m.pipelines.build_job.BuildSettings` for the job
:func:`n2m.pipelines.build_job.run_build` (audio files, globs, manifests or URLs -> WebDataset shards + index/sources tables
+ build.json).

Beam options follow n2m's one convention (n2m.beam, docs/scaling.md): ``--runner``, ``--dask-workers`` and any Beam
flag, so the same command runs on the DirectRunner (multi-processing over all cores by default), on a Dask cluster or
on Dataflow/Flink/Spark.
"""

from __future__ import annotations

import argparse

from n2m.beam_cli import add_beam_arguments
from n2m.cli import old_spellings
from n2m.config import (
    FINITE,
    FRACTION,
    MAX_SAMPLE_RATE,
    NONNEGATIVE,
    NONNEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    SAMPLE_RATE,
    job,
    leaf,
    number,
)
from n2m.pipelines.build_job import MAX_CHANNELS, audio_extensions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group(
        "input and output",
        "Entries that cannot be read never stop a build: a symlink loop, a name that is not UTF-8, a FIFO or device, "
        "a malformed manifest row each become a failed source with its reason in OUT/sources.parquet. A file that "
        "libsndfile decodes short of the length its header declares (Ogg end granule, FLAC STREAMINFO, MP3 "
        "Xing/VBRI frame count, WAV data size) is decoded again with FFmpeg; it fails as truncated only when neither "
        "reaches the declared end, and the message column says when FFmpeg's decode was kept.")
    io.add_argument("--input", required=True, metavar="SRC",
                    help="a folder (searched recursively), a glob ('music/**/*.mp3'), one audio file, or a manifest "
                         "(.csv/.tsv/.jsonl/.parquet) with a 'path' or 'url' column; other columns go to each clip's "
                         "meta and a 'caption' column to its text. Paths and URLs may be local, http(s) or fsspec "
                         "URIs. An existing path is never read as a glob, and an input that lists no sources is an "
                         "error. A URI listed twice keeps its first row (a repeat with other captions is noted in "
                         "sources.parquet); NaN/Infinity become null and bytes become UTF-8 text, noted there too")
    old_spellings(io, io.add_argument(
        "--out", required=True, metavar="OUT",
        help="build folder (local path or fsspec URI); one build at a time holds OUT/build.lock"), "--output")
    io.add_argument("--extensions", default=audio_extensions(),
                    help="file name endings a folder listing picks up (comma-separated; default: common audio)")
    audio = parser.add_argument_group("clips")
    audio.add_argument("--sample-rate", type=SAMPLE_RATE, default=24000,
                       help=f"output sample rate in Hz, at most {MAX_SAMPLE_RATE} (default 24000)")
    audio.add_argument("--channels", type=number(int, low=1, high=MAX_CHANNELS), default=1,
                       help=f"output channels, at most {MAX_CHANNELS}: 1 = mean downmix (default 1)")
    audio.add_argument("--clip-seconds", type=POSITIVE, default=30.0, help="clip length in seconds (default 30)")
    audio.add_argument("--hop-seconds", type=POSITIVE, default=None,
                       help="seconds between clip starts (default: --clip-seconds, i.e. no overlap)")
    audio.add_argument("--min-clip-seconds", type=POSITIVE, default=None,
                       help="shortest tail kept (zero-padded to a full clip); shorter tails are dropped and a source "
                            "shorter than this is filtered as too_short (default: half of --clip-seconds)")
    audio.add_argument("--silence-db", type=FINITE, default=-60.0,
                       help="clips whose RMS is below this many dBFS are dropped; a source with only such clips is "
                            "filtered as silent (default -60)")
    audio.add_argument("--max-source-seconds", type=POSITIVE, default=1200.0,
                       help="longer sources fail with reason too_long; also bounds memory, since a worker holds about "
                            "three float32 copies of the source it decodes (default 1200)")
    shards = parser.add_argument_group("shards and splits")
    shards.add_argument("--split", default="train=0.98,valid=0.01,test=0.01",
                        help="split fractions; each SOURCE goes to one split by a hash of its id, or to the split its "
                             "manifest row names in a 'split' column (default %(default)s)")
    shards.add_argument("--shard-size-mb", type=POSITIVE, default=256.0,
                        help="target shard size; sources are grouped into shards before decoding (so re-runs map "
                             "them to the same shards) assuming --typical-source-seconds each (default 256)")
    shards.add_argument("--typical-source-seconds", type=POSITIVE, default=240.0,
                        help="expected source duration used with --shard-size-mb (default 240)")
    shards.add_argument("--sources-per-shard", type=POSITIVE_INT, default=None,
                        help="sources per shard, overriding --shard-size-mb")
    fetching = parser.add_argument_group("fetching")
    fetching.add_argument("--max-source-mb", type=POSITIVE, default=512.0,
                          help="larger sources fail with reason too_large (default 512)")
    fetching.add_argument("--fetch-timeout", type=POSITIVE, default=30.0,
                          help="http(s) connect and per-read timeout in seconds (default 30)")
    fetching.add_argument("--fetch-deadline", type=POSITIVE, default=600.0,
                          help="seconds allowed for reading one source, every attempt and wait included; a source "
                               "not read by then fails with reason timeout (a server trickling bytes never trips "
                               "--fetch-timeout; default 600)")
    fetching.add_argument("--fetch-retries", type=NONNEGATIVE_INT, default=3,
                          help="extra attempts after a timeout, a connection error, HTTP 429 or 5xx (default 3)")
    fetching.add_argument("--fetch-backoff", type=NONNEGATIVE, default=1.0,
                          help="seconds before the first retry, doubling after each (default 1)")
    fetching.add_argument("--fetch-concurrency", type=POSITIVE_INT, default=4,
                          help="reads in flight per worker (default 4)")
    run = parser.add_argument_group("running")
    old_spellings(run, run.add_argument(
        "--decode-threads", type=POSITIVE_INT, default=1,
        help="sources decoded at once in each worker (codecs release the GIL; default 1)"), "--threads")
    run.add_argument("--overwrite", action="store_true",
                     help="delete an earlier build in OUT and start afresh; its label sets (OUT/labels) and embedding "
                          "caches (OUT/embeddings) are deleted too, since they describe the old shards")
    run.add_argument("--prune", action="store_true",
                     help="when committed shards no longer match the listing (inputs deleted or changed), delete "
                          "them (and shards holding duplicates or retries of their sources) and rebuild what the "
                          "listing still holds; without it such a build is refused")
    run.add_argument("--retry-failed", action="store_true",
                     help="re-attempt only the sources recorded as failed; newly good ones go to new shards and "
                          "committed shards are untouched")
    run.add_argument("--max-failure-rate", type=FRACTION, default=1.0,
                     help="exit non-zero (after writing the tables) when more than this fraction of sources failed "
                          "(default 1.0: never)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then stop")
    old_spellings(run, run.add_argument("--quiet", action="store_true", help="no progress bar"), "--no-progress")
    add_beam_arguments(parser)
    leaf(parser, job("n2m.pipelines.build_job:run_build"))
