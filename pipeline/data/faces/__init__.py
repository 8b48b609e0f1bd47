"""Faces from raw video: detect (MTCNN), track one identity, align on five landmarks, crop.

``weights`` finds and verifies the detector's weights, ``mtcnn`` runs the P-/R-/O-Net cascade,
``align`` warps a face onto the five-point template of the crops, ``track`` links detections into
identities and picks the clip's face per frame. ``stages/faces.py`` runs them over videos.
"""
