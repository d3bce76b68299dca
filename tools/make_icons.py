"""Draws the example product icons (512x512 PNG) with Pillow: `python3 tools/make_icons.py`.

Everything important stays inside the central circle: the plugin crops icons to a circle on load,
as Roblox does on upload.
"""
import math
import os

from PIL import Image, ImageDraw, ImageFilter

S = 512
OUT = os.path.join(os.path.dirname(__file__), "..", "assets", "icons")


def background(inner, outer, size=S):
    """A radial gradient from `inner` at the centre to `outer` at the edge, `size` square."""
    img = Image.new("RGBA", (size, size))
    px = img.load()
    for y in range(size):
        for x in range(size):
            d = min(1.0, math.hypot(x - size / 2, y - size / 2) / (size / 2))
            px[x, y] = tuple(int(inner[i] * (1 - d) + outer[i] * d) for i in range(3)) + (255,)
    return img


def glow(img, box, color, radius=40):
    """A blurred ellipse of `color` in `box`, laid over `img`."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse(box, fill=color)
    layer = layer.filter(ImageFilter.GaussianBlur(radius))
    return Image.alpha_composite(img, layer)


def full_heal():
    img = background((250, 210, 220), (150, 40, 70))
    img = glow(img, (136, 170, 376, 430), (255, 80, 110, 200))
    d = ImageDraw.Draw(img)
    # Flask body, neck, cork.
    d.ellipse((146, 196, 366, 416), fill=(210, 30, 60), outline=(90, 10, 30), width=10)
    d.rectangle((216, 120, 296, 210), fill=(230, 240, 250), outline=(90, 10, 30), width=10)
    d.rounded_rectangle((206, 86, 306, 130), radius=12, fill=(150, 100, 60), outline=(80, 50, 30), width=8)
    d.ellipse((190, 240, 250, 300), fill=(255, 150, 170))  # highlight
    # A white cross.
    d.rectangle((236, 270, 276, 370), fill=(255, 255, 255))
    d.rectangle((206, 300, 306, 340), fill=(255, 255, 255))
    return img


def coin(d, cx, cy, r):
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 200, 40), outline=(160, 110, 10), width=6)
    d.ellipse((cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6), outline=(200, 150, 20), width=5)


def gold_pouch():
    img = background((255, 240, 200), (170, 110, 40))
    img = glow(img, (130, 150, 380, 420), (255, 220, 100, 180))
    d = ImageDraw.Draw(img)
    d.ellipse((140, 200, 372, 420), fill=(140, 85, 45), outline=(70, 40, 20), width=10)
    d.polygon([(196, 215), (316, 215), (346, 150), (166, 150)], fill=(150, 95, 50), outline=(70, 40, 20))
    d.rectangle((186, 200, 326, 226), fill=(200, 50, 50), outline=(90, 20, 20), width=5)
    for cx, cy, r in [(180, 390, 38), (256, 400, 42), (332, 388, 38), (218, 350, 30)]:
        coin(d, cx, cy, r)
    return img


def gold_chest():
    img = background((255, 245, 210), (120, 70, 30))
    img = glow(img, (110, 120, 400, 330), (255, 230, 90, 220), radius=50)
    d = ImageDraw.Draw(img)
    for cx, cy, r in [(190, 190, 40), (256, 170, 44), (322, 192, 40), (226, 215, 34), (292, 215, 34)]:
        coin(d, cx, cy, r)
    d.rounded_rectangle((120, 220, 392, 400), radius=18, fill=(130, 75, 35), outline=(60, 30, 10), width=10)
    d.rectangle((120, 270, 392, 292), fill=(200, 160, 60))
    d.rectangle((180, 220, 200, 400), fill=(200, 160, 60))
    d.rectangle((312, 220, 332, 400), fill=(200, 160, 60))
    d.rounded_rectangle((236, 262, 276, 318), radius=6, fill=(240, 210, 80), outline=(90, 60, 10), width=5)
    return img


def arrows():
    img = background((220, 240, 220), (50, 100, 60))
    d = ImageDraw.Draw(img)
    for i, angle in enumerate([-18, -6, 6, 18]):
        a = math.radians(angle - 90)
        cx, cy = 256, 330
        x1, y1 = cx + math.cos(a) * -120, cy + math.sin(a) * -120
        x2, y2 = cx + math.cos(a) * 190, cy + math.sin(a) * 190
        d.line((x1, y1, x2, y2), fill=(110, 70, 30), width=12)
        # Head.
        hx, hy = x2, y2
        left = (hx + math.cos(a + 2.6) * 40, hy + math.sin(a + 2.6) * 40)
        right = (hx + math.cos(a - 2.6) * 40, hy + math.sin(a - 2.6) * 40)
        d.polygon([(hx + math.cos(a) * 20, hy + math.sin(a) * 20), left, right], fill=(200, 210, 220), outline=(60, 60, 70))
        # Fletching.
        fx, fy = x1, y1
        for side in (2.4, -2.4):
            tip = (fx + math.cos(a + side) * 36, fy + math.sin(a + side) * 36)
            d.line((fx, fy, tip[0], tip[1]), fill=(230, 60, 60), width=10)
    d.rounded_rectangle((200, 300, 312, 330), radius=8, fill=(220, 180, 90), outline=(90, 60, 20), width=5)
    return img


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, draw in [("full_heal", full_heal), ("gold_pouch", gold_pouch), ("gold_chest", gold_chest), ("arrows", arrows)]:
        draw().convert("RGB").save(os.path.join(OUT, f"{name}.png"), optimize=True)
        print("wrote", name)
