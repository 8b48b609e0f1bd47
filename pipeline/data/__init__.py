"""Input data: class labels, the Aff-Wild2 reader, clip manifests, media decoding, the demo dataset."""
