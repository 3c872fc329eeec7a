"""The full-screen app (Textual): model picker, chat, live readouts.

Imported only when the app runs, so the command line starts fast.
"""
