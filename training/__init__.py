"""UniGeoCLIP training: five encoders, the all-to-all contrastive loss, the trainer and ONNX export.

Implements UniGeoCLIP (Astruc et al., EarthVision @ CVPR 2026, arXiv 2604.11668). This package
needs torch and transformers; it is never imported by the engine or the plugin at run time.
"""

from __future__ import annotations
