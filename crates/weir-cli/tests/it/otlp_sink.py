"""An OTLP/HTTP receiver for weir's trace export test: the OpenTelemetry project's test
receiver (oteltest's HttpSink, which decodes OTLP protobuf and JSON) on a free port.

Prints `listening PORT` once it accepts connections, then every span it receives as one
JSON line on stdout. Runs until it is killed.
"""

import json
import logging
import time

from oteltest.sink import HttpSink
from oteltest.sink.handler import RequestHandler

SCALARS = ("string_value", "bool_value", "int_value", "double_value")


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind in SCALARS else str(any_value)


class Spans(RequestHandler):
    def handle_logs(self, request, headers):
        pass

    def handle_metrics(self, request, headers):
        pass

    def handle_trace(self, request, headers):
        content_type = next(
            (v for k, v in headers.items() if k.lower() == "content-type"), None
        )
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = {
                        "service": resource.get("service.name"),
                        "content_type": content_type,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                    }
                    print(json.dumps(line), flush=True)


sink = HttpSink(Spans(), logging.getLogger("otlp-sink"), port=0)
sink.start()
while sink.httpd is None:
    time.sleep(0.01)
print(f"listening {sink.httpd.server_address[1]}", flush=True)
sink.svr_thread.join()
