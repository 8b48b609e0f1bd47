"""Stage one's library: frozen backbones (``extractors``) and the Zarr feature store (``store``)."""
