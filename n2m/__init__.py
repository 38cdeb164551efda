"""n2m: the shared core (this folder) and, as its subpackages, the four subsystems: ``n2m.pipelines``,
``n2m.labeling``, ``n2m.training`` and ``n2m.eval``, which live in the folders of those names beside this one
(pyproject.toml maps them; docs/architecture.md, section 1)."""
