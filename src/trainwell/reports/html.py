"""What every HTML page shares: one stylesheet (the site navigation's too) and inline PNG thumbnails, so a page needs no network."""

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
nav.site{display:flex;flex-wrap:wrap;gap:4px;margin:-24px -24px 18px;padding:8px 24px;background:#263238}
nav.site a{color:#eceff1;text-decoration:none;padding:4px 10px;border-radius:3px}
nav.site a:hover{background:#37474f}nav.site a[aria-current=page]{background:#eceff1;color:#263238;font-weight:bold}
.numbers{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.number{background:#fff;border:1px solid #ddd;
padding:8px 14px;min-width:130px}.number b{display:block;font-size:24px}.number small{color:#555}
.number.bad b{color:#b00020}.pass{color:#1b5e20}.fail{color:#b00020;font-weight:bold}
th{text-align:left;padding:2px 10px 2px 0;border-bottom:1px solid #ccc}td.n,th.n{text-align:right}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure.chart{margin:0;background:#fff;border:1px solid #ddd;padding:8px}figure.chart svg{max-width:100%;height:auto}
"""



def png_data_uri(image: np.ndarray, *, size: int = THUMBNAIL_PIXELS) -> str:
    """An RGB uint8 array as an inline PNG thumbnail (data: URI), so pages need no network."""
    picture = Image.fromarray(image)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
