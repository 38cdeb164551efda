"""Caption vocabularies (``n2m vocab``): LLM-written long-form sentences from track metadata and short-form aspects.

Noise2Music (arXiv 2302.03917, section 3.2) prompted LaMDA with the titles and artists of 150k songs and cleaned the answers
into 4M long-form sentences (LaMDA-LF), next to 23,906 short aspect tags written by raters (Rater-SF). This package lets a
user make both kinds for their own corpus: ``backends`` (local transformers LM, OpenAI-compatible endpoint, scripted
template generator), ``prompts``, ``cache``, ``clean``, ``aspects`` and ``io`` (the ``VOCAB_SCHEMA`` Parquet contract).
"""
