"""Faces from raw video: detect (MTCNN), track one identity, align on five landmarks, crop.

``detectors`` is the registry of detectors (``mtcnn`` runs the P-/R-/O-Net cascade, ``scrfd`` an
ONNX file; ``common`` holds what they share), ``weights`` finds and verifies MTCNN's weights,
``scan`` runs the detector over a video's frames with the shot cuts, ``videos`` finds the videos
and their records, ``align`` warps a face onto the five-point template of the crops, ``track``
links detections into identities and picks the clip's face per frame. ``stages/faces.py`` runs
them over videos.
"""
