"""Synthetic music corpus, the embedded default data set (``n2m synth``).

Procedurally composed tracks (drums, bass, chords, a melody) in seven styles, six lead timbres and four basses, rendered
with vectorised numpy/scipy DSP to mono 32 kHz audio, written as wav/flac/ogg/mp3 with a ``manifest.jsonl`` of captions,
tags and ground truth. Modules, in the order data flows:

- ``styles``: styles and moods as data (tempo ranges, metre, swing, rhythm patterns, timbre choices, mix)
- ``harmony``: keys, diatonic chords, progressions, voice leading
- ``compose``: form, chords, bass, drums and motif-based melodies -> a ``Score`` of timed notes
- ``instruments`` / ``drums`` / ``dsp``: the timbres and the signal processing under them
- ``render``: score -> mixed, mastered audio
- ``captions``: titles, artists, tags and natural captions
- ``corpus``: per-track seeds, files, manifest, worker processes; ``cli``: the ``n2m synth`` job
"""
