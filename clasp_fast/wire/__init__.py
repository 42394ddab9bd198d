"""The wire floor: CLASP frames and addresses (codec, messages, address patterns, JSON forms).

Everything here is pure data work on top of the compiled core (``clasp_fast._codec``,
``clasp_fast._address``); nothing touches a socket or the event loop.
"""
