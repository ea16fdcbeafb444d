"""msglab: compare asynchronous messaging patterns on real servers, including while they break."""

__version__ = "0.1.0"

import logging

logging.getLogger("msglab").addHandler(logging.NullHandler())
