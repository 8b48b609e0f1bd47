"""One module per stage (extract, fuse, ensemble): orchestration over ``pipeline``, no CLI code."""
