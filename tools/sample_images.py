"""Write a few real photographs bundled with scikit-image as PNG files (the demo's input)."""
import sys
from pathlib import Path

import cv2
import skimage.data

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/samples")
out.mkdir(parents=True, exist_ok=True)
for name in ("coffee", "chelsea", "astronaut"):
    rgb = getattr(skimage.data, name)()
    cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
print(f"wrote 3 sample photos to {out}")
