"""Data files of ``n2m vocab``: ``aspects.tsv`` (built-in short-form vocabulary) and ``template_phrases.yaml``."""
