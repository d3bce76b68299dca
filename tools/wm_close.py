#!/usr/bin/env python3
"""Asks a window to close the way a window manager's close button does: a WM_DELETE_WINDOW
client message. (Under Xvfb there is no window manager, and `xdotool windowclose` destroys the
window instead, which a game sees as a crash, not a quit.)

Usage: tools/wm_close.py WINDOW_ID   (needs `pip install python-xlib` and DISPLAY)
"""
import sys

from Xlib import X, display, protocol

d = display.Display()
window = d.create_resource_object("window", int(sys.argv[1]))
wm_protocols = d.intern_atom("WM_PROTOCOLS")
wm_delete = d.intern_atom("WM_DELETE_WINDOW")
supported = window.get_wm_protocols() or []
if wm_delete not in supported:
    sys.exit(f"window {sys.argv[1]} does not accept WM_DELETE_WINDOW")
event = protocol.event.ClientMessage(
    window=window, client_type=wm_protocols, data=(32, [wm_delete, X.CurrentTime, 0, 0, 0])
)
window.send_event(event, event_mask=X.NoEventMask)
d.flush()
print(f"asked window {sys.argv[1]} to close (WM_DELETE_WINDOW)")
