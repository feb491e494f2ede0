"""What every HTML page shares: one stylesheet and inline PNG thumbnails, so a page needs no network."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

THUMBNAIL_PIXELS = 96

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px}h2{margin:28px 0 8px;border-bottom:1px solid #ddd}
.summary span{display:inline-block;margin-right:18px}.error{color:#b00020}.warning{color:#a15c00}.info{color:#555}
table{border-collapse:collapse}td{padding:2px 10px 2px 0}.bar{background:#4a7bd0;height:10px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{width:180px;background:#fff;border:1px solid #ddd;padding:6px;
font-size:12px;word-break:break-all}.card img,.missing{width:96px;height:96px;image-rendering:pixelated;display:block;
margin-bottom:4px}.missing{background:repeating-linear-gradient(45deg,#eee,#eee 6px,#ddd 6px,#ddd 12px);
display:flex;align-items:center;justify-content:center;color:#b00020;font-weight:bold}
.group{display:flex;gap:10px;background:#fff;border:1px solid #ddd;padding:6px;margin-bottom:8px;overflow-x:auto}
"""



def png_data_uri(image: np.ndarray, *, size: int = THUMBNAIL_PIXELS) -> str:
    """An RGB uint8 array as an inline PNG thumbnail (data: URI), so pages need no network."""
    picture = Image.fromarray(image)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
