"""Recognition: find faces, classify them, follow them through videos, draw the results.

Runs on OpenCV and ONNX Runtime only (no PyTorch): ``detect`` finds and aligns faces,
``recognize`` classifies them (:class:`Recognizer`), ``track`` follows them over frames,
``video`` and ``camera`` stream files and webcams, ``draw`` and ``timeline`` picture the
results, ``image_files`` runs a batch of image files into one table.
"""
