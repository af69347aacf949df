#!/usr/bin/env python3
"""Scrapes a Prometheus endpoint as Prometheus would, parses it with the Prometheus Python
client's parsers, and prints what it found as JSON for the Rust test to check
(tests/tests/observability.rs):

  scrape_metrics.py URL [--token-file FILE] [--ca CERT.pem]

Both formats are parsed: the Prometheus text format (the default answer,
`prometheus_client.parser`) and OpenMetrics (asked for with Accept, the strict
`prometheus_client.openmetrics.parser`). Without the token, the endpoint must answer 401.

Output: {"status_without_token": 401, "scrape_seconds": ...,
         "families": {name: {"type": ..., "samples": [[sample name, {labels}, value], ...]}},
         "openmetrics_families": [names]}
"""

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families


CONTEXT = None


def get(url, headers):
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=CONTEXT) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--token-file")
    parser.add_argument("--ca", help="CA certificate (PEM) of an https:// endpoint")
    args = parser.parse_args()
    global CONTEXT
    if args.ca:
        CONTEXT = ssl.create_default_context(cafile=args.ca)
    headers = {}
    if args.token_file:
        headers["Authorization"] = "Bearer " + open(args.token_file).read().strip()

    without, _, _ = get(args.url, {})
    started = time.monotonic()
    status, content_type, text = get(args.url, headers)
    scrape_seconds = time.monotonic() - started
    if status != 200:
        sys.exit(f"{args.url}: HTTP {status}\n{text}")
    if not content_type.startswith("text/plain"):
        sys.exit(f"{args.url}: Content-Type {content_type!r}, expected the Prometheus text format")
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }

    om_status, om_type, om_text = get(args.url, dict(headers, Accept="application/openmetrics-text; version=1.0.0"))
    if om_status != 200 or not om_type.startswith("application/openmetrics-text"):
        sys.exit(f"{args.url}: OpenMetrics answer HTTP {om_status}, Content-Type {om_type!r}")
    openmetrics = sorted(f.name for f in parse_openmetrics(om_text))

    json.dump({
        "status_without_token": without,
        "scrape_seconds": scrape_seconds,
        "families": families,
        "openmetrics_families": openmetrics,
    }, sys.stdout)


if __name__ == "__main__":
    main()
