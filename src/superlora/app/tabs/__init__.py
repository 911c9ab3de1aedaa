"""One module per tab; each ``build(state)`` adds its components and events to the open Blocks."""
