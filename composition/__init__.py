"""The composition root: the CLI, `trygg up`, the single-stage runners and the demo.

Only this package knows every stage; it opens the database pool and the broker
connections and wires the stages together (docs/architecture.md)."""
