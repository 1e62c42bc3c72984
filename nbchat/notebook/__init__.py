"""The notebook layer: magics, streaming display and widgets. It only talks to the core."""
