"""The file batch exchange (``msglab batch``): JSON Lines files sent as batches into a folder
and handed to a command or an App, on top of the files transport (``msglab.brokers.files``),
whose layout, claims and quarantine it keeps as they are.

``folder``: who owns the folder (inbox: push; outbox: pull), ``processed/``, retention, status.
``send``: a JSON Lines file checked whole, then written as batches. ``receive``: the long-running
receiver.
"""
