#!/usr/bin/env bash
# Make the virtual environment bench/run.py runs the `fer` package in (default ../fer-venv),
# apart from fervid's own, so TensorFlow never enters fervid's dependencies.
#
#   bash bench/setup_peer.sh [VENV]      # then: python -m bench.run --peer-python VENV/bin/python
#
# fer 25.10.3 declares facenet-pytorch (for MTCNN, which the benchmark does not use: fer's
# default detector is OpenCV's Haar cascade), and facenet-pytorch pulls a multi-GB CUDA
# PyTorch. So fer goes in without its dependency list, and the ones its default path
# imports are installed by hand: tensorflow-cpu (fer asks for tensorflow; same code, no
# CUDA), the GUI OpenCV contrib build it names (Video.analyze calls cv2.waitKey), pandas,
# requests, Pillow, matplotlib, tqdm, and a setuptools that still has pkg_resources.
set -euo pipefail
VENV="${1:-$(cd "$(dirname "$0")/../.." && pwd)/fer-venv}"
PY="${PYTHON:-python3}"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "fer==25.10.3" --no-deps
"$VENV/bin/pip" install -q "tensorflow-cpu>=2.16,<3" "opencv-contrib-python>=4.8,<5" "pandas<4" "requests<3" \
    "Pillow<14" "matplotlib<4" "tqdm<5" "setuptools<81"
"$VENV/bin/python" -c "import fer, tensorflow as tf; print('fer', fer.__version__, 'tensorflow', tf.__version__)"
echo "peer Python: $VENV/bin/python"
