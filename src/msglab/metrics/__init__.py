"""Prometheus metrics of a consumer: what it received, handled, retried and gave up on, how
long its handler took, and how far its groups are behind.

``exporter.Metrics`` holds the series on its own registry and serves them over HTTP (the one
module that imports ``prometheus_client``: ``pip install 'msglab[metrics]'``);
``poller.LagPoller`` reads the lag of each topic and group through the transport's optional
``LagReader`` capability and hands it to the Metrics. Neither knows a concrete broker. This
package imports nothing at its own import, so ``msglab.metrics.poller`` works without the
extra.
"""
