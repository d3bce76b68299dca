"""Draws the wave_arena game's product icons (drawn at 256x256, saved at the catalog's 512x512 PNG)
with Pillow:
`python3 tools/make_arena_icons.py`.

Everything important stays inside the central circle: the plugin crops icons to a circle on load.
"""
import math
import os

from PIL import Image, ImageDraw

import make_icons

S = 256
OUT = os.path.join(os.path.dirname(__file__), "..", "games", "wave_arena", "assets", "icons")


def background(inner, outer):
    return make_icons.background(inner, outer, S)


def glow(img, box, color, radius=20):
    return make_icons.glow(img, box, color, radius)


def quiver():
    img = background((215, 235, 250), (40, 80, 120))
    d = ImageDraw.Draw(img)
    # Five arrows fanned out of a leather quiver.
    for i, angle in enumerate([-28, -14, 0, 14, 28]):
        a = math.radians(angle - 90)
        x0, y0 = 128, 170
        x1, y1 = x0 + math.cos(a) * 120, y0 + math.sin(a) * 120
        d.line((x0, y0, x1, y1), fill=(120, 80, 40), width=7)
        tip = [(x1 + math.cos(a) * 18, y1 + math.sin(a) * 18),
               (x1 + math.cos(a + 2.2) * 12, y1 + math.sin(a + 2.2) * 12),
               (x1 + math.cos(a - 2.2) * 12, y1 + math.sin(a - 2.2) * 12)]
        d.polygon(tip, fill=(200, 205, 215), outline=(70, 70, 80))
    d.rounded_rectangle((88, 140, 168, 225), radius=14, fill=(150, 85, 40), outline=(70, 35, 15), width=6)
    d.line((92, 170, 164, 170), fill=(90, 50, 20), width=5)
    return img


def revive():
    img = background((255, 250, 220), (200, 140, 40))
    img = glow(img, (58, 58, 198, 198), (255, 255, 200, 230), 25)
    d = ImageDraw.Draw(img)
    # A heart under a halo.
    d.ellipse((78, 38, 178, 68), outline=(255, 215, 60), width=8)
    d.ellipse((62, 84, 132, 154), fill=(220, 40, 70))
    d.ellipse((124, 84, 194, 154), fill=(220, 40, 70))
    d.polygon([(66, 132), (190, 132), (128, 210)], fill=(220, 40, 70))
    d.rectangle((118, 100, 138, 170), fill=(255, 255, 255))
    d.rectangle((93, 125, 163, 145), fill=(255, 255, 255))
    return img


def double_gold():
    img = background((255, 245, 200), (150, 100, 20))
    img = glow(img, (48, 48, 208, 208), (255, 220, 90, 200))
    d = ImageDraw.Draw(img)
    for cx, cy in [(104, 118), (150, 138)]:
        d.ellipse((cx - 52, cy - 52, cx + 52, cy + 52), fill=(250, 200, 40), outline=(150, 100, 10), width=6)
        d.ellipse((cx - 32, cy - 32, cx + 32, cy + 32), outline=(200, 150, 20), width=5)
    d.text((104, 106), "x2", fill=(120, 60, 0), font_size=56)
    # An hourglass: the boost lasts five minutes.
    d.polygon([(176, 176), (222, 176), (199, 200)], fill=(240, 240, 255), outline=(60, 60, 90))
    d.polygon([(199, 200), (176, 224), (222, 224)], fill=(240, 240, 255), outline=(60, 60, 90))
    return img


def skip_wave():
    img = background((225, 250, 225), (40, 110, 60))
    d = ImageDraw.Draw(img)
    # A slime, and a fast-forward sign over it.
    d.ellipse((58, 110, 198, 210), fill=(110, 200, 90), outline=(40, 100, 40), width=6)
    d.ellipse((98, 140, 114, 156), fill=(20, 40, 20))
    d.ellipse((142, 140, 158, 156), fill=(20, 40, 20))
    for x in (70, 126):
        d.polygon([(x, 40), (x + 56, 75), (x, 110)], fill=(255, 255, 255), outline=(30, 60, 30))
    return img


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, draw in [("quiver", quiver), ("revive", revive), ("double_gold", double_gold),
                       ("skip_wave", skip_wave)]:
        path = os.path.join(OUT, f"{name}.png")
        draw().convert("RGB").resize((512, 512), Image.LANCZOS).save(path, optimize=True)
        print(path)
