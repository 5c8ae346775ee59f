"""Writes tests/fixtures/pillow/: a random RGB image and Pillow's BILINEAR resizes of it (the
official FFN pipeline's torchvision.transforms.Resize on a PIL image), so that the tests can check
xinc's resize against Pillow bit for bit without Pillow installed. Needs Pillow and numpy."""
import os
import numpy as np
from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pillow")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)
# Smooth gradients plus noise, so that every weight of the filter matters.
y, x = np.mgrid[0:75, 0:131]
base = np.stack([x * 255 / 130, y * 255 / 74, (x + y) % 256], -1)
img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
Image.fromarray(img).save(os.path.join(out, "input.png"))
for h, w in [(16, 32), (13, 40), (75, 50), (100, 200), (37, 131)]:
    Image.fromarray(img).resize((w, h), Image.BILINEAR).save(os.path.join(out, f"bilinear_{h}x{w}.png"))
print("wrote", out)
