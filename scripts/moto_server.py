"""moto's server for keyward's tests, on one thread.

`moto_server` serves each request on its own thread, and moto checks a TransactWriteItems'
conditions and then writes without a lock, so two racing transactions can both pass their
checks. DynamoDB itself never lets that happen. Serving one request at a time gives moto the
atomicity that DynamoDB guarantees, which the race tests depend on; everything else is
moto's own server, unchanged.

usage: python scripts/moto_server.py PORT
"""

import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

if __name__ == "__main__":
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False, request_handler=MotoRequestHandler)
